"""Test-time-scaling metrics: pass@k, coverage ks, torchmetrics wrappers, diversity, majority@k."""

from __future__ import annotations

import itertools
from math import comb

import pytest
import torch

from latentlit.evaluation.metrics import (
    CoverageAtK,
    MeanVector,
    coverage_ks,
    diversity_record,
    majority_at_k,
    pass_at_k,
    trajectory_diversity,
)


def _brute_force(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = _brute_force(n, c, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_values_and_errors():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 2) == pytest.approx(1 - 15 / 28)
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(1000, 10, 100) == pytest.approx(1 - comb(990, 100) / comb(1000, 100), rel=1e-9)
    for bad in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_coverage_ks():
    assert coverage_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert coverage_ks(12) == [1, 2, 4, 8, 12]
    assert coverage_ks(1) == [1]
    assert coverage_ks(3) == [1, 2, 3]


def _coverage_reference(counts, n, ks):
    return torch.tensor([[pass_at_k(n, c, k) for k in ks] for c in counts], dtype=torch.float64).mean(0).float()


def test_coverage_metric_in_parts_equals_at_once():
    ks, n = coverage_ks(8), 8
    counts = torch.tensor([0, 3, 8, 1, 5, 2, 7])
    whole = CoverageAtK(ks)
    whole.update(counts, n)
    expected = _coverage_reference(counts.tolist(), n, ks)
    torch.testing.assert_close(whole.compute(), expected)

    parts = CoverageAtK(ks)
    for chunk in counts.split(3):
        parts.update(chunk, n)
    torch.testing.assert_close(parts.compute(), expected)

    a, b = CoverageAtK(ks), CoverageAtK(ks)
    a.update(counts[:2], n)
    b.update(counts[2:], n)
    a.merge_state(b)
    torch.testing.assert_close(a.compute(), expected)
    assert int(a.count) == 7
    # coverage is monotone in k
    values = expected.tolist()
    assert values == sorted(values) and values[0] == pytest.approx(26 / 56)


def test_mean_vector_in_parts_equals_at_once():
    nan = float("nan")
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, nan], [0.5, 0.0, 1.0], [2.0, nan, nan]])
    expected = torch.tensor([7.5 / 4, 7.0 / 3, 4.0 / 2], dtype=torch.float64)
    whole = MeanVector(3)
    whole.update(x)
    torch.testing.assert_close(whole.compute()["mean"], expected)
    parts = MeanVector(3)
    for row in x:
        parts.update(row[None])
    torch.testing.assert_close(parts.compute()["mean"], expected)
    a, b = MeanVector(3), MeanVector(3)
    a.update(x[:1])
    b.update(x[1:])
    a.merge_state(b)
    torch.testing.assert_close(a.compute()["mean"], expected)
    assert a.compute()["count"].tolist() == [4, 3, 2]


