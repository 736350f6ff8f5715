"""One policy for non-finite LatentRM scores in every aggregator.

A NaN or infinite trajectory score (a diverged RM, an fp16 overflow) says nothing about the
trajectory, and +inf or NaN must not be allowed to win a max. So, in best-of-N, the weighted
vote and latent beam search alike:

- a non-finite score ranks as ``-inf``: below every finite score, never chosen over one;
- it carries no vote weight (the softmax runs over the finite scores only);
- when none of a question's scores is finite, the RM-based aggregators give *no answer* (scored
  wrong) instead of picking a trajectory the RM said nothing about;
- every such score is counted (``metrics.json`` ``counts``) and reported with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def count_nonfinite(scores: Sequence[float] | torch.Tensor) -> int:
    """Number of NaN / +-inf entries of ``scores`` (any shape)."""
    if isinstance(scores, torch.Tensor):
        return int((~torch.isfinite(scores)).sum())
    return sum(not math.isfinite(float(s)) for s in scores)


def ranking_scores(scores: Sequence[float]) -> list[float]:
    """``scores`` with every non-finite entry replaced by ``-inf`` (the ranking policy)."""
    return [float(s) if math.isfinite(float(s)) else -math.inf for s in scores]


def ranking_scores_tensor(scores: torch.Tensor) -> torch.Tensor:
    """Tensor form of :func:`ranking_scores` (same shape and dtype), for beam search's top-k."""
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))


def rm_vote_weights(scores: Sequence[float]) -> list[float]:
    """Weights of the RM-weighted vote (paper Sec. 3.2): softmax over the N trajectory scores,
    computed in float64 over the finite scores only; a non-finite score gets weight 0, and all
    weights are 0 when no score is finite.

    Returns:
        N weights, summing to 1 (or all 0).
    """
    finite = [float(s) for s in scores if math.isfinite(float(s))]
    if not finite:
        return [0.0] * len(scores)
    top = max(finite)
    exp = [math.exp(float(s) - top) if math.isfinite(float(s)) else 0.0 for s in scores]
    total = math.fsum(exp)
    return [e / total for e in exp]


def group_members(labels: Sequence[int], index: int) -> list[bool]:
    """(N,) which samples share the answer of sample ``index``: its answer group (``labels``: group
    label per sample, -1 for no answer), or the sample alone when it has no answer."""
    own = labels[index]
    return [i == index if own < 0 else label == own for i, label in enumerate(labels)]


def group_mass(labels: Sequence[int], index: int, weights: Sequence[float]) -> float:
    """Share of ``weights`` (>= 0) on the answer of sample ``index`` (:func:`group_members`), in
    [0, 1]: exactly 1.0 when no weight lies outside the group, exactly 0.0 when none lies inside
    (both sums exact, ``math.fsum``, so the ratio carries one rounding only); 0.0 for ``index`` < 0."""
    if index < 0:
        return 0.0
    inside = group_members(labels, index)
    mass_in = math.fsum(w for w, m in zip(weights, inside) if m)
    mass_out = math.fsum(w for w, m in zip(weights, inside) if not m)
    if mass_in <= 0.0:
        return 0.0
    if mass_out <= 0.0:
        return 1.0
    return min(1.0, mass_in / (mass_in + mass_out))
