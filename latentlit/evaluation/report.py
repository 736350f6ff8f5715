"""The end of ``latentlit predict``: intervals, selective prediction and compute from the records,
then ``metrics.json``, the printed summary, the PNGs and the TensorBoard images.

Runs on rank zero after the DDP merge, on the records read back from ``predictions.jsonl``. The
point estimates stay the torchmetrics sums of the predictor (exact under DDP); this module
recomputes them from the records and refuses to report when the two disagree.

``metrics.json`` sections added here (next to ``config``, ``metrics``, ``counts``):

* ``intervals``: ``accuracy`` (key -> ``{"low", "high"}``) and ``minus_greedy`` (key ->
  ``{"diff", "low", "high"}``, paired), 95% percentile bootstrap over questions;
* ``monte_carlo``: standard error of each value estimated from random subsets;
* ``estimators``: how each ``<name>@k`` is computed;
* ``selective``: per confidence (:mod:`latentlit.evaluation.selective`);
* ``compute``: per method and k, accuracy against trajectories, tokens and FLOPs per question
  (:mod:`latentlit.evaluation.compute`), with the adaptive-N points when the run has them.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentlit.aggregation.at_k import DEFAULT_SUBSETS
from latentlit.aggregation.registry import (
    AGGREGATORS,
    COVERAGE_STYLE,
    Aggregator,
    question_view,
    style,
)
from latentlit.evaluation.bootstrap import (
    paired_intervals,
    percentile_intervals,
    resample_counts,
    resample_indices,
)
from latentlit.evaluation.compute import Cost, CostModel
from latentlit.evaluation.plots import (
    close,
    plot_accuracy_vs_compute,
    plot_reliability,
    plot_risk_coverage,
    plot_scaling,
)
from latentlit.evaluation.selective import CONFIDENCES, confidences, selective_summary
from latentlit.evaluation.text import interval, pct, points
from latentlit.evaluation.values import metric_keys, question_values

RESAMPLES = 2000
SELECTIVE_RESAMPLES = 1000
LEVEL = 0.95
COMPUTE_CSV = "accuracy_vs_compute.csv"
FIGURES = {"scaling": "scaling.png", "risk_coverage": "risk_coverage.png", "calibration": "calibration.png",
           "accuracy_vs_compute": "accuracy_vs_compute.png"}
_TOLERANCE = 5e-6  # metrics.json rounds to 6 decimals

COVERAGE_ESTIMATOR = "exact: unbiased pass@k, 1 - C(N-c,k)/C(N,k) (Chen et al. 2021, Eq. 1)"
FIRST_K_ESTIMATOR = "majority vote over the first k samples (one draw; the meaning of majority_vote@k before it became the subset expectation)"


def _r(x: float) -> float:
    return round(float(x), 6)


def add_report(summary: dict, records: Sequence[dict], *, ks: Sequence[int], aggregators: Sequence[Aggregator],
               seed: int, cost_model: CostModel | None, resamples: int = RESAMPLES, level: float = LEVEL) -> dict:
    """Add ``selection_gap``, ``intervals``, ``monte_carlo``, ``estimators``, ``selective`` and
    ``compute`` to ``summary`` (in place; also returned).

    Args:
        summary: ``finish_metrics()``'s dict (``metrics`` holds the torchmetrics means).
        records: every record of the run (``predictions.jsonl``).
        seed: the run's seed (keys random subsets and bootstrap resamples).
        cost_model: None leaves out the compute section (e.g. records without ``compute``).

    Raises:
        RuntimeError: the records' means differ from ``summary["metrics"]`` or the question
            counts differ (the records on disk are not what the metrics counted).
    """
    records = sorted(records, key=lambda r: r["index"])
    q = len(records)
    if q == 0:
        return summary
    if q != summary["counts"]["questions"]:
        raise RuntimeError(f"{q} records on disk but the metrics counted {summary['counts']['questions']} questions")
    n = len(records[0]["answers"])
    keys = metric_keys(ks, n, aggregators)
    per_question = [question_values(r, ks, aggregators, seed) for r in records]
    values = np.array([[pq.values[k] for k in keys] for pq in per_question])
    metrics = summary["metrics"]
    recomputed = values.mean(0)
    wrong = {k: (metrics.get(k), _r(v)) for k, v in zip(keys, recomputed)
             if metrics.get(k) is None or abs(metrics[k] - v) > _TOLERANCE}
    if wrong:
        raise RuntimeError(f"metrics differ from their recomputation from the records (metric: (reported, records)): {wrong}")

    counts = resample_counts(q, resamples, seed)
    acc = percentile_intervals(values, counts, level)
    diff = paired_intervals(values[:, 1:], values[:, 0], counts, level)
    summary["selection_gap"] = selection_gaps(keys, values, counts, level)
    summary["intervals"] = {
        "level": level, "resamples": resamples, "seed": seed,
        "method": "percentile bootstrap over questions; minus_greedy uses the same resamples for both (paired)",
        "accuracy": {k: {"low": _r(lo), "high": _r(hi)} for k, lo, hi in zip(keys, acc.low, acc.high)},
        "minus_greedy": {k: {"diff": _r(d), "low": _r(lo), "high": _r(hi)}
                         for k, d, lo, hi in zip(keys[1:], diff.estimate, diff.low, diff.high)},
    }
    mc = {}
    for k in keys:
        var = [pq.mc_variances[k] for pq in per_question if k in pq.mc_variances]
        if var:
            mc[k] = _r(math.sqrt(sum(var)) / q)
    summary["monte_carlo"] = {"subsets": DEFAULT_SUBSETS, "standard_error": mc}
    summary["estimators"] = {"coverage": COVERAGE_ESTIMATOR, **{a.name: a.estimator for a in aggregators},
                             "majority_vote_first": FIRST_K_ESTIMATOR}

    views = [question_view(r, seed) for r in records]
    selective = {}
    for i, (name, (conf, ok)) in enumerate(confidences(records, views).items()):
        label = next(c.label for c in CONFIDENCES if c.name == name)
        s = selective_summary(conf, ok, resample_indices(q, SELECTIVE_RESAMPLES, seed, i), level)
        selective[name] = {"definition": label, **_round_tree(s)}
    summary["selective"] = selective

    if cost_model is not None and all("compute" in r for r in records):
        summary["compute"] = compute_section(summary, records, ks, aggregators, cost_model)
    return summary


def selection_gaps(keys: Sequence[str], values: np.ndarray, counts: np.ndarray, level: float = LEVEL) -> dict:
    """``selection_gap@k = coverage@k - accuracy@k`` of every method at every k: what the samples found and the
    method did not select (points of accuracy, paired bootstrap interval over the same question resamples), and
    ``converted``, the fraction of coverage@k it reaches (None at coverage 0).

    Args:
        keys: metric names (``coverage@k``, ``<method>@k``, ...). values: (Q, len(keys)) per-question values.
        counts: (B, Q) bootstrap resample counts.

    Returns:
        ``{method: {k: {"gap", "low", "high", "converted"}}}`` (k as a string, as JSON keys are).
    """
    column = {key: i for i, key in enumerate(keys)}
    out: dict[str, dict] = {}
    for key, i in column.items():
        name, _, k = key.rpartition("@")
        if not name or name == "coverage" or f"coverage@{k}" not in column:
            continue
        coverage = values[:, column[f"coverage@{k}"]]
        gap = paired_intervals(coverage, values[:, i], counts, level)
        mean = float(coverage.mean())
        out.setdefault(name, {})[k] = {"gap": _r(gap.estimate[0]), "low": _r(gap.low[0]), "high": _r(gap.high[0]),
                                       "converted": _r(float(values[:, i].mean()) / mean) if mean > 0 else None}
    return out


def _round_tree(x):
    if isinstance(x, float):
        return _r(x)
    if isinstance(x, dict):
        return {k: _round_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round_tree(v) for v in x]
    return x


def _mean_cost(costs: list[Cost]) -> Cost:
    return sum(costs, Cost()) * (1.0 / len(costs))


def _row(method: str, label: str, k, accuracy: float, trajectories: float, cost: Cost | None, **extra) -> dict:
    return {"method": method, "label": label, "k": k, "accuracy": _r(accuracy), "trajectories": trajectories,
            "backbone_tokens": None if cost is None else round(cost.backbone_tokens, 2),
            "rm_tokens": None if cost is None else round(cost.rm_tokens, 2),
            "flops": None if cost is None else float(f"{cost.flops:.6g}"), **extra}


def compute_section(summary: dict, records: Sequence[dict], ks: Sequence[int], aggregators: Sequence[Aggregator],
                    cost_model: CostModel) -> dict:
    """Accuracy against compute per question for greedy, coverage@k (the ceiling, at the cost of its
    k samples), every aggregator at every k, and the adaptive-N points of ``summary["adaptive"]``
    when present.

    Adaptive points carry only trajectory counts, so their tokens and FLOPs are estimated as the
    fixed-N run's cost of that many trajectories (``estimated: true``), RM scoring left out.
    """
    metrics = summary["metrics"]
    n = len(records[0]["answers"])
    rows = [_row("greedy", "greedy", 1, metrics["greedy_accuracy"], 1, _mean_cost([cost_model.greedy(r) for r in records]))]
    # coverage@k at the cost of its k samples: the ceiling every selector of those samples sits under
    per_record = [cost_model.spent("samples", r, list(ks)) for r in records]
    rows += [_row("coverage", "coverage (ceiling)", k, metrics[f"coverage@{k}"], k,
                  _mean_cost([costs[i] for costs in per_record])) for i, k in enumerate(ks)]
    for agg in aggregators:
        agg_ks = list(ks) if agg.at_k is not None else [n]
        per_record = [cost_model.spent(agg.spends, r, agg_ks) for r in records]
        for i, k in enumerate(agg_ks):
            rows.append(_row(agg.name, agg.label, k, metrics[f"{agg.name}@{k}"], k,
                             _mean_cost([costs[i] for costs in per_record])))
    adaptive = summary.get("adaptive")
    if adaptive is None:
        adaptive = metrics.get("adaptive")
    if isinstance(adaptive, dict):
        rows += adaptive_rows(adaptive, records, cost_model)
    return {"per_question": True, "models": cost_model.describe(), "rows": rows,
            "note": "means per question; tokens are forward positions run (padding excluded), FLOPs matrix-multiply "
                    "FLOPs (latentlit.evaluation.compute); k < N costs k of the N trajectories"}


def adaptive_rows(adaptive: dict, records: Sequence[dict], cost_model: CostModel) -> list[dict]:
    """Rows for ``{"<rule>": {"<threshold>": {"accuracy", "mean_trajectories", ...}}}``;
    malformed entries are skipped with a warning."""
    rows = []
    one, zero = (_mean_cost([cost_model.samples(r, k) for r in records]) for k in (1, 0))
    for rule, by_threshold in adaptive.items():
        if not isinstance(by_threshold, dict):
            continue
        for threshold, point in by_threshold.items():
            try:
                accuracy, mean_t = float(point["accuracy"]), float(point["mean_trajectories"])
            except (KeyError, TypeError, ValueError):
                warnings.warn(f"metrics.json adaptive[{rule!r}][{threshold!r}] lacks accuracy/mean_trajectories; "
                              "left out of the accuracy-vs-compute table", stacklevel=2)
                continue
            cost = zero + (one + zero * -1.0) * mean_t
            rows.append(_row(f"adaptive:{rule}", f"adaptive N ({rule})", None, accuracy, round(mean_t, 3), cost,
                             threshold=threshold, estimated=True))
    return rows


# ---------------------------------------------------------------------- printing
def format_summary(summary: dict) -> str:
    """The table ``latentlit predict`` prints: every method at every k (%), then one line per
    method at N with its 95% interval and its paired difference against greedy, then the
    selective-prediction lines."""
    metrics, n = summary["metrics"], summary["config"]["n_samples"]
    ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith("coverage@")})
    names = ["coverage"] + [a.name for a in AGGREGATORS if f"{a.name}@1" in metrics]
    labels = {"coverage": "coverage", **{a.name: a.label for a in AGGREGATORS}}
    width = max(len(labels[x]) for x in names) + 2
    lines = [f"{'k':>4}" + "".join(f"{labels[x]:>{width}}" for x in names) + "   (accuracy %)"]
    for k in ks:
        lines.append(f"{k:>4}" + "".join(f"{pct(metrics[f'{x}@{k}']):>{width}}" for x in names))
    iv = summary.get("intervals")
    lines.append(f"at N = {n}: accuracy % [95% bootstrap CI]" + ("; minus greedy, paired [95% CI]" if iv else ""))
    rows = [("greedy", "greedy_accuracy"), ("coverage", f"coverage@{n}")]
    rows += [(a.label, f"{a.name}@{n}") for a in AGGREGATORS if f"{a.name}@{n}" in metrics]
    for label, key in rows:
        line = f"  {label:<16}{pct(metrics[key]):>6}"
        if iv:
            a = iv["accuracy"][key]
            line += f" {interval(a['low'], a['high'])}"
            d = iv["minus_greedy"].get(key)
            if d is not None:
                line += f"   {points(d['diff'])} {interval(d['low'], d['high'], signed=True)}"
        lines.append(line)
    gaps = summary.get("selection_gap") or {}
    if any(str(n) in gaps.get(a.name, {}) for a in AGGREGATORS):
        lines.append(f"selection gap at N = {n}: coverage - accuracy, points [95% CI, paired]; share of coverage reached")
        lines += [f"  {a.label:<16}{points(g['gap']):>6} {interval(g['low'], g['high'], signed=True)}   "
                  f"{'-' if g['converted'] is None else pct(g['converted']) + '%'}"
                  for a in AGGREGATORS if (g := gaps.get(a.name, {}).get(str(n)))]
    for name, s in summary.get("selective", {}).items():
        gain = s["gain@50%"]
        ci = s.get("gain@50%_interval")
        lines.append(f"selective, {s['definition']}: 50% most confident {pct(s['accuracy@50%'])}% vs "
                     f"{pct(s['accuracy_all'])}% answering all ({points(gain)}"
                     + (f" {interval(ci[0], ci[1], signed=True)}" if ci else "") +
                     f"); AURC {s['aurc']:.3f}; ECE {pct(s['ece'])}%")
    speed = summary.get("trajectories_per_second")
    by = (summary.get("throughput") or {}).get("measured_by", "this run")
    if not summary["counts"].get("trajectories_this_run", 1):
        what = "no new questions this run" + (f" ({speed} trajectories/s measured by {by})" if speed else "")
    else:
        what = f"{speed} trajectories/s this run" if speed else "no new questions this run"
    lines.append(f"questions {summary['counts']['questions']}; {what}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- figures
def make_figures(summary: dict) -> dict:
    """name -> matplotlib Figure for every figure the summary supports (see ``FIGURES``)."""
    metrics, n = summary["metrics"], summary["config"]["n_samples"]
    ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith("coverage@")})
    iv = summary.get("intervals", {}).get("accuracy", {})
    title = f"{summary['config']['sampler']['name']}, N={n}, {summary['counts']['questions']} questions"

    def band(key):
        return iv.get(key, {}).get("low"), iv.get(key, {}).get("high")

    def curve(prefix):
        keys = [f"{prefix}@{k}" for k in ks]
        lows, highs = zip(*(band(k) for k in keys))
        ok = all(x is not None for x in lows + highs)
        return {"values": [metrics[k] for k in keys], "low": list(lows) if ok else None, "high": list(highs) if ok else None}

    colour, marker = COVERAGE_STYLE
    curves = {"coverage@k": {**curve("coverage"), "colour": colour, "marker": marker}}
    points = {}
    for a in AGGREGATORS:
        colour, marker = style(a.name)
        if f"{a.name}@1" in metrics:
            curves[a.label] = {**curve(a.name), "colour": colour, "marker": marker}
        elif f"{a.name}@{n}" in metrics:
            lo, hi = band(f"{a.name}@{n}")
            points[a.label] = {"k": n, "value": metrics[f"{a.name}@{n}"], "low": lo, "high": hi, "colour": colour,
                               "marker": marker}
    g_lo, g_hi = band("greedy_accuracy")
    figures = {"scaling": plot_scaling(ks, curves, {"value": metrics["greedy_accuracy"], "low": g_lo, "high": g_hi},
                                       title=title, points=points)}
    selective = summary.get("selective") or {}
    if selective:
        figures["risk_coverage"] = plot_risk_coverage(
            {f"{s['definition']} (AURC {s['aurc']:.3f})": s["risk_coverage"] for s in selective.values()}, title=title)
        figures["calibration"] = plot_reliability(
            {s["definition"]: {"ece": s["ece"], "bins": s["reliability"]} for s in selective.values()}, title=title)
    if summary.get("compute"):
        figures["accuracy_vs_compute"] = plot_accuracy_vs_compute(summary["compute"]["rows"], title=title)
    return figures


def write_compute_csv(summary: dict, path: Path) -> None:
    """The accuracy-vs-compute table as CSV (one row per method and k)."""
    rows = summary["compute"]["rows"]
    fields = ["method", "k", "threshold", "accuracy", "trajectories", "backbone_tokens", "rm_tokens", "flops", "estimated"]
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in fields})


def write_report(summary: dict, output_dir: Path, logger=None) -> dict:
    """Write ``metrics.json``, save the PNGs (and the compute CSV), and log
    the figures and scalars to TensorBoard when ``logger`` is a TensorBoard logger.

    Returns:
        name -> path of every PNG written.
    """
    output_dir = Path(output_dir)
    tmp = output_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(output_dir / "metrics.json")
    if summary.get("compute"):
        write_compute_csv(summary, output_dir / COMPUTE_CSV)
    experiment = getattr(logger, "experiment", None) if logger is not None else None
    tensorboard = experiment is not None and hasattr(experiment, "add_figure")
    written = {}
    for name, fig in make_figures(summary).items():
        path = output_dir / FIGURES[name]
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written[name] = path
        if tensorboard:
            experiment.add_figure(f"predict/{name}", fig)
        close(fig)
    if tensorboard:
        for key, value in summary["metrics"].items():
            if isinstance(value, float):
                experiment.add_scalar(f"predict/{key}", value)
        for name, s in summary.get("selective", {}).items():
            for stat in ("accuracy@50%", "gain@50%", "aurc", "ece"):
                experiment.add_scalar(f"predict/selective/{name}/{stat}", s[stat])
        experiment.flush()
    return written
