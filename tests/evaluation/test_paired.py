"""Paired comparison of two runs: the difference of one metric over the same questions, with a
paired bootstrap interval (``latentlit.evaluation.paired``, ``compare_runs.py --paired``)."""

from __future__ import annotations

import json
import math
import random

import pytest

from latentlit.evaluation.paired import paired_difference, parse_metric, question_metric

N = 4


def _run(q: int, seed: int, p_right: float) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(q):
        correct = [rng.random() < p_right for _ in range(N)]
        answers = ["5" if c else rng.choice(["6", "7"]) for c in correct]
        out.append({"index": i, "id": f"q{i}", "gold": "5", "answers": answers, "correct": correct,
                    "greedy": {"answer": answers[0], "correct": correct[0]},
                    "rm_scores": [round(rng.gauss(0, 1), 5) for _ in range(N)]})
    return out


def test_the_difference_is_that_of_the_two_runs_means_and_its_interval_holds_it():
    a, b = _run(200, 0, 0.4), _run(200, 1, 0.6)
    d = paired_difference(a, b, "greedy", seed_a=0, seed_b=0)
    greedy_a = sum(r["greedy"]["correct"] for r in a) / 200
    greedy_b = sum(r["greedy"]["correct"] for r in b) / 200
    assert (d["a"], d["b"], d["questions"]) == (greedy_a, greedy_b, 200)
    assert math.isclose(d["diff"], greedy_b - greedy_a) and d["low"] < d["diff"] < d["high"]
    # best-of-N at k = N by hand: the correctness of the top-scored trajectory
    best = lambda r: r["correct"][max(range(N), key=lambda j: r["rm_scores"][j])]  # noqa: E731
    d = paired_difference(a, b, "best_of_n@4")
    assert math.isclose(d["diff"], (sum(map(best, b)) - sum(map(best, a))) / 200)
    # coverage@1 is the mean sample correctness
    d = paired_difference(a, b, "coverage@1", "coverage@4")
    assert math.isclose(d["a"], sum(sum(r["correct"]) / N for r in a) / 200)
    assert math.isclose(d["b"], sum(any(r["correct"]) for r in b) / 200)


def test_pairing_matches_questions_by_id_and_shares_the_resamples():
    a = _run(100, 0, 0.5)
    shuffled = list(reversed(a))  # the same run read in another order: no difference at all
    d = paired_difference(a, shuffled, "majority_vote@4")
    assert (d["diff"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
    # a paired interval is narrower than the two runs' own intervals would suggest: B = A with
    # three questions flipped from wrong to right
    b = json.loads(json.dumps(a))
    flipped = [r for r in b if not r["greedy"]["correct"]][:3]
    for r in flipped:
        r["greedy"]["correct"] = True
    d = paired_difference(a, b, "greedy")
    # (unpaired, two runs of 100 questions near 50% would give an interval about 0.28 wide)
    assert math.isclose(d["diff"], 0.03) and d["low"] >= 0.0 and d["high"] <= 0.08


def test_runs_of_other_questions_or_metrics_they_cannot_give_are_refused():
    a, b = _run(10, 0, 0.5), _run(11, 1, 0.5)
    with pytest.raises(ValueError, match=r"different questions: 0 only in A .*, 1 only in B \(e.g. \['q10'\]\)"):
        paired_difference(a, b, "greedy")
    b = _run(10, 1, 0.5)
    b[3]["gold"] = "6"
    with pytest.raises(ValueError, match=r"question 'q3' has gold '5' in A and '6' in B"):
        paired_difference(a, b, "greedy")
    # which run cannot give the metric is named: a run without a LatentRM has no best-of-N
    unscored = [{k: v for k, v in r.items() if k != "rm_scores"} for r in _run(10, 1, 0.5)]
    with pytest.raises(KeyError, match=r"run B \(second\): question q0: aggregator best_of_n needs 'rm_scores'.*rescore"):
        paired_difference(a, unscored, "best_of_n@4", names=("A (first)", "B (second)"))
    with pytest.raises(ValueError, match=r"run A: metric coverage@8: the run has N = 4"):
        paired_difference(a, a, "coverage@8")
    record = a[0]
    with pytest.raises(ValueError, match=r"N = 4 samples per question"):
        question_metric(record, "coverage@8", 0)
    with pytest.raises(ValueError, match=r"beam_search is measured at k = N = 4 only"):
        question_metric(record, "beam_search@2", 0)
    with pytest.raises(ValueError, match=r"no aggregator 'bestof'"):
        question_metric(record, "bestof@4", 0)
    for bad in ("best_of_n", "best_of_n@0", "@4", "best_of_n@x"):
        with pytest.raises(ValueError, match="expected greedy or <name>@<k>"):
            parse_metric(bad)


def test_compare_runs_paired_prints_the_difference(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).resolve().parents[2] / "scripts" / "compare_runs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    dirs = []
    for name, seed, p in (("a", 0, 0.4), ("b", 1, 0.6)):
        d = tmp_path / name
        d.mkdir()
        records = _run(50, seed, p)
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (d / "metrics.json").write_text(json.dumps({"counts": {"questions": 50}, "config": {"seed": 0}, "metrics": {}}))
        dirs.append(str(d))
    expected = paired_difference(_run(50, 0, 0.4), _run(50, 1, 0.6), "greedy")
    assert script.main([*dirs, "--paired", "greedy"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"greedy of B (b) minus greedy of A (a): {100 * expected['diff']:+.1f} points [")
    assert line.endswith("paired bootstrap over 50 questions, 2000 resamples, 95%)")
    with pytest.raises(ValueError, match=r"--paired compares two runs \(A then B\), got 1 directories"):
        script.main([dirs[0], "--paired", "greedy"])
