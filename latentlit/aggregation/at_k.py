"""Each aggregator's accuracy with k <= N samples, estimated from the N samples of one run.

"aggregator@k" of a question is the expected correctness of the aggregator run on a uniformly
random k-subset of its N samples (the samples kept in their original order). That is how
coverage@k is defined: the unbiased pass@k estimator of Chen et al. (2021, Eq. 1) is the
probability that a random k-subset holds a correct sample. Averaged over questions it estimates
the accuracy the aggregator would have with a budget of k samples, using all N samples (far less
noise than running it on the first k only).

* best-of-N@k, exact: the winner of a k-subset is its top-ranked sample, and the sample ranked r
  (0-based, in :func:`latentlit.aggregation.select.score_order`, the order best-of-N chooses by)
  tops a random k-subset with probability C(N-1-r, k-1) / C(N, k).
* random pick@k, exact: a random pick among k random samples is a random sample: c / N.
* majority vote@k, exact for every k when N <= :data:`MAJORITY_EXACT_MAX_N` (128): a sum over
  answer groups (:func:`majority_vote_at_k`; the counts of a random k-subset are hypergeometric,
  and the tie rule needs only where each group's first chosen vote lies). Beyond, Monte Carlo
  as below.
* RM-weighted vote@k: no closed form (continuous weights). Exact enumeration of all C(N, k)
  subsets when there are at most :data:`EXACT_SUBSETS` (20 000) of at most :data:`EXACT_SLOTS`
  (2**17) sample slots (every k for N <= 16; k in {1, 2, N} of the reported powers of two for
  N = 28 to 200; :func:`subset_table` has the list), otherwise the mean over
  :data:`DEFAULT_SUBSETS` random k-subsets drawn from a generator keyed by the question
  (deterministic), returned with the Monte Carlo variance of that mean (``AtK.variances``,
  ``AtK.exact`` False) so the caller can state the error. The subsets of one question are nested
  across k (the first k of fixed random permutations): common random numbers make the curve
  smooth in k.

One rule wherever a vote is computed: :func:`latentlit.aggregation.vote.vote_choice` (group
weight = ``math.fsum`` of the members' weights, the heaviest wins, ties to the earliest first
vote, weight 0 never wins) decides the record's ``majority_vote`` and ``weighted_vote`` fields
and every subset here. At k = N the estimators call it on the one subset as the record does
(:func:`subset_vote_correct`), so they give exactly the record's correctness. At k < N the
majority sum counts the subsets that rule gives to a correct group (counts are integers: no
rounding), and the weighted vote decides a subset vectorised only where float64 provably gives
the same winner: a winner ahead of every other group by more than :data:`_CLEAR_MARGIN` of the
subset's weight (the rounding of a k-term sum is ~k * 2**-53 of it), or groups within that margin
holding the same multiset of finite scores (equal multisets of weights: equal ``fsum``, an exact
tie, to the earliest first vote). Every other subset goes to :func:`subset_vote_correct`.
Votes: answers that are numerically equal vote together, a missing answer never votes; the
weighted vote weights sample i by
:func:`latentlit.aggregation.scores.rm_vote_weights` over the subset's scores. Non-finite scores
follow :mod:`latentlit.aggregation.scores`: they rank as -inf (never chosen over a finite one),
carry no vote weight, and a subset without any finite score gives no answer.

Cost per question, all reported k together (numpy, one core of a shared machine, best of 3, when
the limits were set): majority vote 0.3-0.8 ms at N = 16 and about 2 ms at N = 64 (3-5 ms for
two groups of 32 votes); weighted vote 7-9 ms at N = 16 (all C(16, 8) = 12 870 subsets of k = 8:
6-7 ms) and 5-7 ms at N = 64 (k = 4..32 Monte Carlo). Tied scores cost up to 1.3x. Before
(majority and weighted vote both by 1024 subsets beyond C(N, k) > 1024): 3-4 ms at N = 16,
19-20 ms at N = 64.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np

from latentlit.aggregation.scores import rm_vote_weights
from latentlit.aggregation.select import score_order
from latentlit.aggregation.vote import group_answers, vote_choice

# Random k-subsets of one Monte Carlo estimate (metrics.json monte_carlo.subsets).
DEFAULT_SUBSETS = 1024
# Enumerate all C(N, k) subsets of the weighted vote when there are at most EXACT_SUBSETS of them
# holding at most EXACT_SLOTS sample slots, C(N, k) * k (else Monte Carlo): the cost is about
# 0.3 us a subset plus 0.05 us a slot, so at most ~10 ms per question and k (measured: all
# C(16, 8) = 12 870 subsets 6-7 ms, C(64, 62) = 2016 subsets of 62 samples 5 ms).
EXACT_SUBSETS = 20_000
EXACT_SLOTS = 2**17
# Majority vote@k is exact by its group sum up to this N (its cost grows as N * m^3 for a group
# of m votes: 3-5 ms per question at N = 64, 17 ms at N = 128, 200 ms at N = 256 measured); beyond,
# random subsets as for the weighted vote.
MAJORITY_EXACT_MAX_N = 128
# A weighted-vote winner ahead of the runner-up by more than this fraction of the subset's total
# weight is the winner of vote_choice too: the float64 sums differ from the exact ones by about
# N * 2**-53 of the total (and np.exp from math.exp by a few ulp), 10**6 times less than this.
_CLEAR_MARGIN = 1e-9
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
    """Sample indices best first: :func:`latentlit.aggregation.select.score_order` (by score
    descending, ties to the lower index, non-finite last: the order best-of-N chooses by)."""
    return np.asarray(score_order(scores), dtype=np.int64)


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


def subset_vote_correct(labels: np.ndarray, group_correct: np.ndarray, scores: np.ndarray | None,
                        subset: Sequence[int]) -> bool:
    """The record's vote on one subset: :func:`vote_choice` over the subset's answer groups (in
    order of first vote) with unit weights (``scores=None``) or :func:`rm_vote_weights` of the
    subset's scores; whether the winner is a correct group.

    Args:
        labels: (N,) group labels (-1: no answer). group_correct: (G,). scores: (N,) or None.
        subset: sample indices, ascending.
    """
    idx = np.asarray(subset, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for pos, label in enumerate(labels[idx].tolist()):
        if label >= 0:
            groups.setdefault(label, []).append(pos)
    weights = [1.0] * len(idx) if scores is None else rm_vote_weights(scores[idx].tolist())
    order = list(groups)  # insertion order: first vote first
    won = vote_choice([groups[g] for g in order], weights)
    return won is not None and bool(group_correct[order[won]])


def _binomial_rows(n: int) -> np.ndarray:
    """(n+1, n+1) float64 table of C(i, j)."""
    table = np.zeros((n + 1, n + 1))
    table[:, 0] = 1.0
    for i in range(1, n + 1):
        table[i, 1:] = table[i - 1, 1:] + table[i - 1, :-1]
    return table


def _winning_subsets(members: list[np.ndarray], g: int, none: int, n: int, binom: np.ndarray) -> np.ndarray:
    """(n+1,) number of j-subsets of the n samples whose majority vote (unit weights, ties to the
    earliest first vote) is group ``g``, for j = 0..n.

    Group g wins a subset holding c of its votes, the first at sample p, exactly when every other
    group holds fewer than c votes, or c votes all after p. Given c and p (c - 1 more votes among
    g's later members), the other groups choose independently: group h contributes the polynomial
    sum_{j<c} C(m_h, j) x^j + C(a_h(p), c) x^c (a_h(p): h's members after p), and a group with
    fewer than c members, or a sample without an answer, any number: (1 + x)^m.
    """
    mine = members[g]
    m = len(mine)
    others = [members[h] for h in range(len(members)) if h != g]
    out = np.zeros(n + 1)
    for c in range(1, m + 1):
        free = none + sum(len(o) for o in others if len(o) < c)
        width = n - c + 1  # coefficients of x^0 .. x^(n-c): the other samples of subsets up to n
        t = np.arange(m - c + 1)  # g's first chosen vote is its t-th member, for every t at once
        poly = np.zeros((len(t), width))
        poly[:, : min(free + 1, width)] = binom[free, : min(free + 1, width)]
        for o in (o for o in others if len(o) >= c):
            factor = np.tile(binom[len(o), : c + 1], (len(t), 1))
            factor[:, c] = binom[len(o) - np.searchsorted(o, mine[t], side="right"), c]
            grown = np.zeros_like(poly)
            for j in range(c + 1):  # poly * factor, truncated to the width
                grown[:, j:] += poly[:, : width - j] * factor[:, j: j + 1]
            poly = grown
        out[c:] += binom[m - 1 - t, c - 1] @ poly
    return out


def majority_vote_at_k(answers_labels: np.ndarray, group_correct: Sequence[bool], ks: Sequence[int], key: int = 0,
                       subsets: int = DEFAULT_SUBSETS) -> AtK:
    """Expected correctness of the majority vote on a random k-subset, for each k: exact (the
    number of k-subsets each correct group wins, :func:`_winning_subsets`, over C(N, k), in
    float64: relative error ~1e-15); at k = N the record's vote itself. Beyond
    N = :data:`MAJORITY_EXACT_MAX_N` (the sum's cost grows as N * m^3) Monte Carlo over the random
    subsets of :func:`subset_table` with ``key`` / ``subsets`` (k = N still exact).

    Args:
        answers_labels: (N,) group labels from :func:`answer_labels` (-1: no answer).
        group_correct: (G,) whether each answer group is the gold answer.

    Raises:
        ValueError: a k outside 1..N.
    """
    labels = np.asarray(answers_labels, dtype=np.int64)
    n = len(labels)
    _check_ks(n, ks)
    gc = np.asarray(group_correct, dtype=bool)
    if n > MAJORITY_EXACT_MAX_N:
        return _subset_vote_at_k(labels, gc, ks, None, subset_table(n, ks, key, subsets, exact_slots=0))
    members = [np.flatnonzero(labels == g) for g in range(len(gc))]
    binom = _binomial_rows(n)
    ways = np.zeros(n + 1)
    for g in np.flatnonzero(gc):
        ways += _winning_subsets(members, int(g), int((labels < 0).sum()), n, binom)
    # at k = N the one subset is the record's own vote: its rule, called as the record calls it
    values = [float(subset_vote_correct(labels, gc, None, range(n))) if k == n
              else min(1.0, max(0.0, float(ways[k] / binom[n, k]))) for k in ks]
    return AtK(values, [0.0] * len(ks), [True] * len(ks))


@lru_cache(maxsize=64)
def _all_subsets(n: int, k: int) -> np.ndarray:
    """(C(n, k), k) every k-subset of range(n), each row ascending (read-only, cached)."""
    rows = comb(n, k)
    out = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int64,
                      count=rows * k).reshape(rows, k)
    out.setflags(write=False)
    return out


def _random_ranks(n: int, key: int, subsets: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([int(key) & 0xFFFFFFFFFFFFFFFF, _SUBSET_STREAM]))
    return np.argsort(np.argsort(rng.random((subsets, n)), axis=1), axis=1)


@dataclass(frozen=True)
class SubsetTable:
    """The subsets of every k: ``rows[i]`` (S_i, ks[i]) sample indices of each subset for
    ``ks[i]`` (each row ascending), ``exact[i]`` whether they are all C(N, k) subsets."""

    rows: list[np.ndarray]
    exact: list[bool]


def subset_table(n: int, ks: Sequence[int], key: int, subsets: int = DEFAULT_SUBSETS,
                 exact_slots: int = EXACT_SLOTS) -> SubsetTable:
    """The k-subsets a vote@k estimate averages over, for every k in ``ks``.

    All C(n, k) subsets when C(n, k) <= :data:`EXACT_SUBSETS` (20 000) and C(n, k) * k <=
    ``exact_slots`` (default :data:`EXACT_SLOTS` = 2**17), and always for k = n (one subset). Of the
    reported k (powers of two and n) that is every k for n <= 16, {1, 2, 4, 16, n} for n = 17 to
    20, {1, 2, 4, n} for n = 21 to 27, {1, 2, n} for n = 28 to 200 (and n - 1 where it is a power
    of two: k = 32 of n = 33, k = 64 of n = 65). Otherwise
    ``subsets`` uniformly random ones from a generator seeded by ``key``: the first k of random
    permutations, the same permutations for every k of one key (so the subsets are nested in k).
    """
    _check_ks(n, ks)
    ranks = None
    rows, exact = [], []
    for k in ks:
        if k == n or (comb(n, k) <= EXACT_SUBSETS and comb(n, k) * k <= exact_slots):
            rows.append(_all_subsets(n, k))
            exact.append(True)
        else:
            if ranks is None:
                ranks = _random_ranks(n, key, subsets)
            rows.append(np.nonzero(ranks < k)[1].reshape(subsets, k))  # row-major: ascending per row
            exact.append(False)
    return SubsetTable(rows, exact)


def subset_masks(n: int, k: int, key: int, subsets: int = DEFAULT_SUBSETS,
                 exact_slots: int = EXACT_SLOTS) -> tuple[np.ndarray, bool]:
    """The subsets of :func:`subset_table` for one k as an (S, N) bool mask, and whether they are
    all C(n, k) subsets (exact)."""
    table = subset_table(n, [k], key, subsets, exact_slots)
    rows = table.rows[0]
    masks = np.zeros((len(rows), n), dtype=bool)
    np.put_along_axis(masks, rows, True, axis=1)
    return masks, table.exact[0]


def _first_votes(rows: np.ndarray, labels: np.ndarray, g: int) -> np.ndarray:
    """(S, G) the first (smallest) sample index of each group in each subset (int64 max where the
    group has no vote in it)."""
    s = len(rows)
    first = np.full(s * g, np.iinfo(np.int64).max, dtype=np.int64)
    lab = labels[rows]
    voted = lab >= 0
    flat = (np.arange(s)[:, None] * g + lab)[voted]
    np.minimum.at(first, flat, rows[voted])
    return first.reshape(s, g)


def _rows_vote_correct(rows: np.ndarray, labels: np.ndarray, group_correct: np.ndarray,
                       scores: np.ndarray | None) -> np.ndarray:
    """(S,) correctness of the record's vote (:func:`subset_vote_correct`) on each subset
    (``rows``: (S, k) ascending sample indices).

    Vectorised where float64 provably gives the winner of :func:`vote_choice`: vote counts are
    exact integers; a weighted winner ahead of every other group by more than
    :data:`_CLEAR_MARGIN` of the subset's weight is its winner too; groups within that margin of
    the best that hold the same multiset of finite scores tie exactly (equal multisets of
    weights have equal ``math.fsum``), so the earliest first vote among them wins. Every other
    subset (a near tie of different weights, a winner of negligible weight) is decided by
    :func:`subset_vote_correct` itself.
    """
    s, k = rows.shape
    g = len(group_correct)
    out = np.zeros(s)
    if g == 0 or s == 0:
        return out
    lab = labels[rows]
    voted = lab >= 0
    flat = (np.arange(s)[:, None] * g + lab)[voted]
    if scores is None:
        totals = np.bincount(flat, minlength=s * g).reshape(s, g)
        best = totals.max(1, keepdims=True)
        tied = (totals == best) & (best > 0)
        winner = np.where(tied, _first_votes(rows, labels, g), np.iinfo(np.int64).max).argmin(1)
        return np.where(tied.any(1), group_correct[winner], False).astype(np.float64)
    sc = scores[rows]  # non-finite scores are -inf here (clean_scores)
    top = np.maximum.reduce(sc.T)[:, None] if k > 1 else sc  # columns: faster than a short axis
    silent = ~(np.isfinite(top[:, 0]) & voted.any(1))  # no finite score or no answer in the subset: no answer
    if np.isfinite(sc).all():
        weights = np.exp(sc - top)
    else:
        finite = np.isfinite(sc)
        weights = np.where(finite, np.exp(np.where(finite, sc - np.where(np.isfinite(top), top, 0.0), 0.0)), 0.0)
    # unnormalised: the softmax's division by the subset's total changes no order
    totals = np.bincount(flat, weights=weights[voted], minlength=s * g).reshape(s, g)
    margin = _CLEAR_MARGIN * weights.sum(1)
    best = totals.max(1)
    near = totals >= (best - margin)[:, None]  # (S, G) the best group and every group within the margin
    out = group_correct[totals.argmax(1)].astype(np.float64)
    undecided = (near.sum(1) > 1) | (best <= margin)
    undecided &= ~silent
    out[silent] = 0.0
    rows_left = np.flatnonzero(undecided)
    if len(rows_left):
        out[rows_left] = _near_ties(rows[rows_left], labels, group_correct, scores, near[rows_left],
                                    best[rows_left] > margin[rows_left])
    return out


def _near_ties(rows: np.ndarray, labels: np.ndarray, group_correct: np.ndarray, scores: np.ndarray,
               near: np.ndarray, heavy: np.ndarray) -> np.ndarray:
    """Correctness of the subsets :func:`_rows_vote_correct` could not decide by margin."""
    s, k = rows.shape
    g = len(group_correct)
    # each group's multiset of finite scores, as counts per distinct score value
    values, klass = np.unique(scores[rows], return_inverse=True)
    klass = klass.reshape(s, k)
    u = len(values)
    lab = labels[rows]
    member = (lab >= 0) & np.isfinite(scores[rows])
    hist = np.zeros(s * g * u, dtype=np.int32)
    np.add.at(hist, ((np.arange(s)[:, None] * g + lab) * u + klass)[member], 1)
    hist = hist.reshape(s, g, u)
    lead = near.argmax(1)  # one group within the margin
    same = ((hist == hist[np.arange(s), lead][:, None, :]).all(2) | ~near).all(1)
    first = np.where(near, _first_votes(rows, labels, g), np.iinfo(np.int64).max)
    out = group_correct[first.argmin(1)].astype(np.float64)
    for i in np.flatnonzero(~(same & heavy)):
        out[i] = float(subset_vote_correct(labels, group_correct, scores, rows[i]))
    return out


def _subset_vote_at_k(labels: np.ndarray, gc: np.ndarray, ks: Sequence[int], scores: np.ndarray | None,
                      table: SubsetTable) -> AtK:
    n = len(labels)
    values, variances = [], []
    for k, rows, exact in zip(ks, table.rows, table.exact):
        if k == n:  # the one subset is the record's own vote: its rule, called as the record calls it
            p = float(subset_vote_correct(labels, gc, scores, range(n)))
        else:
            p = float(_rows_vote_correct(rows, labels, gc, scores).mean())
        values.append(p)
        variances.append(0.0 if exact else p * (1.0 - p) / (len(rows) - 1))
    return AtK(values, variances, list(table.exact))


def vote_at_k(answers_labels: np.ndarray, group_correct: Sequence[bool], ks: Sequence[int], key: int,
              scores: Sequence[float] | None = None, subsets: int = DEFAULT_SUBSETS,
              table: SubsetTable | None = None, exact_slots: int = EXACT_SLOTS) -> AtK:
    """Expected correctness of the majority vote (``scores=None``: :func:`majority_vote_at_k`,
    exact) or of the RM-weighted vote (:func:`rm_vote_weights` of the subset's scores) on a random
    k-subset, for each k.

    Args:
        answers_labels: (N,) group labels from :func:`answer_labels` (-1: no answer).
        group_correct: (G,) whether each answer group is the gold answer.
        key: keys the random subsets (e.g. ``question_key(seed, id)``).
        subsets: number of random subsets where C(N, k) * k exceeds ``exact_slots`` (all C(N, k)
            subsets are enumerated otherwise, :func:`subset_table`).
        table: the question's :func:`subset_table` for these ``ks`` (built when omitted).

    Returns:
        :class:`AtK`; ``variances`` is the Monte Carlo variance of each value
        (p(1 - p) / (S - 1) over S random subsets), 0 where exact (``exact``).

    Raises:
        ValueError: a k outside 1..N, scores of the wrong length.
    """
    labels = np.asarray(answers_labels, dtype=np.int64)
    n = len(labels)
    _check_ks(n, ks)
    gc = np.asarray(group_correct, dtype=bool)
    if scores is None:
        return majority_vote_at_k(labels, gc, ks, key, subsets)
    if len(scores) != n:
        raise ValueError(f"{n} answers but {len(scores)} scores")
    table = table if table is not None else subset_table(n, ks, key, subsets, exact_slots)
    return _subset_vote_at_k(labels, gc, ks, clean_scores(scores), table)


def first_k_vote(answers_labels: np.ndarray, group_correct: Sequence[bool], ks: Sequence[int]) -> list[float]:
    """Majority-vote correctness (0/1) over the FIRST k samples, for each k (the meaning of
    ``majority_vote@k`` before the subset expectation; kept as ``majority_vote_first@k``)."""
    labels = np.asarray(answers_labels, dtype=np.int64)
    _check_ks(len(labels), ks)
    gc = np.asarray(group_correct, dtype=bool)
    return [float(_rows_vote_correct(np.arange(k)[None, :], labels, gc, None)[0]) for k in ks]
