"""Selection aggregators: best-of-N by LatentRM score, and random selection (baseline)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from latentlit.aggregation.scores import ranking_scores
from latentlit.rng import hash_ints


def score_order(scores: Sequence[float]) -> list[int]:
    """Sample indices best first, the one order of best-of-N (record and estimator): by score
    descending, ties to the earlier sample, non-finite scores (ranked as ``-inf``,
    :mod:`latentlit.aggregation.scores`) last."""
    ranked = ranking_scores(scores)
    return sorted(range(len(ranked)), key=lambda i: (-ranked[i], i))


def best_of_n(scores: Sequence[float]) -> int | None:
    """Index of the highest-scored trajectory (paper Sec. 3.2, best-of-N): the first of
    :func:`score_order`, so ties go to the earliest.

    Non-finite scores (NaN, +-inf) rank as ``-inf`` and never win
    (:mod:`latentlit.aggregation.scores`).

    Returns:
        The index, or None when no score is finite (no trajectory can be chosen).

    Raises:
        ValueError: empty ``scores``.
    """
    if len(scores) == 0:
        raise ValueError("best_of_n needs at least one score")
    best = score_order(scores)[0]
    return best if math.isfinite(float(scores[best])) else None


def random_pick(n: int, key: int) -> int:
    """A uniformly random index in [0, n) keyed by ``key`` (seeded per question, reproducible)."""
    if n <= 0:
        raise ValueError("random_pick needs n >= 1")
    return (hash_ints(key, 0x5E1) & 0x7FFFFFFF) % n
