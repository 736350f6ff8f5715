"""Where two runs' metric@k curves cross (scripts/compare_runs.py --curve)."""

import pytest

from latentlit.evaluation.compare import crossing, metric_curve


def test_crossing_is_the_first_k_where_the_difference_changes_sign():
    a = {1: 0.50, 2: 0.58, 4: 0.64, 8: 0.69, 16: 0.73}
    assert crossing(a, {1: 0.66, 2: 0.68, 4: 0.69, 8: 0.69, 16: 0.70}) == 8  # equal at 8: no longer above
    assert crossing(a, {1: 0.60, 2: 0.60, 4: 0.65, 8: 0.70, 16: 0.74}) is None  # above everywhere
    assert crossing(a, {1: 0.40, 4: 0.70, 16: 0.60}) == 4  # below, then above: only common k count
    with pytest.raises(ValueError, match="share no k"):
        crossing({1: 0.5}, {2: 0.5})


def test_metric_curve_reads_every_k_of_one_metric_in_order():
    run = {"name": "r", "metrics": {"coverage@16": 0.7, "coverage@2": 0.6, "coverage@1": 0.5, "majority_vote@2": 0.1,
                                    "greedy_accuracy": 0.4, "coverage@mean": 3}}
    assert list(metric_curve(run, "coverage").items()) == [(1, 0.5), (2, 0.6), (16, 0.7)]
    with pytest.raises(KeyError, match="no best_of_n@k"):
        metric_curve(run, "best_of_n")
