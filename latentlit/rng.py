"""Counter-based random numbers keyed per trajectory.

Every random number latentlit draws at inference is a pure function of
(seed, question id, sample index, a stream counter, an element index). A question's trajectories
therefore do not depend on what else shares its batch, on chunking, on the number of processes,
on resuming, or on the device. ``torch.Generator`` cannot give that for a batched tensor (one
generator per row would mean a Python loop per row and per dropout call), so we hash instead:
splitmix64's finaliser on int64 tensors, which runs vectorised on any device.

int64 arithmetic in torch wraps on overflow (two's complement) on CPU and CUDA; right shifts are
arithmetic, so every shift is masked to make it logical.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1


def _s64(x: int) -> int:
    """Python int -> the signed int64 with the same 64 bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_INT64_MIN = -(1 << 63)
_M1 = _s64(0xBF58476D1CE4E5B9)
_M2 = _s64(0x94D049BB133111EB)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser, elementwise on an int64 tensor (any shape). In-place on a fresh
    copy: this runs on every dropout activation, so allocations matter."""
    z = z + _GOLDEN
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        t = z >> shift
        t &= (1 << (64 - shift)) - 1
        z ^= t
        if mult is not None:
            z *= mult
    return z


def hash_ints(*parts: int) -> int:
    """Stable signed-int64 hash of a tuple of Python ints (host side)."""
    z = torch.tensor(0, dtype=torch.int64)
    for p in parts:
        z = mix64(z ^ _s64(int(p)))
    return int(z)


def question_key(seed: int, question_id: str) -> int:
    """Stable int64 key of (seed, question id); ``hash()`` is salted per process, so use blake2b."""
    digest = hashlib.blake2b(question_id.encode("utf-8"), digest_size=8).digest()
    return hash_ints(seed, int.from_bytes(digest, "little"))


def trajectory_keys(seed: int, question_ids: list[str], n_samples: int, offset: int | Sequence[int] = 0) -> torch.Tensor:
    """Row keys for ``len(question_ids) * n_samples`` trajectories, question-major.

    Row ``q * n_samples + j`` gets key(seed, question_ids[q], offset + j) (``offset[q]`` when one
    offset per question is given).

    Returns:
        (B * n_samples,) int64 on CPU.
    """
    offsets = [offset] * len(question_ids) if isinstance(offset, int) else list(offset)
    keys = [hash_ints(question_key(seed, q), o + j) for q, o in zip(question_ids, offsets, strict=True)
            for j in range(n_samples)]
    return torch.tensor(keys, dtype=torch.int64)


def derive_keys(keys: torch.Tensor, *parts: int) -> torch.Tensor:
    """Child keys of ``keys`` (R,) for a sub-stream named by ``parts`` (e.g. rollout index)."""
    out = keys
    for p in parts:
        out = mix64(out ^ _s64(int(p)))
    return out


def _bits(keys: torch.Tensor, counter: int, n: int) -> torch.Tensor:
    """(R, n) int64 pseudo-random words for rows ``keys`` (R,), stream ``counter``."""
    base = mix64(keys ^ _s64(counter)).unsqueeze(-1)
    idx = torch.arange(n, device=keys.device, dtype=torch.int64)
    return mix64(base + idx * _GOLDEN)


def keyed_uniform(keys: torch.Tensor, counter: int, n: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform [0, 1) floats, (R, n) float32, keyed by row and element.

    Args:
        keys: (R,) int64 row keys. counter: the stream (e.g. hash of phase, step, module).
        n: elements per row. index: optional (R, n) int64 element indices replacing ``arange(n)``,
            so that an element's value depends on its logical position (e.g. the token position
            of a left-padded row), not on its place in the tensor.
    """
    if index is None:
        z = _bits(keys, counter, n)
    else:
        z = mix64(mix64(keys ^ _s64(counter)).unsqueeze(-1) + index * _GOLDEN)
    return _shr(z, 40).to(torch.float32) * (1.0 / (1 << 24))


def keyed_normal(keys: torch.Tensor, counter: int, n: int) -> torch.Tensor:
    """Standard normal floats, (R, n) float32, by Box-Muller on two keyed uniform streams."""
    u1 = keyed_uniform(keys, hash_ints(counter, 1), n)
    u2 = keyed_uniform(keys, hash_ints(counter, 2), n)
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 in (0, 1]: log is finite
    return r * torch.cos(2.0 * math.pi * u2)


