"""Aggregation: majority vote, weighted vote, best-of-N, random pick."""

from __future__ import annotations

import math

import pytest

from latentlit.aggregation import (
    VoteResult,
    best_of_n,
    count_nonfinite,
    group_answers,
    majority_vote,
    random_pick,
    ranking_scores,
    rm_vote_weights,
    weighted_vote,
)
from latentlit.aggregation.vote import vote_choice

NAN, INF = math.nan, math.inf


def test_majority_vote_winner_and_share():
    r = majority_vote(["3", "5", "5", "7", "5"])
    assert r == VoteResult("5", 1, pytest.approx(0.6), 3)


def test_majority_tie_goes_to_earliest_first_occurrence():
    assert majority_vote(["4", "9", "9", "4"]).answer == "4"
    assert majority_vote(["4", "9", "9", "4"]).index == 0
    r = majority_vote(["9", "4", "4", "9", "1"])
    assert (r.answer, r.index) == ("9", 0)
    # the group's first occurrence decides, not where its last vote came
    r = majority_vote([None, "2", "1", "1", "2"])
    assert (r.answer, r.index, r.share) == ("2", 1, pytest.approx(0.4))


def test_none_never_votes():
    r = majority_vote([None, None, None])
    assert r == VoteResult(None, -1, 0.0, 0)
    assert majority_vote([]) == VoteResult(None, -1, 0.0, 0)
    r = majority_vote([None, None, None, "8"])
    assert (r.answer, r.index, r.distinct) == ("8", 3, 1)
    assert r.share == pytest.approx(0.25)  # None answers count in the total


def test_numeric_equality_votes_together():
    r = majority_vote(["18", "7", "18.0", "7", "18.00"])
    assert (r.answer, r.index, r.distinct) == ("18", 0, 2)
    assert r.share == pytest.approx(0.6)
    assert group_answers(["18", None, "18.0", "7", "7.0", "18"]) == [[0, 2, 5], [3, 4]]


def test_weighted_vote():
    answers = ["1", "2", "2", None, "1"]
    r = weighted_vote(answers, [0.5, 0.1, 0.2, 0.9, 0.1])
    assert (r.answer, r.index, r.distinct) == ("1", 0, 2)
    assert r.share == pytest.approx(0.6 / 1.8)
    r = weighted_vote(answers, [0.1, 0.5, 0.5, 0.0, 0.1])
    assert (r.answer, r.index) == ("2", 1)
    assert r.share == pytest.approx(1.0 / 1.2)
    # weight ties -> earliest group
    assert weighted_vote(["a1", "2", "1"], [0.0, 1.0, 1.0]).answer == "2"
    assert weighted_vote(["3", "2"], [1.0, 1.0]).answer == "3"
    # all-zero weights: no division by zero, and no answer (a zero-weight group cannot win)
    assert weighted_vote(["3", "2"], [0.0, 0.0]) == VoteResult(None, -1, 0.0, 2)
    assert weighted_vote(["3", "2"], [0.0, 1e-300]) == VoteResult("2", 1, 1.0, 2)


