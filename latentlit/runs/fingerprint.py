"""Fingerprints of loaded weights: which checkpoint a run, a groups directory or a LatentRM used.

A path or hub id says where weights came from, not what they are: a retrained checkpoint written
to the same directory has the same path. :func:`weights_fingerprint` reads the model in memory,
so it is the same for one set of weights whatever its source (a local directory in latentlit's
or a released layout, a hub id) and changes when the weights change.

**Two readings of the same tensors.** A fingerprint is 16 hex digits: 8 of a digest of the
weights read at bfloat16 precision, then 8 of a digest of the weights read at float16 precision
(each value rounded to nearest-even in that dtype, as a cast does: beyond float16's range an
infinity, below it a subnormal or zero). Each digest covers, per tensor of
``module.state_dict()`` (parameters and persistent buffers), in name order:

* the name, the shape, and whether the tensor is floating point (other dtypes are named);
* an exact checksum of every element: the sum, modulo 2**64, of the tensor's values at that
  precision read as integers (4 values per 64-bit word). Any change of any element that shows at
  that precision changes it, unless several changes cancel exactly;
* up to :data:`SAMPLES_PER_TENSOR` values at that precision at fixed positions spread over the
  whole tensor (a multiplicative-hash stride, so rows and columns are both visited): a
  permutation of rows, which keeps the checksum, still shows.

The first half is the first half of the fingerprint this module gave before it had a second
(version 1, one bfloat16 digest): a fingerprint recorded then still matches by
:func:`same_weights`.

**The same weights** (:func:`same_weights`, used by :func:`provenance_match`): two fingerprints
whose bfloat16 halves are equal, or whose float16 halves are equal. So a checkpoint loaded in
float32 matches its own bfloat16 cast (the cast keeps the bfloat16 reading: the first halves are
equal) and its own float16 cast (the cast *is* the float16 reading: the second halves are equal),
and any dtype matches itself. A change of one element that shows at bfloat16 precision, another
tensor name or another shape changes both halves. Nothing weaker can be exact: a bfloat16 cast
and a float16 cast of one float32 checkpoint hold different values (double rounding: a float16
value on a bfloat16 rounding midpoint has lost the side the float32 value was on, and a bfloat16
value has lost where in its cell it was), so no function of the values in memory gives them one
digest, and they do not match each other (each matches the float32 checkpoint they were cast
from). Plain equality of two fingerprints means equal at both precisions (same dtype, same
values).

What it leaves out, on purpose: the floating dtype (see above; a run's dtype is a setting of its
own), changes below bfloat16 precision (and, for the float16 reading, beyond float16's range),
and everything that is not a weight (tokenizer, prompt template, T: those decide records through
settings of their own).

Cost: one pass over the weights per reading (a bfloat16 and a float16 copy of at most
:data:`CHUNK` elements at a time); a few milliseconds for the quickstart models.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

SAMPLES_PER_TENSOR = 4096
CHUNK = 1 << 24
# Knuth's multiplicative-hash constant (a prime near 2**32 / golden ratio): i * M mod n visits
# positions spread over every row and column of a tensor of n elements
_STRIDE = 2654435761
# The byte stream of each reading starts with its version: the bfloat16 one is version 1's
# stream unchanged, so its half of a fingerprint is version 1's half.
_READINGS = {torch.bfloat16: b"latentlit-weights-fingerprint-v1",
             torch.float16: b"latentlit-weights-fingerprint-f16-v2"}


def _bits(values: torch.Tensor, precision: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Floating values as the int16 bit patterns of their rounding to ``precision`` (bfloat16 or
    float16; round to nearest even, the same on every device, as a cast rounds)."""
    return values.to(precision).view(torch.int16)


def _checksum(flat: torch.Tensor, precision: torch.dtype = torch.bfloat16) -> int:
    """Sum modulo 2**64 of a 1-D tensor's 16-bit patterns at ``precision``, read 4 at a time as
    int64 (exact integer arithmetic: the same on any device and in any summation order)."""
    total = 0
    for start in range(0, flat.numel(), CHUNK):
        bits = _bits(flat[start:start + CHUNK], precision)
        whole = bits.numel() // 4 * 4
        total += int(bits[:whole].view(torch.int64).sum()) + int(bits[whole:].to(torch.int64).sum())
    return total % (1 << 64)


def _positions(n: int, k: int, device) -> torch.Tensor:
    if k >= n:
        return torch.arange(n, device=device)
    return (torch.arange(k, dtype=torch.int64, device=device) * _STRIDE) % n


def _digests(tensor: torch.Tensor, samples: int) -> dict[torch.dtype, bytes]:
    """The bytes one tensor contributes to each reading (shape, kind, checksum, sampled values;
    floating values at the reading's precision), the spread positions gathered once."""
    t = tensor.detach()
    floating = t.is_floating_point()
    head = f"{tuple(t.shape)}|{'float' if floating else str(t.dtype)}|".encode()
    if t.is_meta or t.numel() == 0:  # offloaded / empty: only what is known
        return dict.fromkeys(_READINGS, head + b"meta" if t.is_meta else head)
    flat = t.reshape(-1)
    picked = flat[_positions(flat.numel(), samples, flat.device)]
    if not floating:
        checksum = int(flat.to(torch.int64).sum()) % (1 << 64)
        return dict.fromkeys(_READINGS, head + checksum.to_bytes(8, "little")
                             + picked.to(torch.int64).cpu().numpy().astype("<i8").tobytes())
    return {p: head + _checksum(flat, p).to_bytes(8, "little") + _bits(picked, p).cpu().numpy().astype("<i2").tobytes()
            for p in _READINGS}


