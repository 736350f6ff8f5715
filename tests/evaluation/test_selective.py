"""Selective prediction: risk-coverage with ties, AURC, ECE, and the confidences of a record."""

from __future__ import annotations

import numpy as np
import pytest

from latentlit.aggregation.registry import question_view
from latentlit.evaluation.selective import (
    COVERAGE_GRID,
    answered_accuracy,
    aurc,
    calibration,
    confidences,
    risk_coverage,
    selective_summary,
)


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


# 16 LatentRM scores (5 decimals, as records store them) whose softmax weights, each divided by
# their sum and added back up, give 1.0000000000000002 rather than 1
NOISY_SCORES = [4.08184, -5.11133, 0.8362, -1.13554, -0.9053, -0.43119, -4.03997, -0.46386, -1.73043, 6.646,
                0.45157, -0.70526, -0.56257, -1.33609, -2.1103, -0.7816]


def _unanimous_record(qid: str, scores: list[float], correct: bool) -> dict:
    n = len(scores)
    return {"id": qid, "answers": ["7"] * n, "correct": [correct] * n, "gold": "7" if correct else "8",
            "vote_share": 1.0, "majority_vote": {"answer": "7", "correct": correct}, "rm_scores": scores,
            "best_of_n": {"answer": "7", "correct": correct, "index": int(np.argmax(scores))},
            "weighted_vote": {"answer": "7", "correct": correct}}


def test_a_unanimous_question_has_confidence_exactly_one_for_every_kind():
    w = np.exp(np.array(NOISY_SCORES) - max(NOISY_SCORES))
    assert (w / w.sum()).sum() != 1.0  # the normalise-then-sum mass is off by float noise here
    records = [_unanimous_record("a", NOISY_SCORES, True),
               # a NaN score carries no weight: still all the mass on the one answer
               _unanimous_record("b", NOISY_SCORES[:15] + [float("nan")], False)]
    got = confidences(records, [question_view(r, seed=0) for r in records])
    assert sorted(got) == ["rm", "vote", "vote+rm"]
    for name, (conf, _) in got.items():
        assert conf.tolist() == [1.0, 1.0], name  # exactly, not approximately


def test_values_that_differ_by_float_noise_tie_in_every_figure():
    noisy = [1.0000000000000002, 1.0, 0.9999999999999998, 0.5]
    ok = [True, True, False, False]
    # one tie group of three (mean correctness 2/3), then 0.5: the accuracy curve is 2/3, 2/3, 2/3, 2/4
    np.testing.assert_allclose(risk_coverage(noisy, ok), [2 / 3, 2 / 3, 2 / 3, 0.5])
    # AURC = mean risk = (1/3 + 1/3 + 1/3 + 1/2) / 4; ranking by the raw floats would give
    # (0 + 0 + 1/3 + 1/2) / 4 = 0.2083
    assert aurc(noisy, ok) == pytest.approx(1.5 / 4, abs=1e-15)
    assert answered_accuracy(noisy, ok, 0.5) == pytest.approx(2 / 3)
    # the bins read the same rounded values: 0.09999999999999998 bins with 0.1, not below it
    ece, bins = calibration([0.09999999999999998, 0.1], [False, False])
    assert [b["count"] for b in bins][:2] == [0, 2] and bins[1]["confidence"] == 0.1
    assert ece == pytest.approx(0.1)
    assert selective_summary(noisy, ok)["aurc"] == pytest.approx(1.5 / 4, abs=1e-15)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        risk_coverage([1.5, 0.2], [True, False])


def test_aurc_of_unanimous_questions_through_the_records():
    """Three unanimous questions (two right, one wrong) and one split 2-2: the unanimous ones
    form one tie group at the top under each confidence, whatever their scores' float noise."""
    split = {"id": "d", "answers": ["1", "1", "2", "2"], "correct": [False, False, True, True], "gold": "2",
             "vote_share": 0.5, "majority_vote": {"answer": "1", "correct": False}, "rm_scores": [0.0, 0.0, 0.0, 0.0],
             "best_of_n": {"answer": "1", "correct": False, "index": 0}, "weighted_vote": {"answer": "1", "correct": False}}
    records = [_unanimous_record("a", NOISY_SCORES, True), _unanimous_record("b", NOISY_SCORES[::-1], True),
               _unanimous_record("c", [0.3] * 16, False), split]
    got = confidences(records, [question_view(r, seed=0) for r in records])
    for name, (conf, ok) in got.items():
        assert conf.tolist()[:3] == [1.0, 1.0, 1.0] and conf[3] == 0.5, name
        # curve: 2/3 for the tie group of three, then 2/4 -> AURC = (3 x 1/3 + 1/2) / 4
        assert aurc(conf, ok) == pytest.approx(0.375, abs=1e-15), name


def test_values_that_differ_above_the_tie_precision_keep_their_order():
    from latentlit.evaluation.selective import CONFIDENCE_DECIMALS, tie_values

    assert CONFIDENCE_DECIMALS == 12
    apart = [1.0, 1.0 - 1e-11, 0.5]  # 1e-11 is above the rounding: two groups, not one
    assert len(set(tie_values(apart).tolist())) == 3
    ok = [False, True, True]
    # the more confident (wrong) answer first: risk 1, then 1/2, then 1/3 -> AURC (1 + 1/2 + 1/3) / 3;
    # were the first two tied the expected risks would be 1/2, 1/2, 1/3 -> AURC 4/9
    assert aurc(apart, ok) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-15)
    assert aurc([1.0, 1.0 - 1e-14, 0.5], ok) == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3, abs=1e-15)
