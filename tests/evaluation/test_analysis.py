import pytest

from latentlit.evaluation.analysis import vote_breakdown


def _record(qid, answers, gold, greedy_correct):
    return {"id": qid, "answers": answers, "correct": [a == gold for a in answers], "gold": gold,
            "greedy": {"correct": greedy_correct}}


def test_vote_breakdown_counts_flips_and_wrong_answer_spread():
    records = [
        _record("fix", ["5", "5", "7", "5"], "5", False),     # greedy wrong, vote right
        _record("break", ["7", "7", "5", "8"], "5", True),    # greedy right, vote wrong (7 wins)
        _record("plural", ["5", "7", "8", None], "5", False), # 1 of 4 right, yet the plurality: tie -> first
        _record("same", ["5", "5", "5", "5"], "5", True),
    ]
    b = vote_breakdown(records, k=4)
    assert (b["greedy"], b["majority"]) == (0.5, 0.75)
    assert (b["wrong_to_right"], b["right_to_wrong"]) == (2, 1)
    assert b["vote_right_iff_half_right"] == 3  # "plural" is right with 1/4 right samples
    assert b["mixed"] == 3
    assert b["distinct_wrong"] == pytest.approx((1 + 2 + 3) / 3)
    assert b["top_wrong_share"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    # the first k samples only
    assert vote_breakdown(records, k=1)["majority"] == 0.75


def test_vote_breakdown_rejects_short_records():
    with pytest.raises(ValueError, match="'a' has 2 samples, fewer than k=4"):
        vote_breakdown([_record("a", ["1", "2"], "1", True)], k=4)
    with pytest.raises(ValueError, match="k >= 1"):
        vote_breakdown([], k=4)


def test_vote_breakdown_script_names_the_first_k_vote_and_its_metrics_key(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    import numpy as np

    from latentlit.aggregation import majority_vote
    from latentlit.aggregation.at_k import answer_labels, vote_at_k

    # first two samples agree on a wrong answer, the other two are right: first-2 vote and the
    # expectation over random 2-subsets differ
    records = [_record("a", ["7", "7", "5", "5"], "5", True), _record("b", ["5", "5", "5", "8"], "5", False)]
    for i, r in enumerate(records):
        r["index"] = i
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    first = sum(majority_vote(r["answers"][:2]).answer == r["gold"] for r in records) / 2
    subsets = []
    for r in records:
        labels = answer_labels(r["answers"])
        group_correct = [any(c for lab, c in zip(labels, r["correct"]) if lab == g) for g in range(int(labels.max()) + 1)]
        subsets.append(vote_at_k(labels, np.array(group_correct), [2], 0).values[0])
    expected = sum(subsets) / 2
    assert first == 0.5 and expected != first
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"majority_vote@2": expected, "majority_vote_first@2": first}}))
    spec = importlib.util.spec_from_file_location("vote_breakdown_script",
                                                  Path(__file__).resolve().parents[2] / "scripts" / "vote_breakdown.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path), "--k", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == ("2 questions, k = 2: greedy 50.0%, majority vote over the first 2 samples 50.0% "
                        "(0.0 points; metrics.json majority_vote_first@2)")
    assert lines[1] == (f"  metrics.json majority_vote@2, the expected vote over random 2-subsets of the samples: "
                        f"{100 * expected:.1f}%")
    assert err == ""
    # records that do not match their metrics.json are flagged
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"majority_vote_first@2": 0.75}}))
    assert script.main([str(tmp_path), "--k", "2"]) == 0
    assert "majority_vote_first@2 = 0.75 but these records give 0.500000" in capsys.readouterr().err