def test_mean_vector_short_rows():
    m = MeanVector(3)
    m.update(torch.tensor([[1.0, 2.0, 3.0]]))
    m.update(torch.tensor([[3.0]]))  # a row with one value counts only in the first slot
    out = m.compute()
    torch.testing.assert_close(out["mean"], torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
    assert out["count"].tolist() == [2, 1, 1]
    empty = MeanVector(2)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert empty.compute()["mean"].isnan().all()  # no value anywhere: undefined, not 0


def test_mean_vector_leaves_missing_values_out():
    """Diversity of a dynamic-stop run, by hand: question a reached steps 1-3 with >= 2
    trajectories, b steps 1-2 (its step 3 had one trajectory: NaN), c only step 1."""
    m = MeanVector(4)
    m.update(torch.tensor([[0.2, 0.4, 0.6, float("nan")],
                           [0.4, 0.2, float("nan"), float("nan")],
                           [0.6, float("nan"), float("nan"), float("nan")]]))
    out = m.compute()
    assert out["count"].tolist() == [3, 2, 1, 0]
    torch.testing.assert_close(out["mean"][:3], torch.tensor([0.4, 0.3, 0.6], dtype=torch.float64))
    assert out["mean"][3].isnan()  # where no question has a value
    # reading the NaN as 0 (the earlier rule) would give 0.2 and 0.2 at steps 2 and 3: 1.5x and 3x too low


def test_trajectory_diversity():
    torch.manual_seed(0)
    same = torch.randn(1, 3, 16).expand(5, 3, 16)
    torch.testing.assert_close(trajectory_diversity(same), torch.zeros(3), atol=1e-6, rtol=0)

    eye = torch.eye(4)[:, None, :].expand(4, 2, 4)  # 4 mutually orthogonal trajectories, 2 steps
    torch.testing.assert_close(trajectory_diversity(eye), torch.ones(2))

    opposite = torch.stack([torch.ones(1, 4), -torch.ones(1, 4)])  # cosine -1 -> distance 2
    torch.testing.assert_close(trajectory_diversity(opposite), torch.tensor([2.0]))

    # scale does not matter (cosine)
    scaled = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 0.0]])])
    torch.testing.assert_close(trajectory_diversity(scaled), torch.zeros(1), atol=1e-6, rtol=0)

    # mask: rows (e1, e1, e2) -> 4/6 ordered pairs at distance 1; without row 2 -> 0;
    # a step with a single valid row -> undefined (NaN), not 0
    x = torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])[:, None, :]
    x = x.expand(3, 3, 2)
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    torch.testing.assert_close(trajectory_diversity(x), torch.full((3,), 2 / 3))
    torch.testing.assert_close(trajectory_diversity(x, mask), torch.tensor([2 / 3, 0.0, float("nan")]), equal_nan=True)
    mask2 = torch.tensor([[True, True, True], [False, True, False], [True, True, True]])  # (N, T)
    torch.testing.assert_close(trajectory_diversity(x, mask2), torch.tensor([1.0, 2 / 3, 1.0]))

    assert trajectory_diversity(torch.randn(1, 4, 8)).isnan().all()  # one trajectory: no pair
    assert trajectory_diversity(torch.randn(3, 0, 8)).shape == (0,)


def test_diversity_record_is_null_where_undefined_and_ends_at_the_last_step_reached():
    x = torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])])[:, None, :]
    x = x.expand(3, 5, 2)  # 5 steps in the tensor: the batch ran 5; this question's rows stop earlier
    mask = torch.tensor([[True, True, True, False, False], [True, True, False, False, False],
                         [True, False, False, False, False]])
    # step 1: rows (e1, e2, e1): 4 of 6 ordered pairs at distance 1; step 2: (e1, e2): 1; step 3: one row
    assert diversity_record(x, mask) == [round(2 / 3, 4), 1.0, None]
    assert diversity_record(x[:, :3], mask[:, :3]) == diversity_record(x, mask)  # whatever the batch ran
    assert diversity_record(x[:1], mask[:1]) == [None, None, None]


def test_majority_at_k():
    answers = ["1", "2", "2", "3", None, "2.0", None, None]
    assert majority_at_k(answers, "2", [1, 2, 4, 8]) == [0.0, 0.0, 1.0, 1.0]  # k=2: tie -> "1" (earliest)
    assert majority_at_k(answers, "1", [1, 2, 4, 8]) == [1.0, 1.0, 0.0, 0.0]
    assert majority_at_k([None, None], "1", [1, 2]) == [0.0, 0.0]
    assert majority_at_k(["18.0", "18", "7"], "18", [3]) == [1.0]


def test_keyed_mean_in_parts_equals_at_once():
    from latentlit.evaluation.metrics import KeyedMean

    rows = [{"a": 1.0, "b": 0.25}, {"a": 0.0, "b": 0.5}, {"a": 1.0, "b": 1.0, "extra": 7.0}]
    whole = KeyedMean(["a", "b"])
    for r in rows:
        whole.update(r)
    assert whole.as_dict() == {"a": pytest.approx(2 / 3), "b": pytest.approx(1.75 / 3)}
    assert whole.compute().dtype == torch.float64
    first, second = KeyedMean(["a", "b"]), KeyedMean(["a", "b"])
    first.update(rows[0])
    for r in rows[1:]:
        second.update(r)
    first.merge_state(second)  # what the DDP sum of states does
    torch.testing.assert_close(first.compute(), whole.compute())
    with pytest.raises(KeyError, match="b"):
        KeyedMean(["a", "b"]).update({"a": 1.0})
