"""One metric of two runs on the same questions: the difference (run B minus run A) with a paired
bootstrap interval.

Two runs of one question set (another sampler strength, another LatentRM, another seed) differ
by their methods *and* by which questions happen to be easy; resampling the questions once for
both runs (the same resample indices) keeps the second part out of the interval, as
``minus_greedy`` does within one run (``latentlit.evaluation.bootstrap``). Per-question values
are those behind ``metrics.json`` (``latentlit.evaluation.values.question_values``, with each
run's own seed for the subset estimators), so the difference of the two means is exactly the
difference of the two runs' reported metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentlit.aggregation import registry
from latentlit.evaluation.bootstrap import percentile_intervals, resample_counts
from latentlit.evaluation.values import question_values

_PAIRED_STREAM = 0x9A12ED  # names the resample stream of a paired comparison (apart from a run's own)


def parse_metric(key: str) -> tuple[str, int | None]:
    """``"best_of_n@16"`` -> ``("best_of_n", 16)``; ``"greedy_accuracy"`` (or ``"greedy"``) ->
    ``("greedy_accuracy", None)``.

    Raises:
        ValueError: a key that is neither greedy nor ``name@k`` with an integer k >= 1.
    """
    if key in ("greedy", "greedy_accuracy"):
        return "greedy_accuracy", None
    name, _, k = key.partition("@")
    if not name or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric {key!r}: expected greedy or <name>@<k> (e.g. best_of_n@16, coverage@4)")
    return name, int(k)


def question_metric(record: dict, key: str, seed: int) -> float:
    """One question's value of ``key`` (as in ``metrics.json``), from its record.

    Raises:
        ValueError: an unknown metric, or a k the record cannot give (k > N, or an aggregator
            with no estimator below N, e.g. beam search, at k < N).
        KeyError: the record lacks what the aggregator needs (names the question).
    """
    name, k = parse_metric(key)
    n = len(record["answers"])
    if k is not None and k > n:
        raise ValueError(f"metric {key}: the run has N = {n} samples per question")
    ks = [k] if k is not None else []
    aggregators = []
    if name not in ("greedy_accuracy", "coverage", "majority_vote_first"):
        try:
            agg = registry.get(name)
        except KeyError as err:
            raise ValueError(f"metric {key}: {err.args[0]}") from None
        if agg.at_k is None and k != n:
            raise ValueError(f"metric {key}: {name} is measured at k = N = {n} only")
        aggregators = [agg]
    return question_values(record, ks, aggregators, seed).values[key if k is not None else "greedy_accuracy"]


def _per_question(records: list[dict], metric: str, seed: int, name: str) -> np.ndarray:
    try:
        return np.array([question_metric(r, metric, seed) for r in records])
    except KeyError as err:  # e.g. best-of-N of a run sampled without a LatentRM
        raise KeyError(f"run {name}: {err.args[0]}") from None
    except ValueError as err:
        raise ValueError(f"run {name}: {err}") from None


def paired_difference(records_a: Sequence[dict], records_b: Sequence[dict], metric_a: str, metric_b: str | None = None,
                      *, seed_a: int = 0, seed_b: int = 0, resamples: int = 2000, level: float = 0.95,
                      seed: int = 0, names: tuple[str, str] = ("A", "B")) -> dict:
    """Metric B of run B minus metric A of run A over the questions both hold, with a paired
    percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13; the same resamples of the
    questions for both runs).

    Args:
        records_a, records_b: each run's records (``predictions.jsonl``), matched by ``id``.
        metric_a: e.g. ``"best_of_n@16"``; metric_b: run B's metric (default: the same key).
        seed_a, seed_b: each run's seed (keys its random-subset estimators, as in its metrics).
        seed: keys the bootstrap resamples.
        names: the two runs as errors name them (e.g. their directories).

    Returns:
        ``{"metric_a", "metric_b", "questions", "a", "b", "diff", "low", "high", "level",
        "resamples"}``; accuracies as fractions.

    Raises:
        ValueError: the runs hold different question ids, or one id has different golds in the
            two runs (names it), or a metric a run cannot give (see :func:`question_metric`).
        KeyError: a run's records lack what the metric needs (names the run and the question).
    """
    metric_b = metric_b or metric_a
    by_id_a = {r["id"]: r for r in records_a}
    by_id_b = {r["id"]: r for r in records_b}
    if not by_id_a or by_id_a.keys() != by_id_b.keys():
        only_a, only_b = sorted(by_id_a.keys() - by_id_b.keys()), sorted(by_id_b.keys() - by_id_a.keys())
        raise ValueError(f"the runs hold different questions: {len(only_a)} only in A (e.g. {only_a[:3]}), "
                         f"{len(only_b)} only in B (e.g. {only_b[:3]}); compare runs of one question set")
    ids = sorted(by_id_a, key=lambda i: by_id_a[i].get("index", 0))
    for i in ids:
        if str(by_id_a[i]["gold"]) != str(by_id_b[i]["gold"]):
            raise ValueError(f"question {i!r} has gold {by_id_a[i]['gold']!r} in A and {by_id_b[i]['gold']!r} in B")
    a = _per_question([by_id_a[i] for i in ids], metric_a, seed_a, names[0])
    b = _per_question([by_id_b[i] for i in ids], metric_b, seed_b, names[1])
    counts = resample_counts(len(ids), resamples, seed ^ _PAIRED_STREAM)
    diff = percentile_intervals(b - a, counts, level)
    return {"metric_a": metric_a, "metric_b": metric_b, "questions": len(ids), "a": float(a.mean()),
            "b": float(b.mean()), "diff": float(diff.estimate[0]), "low": float(diff.low[0]),
            "high": float(diff.high[0]), "level": level, "resamples": resamples}
