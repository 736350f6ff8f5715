"""Each aggregator's accuracy with k <= N samples, estimated from the N samples of one run.

"aggregator@k" of a question is the expected correctness of the aggregator run on a uniformly
random k-subset of its N samples (the samples kept in their original order). That is how
coverage@k is defined: the unbiased pass@k estimator of Chen et al. (2021, Eq. 1) is the
probability that a random k-subset holds a correct sample. Averaged over questions it estimates
the accuracy the aggregator would have with a budget of k samples, using all N samples (far less
noise than running it on the first k only).

* best-of-N@k, exact: the winner of a k-subset is its top-ranked sample, and the sample ranked r
  (0-based; by score, ties to the earlier sample, non-finite scores last) tops a random k-subset
  with probability C(N-1-r, k-1) / C(N, k).
* random pick@k, exact: a random pick among k random samples is a random sample: c / N.
* majority vote@k and RM-weighted vote@k: no closed form (the winner depends on the whole subset
  and, for the weighted vote, on continuous weights). Exact enumeration of all C(N, k) subsets
  when there are at most ``subsets`` of them, otherwise the mean over ``subsets`` random
  k-subsets drawn from a generator keyed by the question (deterministic), returned with the
  Monte Carlo variance of that mean so the caller can state the error. The subsets of one
  question are nested across k (the first k of fixed random permutations): common random numbers
  make the curve smooth in k.

Votes follow :mod:`latentlit.aggregation.vote`: answers that are numerically equal vote together,
a missing answer never votes, ties go to the answer whose first vote (in sample order) came
earliest; the weighted vote weights sample i by softmax over the subset's scores. Non-finite
scores follow :mod:`latentlit.aggregation.scores`: they rank as -inf (never chosen over a finite
one), carry no vote weight, and a subset without any finite score gives no answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np

from latentlit.aggregation.vote import group_answers

DEFAULT_SUBSETS = 1024
_SUBSET_STREAM = 0x5B5E7  # names the random-subset stream of a question key


@dataclass(frozen=True)
class AtK:
    """Per-question estimate at each k: ``values[i]`` in [0, 1] for ``ks[i]``, the variance of
    that estimate (0 where it is exact) and whether it is exact (False: Monte Carlo)."""

    values: list[float]
    variances: list[float]
    exact: list[bool] | None = None

    def is_exact(self, i: int) -> bool:
        return True if self.exact is None else self.exact[i]


def answer_labels(answers: Sequence[str | None]) -> np.ndarray:
    """(N,) int group label per sample (groups of numerically equal answers, numbered by first
    occurrence); -1 for samples without an answer."""
    labels = np.full(len(answers), -1, dtype=np.int64)
    for g, members in enumerate(group_answers(answers)):
        labels[members] = g
    return labels


def clean_scores(scores: Sequence[float]) -> np.ndarray:
    """Scores as float64 with every NaN / +-inf replaced by -inf (never preferred)."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(np.isfinite(s), s, -np.inf)


def score_ranking(scores: Sequence[float]) -> np.ndarray:
    """Sample indices best first: by score descending, ties to the lower index, non-finite last
    (the order :func:`latentlit.aggregation.best_of_n` chooses by)."""
    s = clean_scores(scores)
    return np.lexsort((np.arange(len(s)), -s))


def _check_ks(n: int, ks: Sequence[int]) -> None:
    if n < 1 or any(not 1 <= k <= n for k in ks):
        raise ValueError(f"need 1 <= k <= N for every k, got N={n}, ks={list(ks)}")


def best_of_n_at_k(scores: Sequence[float], correct: Sequence[bool], ks: Sequence[int]) -> AtK:
    """Expected correctness of best-of-N on a random k-subset, for each k (exact).

    Args:
        scores: (N,) trajectory scores. correct: (N,) correctness of each sample.

    Raises:
        ValueError: lengths differ, or a k outside 1..N.
    """
    n = len(scores)
    if len(correct) != n:
        raise ValueError(f"{n} scores but {len(correct)} correctness flags")
    _check_ks(n, ks)
    order = score_ranking(scores)
    # a subset whose top score is non-finite has no finite score at all: no answer
    c = np.where(np.isfinite(clean_scores(scores))[order], np.asarray(correct, dtype=np.float64)[order], 0.0)
    values = []
    for k in ks:
        # P(rank r tops the subset) = C(N-1-r, k-1) / C(N, k), r = 0..N-k, by the ratio recurrence
        r = np.arange(n - k)
        probs = np.concatenate([[k / n], (k / n) * np.cumprod((n - r - k) / (n - 1 - r))])
        values.append(float(np.dot(probs, c[: n - k + 1])))
    return AtK(values, [0.0] * len(values))


def random_pick_at_k(correct: Sequence[bool], ks: Sequence[int]) -> AtK:
    """Expected correctness of a uniformly random pick among k random samples: c / N for every k."""
    n = len(correct)
    _check_ks(n, ks)
    mean = float(np.mean(np.asarray(correct, dtype=np.float64)))
    return AtK([mean] * len(ks), [0.0] * len(ks))


@lru_cache(maxsize=256)
def _all_subsets(n: int, k: int) -> np.ndarray:
    masks = np.zeros((comb(n, k), n), dtype=bool)
    for row, chosen in enumerate(itertools.combinations(range(n), k)):
        masks[row, list(chosen)] = True
    masks.setflags(write=False)
    return masks


def _random_ranks(n: int, key: int, subsets: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([int(key) & 0xFFFFFFFFFFFFFFFF, _SUBSET_STREAM]))
    return np.argsort(np.argsort(rng.random((subsets, n)), axis=1), axis=1)


