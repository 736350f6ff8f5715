"""The metrics a prediction run sums as it goes, one record at a time: every accuracy at every k
(:mod:`latentlit.evaluation.values`), distinct answers, diversity per step, the counts of
:mod:`latentlit.evaluation.checks`, latent steps per method and the adaptive-N table.

States are torchmetrics sums (float64), reduced across processes on ``compute``, so a run's
metrics do not depend on how its questions were split over batches, resumes or processes; the
report checks them against an independent recomputation from the records on disk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torchmetrics import MeanMetric, SumMetric

from latentlit.aggregation.registry import Aggregator
from latentlit.aggregation.stopping import AdaptiveSpec
from latentlit.evaluation.checks import COUNTS, RM_TIE_TOLERANCE, record_counts
from latentlit.evaluation.metrics import AdaptiveTable, KeyedMean, MeanVector
from latentlit.evaluation.values import metric_keys, question_values


class RunMetrics(torch.nn.Module):
    """Metrics of the questions of one prediction run.

    Args:
        ks: the k reported (:func:`latentlit.evaluation.metrics.coverage_ks`). n: the N the
            metrics describe. aggregators: the run's (:func:`latentlit.aggregation.registry.enabled`).
        seed: the run's seed (keys the random subsets of the estimators). steps: the most latent
            steps a trajectory can run (length of the diversity vector).
        methods: names whose latent steps are averaged (``"samples"``, then each search method).
        adaptive: the run's adaptive-N table, or None.
        view: record -> the record the N-sample metrics read (a live adaptive run's first round,
            :func:`latentlit.search.adaptive.head_record`); default the record itself.
    """

    def __init__(self, ks: Sequence[int], n: int, aggregators: Sequence[Aggregator], seed: int, steps: int,
                 methods: Sequence[str], adaptive: AdaptiveSpec | None = None,
                 view: Callable[[dict], dict] | None = None):
        super().__init__()
        self.ks, self.aggregators, self.seed, self.methods = list(ks), list(aggregators), seed, list(methods)
        self.view = view or (lambda record: record)
        self.states = torch.nn.ModuleDict({
            "accuracy": KeyedMean(metric_keys(self.ks, n, self.aggregators)),
            "distinct": MeanMetric(), "questions": SumMetric(), "diversity": MeanVector(max(steps, 1)),
            "samples": SumMetric(), **{name: SumMetric() for name in COUNTS},
            **{f"steps_{name}": MeanMetric() for name in self.methods},
        })
        if adaptive is not None:
            self.states["adaptive"] = AdaptiveTable(adaptive)

    def update(self, record: dict) -> None:
        """Add one question's record (``predictions.jsonl``)."""
        m, dev = self.states, self.states["samples"].device
        if "adaptive" in m:
            m["adaptive"].update(record["adaptive"])
        m["samples"].update(torch.tensor(float(len(record["answers"])), device=dev))
        r = self.view(record)
        m["accuracy"].update(question_values(r, self.ks, self.aggregators, self.seed).values)
        m["distinct"].update(torch.tensor(float(r["distinct_answers"]), device=dev))
        m["questions"].update(torch.tensor(1.0, device=dev))
        for name, value in record_counts(r).items():
            m[name].update(torch.tensor(float(value), device=dev))
        steps = dict(r.get("latent_steps", {}))
        if "compute" in r:  # the samples the metrics describe (a live adaptive run's first round)
            steps["samples"] = sum(r["compute"]["latents"])
        for name, value in steps.items():
            m[f"steps_{name}"].update(torch.tensor(float(value), device=dev))
        if r["diversity"]:  # null: a step fewer than two of the question's trajectories reached
            m["diversity"].update(torch.tensor([[math.nan if x is None else x for x in r["diversity"]]], device=dev))

    def compute(self) -> dict:
        """``metrics.json``'s ``metrics`` (rounded to 6 decimals), its ``counts`` (without this run's
        work) and, with adaptive N, its ``adaptive`` section. Call on every process."""
        m = self.states
        questions, samples = int(m["questions"].compute()), int(m["samples"].compute())
        tally = {name: int(m[name].compute()) for name in COUNTS}
        diversity = m["diversity"].compute()
        metrics = {
            **m["accuracy"].as_dict(),
            "distinct_answers": float(m["distinct"].compute()),
            "no_answer_greedy": tally["no_answer_greedy"] / max(questions, 1),
            "no_answer_samples": tally["no_answer_samples"] / max(samples, 1),  # questions x N, or what was drawn
            # per step, the mean over the questions with two or more trajectories there (null: none),
            # and how many those are
            # reshape: torchmetrics returns a one-element result as a scalar (one latent step)
            "diversity_per_step": [None if math.isnan(x) else round(x, 4) for x in diversity["mean"].reshape(-1).tolist()],
            "diversity_questions_per_step": [int(x) for x in diversity["count"].reshape(-1).tolist()],
            "latent_steps_per_question": {name: round(float(m[f"steps_{name}"].compute()), 4) for name in self.methods},
        }
        out = {
            # states are float64 sums; 6 decimals hide the float32 noise of compute() (0.6499999761...)
            "metrics": {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
            "counts": {"questions": questions, "nonfinite_rm_scores": tally["nonfinite_rm_scores"],
                       "nonfinite_beam_scores": tally["nonfinite_beam_scores"],
                       # best-of-N choices whose runner-up is within rm_tie_tolerance (docs/determinism.md)
                       "rm_near_ties": tally["rm_near_ties"], "rm_tie_tolerance": RM_TIE_TOLERANCE},
        }
        if "adaptive" in m:
            out["adaptive"] = m["adaptive"].compute()
        return out
