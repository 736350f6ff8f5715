"""Fingerprints of loaded weights: which checkpoint a run, a groups directory or a LatentRM used.

A path or hub id says where weights came from, not what they are: a retrained checkpoint written
to the same directory has the same path. :func:`weights_fingerprint` reads the model in memory,
so it is the same for one set of weights whatever its source (a local directory in latentlit's
or a released layout, a hub id) and changes when the weights change.

What it covers, per tensor of ``module.state_dict()`` (parameters and persistent buffers), in
name order:

* the name, the shape, and whether the tensor is floating point (other dtypes are named);
* an exact checksum of every element: the sum, modulo 2**64, of the tensor's values at bfloat16
  precision read as integers (4 values per 64-bit word). Any change of any element that shows at
  bfloat16 precision changes it, unless several changes cancel exactly;
* up to :data:`SAMPLES_PER_TENSOR` values at bfloat16 precision at fixed positions spread over
  the whole tensor (a multiplicative-hash stride, so rows and columns are both visited): a
  permutation of rows, which keeps the checksum, still shows.

What it leaves out, on purpose: the floating dtype (values are compared at bfloat16 precision, so
a float32 and a bfloat16 load of one checkpoint share a fingerprint; a run's dtype is a setting
of its own), changes below bfloat16 precision, and everything that is not a weight (tokenizer,
prompt template, T: those decide records through settings of their own). A float16 load can
differ from the float32 / bfloat16 one (its rounding of small values differs).

Cost: one pass over the weights (a bfloat16 copy of at most :data:`CHUNK` elements at a time for
float32 weights); a few milliseconds for the quickstart models (measured figures: the README's
"Run integrity").
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
_VERSION = b"latentlit-weights-fingerprint-v1"


def _bf16_bits(values: torch.Tensor) -> torch.Tensor:
    """Floating values as the int16 bit patterns of their bfloat16 rounding (round to nearest
    even, the same on every device)."""
    return values.to(torch.bfloat16).view(torch.int16)


def _checksum(flat: torch.Tensor) -> int:
    """Sum modulo 2**64 of a 1-D tensor's bfloat16 bit patterns, read 4 at a time as int64
    (exact integer arithmetic: the same on any device and in any summation order)."""
    total = 0
    for start in range(0, flat.numel(), CHUNK):
        bits = _bf16_bits(flat[start:start + CHUNK])
        whole = bits.numel() // 4 * 4
        total += int(bits[:whole].view(torch.int64).sum()) + int(bits[whole:].to(torch.int64).sum())
    return total % (1 << 64)


def _positions(n: int, k: int, device) -> torch.Tensor:
    if k >= n:
        return torch.arange(n, device=device)
    return (torch.arange(k, dtype=torch.int64, device=device) * _STRIDE) % n


def tensor_digest(tensor: torch.Tensor, samples: int = SAMPLES_PER_TENSOR) -> bytes:
    """The bytes one tensor contributes to :func:`weights_fingerprint` (shape, kind, checksum,
    sampled values)."""
    t = tensor.detach()
    floating = t.is_floating_point()
    head = f"{tuple(t.shape)}|{'float' if floating else str(t.dtype)}|".encode()
    if t.is_meta or t.numel() == 0:  # offloaded / empty: only what is known
        return head + b"meta" if t.is_meta else head
    flat = t.reshape(-1)
    picked = flat[_positions(flat.numel(), samples, flat.device)]
    if floating:
        checksum = _checksum(flat)
        values = _bf16_bits(picked).cpu().numpy().astype("<i2").tobytes()
    else:
        as_int = flat.to(torch.int64)
        checksum = int(as_int.sum()) % (1 << 64)
        values = picked.to(torch.int64).cpu().numpy().astype("<i8").tobytes()
    return head + checksum.to_bytes(8, "little") + values


@torch.no_grad()
def weights_fingerprint(module: nn.Module, samples: int = SAMPLES_PER_TENSOR) -> str:
    """16 hex digits of SHA-256 over every tensor of ``module.state_dict()`` (name, shape, an
    exact checksum of all its values at bfloat16 precision, and up to ``samples`` values at
    fixed spread positions; the module docstring says what it covers and what not).

    Equal for equal weights on any device, in float32 or bfloat16, from any checkpoint layout;
    different after any training step that moves a weight by more than bfloat16 precision.
    """
    h = hashlib.sha256(_VERSION)
    seen: dict[tuple, str] = {}
    for name, tensor in sorted(module.state_dict().items()):
        # tied tensors (input and output embeddings) are read once and named as tied
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype) if not tensor.is_meta else None
        if key is not None and key in seen and tensor.numel():
            h.update(name.encode() + b"\0tied:" + seen[key].encode() + b"\0")
            continue
        if key is not None:
            seen[key] = name
        h.update(name.encode() + b"\0" + tensor_digest(tensor, samples) + b"\0")
    return h.hexdigest()[:16]


def provenance_match(provenance: dict | None, backbone_fingerprint: str, latent_rm: str,
                     backbone: str) -> tuple[bool | None, str | None]:
    """Does a LatentRM's provenance (``latent_rm.json`` ``provenance``: the backbone whose latents
    it was trained on) name this backbone?

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
    if stored == backbone_fingerprint:
        return True, None
    return False, (f"LATENTRM / BACKBONE MISMATCH: latent_rm {latent_rm} was trained on the latents of backbone "
                   f"{provenance.get('backbone')!r} (weights fingerprint {stored}), but this run's backbone {backbone} "
                   f"has fingerprint {backbone_fingerprint}: its scores, best-of-N, weighted vote, beam search and "
                   "DVTS results measure an RM reading another model's latents; use the LatentRM trained on this "
                   "backbone (metrics.json config.latent_rm_backbone_match = false)")
