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

The outcome losses (:func:`listwise_outcome_loss`, :func:`answer_group_loss`) also take
``final_correct`` and ``candidate_mask`` (G, N) bool and work on the trajectory score
S_n = sum_t r_t^(n) over the candidate's real steps (the paper's ``sum``). A real candidate with
no step (its latent phase ended before the first latent) has no score (``trajectory_score`` gives
it -inf): it takes no part, like padding.
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


def _check_outcome_shapes(scores: torch.Tensor, mask: torch.Tensor, **per_candidate: torch.Tensor) -> None:
    if scores.shape != mask.shape or scores.dim() != 3:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(mask.shape)} must match and be (G, N, T)")
    for name, x in per_candidate.items():
        if x.shape != scores.shape[:2]:
            raise ValueError(f"{name} {tuple(x.shape)} must match scores' (G, N) = {tuple(scores.shape[:2])}")


def _trajectory_sums(scores: torch.Tensor, mask: torch.Tensor, candidate_mask: torch.Tensor):
    """S_n = sum of the real steps' scores (G, N) float32, and which candidates take part (G, N)."""
    mask = mask.bool()
    sums = scores.float().masked_fill(~mask, 0.0).sum(-1)
    return sums, candidate_mask.bool() & mask.any(-1)


def _masked_log_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log softmax over the valid entries of each row (dim 1); 0 at the others, with no NaN (nor in
    the gradient) when a row has no valid entry."""
    fill = torch.where(valid.any(1, keepdim=True), float("-inf"), 0.0)
    logp = F.log_softmax(torch.where(valid, logits, fill), dim=1)
    return torch.where(valid, logp, torch.zeros_like(logp))


def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry order preference at each step, weighted by the label gap:

    L = sum_g sum_t sum_{(i, j): y_t^(i) > y_t^(j)} (y_t^(i) - y_t^(j)) softplus(-(r_t^(i) - r_t^(j)))

    (softplus(-d) = -log sigmoid(d)) over ordered pairs of candidates both real at (g, t); pairs
    with equal labels contribute nothing. Shapes as :func:`step_contrastive_loss`; returns the sum
    over groups. Source: Bradley & Terry (1952); pairwise order-preference reward models (as used on
    COCONUT by a public reproduction of You et al. 2025, arXiv 2510.07745).

    Raises:
        ValueError: shapes differ.
    """
    if not (scores.shape == labels.shape == mask.shape):
        raise ValueError(f"scores {tuple(scores.shape)}, labels {tuple(labels.shape)}, mask {tuple(mask.shape)} must match")
    mask = mask.bool()
    r = scores.float().masked_fill(~mask, 0.0)
    y = labels.float().masked_fill(~mask, 0.0)
    # (G, N_i, N_j, T): candidate i against candidate j at each step
    gap = y[:, :, None, :] - y[:, None, :, :]
    both = mask[:, :, None, :] & mask[:, None, :, :]
    terms = gap * F.softplus(-(r[:, :, None, :] - r[:, None, :, :]))
    return torch.where(both & (gap > 0), terms, torch.zeros_like(terms)).sum()


def listwise_outcome_loss(scores: torch.Tensor, mask: torch.Tensor, final_correct: torch.Tensor,
                          candidate_mask: torch.Tensor) -> torch.Tensor:
    """ListNet top-one cross-entropy against the final outcome, at trajectory level:

    L = - sum_g sum_n q_n log softmax_n(S_n),  q_n = c_n / sum_m c_m

    with S_n = sum_t r_t^(n) over the candidate's real steps, c_n = ``final_correct``; the softmax
    runs over the group's real candidates. A group with no correct candidate contributes 0.
    Shapes: ``scores``, ``mask`` (G, N, T); ``final_correct``, ``candidate_mask`` (G, N) bool.
    Returns the sum over groups. Source: Cao et al. (2007), ListNet.

    Raises:
        ValueError: shapes differ.
    """
    _check_outcome_shapes(scores, mask, final_correct=final_correct, candidate_mask=candidate_mask)
    sums, valid = _trajectory_sums(scores, mask, candidate_mask)
    correct = (final_correct.bool() & valid).float()
    q = correct / correct.sum(1, keepdim=True).clamp_min(1.0)
    return -(q * _masked_log_softmax(sums, valid)).sum()


def answer_group_loss(scores: torch.Tensor, mask: torch.Tensor, final_correct: torch.Tensor,
                      answer_groups: torch.Tensor, candidate_mask: torch.Tensor) -> torch.Tensor:
    """ListNet top-one cross-entropy over answer groups: candidates with the same answer share an
    outcome, so the RM is trained to rank answers as the RM-weighted vote does:

    L = - sum_g sum_a q_a log softmax_a(A_a),  A_a = logsumexp_{n in a} S_n,  q_a = c_a / sum_b c_b

    A_a is the log of answer a's mass in the weighted vote (weights softmax_n(S_n)); c_a = 1 when
    its members are correct; the softmax runs over the answer groups present in question g. A
    question with no correct answer group contributes 0. With every candidate in its own group
    this is :func:`listwise_outcome_loss`.

    Args:
        answer_groups: (G, N) long, each real candidate's answer-group id within its question
            (only equality matters); -1 at padding candidates.
        scores, mask, final_correct, candidate_mask: as :func:`listwise_outcome_loss`.

    Returns the sum over groups.

    Raises:
        ValueError: shapes differ; a real candidate has a negative id; members of one answer
            group disagree in ``final_correct``.
    """
    _check_outcome_shapes(scores, mask, final_correct=final_correct, answer_groups=answer_groups,
                          candidate_mask=candidate_mask)
    real, correct = candidate_mask.bool(), final_correct.bool()
    if bool((real & (answer_groups < 0)).any()):
        g, n = (real & (answer_groups < 0)).nonzero()[0].tolist()
        raise ValueError(f"question {g}, candidate {n}: a real candidate has answer-group id "
                         f"{int(answer_groups[g, n])} (ids are >= 0; -1 marks padding)")
    # same[g, n, m]: candidates n and m of question g are real and share an answer group (G, N, N)
    same = answer_groups[:, :, None] == answer_groups[:, None, :]
    same_real = same & real[:, :, None] & real[:, None, :]
    split = same_real & (correct[:, :, None] != correct[:, None, :])
    if bool(split.any()):
        g, n, _ = split.nonzero()[0].tolist()
        raise ValueError(f"question {g}, answer group {int(answer_groups[g, n])}: its members disagree in "
                         "final_correct (candidates with one answer share its outcome)")
    sums, valid = _trajectory_sums(scores, mask, candidate_mask)
    members = same & valid[:, :, None] & valid[:, None, :]
    # A for each candidate's answer group (G, N): logsumexp over its scored members
    fill = torch.where(valid, float("-inf"), 0.0)[:, :, None]
    group_score = torch.logsumexp(torch.where(members, sums[:, None, :], fill), dim=2)
    # one representative per answer group: its first scored member
    earlier = torch.ones_like(members[0], dtype=torch.bool).tril(-1)
    first = valid & ~(members & earlier).any(2)
    good = (first & correct).float()
    q = good / good.sum(1, keepdim=True).clamp_min(1.0)
    return -(q * _masked_log_softmax(group_score, first)).sum()
