"""How printed tables write percentages, differences and intervals."""

from latentlit.evaluation.text import interval, pct, points


def test_values_that_round_to_zero_have_no_sign():
    assert [pct(x) for x in (0.5216, -0.0, -1e-9, 0.0004, 1.0)] == ["52.2", "0.0", "0.0", "0.0", "100.0"]
    assert [points(x) for x in (0.012, -0.004, -0.0, 1e-18, -0.0006)] == ["+1.2", "-0.4", "0.0", "0.0", "-0.1"]


def test_intervals_and_degenerate_ones():
    assert interval(0.478, 0.566) == "[47.8, 56.6]"
    assert interval(-0.025, 0.0, signed=True) == "[-2.5, 0.0]"
    assert interval(-0.0, 0.0, signed=True) == "[0.0, 0.0] (zero width)"
    assert interval(0.5, 0.5) == "[50.0, 50.0] (zero width)"
    assert interval(-0.0004, 0.0004, signed=True) == "[0.0, 0.0]"  # narrow, not degenerate
