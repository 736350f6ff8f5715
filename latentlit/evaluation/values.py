"""Per-question values of every accuracy metric, from one ``predictions.jsonl`` record.

Every accuracy in ``metrics.json`` is a mean over questions of a per-question value computed here
from the record alone: ``greedy_accuracy`` (0/1), ``coverage@k`` (unbiased pass@k, Chen et al.
2021), ``<aggregator>@k`` (:mod:`latentlit.aggregation.at_k`; only ``@N`` for aggregators
without a k-estimator) and ``majority_vote_first@k`` (vote over the first k samples, the meaning
``majority_vote@k`` had before it became the subset expectation). The predictor sums these
values in a torchmetrics state (exact under DDP); the bootstrap intervals and the recomputation
tests use the same function on the records read back from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from latentlit.aggregation.at_k import first_k_vote
from latentlit.aggregation.registry import Aggregator, question_view
from latentlit.evaluation.metrics import pass_at_k


@dataclass
class QuestionValues:
    """One question's metric values (key -> value in [0, 1]) and the Monte Carlo variance of
    each value that was estimated from random subsets (key -> variance)."""

    values: dict[str, float]
    mc_variances: dict[str, float]


def metric_keys(ks: Sequence[int], n: int, aggregators: Sequence[Aggregator]) -> list[str]:
    """The accuracy keys :func:`question_values` returns, in its order (decided by the
    configuration alone, so every process builds the same list)."""
    keys = ["greedy_accuracy", *(f"coverage@{k}" for k in ks)]
    for agg in aggregators:
        keys += [f"{agg.name}@{k}" for k in ks] if agg.at_k is not None else [f"{agg.name}@{n}"]
    return keys + [f"majority_vote_first@{k}" for k in ks]


def question_values(record: dict, ks: Sequence[int], aggregators: Sequence[Aggregator], seed: int) -> QuestionValues:
    """Every accuracy value of one question.

    Raises:
        KeyError: the record lacks a field an aggregator needs (e.g. ``rm_scores``).
    """
    n = len(record["answers"])
    c = sum(bool(x) for x in record["correct"])
    values = {"greedy_accuracy": float(bool(record["greedy"]["correct"]))}
    values.update({f"coverage@{k}": pass_at_k(n, c, k) for k in ks})
    view = question_view(record, seed)
    variances: dict[str, float] = {}
    for agg in aggregators:
        if agg.at_k is None:
            values[f"{agg.name}@{n}"] = float(bool(record[agg.name]["correct"]))
            continue
        if agg.needs_rm and view.scores is None:
            raise KeyError(f"question {record['id']}: aggregator {agg.name} needs 'rm_scores' in the record "
                           "(the run had no LatentRM; `latentlit rescore` adds one without re-sampling)")
        est = agg.at_k(view, ks)
        for i, k in enumerate(ks):
            values[f"{agg.name}@{k}"] = est.values[i]
            if not est.is_exact(i):
                variances[f"{agg.name}@{k}"] = est.variances[i]
    values.update({f"majority_vote_first@{k}": v for k, v in zip(ks, first_k_vote(view.labels, view.group_correct, ks))})
    return QuestionValues(values, variances)
