"""LatentRM training losses (paper Sec. 3.3, Eq. for the step-level contrastive objective).

Shapes: ``scores``, ``labels`` and ``mask`` are (G, N, T): G groups (questions), N candidate
trajectories per group, T latent steps. ``labels[g, n, t]`` = y_t^(n) in [0, 1], the fraction of
rollouts from prefix h_1..h_t that reach the gold answer. ``mask`` is False for padding
(missing candidates or steps); padded entries take no part in any softmax or sum.

Ragged step groups (a dynamic latent stop, CoLaR): candidate n has its own length T_n, and
``mask[g, n, t]`` is True exactly for t < T_n (0-based). Candidates are aligned by step index,
and the contrastive softmax at step t runs over the candidates still thinking at t only: a
stopped candidate has no r_t (the RM scores latent positions, and it has none there), so it
neither competes at nor receives gradient from later steps. A step where a single candidate is
still thinking contributes log 1 = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def step_contrastive_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = - sum_g sum_t sum_n y_t^(n) log softmax_n(r_t)^(n) over unpadded entries.

    The softmax at each (group, step) runs over that step's real candidates only. Returns the
    sum over groups (a batch's loss equals the sum of its single-group losses); divide by G for
    a mean.

    Raises:
        ValueError: shapes differ.
    """
    if not (scores.shape == labels.shape == mask.shape):
        raise ValueError(f"scores {tuple(scores.shape)}, labels {tuple(labels.shape)}, mask {tuple(mask.shape)} must match")
    mask = mask.bool()
    logp = F.log_softmax(scores.float().masked_fill(~mask, float("-inf")), dim=1)
    # steps where every candidate is padding give all -inf: zero them before multiplying
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    return -(labels.float() * logp * mask).sum()


def step_bce_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each (trajectory, step) score against its soft label, summed over
    unpadded entries (the pointwise alternative: candidates are scored independently)."""
    if not (scores.shape == labels.shape == mask.shape):
        raise ValueError(f"scores {tuple(scores.shape)}, labels {tuple(labels.shape)}, mask {tuple(mask.shape)} must match")
    loss = F.binary_cross_entropy_with_logits(scores.float(), labels.float(), reduction="none")
    return (loss * mask.bool()).sum()
