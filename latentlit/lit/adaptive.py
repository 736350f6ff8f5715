"""Adaptive N inside ``latentlit predict``: the per-question ``adaptive`` record field, its
metric (``metrics.json``'s ``adaptive`` section) and the settings stored with a run.

Record field (each question), one entry per rule and threshold (threshold strings as in
:func:`latentlit.aggregation.adaptive.threshold_key`)::

    "adaptive": {"<rule>": {"<threshold>": {"answer": str | None, "correct": bool, "trajectories": int}}}

In a fixed-N run the entries replay the rounds on the question's stored samples (exact, since an
adaptive run would draw the very same samples); in a live adaptive run there is one entry, the
executed rule, and ``trajectories`` is what was actually run for the question.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from latentlit.aggregation.adaptive import AdaptiveSpec, simulate
from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match


def adaptive_settings(spec: AdaptiveSpec | None, n_max: int) -> dict | None:
    """JSON-able description of ``spec`` with the budget ``n_max`` (stored in ``run.json`` and
    ``metrics.json``'s config)."""
    if spec is None:
        return None
    table: dict[str, list] = {}
    for rule in spec.table:
        table.setdefault(rule.name, []).append(rule.threshold)
    return {"n_max": n_max, "round_size": spec.round_size, "live": spec.run is not None,
            "rule": None if spec.run is None else spec.run.name,
            "threshold": None if spec.run is None else spec.run.threshold, "table": table}


def adaptive_field(spec: AdaptiveSpec, n_max: int, answers: Sequence[str | None], gold: str,
                   scores: Sequence[float] | None = None) -> dict:
    """The record's ``adaptive`` field for one question (see the module docstring).

    Args:
        answers: the question's samples in order: all n_max of them in a fixed-N run, the ones
            drawn in a live run. scores: their LatentRM scores (rules that need them).
    """
    field: dict[str, dict] = {}
    for rule in spec.table:
        if spec.run is None:
            out = simulate(rule, answers, n_max, spec.round_size, scores)
            answer, used = out.answer, out.trajectories
        else:
            answer, used = rule.choose(answers, scores), len(answers)
        field.setdefault(rule.name, {})[rule.key] = {"answer": answer, "correct": answers_match(answer, gold),
                                                     "trajectories": used}
    return field


class AdaptiveTable(Metric):
    """Accuracy and mean / median trajectories used per rule and threshold over questions.

    ``update(record_field)`` with a record's ``adaptive`` field; ``compute()`` ->
    ``{rule: {threshold: {"accuracy", "mean_trajectories", "median_trajectories"}}}``. DDP-safe:
    sums are reduced, the per-question counts (for the median) are gathered.
    """

    full_state_update = False

    def __init__(self, spec: AdaptiveSpec, **kwargs):
        super().__init__(**kwargs)
        self.entries = [(rule.name, rule.key) for rule in spec.table]
        size = len(self.entries)
        self.add_state("correct", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("used_sum", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("used", default=[], dist_reduce_fx="cat")

    def update(self, field: dict) -> None:
        try:
            rows = [field[name][key] for name, key in self.entries]
        except KeyError as err:
            raise ValueError(f"a prediction record's adaptive field lacks {err.args[0]!r}: it was written with "
                             "another adaptive table; use another output_dir") from None
        used = torch.tensor([float(r["trajectories"]) for r in rows], dtype=torch.float64, device=self.correct.device)
        self.correct += torch.tensor([float(r["correct"]) for r in rows], dtype=torch.float64, device=self.correct.device)
        self.used_sum += used
        self.count += 1
        self.used.append(used[None])

    def compute(self) -> dict:
        n = int(self.count)
        if n == 0:
            return {}
        used = self.used if isinstance(self.used, torch.Tensor) else torch.cat(self.used)
        used = used.reshape(-1, len(self.entries))
        table: dict[str, dict] = {}
        for j, (name, key) in enumerate(self.entries):
            table.setdefault(name, {})[key] = {
                "accuracy": round(float(self.correct[j]) / n, 6),
                "mean_trajectories": round(float(self.used_sum[j]) / n, 6),
                # median of an even count: the mean of the middle two (as statistics.median)
                "median_trajectories": round(float(used[:, j].double().quantile(0.5)), 6),
            }
        return table


def head_record(record: dict, n: int, aggregators: Sequence, seed: int) -> dict:
    """The record a fixed run with N = ``n`` would have written for this question: the first
    ``n`` samples of a live adaptive run's record (every question has at least the first round,
    and sample j is the fixed run's sample j), with its vote share, distinct answers, compute
    and the fields of ``aggregators`` (``latentlit.aggregation.registry``) recomputed on them.
    ``diversity`` is kept (a live run stores it over the first round already).

    Raises:
        ValueError: the record has fewer than ``n`` samples.
    """
    from latentlit.reporting.values import question_view

    if len(record["answers"]) < n:
        raise ValueError(f"question {record['id']}: {len(record['answers'])} samples, fewer than the first round's {n}")
    head = dict(record)
    for key in ("answers", "correct", "texts", "rm_scores"):
        if record.get(key) is not None:
            head[key] = list(record[key][:n])
    vote = majority_vote(head["answers"])
    head["vote_share"], head["distinct_answers"] = round(vote.share, 6), vote.distinct
    if "compute" in record:
        head["compute"] = {**record["compute"], "latents": record["compute"]["latents"][:n],
                           "answers": record["compute"]["answers"][:n]}
    view = question_view(head, seed)
    for agg in aggregators:
        if agg.choose is not None:
            head[agg.name] = agg.choose(view)
    return head