def subset_masks(n: int, k: int, key: int, subsets: int = DEFAULT_SUBSETS) -> tuple[np.ndarray, bool]:
    """The k-subsets a vote@k estimate averages over, as an (S, N) bool mask.

    All C(n, k) subsets when there are at most ``subsets`` (returns ``exact=True``), else
    ``subsets`` uniformly random ones from a generator seeded by ``key`` (the first k of random
    permutations; the same permutations for every k of one key).

    Returns:
        (masks, exact).
    """
    if comb(n, k) <= subsets:
        return _all_subsets(n, k), True
    return _random_ranks(n, key, subsets) < k, False


@dataclass(frozen=True)
class SubsetTable:
    """The subsets of every k stacked: ``masks`` (sum of S_k, N) bool, rows ``bounds[i]`` for
    ``ks[i]``, ``exact[i]`` whether they are all C(N, k) subsets."""

    masks: np.ndarray
    bounds: list[tuple[int, int]]
    exact: list[bool]


def subset_table(n: int, ks: Sequence[int], key: int, subsets: int = DEFAULT_SUBSETS) -> SubsetTable:
    """:func:`subset_masks` for every k at once (one set of random permutations for all k)."""
    _check_ks(n, ks)
    ranks = None
    parts, bounds, exact, start = [], [], [], 0
    for k in ks:
        if comb(n, k) <= subsets:
            m, ex = _all_subsets(n, k), True
        else:
            if ranks is None:
                ranks = _random_ranks(n, key, subsets)
            m, ex = ranks < k, False
        parts.append(m)
        bounds.append((start, start + len(m)))
        exact.append(ex)
        start += len(m)
    return SubsetTable(np.concatenate(parts), bounds, exact)


def _vote_correct(masks: np.ndarray, labels: np.ndarray, group_correct: np.ndarray,
                  scores: np.ndarray | None) -> np.ndarray:
    """(S,) correctness of the vote over each subset row of ``masks``."""
    s, n = masks.shape
    g = len(group_correct)
    if g == 0:
        return np.zeros(s)
    onehot = labels[:, None] == np.arange(g)[None, :]  # (N, G); no-answer rows are all False
    if scores is None:
        weights = masks.astype(np.float64)
    else:
        finite = masks & np.isfinite(scores)[None, :]
        top = np.where(finite, scores[None, :], -np.inf).max(1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        weights = np.where(finite, np.exp(np.where(finite, scores[None, :], 0.0) - top), 0.0)
        weights = weights / np.maximum(weights.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    totals = weights @ onehot  # (S, G)
    # first vote of each group in each subset, for the tie rule
    chosen = np.where(masks, np.arange(n)[None, :], n)  # (S, N): sample index where chosen
    index = np.stack([chosen[:, labels == j].min(1) for j in range(g)], axis=1)  # (S, G)
    best = totals.max(1, keepdims=True)
    tied = (totals == best) & (best > 0)
    winner = np.where(tied, index, n + 1).argmin(1)
    return np.where(tied.any(1), group_correct[winner], False).astype(np.float64)


def vote_at_k(answers_labels: np.ndarray, group_correct: Sequence[bool], ks: Sequence[int], key: int,
              scores: Sequence[float] | None = None, subsets: int = DEFAULT_SUBSETS,
              table: SubsetTable | None = None) -> AtK:
    """Expected correctness of the majority vote (``scores=None``) or of the RM-weighted vote
    (softmax of ``scores`` over the subset) on a random k-subset, for each k.

    Args:
        answers_labels: (N,) group labels from :func:`answer_labels` (-1: no answer).
        group_correct: (G,) whether each answer group is the gold answer.
        key: keys the random subsets (e.g. ``question_key(seed, id)``).
        subsets: number of random subsets when C(N, k) exceeds it (then enumerated otherwise).
        table: the question's :func:`subset_table` for these ``ks`` (built when omitted).

    Returns:
        :class:`AtK`; ``variances`` is the Monte Carlo variance of each value
        (p(1 - p) / (S - 1) over S random subsets), 0 where enumerated.

    Raises:
        ValueError: a k outside 1..N, scores of the wrong length.
    """
    labels = np.asarray(answers_labels, dtype=np.int64)
    n = len(labels)
    _check_ks(n, ks)
    gc = np.asarray(group_correct, dtype=bool)
    s = None
    if scores is not None:
        if len(scores) != n:
            raise ValueError(f"{n} answers but {len(scores)} scores")
        s = clean_scores(scores)
    table = table if table is not None else subset_table(n, ks, key, subsets)
    hits = _vote_correct(table.masks, labels, gc, s)
    values, variances = [], []
    for (start, end), exact in zip(table.bounds, table.exact):
        p = float(hits[start:end].mean())
        values.append(p)
        variances.append(0.0 if exact else p * (1.0 - p) / (end - start - 1))
    return AtK(values, variances, list(table.exact))


def first_k_vote(answers_labels: np.ndarray, group_correct: Sequence[bool], ks: Sequence[int]) -> list[float]:
    """Majority-vote correctness (0/1) over the FIRST k samples, for each k (the meaning of
    ``majority_vote@k`` before the subset expectation; kept as ``majority_vote_first@k``)."""
    labels = np.asarray(answers_labels, dtype=np.int64)
    _check_ks(len(labels), ks)
    masks = np.arange(len(labels))[None, :] < np.asarray(ks)[:, None]  # row i: the first ks[i] samples
    return _vote_correct(masks, labels, np.asarray(group_correct, dtype=bool), None).tolist()