def keep_threshold(p: float) -> int:
    """The smallest 24-bit draw ``k`` that :func:`keyed_uniform` turns into a value ``>= p``.

    ``keyed_uniform`` returns ``float32(k) * 2**-24`` for a 24-bit integer ``k``, and dropout keeps
    an element when that value ``>= p`` as torch compares it (float32 against ``p``); this
    evaluates exactly that comparison on the candidates around ``p * 2**24``, so that
    ``k >= keep_threshold(p)`` keeps the same elements bit for bit. Returns ``2**24`` when no
    draw is kept.
    """
    k0 = int(p * (1 << 24))
    cand = torch.arange(max(0, k0 - 2), min(1 << 24, k0 + 3), dtype=torch.int64)
    kept = (cand.to(torch.float32) * (1.0 / (1 << 24))) >= p
    return int(cand[kept][0]) if bool(kept.any()) else 1 << 24


def keyed_keep(keys: torch.Tensor, counter: int, p: float, index_a: torch.Tensor,
               index_b: torch.Tensor | None = None, *, block: int | None = None) -> torch.Tensor:
    """Dropout keep mask ``keyed_uniform(keys, counter, n, index) >= p`` with
    ``index = index_a + index_b`` (broadcast), bit for bit, at about half the work.

    Why it is cheaper and still exact: int64 arithmetic wraps, so ``(a + b) * G`` is computed as
    ``a * G + b * G`` on the small broadcast terms, and the full-size tensor is written once; the
    last xor-shift round of splitmix64 (``z ^= z >>> 31``) cannot change bits 40..63 (it xors in
    bits 71..94, which do not exist), and the comparison only reads those 24 bits, so that round
    is skipped; ``k >= keep_threshold(p)`` replaces float conversion and comparison, done as an
    unsigned comparison of the whole word (flip the sign bit, compare signed). Work is done in
    row blocks of about ``block`` elements (default 65536 on CPU, so the intermediate words stay
    in cache; everything at once on other devices).

    Args:
        keys: (R,) int64 row keys. counter: the stream. p: drop probability.
        index_a, index_b: int64 element-index terms whose broadcast sum has shape (R, ...) or
            (1, ...) (a leading dimension of 1 broadcasts over rows), at least 2-D.

    Returns:
        (R, ...) bool, True where the element is kept.

    Raises:
        ValueError: index terms without a leading row dimension.
    """
    rows = keys.shape[0]
    a = index_a * _GOLDEN
    b = index_b * _GOLDEN if index_b is not None else None
    shape = torch.broadcast_shapes(a.shape, b.shape if b is not None else a.shape)
    if len(shape) < 2 or shape[0] not in (1, rows):
        raise ValueError(f"keyed_keep: index terms broadcast to {tuple(shape)}; expected a leading row dimension (R or 1, ...) for {rows} rows")
    shape = (rows, *shape[1:])
    # full rank, so that dimension 0 is the row dimension of both terms
    a = a.view(*([1] * (len(shape) - a.dim())), *a.shape)
    if b is not None:
        b = b.view(*([1] * (len(shape) - b.dim())), *b.shape)
    base = mix64(keys ^ _s64(counter)) + _GOLDEN
    a = a + base.view(rows, *([1] * (len(shape) - 1)))
    thr = keep_threshold(p)
    if thr >= 1 << 24:
        return torch.zeros(shape, dtype=torch.bool, device=keys.device)
    if thr == 0:
        return torch.ones(shape, dtype=torch.bool, device=keys.device)
    limit = _s64((thr << 40) ^ (1 << 63))
    out = torch.empty(shape, dtype=torch.bool, device=keys.device)
    per_row = max(1, math.prod(shape[1:]))
    if block is None:
        block = 1 << 16 if keys.device.type == "cpu" else per_row * rows
    step = max(1, block // per_row)
    scratch = None
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        z = a[r0:r1] if b is None else a[r0:r1] + (b[r0:r1] if b.shape[0] > 1 else b)
        if b is None:
            z = z.expand(r1 - r0, *shape[1:]).clone()
        if scratch is None or scratch.shape != z.shape:
            scratch = torch.empty_like(z)
        for shift, mult in ((30, _M1), (27, _M2)):
            torch.bitwise_right_shift(z, shift, out=scratch)
            scratch &= (1 << (64 - shift)) - 1
            z ^= scratch
            z *= mult
        z ^= _INT64_MIN
        torch.ge(z, limit, out=out[r0:r1])
    return out
