"""One rule for each aggregator wherever it is computed: every registered aggregator with both a
record choice and a k-subset estimator gives, at k = N, the record's correctness (issue 18, item 4),
on inputs full of ties (in scores, in vote counts), missing answers and non-finite scores."""

from __future__ import annotations

import math
import random

import pytest

from latentlit.aggregation import registry
from latentlit.aggregation.registry import QuestionView
from latentlit.aggregation.select import random_pick
from latentlit.data.answers import answers_match

NAN, INF = float("nan"), float("inf")
BOTH = [a for a in registry.AGGREGATORS if a.choose is not None and a.at_k is not None]


def test_the_registry_aggregators_with_both_are_checked():
    assert [a.name for a in BOTH] == ["majority_vote", "random", "best_of_n", "weighted_vote", "tempered_vote"]


def _views(seed: int, count: int):
    """Questions whose samples tie every way: answers from a few groups and None, scores from a
    few values with NaN and +-inf, N from 1 to 12 and a few of 64; in half of them two answers
    hold the same scores in another order (the issue's case: their weights tie exactly), and in
    some every score is the same (the weighted vote is then a majority vote: ties in counts)."""
    rng = random.Random(seed)
    for i in range(count):
        gold = rng.choice(["1", "2"])
        if rng.random() < 0.5:
            m = rng.randint(1, 6)
            mine = [rng.gauss(0, 2) for _ in range(m)]
            pairs = [("1", x) for x in mine] + [("2", x) for x in rng.sample(mine, m)]
            pairs += [(rng.choice(["3", None]), rng.choice([0.5, NAN])) for _ in range(rng.randint(0, 3))]
            rng.shuffle(pairs)
            answers, scores = [a for a, _ in pairs], [x for _, x in pairs]
        else:
            n = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 64])
            answers = [rng.choice(["1", "2", "2.0", "3", None]) for _ in range(n)]
            values = [round(rng.gauss(0, 2), rng.choice([0, 1, 5])) for _ in range(3)] + [NAN, INF, -INF]
            scores = rng.choices(values, weights=[6, 6, 6, 1, 1, 1], k=n)
            if rng.random() < 0.3:
                scores = [values[0]] * n  # every score tied: the weighted vote is the majority vote
        # the tempered vote at a temperature that reorders groups, with a calibrated confidence
        selector = {"temperature": rng.choice([0.3, 2.5]), "calibration": [0.4, 0.3, 0.2, -0.1]}
        yield QuestionView(answers, [answers_match(a, gold) for a in answers], gold, scores, key=seed * 100_000 + i,
                           selector=selector)


@pytest.mark.parametrize("aggregator", BOTH, ids=lambda a: a.name)
def test_record_equals_estimator_at_k_equals_n(aggregator):
    for q in _views(seed=7, count=400):
        record = aggregator.choose(q)
        estimate = aggregator.at_k(q, [q.n])
        assert estimate.exact in (None, [True]) and estimate.variances == [0.0]
        if aggregator.name == "random":
            # the record is one keyed draw of the pick the estimator averages over: c / N is the
            # mean of the record's choice over its N equally likely picks
            assert record["index"] == random_pick(q.n, q.key) and record["correct"] == q.correct[record["index"]]
            assert estimate.values == [pytest.approx(sum(q.correct) / q.n, abs=1e-15)]
        else:
            assert estimate.values == [float(record["correct"])], (aggregator.name, q.answers, q.scores)


@pytest.mark.parametrize("aggregator", BOTH, ids=lambda a: a.name)
def test_record_equals_estimator_at_every_k_of_one_sample_choice(aggregator):
    """At k = 1 every subset is one sample: the vote of one sample is its answer (when a weighted
    sample's score is finite), best-of-1 too, so the estimate is a known mean."""
    for q in _views(seed=11, count=200):
        value = aggregator.at_k(q, [1]).values[0]
        finite = [math.isfinite(s) for s in q.scores]
        if aggregator.name in ("majority_vote", "random"):
            expected = sum(q.correct) / q.n
        else:
            expected = sum(c and f for c, f in zip(q.correct, finite)) / q.n
        assert value == pytest.approx(expected, abs=1e-12), (aggregator.name, q.answers, q.scores)
