"""Aggregators at k < N: every estimator against brute force over all k-subsets."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from latentlit.aggregation import best_of_n, majority_vote, rm_vote_weights, weighted_vote
from latentlit.aggregation.at_k import (
    DEFAULT_SUBSETS,
    _rows_vote_correct,
    answer_labels,
    best_of_n_at_k,
    clean_scores,
    first_k_vote,
    majority_vote_at_k,
    random_pick_at_k,
    score_ranking,
    subset_masks,
    subset_table,
    subset_vote_correct,
    vote_at_k,
)
from latentlit.aggregation.registry import QuestionView
from latentlit.data.answers import answers_match
from latentlit.evaluation.metrics import coverage_ks, majority_at_k


def _softmax(xs):
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [x / sum(e) for x in e]


def _brute(n, k, pick_correct):
    subsets = list(itertools.combinations(range(n), k))
    return sum(pick_correct(list(s)) for s in subsets) / len(subsets)


def _case(rng: random.Random, n: int, gold: str = "2"):
    answers = [rng.choice(["1", "2", "2.0", "3", None]) for _ in range(n)]
    scores = [float(rng.randint(0, 4)) for _ in range(n)]  # integers: many ties
    correct = [answers_match(a, gold) for a in answers]
    return answers, scores, correct


@pytest.mark.parametrize("n", range(1, 8))
def test_best_of_n_at_k_equals_brute_force(n):
    rng = random.Random(n)
    for _ in range(6):
        answers, scores, correct = _case(rng, n)
        ks = list(range(1, n + 1))
        got = best_of_n_at_k(scores, correct, ks)
        for k, value in zip(ks, got.values):
            expected = _brute(n, k, lambda s: correct[s[best_of_n([scores[i] for i in s])]])
            assert value == pytest.approx(expected, abs=1e-12), (answers, scores, k)
        assert got.variances == [0.0] * n
        # at k = N it is best-of-N itself
        assert got.values[-1] == float(correct[best_of_n(scores)])


def test_best_of_n_at_k_larger_case_and_non_finite_scores():
    rng = random.Random(7)
    scores = [rng.gauss(0, 1) for _ in range(10)]
    correct = [rng.random() < 0.4 for _ in range(10)]
    for k in (1, 3, 5, 10):
        expected = _brute(10, k, lambda s: correct[max(s, key=lambda i: (scores[i], -i))])
        assert best_of_n_at_k(scores, correct, [k]).values[0] == pytest.approx(expected, abs=1e-12)
    # non-finite scores rank last, and a subset with no finite score gives no answer
    scores = [float("nan"), 1.0, float("inf"), 0.5, float("nan")]
    assert score_ranking(scores).tolist() == [1, 3, 0, 2, 4]
    correct = [True, False, True, True, True]

    def pick(s):
        best = best_of_n([scores[i] for i in s])
        return best is not None and correct[s[best]]

    got = best_of_n_at_k(scores, correct, [1, 2, 3, 4, 5]).values
    for k, value in zip(range(1, 6), got):
        assert value == pytest.approx(_brute(5, k, pick), abs=1e-12)
    assert got[0] == pytest.approx(0.2)  # k = 1: only sample 3 (0.5, correct) answers right
    with pytest.raises(ValueError, match="1 <= k <= N"):
        best_of_n_at_k([1.0, 2.0], [True, False], [3])
    with pytest.raises(ValueError, match="2 scores but 1"):
        best_of_n_at_k([1.0, 2.0], [True], [1])


@pytest.mark.parametrize("n", range(1, 9))
def test_majority_and_weighted_vote_at_k_equal_brute_force(n):
    rng = random.Random(100 + n)
    for _ in range(5):
        answers, _, correct = _case(rng, n)
        scores = [rng.gauss(0, 2) for _ in range(n)]
        q = QuestionView(answers, correct, "2", scores, key=n)
        ks = list(range(1, n + 1))
        vote = vote_at_k(q.labels, q.group_correct, ks, key=1)
        wv = vote_at_k(q.labels, q.group_correct, ks, key=1, scores=scores)
        for i, k in enumerate(ks):
            maj = _brute(n, k, lambda s: answers_match(majority_vote([answers[j] for j in s]).answer, "2"))
            weighted = _brute(n, k, lambda s: answers_match(
                weighted_vote([answers[j] for j in s], _softmax([scores[j] for j in s])).answer, "2"))
            assert vote.values[i] == pytest.approx(maj, abs=1e-12), (answers, k)
            assert wv.values[i] == pytest.approx(weighted, abs=1e-12), (answers, scores, k)
        assert vote.variances == [0.0] * n  # majority: exact; weighted: C(8, k) * k <= 2**17 enumerated
        assert wv.variances == [0.0] * n and wv.exact == [True] * n


def test_weighted_vote_at_k_with_non_finite_scores_equals_brute_force():
    from latentlit.aggregation import rm_vote_weights

    answers = ["1", "2", "2", "1", "3"]
    scores = [float("nan"), 0.3, float("inf"), 1.2, 0.1]
    q = QuestionView(answers, [a == "2" for a in answers], "2", scores, key=0)
    got = vote_at_k(q.labels, q.group_correct, range(1, 6), key=0, scores=scores).values
    for k, value in zip(range(1, 6), got):
        expected = _brute(5, k, lambda s: answers_match(
            weighted_vote([answers[j] for j in s], rm_vote_weights([scores[j] for j in s])).answer, "2"))
        assert value == pytest.approx(expected, abs=1e-12), k


def test_vote_at_k_tie_rule_follows_the_vote():
    # k = 2 subsets {0, 3}: "4" and "9" tie, the earlier first vote ("4", sample 0) wins
    answers = ["4", "9", "9", "4"]
    q = QuestionView(answers, [True, False, False, True], "4", None, key=0)
    got = vote_at_k(q.labels, q.group_correct, [2, 4], key=0).values
    # subsets of two: {0,1} 4, {0,2} 4, {0,3} 4, {1,2} 9, {1,3} 9 (tie, first vote is sample 1), {2,3} 9
    assert got == pytest.approx([0.5, 1.0])
    assert answer_labels([None, "1", "1.0", "2", None]).tolist() == [-1, 0, 0, 1, -1]
    # no answers at all: never correct
    assert vote_at_k(answer_labels([None, None]), [], [1, 2], key=0).values == [0.0, 0.0]


def test_vote_at_k_monte_carlo_is_keyed_and_within_its_stated_error():
    rng = random.Random(9)
    n, k = 12, 6  # C(12, 6) = 924 subsets; exact values 0.614 (vote) and 0.562 (weighted)
    answers = [rng.choice(["1", "2", "3"]) for _ in range(n)]
    correct = [a == "2" for a in answers]
    scores = [rng.gauss(0, 1) for _ in range(n)]
    q = QuestionView(answers, correct, "2", scores, key=0)
    exact = _brute(n, k, lambda s: answers_match(majority_vote([answers[j] for j in s]).answer, "2"))
    assert 0.5 < exact < 0.7
    # majority vote@k is exact whatever the subset budget (group sum)
    majority = vote_at_k(q.labels, q.group_correct, [k], key=5, subsets=256, exact_slots=0)
    assert majority.values[0] == pytest.approx(exact, abs=1e-12) and majority.variances == [0.0]
    assert majority.exact == [True]
    weighted_exact = _brute(n, k, lambda s: answers_match(
        weighted_vote([answers[j] for j in s], _softmax([scores[j] for j in s])).answer, "2"))
    enumerated = vote_at_k(q.labels, q.group_correct, [k], key=5, scores=scores)  # 924 * 6 slots <= 2**17
    assert enumerated.values == [weighted_exact] and enumerated.variances == [0.0] and enumerated.exact == [True]
    wmc = vote_at_k(q.labels, q.group_correct, [k], key=5, scores=scores, subsets=256, exact_slots=0)
    assert wmc.exact == [False] and wmc.variances[0] > 0
    assert abs(wmc.values[0] - weighted_exact) < 4 * math.sqrt(wmc.variances[0])
    assert vote_at_k(q.labels, q.group_correct, [k], key=5, scores=scores, subsets=256, exact_slots=0) == wmc
    other = [vote_at_k(q.labels, q.group_correct, [k], key=key, scores=scores, subsets=256, exact_slots=0).values[0]
             for key in range(6, 12)]
    assert any(v != wmc.values[0] for v in other)  # another key, other subsets


def test_random_subsets_are_uniform_and_nested():
    masks, exact = subset_masks(30, 3, key=9, subsets=4000, exact_slots=0)  # random
    assert exact is False and masks.shape == (4000, 30) and (masks.sum(1) == 3).all()
    # each sample is in a random 3-subset with probability 3/30 (standard error 0.0047)
    assert np.allclose(masks.mean(0), 0.1, atol=0.025)
    bigger, _ = subset_masks(30, 5, key=9, subsets=4000, exact_slots=0)
    assert (bigger | ~masks).all()  # the 3-subsets sit inside the 5-subsets of the same key
    every, exact = subset_masks(5, 2, key=0)
    assert exact and every.shape == (10, 5)
    every, exact = subset_masks(30, 3, key=9)  # C(30, 3) * 3 = 12 180 slots: enumerated
    assert exact and every.shape == (4060, 30) and len({m.tobytes() for m in every}) == 4060


@pytest.mark.parametrize(("n", "exact_ks"), [(8, [1, 2, 4, 8]), (16, [1, 2, 4, 8, 16]), (20, [1, 2, 4, 16, 20]),
                                             (27, [1, 2, 4, 27]), (28, [1, 2, 28]), (32, [1, 2, 32]),
                                             (33, [1, 2, 32, 33]), (64, [1, 2, 64]), (201, [1, 201])])
def test_which_k_the_weighted_vote_enumerates(n, exact_ks):
    ks = coverage_ks(n)
    table = subset_table(n, ks, key=0)
    assert [k for k, ex in zip(ks, table.exact) if ex] == exact_ks
    for k, rows, ex in zip(ks, table.rows, table.exact):
        assert rows.shape == ((math.comb(n, k) if ex else DEFAULT_SUBSETS), k)
        assert (np.diff(rows, axis=1) > 0).all()  # ascending sample indices


def test_random_pick_at_k_is_the_mean_correctness():
    correct = [True, False, False, True, True]
    got = random_pick_at_k(correct, [1, 3, 5])
    for k, value in zip([1, 3, 5], got.values):
        assert value == pytest.approx(_brute(5, k, lambda s: sum(correct[i] for i in s) / k))


def test_first_k_vote_is_the_old_majority_at_k():
    answers = ["1", "2", "2", "3", None, "2.0", None, None]
    for gold in ("1", "2", "3"):
        q = QuestionView(answers, [answers_match(a, gold) for a in answers], gold, None, key=0)
        assert first_k_vote(q.labels, q.group_correct, [1, 2, 4, 8]) == majority_at_k(answers, gold, [1, 2, 4, 8])


# ---------------------------------------------------------------- ties: one rule (issue 18, item 4)
def _tied_case(rng: random.Random, n: int):
    """Answers with repeated groups and None; scores drawn from few values (ties across groups),
    with NaN and inf among them."""
    answers = [rng.choice(["1", "2", "2.0", "3", None]) for _ in range(n)]
    pool = [rng.choice([0.0, 1.0, -2.5, rng.gauss(0, 2)]) for _ in range(3)] + [float("nan"), float("inf")]
    weights = [5, 5, 5, 1, 1]
    scores = rng.choices(pool, weights=weights, k=n)
    if rng.random() < 0.5:  # the same scores in another order: group sums tie exactly in value
        half = n // 2
        scores[half: 2 * half] = rng.sample(scores[:half], half)
    return answers, scores


def _record_vote(answers, scores, subset, gold="2"):
    sub = [answers[j] for j in subset]
    vote = majority_vote(sub) if scores is None else weighted_vote(sub, rm_vote_weights([scores[j] for j in subset]))
    return answers_match(vote.answer, gold)


@pytest.mark.parametrize("n", range(1, 10))
def test_vote_at_k_equals_brute_force_on_tied_inputs(n):
    rng = random.Random(1000 + n)
    for _ in range(12):
        answers, scores = _tied_case(rng, n)
        q = QuestionView(answers, [answers_match(a, "2") for a in answers], "2", scores, key=n)
        ks = list(range(1, n + 1))
        majority = vote_at_k(q.labels, q.group_correct, ks, key=0)
        weighted = vote_at_k(q.labels, q.group_correct, ks, key=0, scores=scores)
        for i, k in enumerate(ks):
            assert majority.values[i] == pytest.approx(
                _brute(n, k, lambda s, a=answers: _record_vote(a, None, s)), abs=1e-12), (answers, k)
            # every subset decided as the record decides it: the same mean to the last bit
            assert weighted.values[i] == _brute(n, k, lambda s, a=answers, x=scores: _record_vote(a, x, s)), (
                answers, scores, k)


@pytest.mark.parametrize("n", range(1, 9))
def test_every_subset_vote_is_the_records_vote(n):
    """The vectorised vote (including the subset of all N, which vote_at_k hands to the record's
    function anyway) against the record's functions on every subset of tied inputs."""
    rng = random.Random(2000 + n)
    for _ in range(10):
        answers, scores = _tied_case(rng, n)
        q = QuestionView(answers, [answers_match(a, "2") for a in answers], "2", scores, key=0)
        s = clean_scores(scores)
        for k in range(1, n + 1):
            rows = np.array(list(itertools.combinations(range(n), k)))
            for weights in (None, s):
                got = _rows_vote_correct(rows, q.labels, q.group_correct, weights)
                want = [_record_vote(answers, None if weights is None else scores, list(r)) for r in rows]
                assert got.tolist() == [float(w) for w in want], (answers, scores, k)
                assert [subset_vote_correct(q.labels, q.group_correct, weights, r) for r in rows] == want


