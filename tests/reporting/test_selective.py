"""Selective prediction: risk-coverage with ties, AURC, ECE, and the confidences of a record."""

from __future__ import annotations

import numpy as np
import pytest

from latentlit.reporting.selective import (COVERAGE_GRID, answered_accuracy, aurc, calibration, confidences,
                                           risk_coverage, selective_summary)
from latentlit.reporting.values import question_view


def test_risk_coverage_without_and_with_ties():
    conf = [0.9, 0.8, 0.7, 0.6]
    ok = [True, False, True, False]
    np.testing.assert_allclose(risk_coverage(conf, ok), [1.0, 0.5, 2 / 3, 0.5])
    # ties: the two 0.8s are answered in random order -> each counts 1/2
    np.testing.assert_allclose(risk_coverage([0.9, 0.8, 0.8, 0.1], [True, True, False, False]),
                               [1.0, 0.75, 2 / 3, 0.5])
    # brute force over every order of the tie group gives the same expectation
    orders = [[1.0, 1.0, 2 / 3, 0.5], [1.0, 0.5, 2 / 3, 0.5]]
    np.testing.assert_allclose(risk_coverage([0.9, 0.8, 0.8, 0.1], [True, True, False, False]), np.mean(orders, 0))
    # a constant confidence answers in random order: the overall accuracy at every coverage
    np.testing.assert_allclose(risk_coverage([0.5] * 4, ok), [0.5] * 4)
    with pytest.raises(ValueError, match="as many confidences"):
        risk_coverage([0.1], [True, False])
    with pytest.raises(ValueError, match="finite"):
        risk_coverage([float("nan")], [True])


def test_aurc_and_answered_accuracy():
    conf, ok = [0.9, 0.8, 0.7, 0.6], [True, False, True, False]
    assert aurc(conf, ok) == pytest.approx(np.mean([0.0, 0.5, 1 / 3, 0.5]))
    assert answered_accuracy(conf, ok, 0.5) == pytest.approx(0.5)
    assert answered_accuracy(conf, ok, 0.75) == pytest.approx(2 / 3)
    assert answered_accuracy(conf, ok, 0.01) == 1.0  # at least one question
    perfect = aurc(ok, ok)  # correct answers first
    assert perfect == pytest.approx(np.mean([0, 0, 1 / 3, 0.5]))


def test_ece_with_ten_equal_width_bins():
    conf = [0.95, 0.95, 0.55, 0.05, 1.0]
    ok = [True, False, True, False, True]
    ece, bins = calibration(conf, ok)
    # bins: [0.9, 1.0] holds 0.95, 0.95, 1.0 (acc 2/3, conf 0.9667); [0.5, 0.6): acc 1, conf 0.55; [0, 0.1): acc 0, conf 0.05
    expected = 3 / 5 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3) + 1 / 5 * abs(1 - 0.55) + 1 / 5 * abs(0 - 0.05)
    assert ece == pytest.approx(expected)
    assert len(bins) == 10 and [b["count"] for b in bins] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 3]
    assert bins[1]["accuracy"] is None and bins[9]["accuracy"] == pytest.approx(2 / 3)
    assert calibration([0.7] * 10, [True] * 7 + [False] * 3)[0] == pytest.approx(0.0)


def test_selective_summary_and_its_intervals():
    rng = np.random.default_rng(0)
    conf = rng.random(400)
    ok = rng.random(400) < conf  # calibrated by construction
    s = selective_summary(conf, ok, indices=rng.integers(0, 400, (300, 400)))
    assert s["accuracy_all"] == pytest.approx(ok.mean())
    assert s["gain@50%"] == pytest.approx(s["accuracy@50%"] - ok.mean()) and s["gain@50%"] > 0.15
    lo, hi = s["gain@50%_interval"]
    assert lo <= s["gain@50%"] <= hi
    assert s["aurc_interval"][0] <= s["aurc"] <= s["aurc_interval"][1]
    assert s["ece"] < 0.08 and s["eaurc"] > 0
    assert s["risk_coverage"]["coverage"] == COVERAGE_GRID
    assert s["risk_coverage"]["accuracy"][-1] == pytest.approx(ok.mean())


def test_confidences_from_records():
    records = [
        {"id": "a", "answers": ["1", "1", "2", None], "correct": [True, True, False, False], "gold": "1",
         "vote_share": 0.5, "majority_vote": {"answer": "1", "correct": True},
         "rm_scores": [0.0, 0.0, float(np.log(2.0)), 0.0], "best_of_n": {"answer": "2", "correct": False, "index": 2},
         "weighted_vote": {"answer": "1", "correct": True}},
        {"id": "b", "answers": ["3", "3", "3", "3"], "correct": [False] * 4, "gold": "4", "vote_share": 1.0,
         "majority_vote": {"answer": "3", "correct": False}, "rm_scores": [1.0, float("nan"), 0.0, 0.0],
         "best_of_n": {"answer": "3", "correct": False, "index": 0}, "weighted_vote": {"answer": "3", "correct": False}},
    ]
    views = [question_view(r, seed=0) for r in records]
    got = confidences(records, views)
    assert sorted(got) == ["rm", "vote", "vote+rm"]
    np.testing.assert_allclose(got["vote"][0], [0.5, 1.0])
    # question a: softmax weights 1/5, 1/5, 2/5, 1/5 -> mass on best-of-N's "2" = 0.4; on "1" = 0.4
    np.testing.assert_allclose(got["rm"][0], [0.4, 1.0])  # b: a NaN score carries no weight, all mass on "3"
    np.testing.assert_allclose(got["vote+rm"][0], [0.5 * (0.5 + 0.4), 1.0])
    assert got["vote"][1].tolist() == [True, False] and got["rm"][1].tolist() == [False, False]
    # without a LatentRM only the vote share exists
    plain = [{k: v for k, v in r.items() if k not in ("rm_scores", "best_of_n", "weighted_vote")} for r in records]
    assert sorted(confidences(plain, [question_view(r, 0) for r in plain])) == ["vote"]