def tensor_digest(tensor: torch.Tensor, samples: int = SAMPLES_PER_TENSOR,
                  precision: torch.dtype = torch.bfloat16) -> bytes:
    """The bytes one tensor contributes to one reading of :func:`weights_fingerprint` (shape,
    kind, checksum, sampled values; floating values at ``precision``: bfloat16 or float16).

    Raises:
        ValueError: another ``precision``.
    """
    if precision not in _READINGS:
        raise ValueError(f"precision must be one of {list(_READINGS)}, got {precision}")
    return _digests(tensor, samples)[precision]


@torch.no_grad()
def weights_fingerprint(module: nn.Module, samples: int = SAMPLES_PER_TENSOR) -> str:
    """16 hex digits: 8 of SHA-256 over every tensor of ``module.state_dict()`` read at bfloat16
    precision, then 8 of the same read at float16 precision (name, shape, an exact checksum of all
    values, up to ``samples`` values at fixed spread positions; the module docstring says what it
    covers and what not).

    Equal for equal weights on any device and from any checkpoint layout; compare fingerprints of
    loads in different dtypes with :func:`same_weights` (a float32 load matches its bfloat16 and
    float16 casts). Different after any training step that moves a weight by more than bfloat16
    precision.
    """
    digests = {p: hashlib.sha256(version) for p, version in _READINGS.items()}
    seen: dict[tuple, str] = {}
    for name, tensor in sorted(module.state_dict().items()):
        # tied tensors (input and output embeddings) are read once and named as tied
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype) if not tensor.is_meta else None
        if key is not None and key in seen and tensor.numel():
            for h in digests.values():
                h.update(name.encode() + b"\0tied:" + seen[key].encode() + b"\0")
            continue
        if key is not None:
            seen[key] = name
        for precision, part in _digests(tensor, samples).items():
            digests[precision].update(name.encode() + b"\0" + part + b"\0")
    return digests[torch.bfloat16].hexdigest()[:8] + digests[torch.float16].hexdigest()[:8]


def same_weights(a: str | None, b: str | None) -> bool:
    """Whether two :func:`weights_fingerprint` values name the same weights, whatever float dtype
    each load was cast to: equal bfloat16 halves (the first 8 digits) or equal float16 halves (the
    last 8). A version-1 fingerprint (16 digits of the bfloat16 digest alone) matches by its first
    half. None or an empty string matches nothing."""
    if not a or not b or len(a) != 16 or len(b) != 16:
        return bool(a) and a == b
    return a[:8] == b[:8] or a[8:] == b[8:]


def provenance_match(provenance: dict | None, backbone_fingerprint: str, latent_rm: str,
                     backbone: str) -> tuple[bool | None, str | None]:
    """Does a LatentRM's provenance (``latent_rm.json`` ``provenance``: the backbone whose latents
    it was trained on) name this backbone? Compared by :func:`same_weights`, so loading the
    backbone in another float dtype than the RM was trained next to is no mismatch.

    Args:
        provenance: ``{"backbone": path, "backbone_fingerprint": ...}`` or None (a LatentRM saved
            without it, e.g. the released COCONUT LatentRM). backbone_fingerprint: this run's.
        latent_rm, backbone: how the run names them (for the message).

    Returns:
        (True | False | None, the warning to give or None): None when there is no provenance.
    """
    stored = (provenance or {}).get("backbone_fingerprint")
    if not stored:
        return None, None
    if same_weights(stored, backbone_fingerprint):  # a float16 / bfloat16 cast of the same weights too
        return True, None
    return False, (f"LATENTRM / BACKBONE MISMATCH: latent_rm {latent_rm} was trained on the latents of backbone "
                   f"{provenance.get('backbone')!r} (weights fingerprint {stored}), but this run's backbone {backbone} "
                   f"has fingerprint {backbone_fingerprint}: its scores, best-of-N, weighted vote, beam search and "
                   "DVTS results measure an RM reading another model's latents; use the LatentRM trained on this "
                   "backbone (metrics.json config.latent_rm_backbone_match = false)")


def sampler_mismatch(provenance: dict | None, sampler: dict, latent_rm: str) -> str | None:
    """The warning for a LatentRM that scores trajectories of another sampler than the one its
    training groups were labelled with (``provenance["sampler"]``, a sampler's ``describe()``):
    another sampler class, or another strength (``p``, ``sigma``, ``attention_p``). None when they
    agree or the provenance names no sampler."""
    trained = (provenance or {}).get("sampler")
    if not trained:
        return None
    keys = ("name", "p", "sigma", "attention_p")
    differ = [k for k in keys if trained.get(k) != sampler.get(k) and (k == "name" or k in trained or k in sampler)]
    if not differ:
        return None
    show = lambda s: " ".join(f"{k}={s[k]}" for k in keys if k in s)  # noqa: E731
    return (f"latent_rm {latent_rm} was trained on trajectories of {show(trained)} but scores trajectories of "
            f"{show(sampler)}: its scores may not transfer (an RM trained on MC-dropout trajectories ranked AGN ones "
            "about as well as majority vote on the quickstart)")