def test_issue_example_weighted_vote_at_n_is_the_record():
    answers = ["1", "1", "1", "2", "2", "2"]
    scores = [1.86683, 0.38004, -2.18914, -2.18914, 1.86683, 0.38004]  # the same three scores in each group
    q = QuestionView(answers, [a == "1" for a in answers], "1", scores, key=0)
    record = weighted_vote(answers, rm_vote_weights(scores))
    assert (record.answer, record.index) == ("1", 0)  # an exact tie: the earliest first vote
    got = vote_at_k(q.labels, q.group_correct, range(1, 7), key=0, scores=scores)
    assert got.values[-1] == 1.0  # was 0.0: a matrix-product sum split the tie
    for k, value in zip(range(1, 7), got.values):
        assert value == _brute(6, k, lambda s: _record_vote(answers, scores, s, gold="1")), k
    # the vectorised path alone, on the subset of all six, agrees too
    assert _rows_vote_correct(np.arange(6)[None, :], q.labels, q.group_correct, clean_scores(scores)).tolist() == [1.0]


def test_permuted_tied_scores_never_split_record_and_estimator():
    """The issue's experiment (954 of 20 000 cases disagreed): three scores, the same three in the
    other group in random order."""
    rng = random.Random(18)
    answers = ["1", "1", "1", "2", "2", "2"]
    for _ in range(2000):
        base = [rng.gauss(0, 2) for _ in range(3)]
        scores = base + rng.sample(base, 3)
        q = QuestionView(answers, [a == "1" for a in answers], "1", scores, key=0)
        record = answers_match(weighted_vote(answers, rm_vote_weights(scores)).answer, "1")
        assert vote_at_k(q.labels, q.group_correct, [6], key=0, scores=scores).values == [float(record)], scores
        assert _rows_vote_correct(np.arange(6)[None, :], q.labels, q.group_correct,
                                  clean_scores(scores)).tolist() == [float(record)], scores


