"""Adaptive-N stopping rules: the exact bound checked against every completion of the budget (both
sides: settled => no completion changes the winner; not settled => some completion does), the
Beta criterion against scipy's Beta distribution, the window rule, the LatentRM rule, replay of
rounds, and configuration errors."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from latentlit.aggregation import majority_vote
from latentlit.aggregation.stopping import (
    DEFAULT_GRID,
    StoppingRule,
    beta_leader_probability,
    checkpoints,
    leader_cannot_be_overtaken,
    parse_adaptive,
    simulate,
    threshold_key,
    top_two_counts,
    window_unanimous,
)

ALPHABET = ["1", "2", "3", None]


def _completions(prefix: list, n_max: int):
    # every way to fill the remaining budget with a seen answer, None, or an answer never seen ("9")
    extra = sorted({a for a in prefix if a is not None}) + [None, "9"]
    for tail in itertools.product(extra, repeat=n_max - len(prefix)):
        yield prefix + list(tail)


@pytest.mark.parametrize("n_max", [1, 2, 3, 4, 5, 6])
def test_exact_rule_is_exact_and_tight_on_every_prefix(n_max):
    checked_settled = checked_open = 0
    for n in range(0, n_max + 1):
        for prefix in itertools.product(ALPHABET, repeat=n):
            prefix = list(prefix)
            winners = {majority_vote(full).answer for full in _completions(prefix, n_max)}
            if leader_cannot_be_overtaken(prefix, n_max):
                # the same string (the leader's first vote), whatever the remaining samples say
                assert winners == {majority_vote(prefix).answer}, prefix
                checked_settled += 1
            else:
                assert len(winners) > 1, prefix
                checked_open += 1
    assert checked_settled > 0 and (checked_open > 0 or n_max == 1)


def test_exact_rule_examples():
    assert leader_cannot_be_overtaken(["5", "5", "5"], 5)  # 3 vs at most 2
    assert not leader_cannot_be_overtaken(["5", "5"], 5)  # 2 vs a new answer's 3
    # tie at the end goes to the earlier first vote: 5 (first at 0) keeps it against 7
    assert leader_cannot_be_overtaken(["5", "5", "7"], 4)
    assert not leader_cannot_be_overtaken(["7", "5", "5"], 4)  # 7 + 1 ties 5 and 7 voted first
    # numerically equal answers vote together
    assert leader_cannot_be_overtaken(["4", "4.0", "4.00"], 5)
    assert not leader_cannot_be_overtaken([None, None, None], 4)
    assert leader_cannot_be_overtaken([None] * 4, 4)  # budget spent
    with pytest.raises(ValueError, match="exceed the budget"):
        leader_cannot_be_overtaken(["1"] * 5, 4)


def test_beta_probability_matches_scipy_beta():
    for v1 in range(0, 12):
        for v2 in range(0, 12):
            expected = stats.beta.sf(0.5, v1 + 1, v2 + 1)
            assert beta_leader_probability(v1, v2) == pytest.approx(expected, abs=1e-12)
    assert beta_leader_probability(4, 0) == 31 / 32
    assert beta_leader_probability(3, 3) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        beta_leader_probability(-1, 0)


def test_top_two_counts_and_beta_rule():
    assert top_two_counts(["2", "3", "2", None, "2.0", "7", "3"]) == (3, 2)
    assert top_two_counts(["2"]) == (1, 0) and top_two_counts([None]) == (0, 0)
    rule = StoppingRule("beta", 0.95)
    assert rule.settled(["8"] * 4, 64)  # 31/32 = 0.969
    assert not rule.settled(["8", "8", "8", None], 64)  # 15/16 = 0.9375
    assert not rule.settled(["8"] * 6 + ["1", "1"], 64)  # P(Bin(9) <= 6) = 0.910
    assert rule.settled(["8"] * 7 + ["1"], 64)  # 0.980
    assert rule.choose(["1", "8", "8", "8"]) == "8"


def test_window_rule():
    assert window_unanimous(["1", "2", "2", "2.0"], 3)
    assert not window_unanimous(["1", "2", "2", "2"], 4)
    assert not window_unanimous(["2", "2"], 3)  # window not filled yet
    assert not window_unanimous([None, None], 2)  # no answer is not agreement
    rule = StoppingRule("window", 4)
    assert rule.settled(["3", "1", "1", "1", "1", "1"], 64) and not rule.settled(["3", "1", "1", "1"], 64)
    # the answer is the vote over everything drawn, not just the window
    assert rule.choose(["3", "3", "3", "1", "1"]) == "3"


def test_best_score_rule():
    rule = StoppingRule("best_score", 2.0)
    assert rule.needs_scores
    assert not rule.settled(["1", "2"], 8, [0.5, 1.9])
    assert rule.settled(["1", "2", "3"], 8, [0.5, 1.9, 2.0])
    assert rule.choose(["1", "2", "3"], [0.5, 2.5, 2.0]) == "2"
    with pytest.raises(ValueError, match="one LatentRM score per sample"):
        rule.settled(["1"], 8, None)
    # non-finite scores never settle a question nor win it
    nan, inf = float("nan"), float("inf")
    assert not rule.settled(["1", "2"], 8, [nan, 1.0]) and not rule.settled(["1", "2"], 8, [1.0, nan])
    assert not rule.settled(["1"], 8, [inf])
    assert rule.settled(["1", "2"], 8, [nan, 2.5])
    assert rule.choose(["1", "2"], [nan, 0.5]) == "2"
    assert rule.choose(["1", "2"], [nan, inf]) is None


def test_every_rule_settles_when_the_budget_is_spent():
    for rule in [StoppingRule("exact"), StoppingRule("beta", 0.999), StoppingRule("window", 8)]:
        assert rule.settled([None, "1", "2"], 3)
    assert StoppingRule("best_score", 1e9).settled(["1"], 1, [0.0])


def test_checkpoints_and_simulate():
    assert checkpoints(10, 4) == [4, 8, 10] and checkpoints(8, 4) == [4, 8] and checkpoints(3, 4) == [3]
    answers = ["1", "2", "1", "2", "1", "1", "1", "1", "5", "5"]
    # exact: after 4: 2-2 (6 left) open; after 8: 6 vs 2 with 2 left: settled
    assert simulate(StoppingRule("exact"), answers, 10, 4).trajectories == 8
    assert simulate(StoppingRule("exact"), answers, 10, 4).answer == "1"
    assert simulate(StoppingRule("window", 4), answers, 10, 4).trajectories == 8
    # beta @ 0.999 alone (P = 0.967 after 8) would continue, but 6 vs 2 with 2 left is settled
    assert not StoppingRule("beta", 0.999).criterion(answers[:8], 10)
    assert simulate(StoppingRule("beta", 0.999), answers, 10, 4).trajectories == 8
    scores = [0, 0, 0, 0, 0, 3, 0, 0, 0, 0]
    out = simulate(StoppingRule("best_score", 2.5), answers, 10, 4, scores)
    assert (out.answer, out.trajectories) == ("1", 8)
    with pytest.raises(ValueError, match="first n_max=10"):
        simulate(StoppingRule("exact"), answers[:9], 10, 4)


def test_simulated_exact_rule_equals_majority_at_n_max_on_random_questions():
    rng = random.Random(0)
    saved = 0
    for _ in range(2000):
        n_max, round_size = rng.choice([8, 16, 64]), rng.choice([1, 2, 4, 8])
        k = rng.randint(1, 4)
        weights = [rng.random() for _ in range(k)] + [0.1]
        answers = rng.choices([str(i) for i in range(k)] + [None], weights=weights, k=n_max)
        out = simulate(StoppingRule("exact"), answers, n_max, round_size)
        assert out.answer == majority_vote(answers).answer
        assert out.trajectories <= n_max
        saved += n_max - out.trajectories
    assert saved > 0


def test_vote_rules_stop_when_the_leader_cannot_be_overtaken():
    # 5 of 6 agree with N_max = 8: 5 vs at most 1 + 2; beta @ 0.99 alone would go on
    # (P(Bin(7, 1/2) <= 5) = 0.9375) and so would window @ 4 (the last 4 are not unanimous)
    answers = ["4", "4", "4", "4", "9", "4"]
    for rule in (StoppingRule("beta", 0.99), StoppingRule("window", 4)):
        assert not rule.criterion(answers, 8)
        assert rule.settled(answers, 8) and rule.choose(answers) == "4"
    assert beta_leader_probability(5, 1) == pytest.approx(0.9375)
    # beta @ 0.99 stopped after 10.48 trajectories on average where the exact rule took 10.32
    # (issue): with the bound it never runs past the exact rule's stop
    # here: after 12, "1" leads 8 to 4 and 4 more "2"s would only tie it (ties go to the first
    # vote, "1"); beta alone (P = 0.867) would draw all 16, to the same answer
    answers = ["1"] * 4 + ["2"] * 4 + ["1"] * 4 + ["2"] * 4
    beta = StoppingRule("beta", 0.99)
    assert _criterion_only(beta, answers, 16, 4) == ("1", 16)
    assert simulate(StoppingRule("exact"), answers, 16, 4).trajectories == 12
    assert simulate(beta, answers, 16, 4) == simulate(StoppingRule("exact"), answers, 16, 4)
    assert majority_vote(answers).answer == "1"
    # the best_score rule chooses by score, not by vote: the bound is not its business
    assert not StoppingRule("best_score", 5.0).settled(["1"] * 6, 8, [0.0] * 6)


def _criterion_only(rule: StoppingRule, answers: list, n_max: int, round_size: int):
    """What :func:`simulate` returned before vote rules also stopped on the exact bound."""
    for n in checkpoints(n_max, round_size):
        if n >= n_max or rule.criterion(answers[:n], n_max):
            return rule.choose(answers[:n]), n
    raise AssertionError("unreachable")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n_max=st.integers(1, 24), round_size=st.integers(1, 8),
       rule=st.sampled_from([StoppingRule("beta", 0.9), StoppingRule("beta", 0.95), StoppingRule("beta", 0.99),
                             StoppingRule("window", 2), StoppingRule("window", 4), StoppingRule("window", 8)]))
def test_the_exact_bound_keeps_every_answer_and_never_adds_trajectories(data, n_max, round_size, rule):
    answers = data.draw(st.lists(st.sampled_from(["1", "2", "3", "2.0", None]), min_size=n_max, max_size=n_max))
    before_answer, before_n = _criterion_only(rule, answers, n_max, round_size)
    after = simulate(rule, answers, n_max, round_size)
    assert after.answer == before_answer
    assert after.trajectories <= before_n
    exact = simulate(StoppingRule("exact"), answers, n_max, round_size)
    assert after.trajectories <= exact.trajectories


def test_threshold_keys():
    assert [threshold_key(t) for t in (None, 8, 8.0, 0.95, 2.5)] == ["-", "8", "8", "0.95", "2.5"]
    assert StoppingRule("exact").key == "-" and StoppingRule("window", 8.0).key == "8"


def test_parse_adaptive():
    assert parse_adaptive(None, has_scores=False, n_max=8) is None
    spec = parse_adaptive({}, has_scores=False, n_max=8)
    assert spec.round_size == 4 and spec.run is None
    assert [(r.name, r.threshold) for r in spec.table] == [(n, t) for n, ts in DEFAULT_GRID.items() for t in ts]
    spec = parse_adaptive({"rule": "beta", "threshold": 0.9, "round_size": 2}, has_scores=False, n_max=8)
    assert spec.run == StoppingRule("beta", 0.9) and spec.table == (StoppingRule("beta", 0.9),)
    spec = parse_adaptive({"table": {"exact": None, "best_score": [1.0, 2.0]}}, has_scores=True, n_max=8)
    assert spec.table == (StoppingRule("exact"), StoppingRule("best_score", 1.0), StoppingRule("best_score", 2.0))


@pytest.mark.parametrize("config, match", [
    ({"rule": "vote"}, "adaptive rule 'vote'"),
    ({"rule": "beta"}, "needs a finite numeric threshold, got None"),
    ({"rule": "beta", "threshold": 1.5}, r"threshold in \(0, 1\), got 1.5"),
    ({"rule": "window", "threshold": 2.5}, "integer window size"),
    ({"rule": "exact", "threshold": 0.9}, "takes no threshold"),
    ({"threshold": 0.9}, "without adaptive.rule"),
    ({"round_size": 0}, "round_size must be an integer >= 1, got 0"),
    ({"rounds": 4}, r"unknown key\(s\) \['rounds'\]"),
    ({"table": {"best_score": [1.0]}}, "set latent_rm"),
    ({"table": {}}, "neither a rule"),
    ("beta", "must be a mapping"),
])
def test_parse_adaptive_errors(config, match):
    with pytest.raises(ValueError, match=match):
        parse_adaptive(config, has_scores=False, n_max=8)
