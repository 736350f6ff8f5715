"""Bootstrap intervals over questions: deterministic, cover the estimate, shrink with n, paired."""

from __future__ import annotations

import numpy as np
import pytest

from latentlit.evaluation.bootstrap import paired_intervals, percentile_intervals, resample_counts, resample_indices


def _values(q: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.random(q) < p for p in (0.2, 0.5, 0.9)], axis=1).astype(float)  # (Q, 3) 0/1 accuracies


def test_resamples_are_seeded_multinomial_counts():
    a, b = resample_counts(50, 300, seed=1), resample_counts(50, 300, seed=1)
    assert a.shape == (300, 50) and (a == b).all() and (a.sum(1) == 50).all()
    assert not (resample_counts(50, 300, seed=2) == a).all()
    # each question appears once per resample on average
    assert a.mean() == pytest.approx(1.0) and abs(a.mean(0) - 1).max() < 0.3
    with pytest.raises(ValueError, match="questions and resamples"):
        resample_counts(0, 10, seed=0)
    idx = resample_indices(20, 5, seed=0, stream=1)
    assert idx.shape == (5, 20) and idx.min() >= 0 and idx.max() < 20
    assert (idx == resample_indices(20, 5, seed=0, stream=1)).all()


def test_intervals_cover_the_point_estimate_and_shrink_with_n():
    widths = []
    for q in (50, 200, 800):
        values = np.tile(_values(50), (q // 50, 1))  # the same questions, repeated: only n changes
        iv = percentile_intervals(values, resample_counts(q, 2000, seed=0))
        np.testing.assert_allclose(iv.estimate, values.mean(0))
        assert (iv.low <= iv.estimate).all() and (iv.estimate <= iv.high).all()
        widths.append(iv.high - iv.low)
    # width ~ 1/sqrt(n): x4 questions -> about half the width
    for small, big in zip(widths, widths[1:]):
        assert (big < 0.65 * small).all() and (big > 0.35 * small).all()
    # a metric with no spread has a zero-width interval at its value
    const = percentile_intervals(np.ones((30, 1)), resample_counts(30, 500, seed=0))
    assert const.low[0] == const.high[0] == 1.0


def test_interval_of_a_bernoulli_mean_matches_the_normal_approximation():
    values = np.zeros((400, 1))
    values[:120] = 1.0  # p = 0.3, standard error sqrt(0.21 / 400) = 0.0229
    iv = percentile_intervals(values, resample_counts(400, 4000, seed=3))
    assert iv.low[0] == pytest.approx(0.3 - 1.96 * 0.0229, abs=0.006)
    assert iv.high[0] == pytest.approx(0.3 + 1.96 * 0.0229, abs=0.006)


def test_paired_difference_is_narrower_than_unpaired_and_exact_for_equal_columns():
    rng = np.random.default_rng(5)
    greedy = (rng.random(300) < 0.5).astype(float)
    # a method that agrees with greedy except on 15 questions it fixes
    method = greedy.copy()
    method[np.flatnonzero(greedy == 0)[:15]] = 1.0
    counts = resample_counts(300, 2000, seed=0)
    paired = paired_intervals(method[:, None], greedy, counts)
    assert paired.estimate[0] == pytest.approx(15 / 300)
    assert paired.low[0] > 0  # always >= 0 per resample; the interval excludes 0 when 15 questions move
    a = percentile_intervals(method[:, None], counts)
    b = percentile_intervals(greedy[:, None], counts)
    unpaired_width = np.hypot(a.high - a.low, b.high - b.low)[0]
    assert paired.high[0] - paired.low[0] < 0.5 * unpaired_width
    same = paired_intervals(greedy[:, None], greedy, counts)
    assert same.low[0] == same.high[0] == same.estimate[0] == 0.0