@pytest.mark.parametrize("seed", range(6))
def test_majority_group_sum_equals_brute_force_for_larger_n(seed):
    rng = random.Random(seed)
    n = rng.randint(10, 14)
    answers = [rng.choice(["1", "2", "3", "4", None, "2"]) for _ in range(n)]
    q = QuestionView(answers, [answers_match(a, "2") for a in answers], "2", None, key=0)
    ks = list(range(1, n + 1))
    got = majority_vote_at_k(q.labels, q.group_correct, ks)
    assert got.exact == [True] * n and got.variances == [0.0] * n
    for k, value in zip(ks, got.values):
        assert value == pytest.approx(_brute(n, k, lambda s: _record_vote(answers, None, s)), abs=1e-12), k


def test_majority_beyond_its_exact_n_is_monte_carlo(monkeypatch):
    from latentlit.aggregation import at_k

    rng = random.Random(3)
    answers = [rng.choice(["1", "2", "3"]) for _ in range(12)]
    q = QuestionView(answers, [a == "2" for a in answers], "2", None, key=0)
    exact = majority_vote_at_k(q.labels, q.group_correct, [6, 12])
    monkeypatch.setattr(at_k, "MAJORITY_EXACT_MAX_N", 8)
    mc = majority_vote_at_k(q.labels, q.group_correct, [6, 12], key=4, subsets=512)
    assert mc.exact == [False, True] and mc.variances[0] > 0 and mc.variances[1] == 0.0
    assert abs(mc.values[0] - exact.values[0]) < 4 * math.sqrt(mc.variances[0])
    assert mc.values[1] == exact.values[1]
