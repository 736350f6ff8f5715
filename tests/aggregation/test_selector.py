"""The tempered vote, its calibrated confidence and their fitting (latentlit.aggregation.selector)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentlit.aggregation import best_of_n, majority_vote, weighted_vote
from latentlit.aggregation.at_k import answer_labels
from latentlit.aggregation.registry import get, question_view
from latentlit.aggregation.selector import (
    Selector,
    calibrated_confidence,
    fit_calibration,
    fit_selector,
    fit_temperature,
    group_features,
    run_split,
    tempered_vote,
)

ROOT = Path(__file__).resolve().parents[2]
# best-of-N picks "7" (one sample, top score); majority vote picks "3" (three samples)
ANSWERS = ["3", "7", "3", "3", "5"]
SCORES = [0.1, 2.0, 0.3, -0.2, 1.0]


def test_temperature_runs_from_best_of_n_to_majority_vote():
    assert tempered_vote(ANSWERS, SCORES, 0.02).answer == ANSWERS[best_of_n(SCORES)] == "7"
    assert tempered_vote(ANSWERS, SCORES, 50.0).answer == majority_vote(ANSWERS).answer == "3"
    e = [math.exp(s) for s in SCORES]
    assert tempered_vote(ANSWERS, SCORES, 1.0).answer == weighted_vote(ANSWERS, [x / sum(e) for x in e]).answer
    # by hand at tau = 1: W_3 = e^0.1 + e^0.3 + e^-0.2 = 3.2833 < W_7 = e^2 = 7.389: "7"
    assert tempered_vote(ANSWERS, SCORES, 1.0).answer == "7"
    # at tau = 4: W_3 = e^0.025 + e^0.075 + e^-0.05 = 3.0549 > W_7 = e^0.5 = 1.6487: "3"
    assert tempered_vote(ANSWERS, SCORES, 4.0).answer == "3"


def test_group_features_and_confidence_by_hand():
    labels = answer_labels(ANSWERS)
    tau = 2.0
    share, mass, top = group_features(labels, SCORES, 0, tau)  # the "3" group: samples 0, 2, 3
    w = [math.exp(s / tau) for s in SCORES]
    assert share == pytest.approx(math.log(0.6 / 0.4))
    m = (w[0] + w[2] + w[3]) / sum(w)
    assert mass == pytest.approx(math.log(m / (1 - m)))
    assert top == pytest.approx(0.3)
    # a unanimous group: share and mass clipped to 1 - 1/(2N), so logit stays finite
    unanimous = group_features(answer_labels(["4"] * 5), SCORES, 2, tau)
    assert unanimous[0] == unanimous[1] == pytest.approx(math.log(0.9 / 0.1))
    # a sample without an answer is a group of its own
    alone = group_features(answer_labels([None, "4", "4", "4", "4"]), SCORES, 0, tau)
    assert alone[0] == pytest.approx(math.log(0.2 / 0.8)) and alone[2] == pytest.approx(0.1)
    z = 0.5 * share - 1.0 * mass + 2.0 * top + 0.25
    assert calibrated_confidence([share, mass, top], (0.5, -1.0, 2.0, 0.25)) == pytest.approx(1 / (1 + math.exp(-z)))
    assert calibrated_confidence([0, 0, 0], (1, 1, 1, -800.0)) == 0.0  # no overflow


def test_fit_temperature_takes_the_best_and_ties_to_one():
    # question 1 is right only by best-of-N's choice, question 2 only by the majority's
    q1 = (ANSWERS, None, SCORES, "7")
    q2 = (["3", "3", "9"], None, [0.0, 0.1, 5.0], "3")
    tau, acc = fit_temperature([q1], (0.1, 1.0, 10.0))
    assert acc == {0.1: 1.0, 1.0: 1.0, 10.0: 0.0} and tau == 1.0  # tie between 0.1 and 1: the one closest to 1
    tau, acc = fit_temperature([q1, q2], (0.1, 2.0, 10.0))
    # tau = 2: q1 W_7 = e^1 = 2.718 < W_3 = e^.05 + e^.15 + e^-.1 = 3.120 -> wrong; q2 W_9 = e^2.5 = 12.2 > 2.05 -> wrong
    assert acc == {0.1: 0.5, 2.0: 0.0, 10.0: 0.5} and tau == 0.1  # |log 0.1| < |log 10|? equal: the first found
    with pytest.raises(ValueError, match="no questions"):
        fit_temperature([])


def test_fit_calibration_recovers_a_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    true = np.array([1.5, -0.5, 0.8]), -0.3
    p = 1 / (1 + np.exp(-(x @ true[0] + true[1])))
    y = rng.random(4000) < p
    w = fit_calibration(x.tolist(), y.tolist(), l2=0.0)
    assert np.allclose(w[:3], true[0], atol=0.15) and abs(w[3] - true[1]) < 0.15
    assert fit_calibration(x.tolist(), y.tolist(), l2=0.0) == w  # deterministic
    with pytest.raises(ValueError, match="right and wrong"):
        fit_calibration([[0, 0, 0]] * 3, [True] * 3)


def test_selector_file_round_trip_and_errors(tmp_path):
    s = Selector(0.5, (1.0, 2.0, 3.0, 4.0), {"run": "x"})
    s.save(tmp_path / "s.json")
    assert Selector.load(tmp_path / "s.json") == s
    assert s.params() == {"temperature": 0.5, "calibration": [1.0, 2.0, 3.0, 4.0]}
    with pytest.raises(FileNotFoundError, match="scripts/fit_selector.py"):
        Selector.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not JSON"):
        Selector.load(tmp_path / "bad.json")
    (tmp_path / "no_t.json").write_text("{}")
    with pytest.raises(ValueError, match="no_t.json has no 'temperature'"):
        Selector.load(tmp_path / "no_t.json")
    (tmp_path / "neg.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ValueError, match="neg.json: selector temperature=-1 must be"):
        Selector.load(tmp_path / "neg.json")
    (tmp_path / "cal.json").write_text(json.dumps({"temperature": 1, "calibration": [1, 2]}))
    with pytest.raises(ValueError, match="4 finite numbers"):
        Selector.load(tmp_path / "cal.json")


def _record(i, answers, scores, gold):
    return {"id": f"q{i}", "answers": answers, "correct": [a == gold for a in answers], "gold": gold,
            "rm_scores": scores}


def test_registry_aggregator_reads_the_selector_from_the_record():
    record = _record(0, ANSWERS, SCORES, "3")
    agg = get("tempered_vote")
    assert not agg.runs_with({"latent_rm": "rm"}) and agg.runs_with({"latent_rm": "rm", "selector": {"temperature": 1}})
    for tau, answer in ((1.0, "7"), (4.0, "3")):
        record["selector"] = {"temperature": tau, "calibration": None}
        chosen = agg.choose(question_view(record, 0))
        assert chosen == {"answer": answer, "correct": answer == "3"}
        assert agg.at_k(question_view(record, 0), [5]).values[0] == float(answer == "3")


def test_fit_selector_on_records():
    rng = np.random.default_rng(1)
    records = []
    for i in range(60):
        gold = str(i % 7)
        answers = [gold if rng.random() < 0.5 else str(10 + rng.integers(3)) for _ in range(6)]
        scores = [round(float(rng.normal() + (1.0 if a == gold else 0.0)), 5) for a in answers]
        records.append(_record(i, answers, scores, gold))
    s = fit_selector(records, source={"run": "r"})
    assert s.fitted_on["run"] == "r" and s.fitted_on["questions"] == 60
    best = max(s.fitted_on["accuracy_by_temperature"].values())
    assert s.fitted_on["accuracy_by_temperature"][s.temperature] == best
    assert s.calibration is not None and len(s.calibration) == 4
    assert fit_selector(records, calibrate=False).calibration is None
    records[3]["rm_scores"] = None
    with pytest.raises(ValueError, match="no rm_scores .*id 'q3'"):
        fit_selector(records)


def test_run_split_from_config():
    assert run_split({"data": {"init_args": {"problems": {"init_args": {"split": "val"}}}}}) == "val"
    assert run_split({"data": {"init_args": {"problems": {"init_args": {"path": "data/gsm_test.json"}}}}}) == "test"
    assert run_split({"data": {"init_args": {"problems": {"init_args": {"path": "data/gsm_valid.json"}}}}}) == "val"
    assert run_split({}) is None


def test_fit_script_refuses_a_test_run_before_reading_its_labels(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"data": {"init_args": {"problems": {"init_args": {"split": "test"}}}}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    # records no reader could parse: a refusal that read them would fail with another error
    (run / "predictions.jsonl").write_text("not json\nnot json\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts/fit_selector.py"), str(run), "--out", str(tmp_path / "s.json")],
                          capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k != "LATENTLIT_DEBUG"})
    assert done.returncode == 2
    assert "ran on the test split: fit the selector on a validation run" in done.stderr
    assert not (tmp_path / "s.json").exists()
    # a run re-scored from a test run (latentlit rescore writes no config.yaml): its parent tells the split
    derived = tmp_path / "derived"
    derived.mkdir()
    (derived / "run.json").write_text(json.dumps({"rescored_from": {"directory": str(run)}}))
    (derived / "predictions.jsonl").write_text("not json\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts/fit_selector.py"), str(derived), "--out", str(tmp_path / "s.json")],
                          capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k != "LATENTLIT_DEBUG"})
    assert done.returncode == 2 and "derived ran on the test split" in done.stderr