def test_weighted_vote_errors():
    with pytest.raises(ValueError, match="weights"):
        weighted_vote(["1", "2"], [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        weighted_vote(["1", "2"], [1.0, -0.5])


def test_best_of_n():
    assert best_of_n([0.1, 0.9, 0.3]) == 1
    assert best_of_n([0.5, 0.9, 0.9, 0.2]) == 1  # tie -> earliest
    assert best_of_n([-3.0, -1.0, -1.0]) == 1
    assert best_of_n([7.0]) == 0
    assert best_of_n([float("-inf"), -1e9]) == 1
    with pytest.raises(ValueError):
        best_of_n([])


def test_random_pick():
    for n in (1, 2, 5, 64):
        picks = [random_pick(n, key) for key in range(300)]
        assert all(0 <= p < n for p in picks)
        assert picks == [random_pick(n, key) for key in range(300)]  # deterministic
        if n <= 5:
            assert set(picks) == set(range(n))  # every index reachable
    counts = [sum(random_pick(4, key) == i for key in range(4000)) for i in range(4)]
    assert all(abs(c - 1000) < 120 for c in counts), counts
    assert random_pick(10, -12345) == random_pick(10, -12345)
    with pytest.raises(ValueError):
        random_pick(0, 1)


# ---------------------------------------------------------------- non-finite scores: one policy
def test_best_of_n_never_picks_a_non_finite_score():
    assert best_of_n([NAN, 1.0, 2.0]) == 2  # was 0: NaN compared False against everything
    assert best_of_n([2.0, NAN, 1.0]) == 0
    assert best_of_n([INF, 1.0, 0.5]) == 1  # +inf (an fp16 overflow) is no evidence either
    assert best_of_n([-INF, -5.0]) == 1
    assert best_of_n([NAN, NAN]) is None  # nothing the RM said anything about: no pick
    assert best_of_n([INF, -INF, NAN]) is None
    assert ranking_scores([NAN, INF, -INF, 3.0]) == [-INF, -INF, -INF, 3.0]
    assert count_nonfinite([NAN, INF, -INF, 3.0, 0.0]) == 3


def test_rm_vote_weights_drop_non_finite_scores():
    w = rm_vote_weights([NAN, 0.0, math.log(3.0), INF])
    assert w == pytest.approx([0.0, 0.25, 0.75, 0.0])
    assert rm_vote_weights([NAN, INF]) == [0.0, 0.0]
    assert sum(rm_vote_weights([1000.0, 999.0, -INF])) == pytest.approx(1.0)  # no overflow


def test_weighted_vote_with_non_finite_weights_and_scores():
    # a NaN weight used to make the share NaN; now it carries no weight
    r = weighted_vote(["1", "2", "2"], [NAN, 0.3, 0.2])
    assert (r.answer, r.index, r.distinct) == ("2", 1, 2)
    assert r.share == pytest.approx(1.0)
    r = weighted_vote(["1", "2"], [INF, 0.5])
    assert (r.answer, r.share) == ("2", pytest.approx(1.0))
    assert weighted_vote(["1", "2"], [NAN, NAN]) == VoteResult(None, -1, 0.0, 2)
    # from scores: the NaN-scored trajectory with the majority answer does not decide the vote
    answers = ["7", "7", "7", "9"]
    r = weighted_vote(answers, rm_vote_weights([NAN, NAN, NAN, -2.0]))
    assert (r.answer, r.share) == ("9", pytest.approx(1.0))


# ---------------------------------------------------------------- one rule (issue 18, item 4)
def test_vote_choice_ties_equal_multisets_of_weights_exactly():
    # left to right, 0.1 + 0.2 + 0.3 = 0.6000000000000001 but 0.2 + 0.3 + 0.1 = 0.6: a plain sum
    # would give the second group the vote; their exact sums are equal, so the earlier group wins
    assert sum([0.1, 0.2, 0.3]) > sum([0.2, 0.3, 0.1])
    weights = [0.2, 0.1, 0.3, 0.2, 0.3, 0.1]
    answers = ["9", "7", "9", "7", "7", "9"]  # "9": 0.2, 0.3, 0.1; "7": 0.1, 0.2, 0.3
    r = weighted_vote(answers, weights)
    assert (r.answer, r.index) == ("9", 0) and r.share == pytest.approx(0.5)
    assert vote_choice([[1, 3, 4], [0, 2, 5]], weights) == 1  # the group whose first vote is earlier
    assert vote_choice([[0, 2, 5], [1, 3, 4]], weights) == 0
    assert vote_choice([[0], [1]], [0.0, 0.0]) is None and vote_choice([], []) is None


def test_issue_example_weighted_vote_record():
    scores = [1.86683, 0.38004, -2.18914, -2.18914, 1.86683, 0.38004]
    r = weighted_vote(["1", "1", "1", "2", "2", "2"], rm_vote_weights(scores))
    assert (r.answer, r.index, r.share) == ("1", 0, 0.5)
