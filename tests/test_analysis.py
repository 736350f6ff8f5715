import pytest

from latentlit.analysis import vote_breakdown


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
