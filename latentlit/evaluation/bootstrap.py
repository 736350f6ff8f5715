"""Bootstrap confidence intervals over questions (Efron & Tibshirani, 1993, ch. 13: percentile
intervals).

The questions are the resampled unit: each resample draws Q questions with replacement, and
every metric is the mean of its per-question values over the resample. A difference between
two methods (an aggregator minus greedy) uses the same resamples for both (paired bootstrap), so
the questions both get right or both get wrong do not widen its interval. Resamples come from a
seeded generator: the same records and seed give the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BOOTSTRAP_STREAM = 0xB0075  # names the bootstrap stream of a run seed


@dataclass(frozen=True)
class Intervals:
    """Per metric (columns of the value matrix): point estimate and interval bounds."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


def resample_counts(questions: int, resamples: int, seed: int) -> np.ndarray:
    """(B, Q) int: how often each question appears in each of B resamples of Q questions.

    Raises:
        ValueError: no questions or no resamples.
    """
    if questions < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs questions and resamples >= 1, got {questions} and {resamples}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _BOOTSTRAP_STREAM]))
    return rng.multinomial(questions, np.full(questions, 1.0 / questions), size=resamples)


def percentile_intervals(values: np.ndarray, counts: np.ndarray, level: float = 0.95) -> Intervals:
    """Percentile intervals of the mean of each column of ``values`` (Q, K).

    Args:
        counts: (B, Q) from :func:`resample_counts`. level: e.g. 0.95 -> 2.5th and 97.5th
            percentiles of the B resample means.

    Returns:
        :class:`Intervals` with (K,) arrays.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    means = counts @ values / values.shape[0]  # (B, K)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return Intervals(values.mean(0), low, high)


def paired_intervals(values: np.ndarray, baseline: np.ndarray, counts: np.ndarray, level: float = 0.95) -> Intervals:
    """Intervals of mean(values[:, j]) - mean(baseline) over the same resamples (paired).

    Args:
        values: (Q, K). baseline: (Q,), e.g. greedy correctness. counts: (B, Q).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    return percentile_intervals(values - np.asarray(baseline, dtype=np.float64)[:, None], counts, level)


def resample_indices(questions: int, resamples: int, seed: int, stream: int) -> np.ndarray:
    """(B, Q) question indices of B resamples, for statistics that are not means (AURC,
    accuracy of the most confident fraction)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _BOOTSTRAP_STREAM, stream]))
    return rng.integers(0, questions, size=(resamples, questions))
