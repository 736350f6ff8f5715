"""Several ``latentlit predict`` output directories side by side, with their 95% intervals
(``scripts/compare_runs.py``).

Reads each directory's ``metrics.json``. Rows: the settings that tell the runs apart (the
sampler with its strength, mask scope and prefill, the seed, N, and any other setting that
differs between the runs), methods at the run's N (``@N``; runs may have different N),
optionally at every k, each method minus greedy (paired intervals), the adaptive-N rules
(accuracy and mean trajectories per question, live or replayed), then the selective-prediction
gains; columns are runs. Cells read ``52.2 [47.8, 56.6]`` (accuracy %, 95% bootstrap
interval); a run without a method leaves its cell empty.

A live adaptive run's methods are those of N = its round size (every question's first round;
``config.n_samples``), which the ``N`` row says, next to its budget N_max; the rule's own
accuracy and trajectories are its ``adaptive`` row.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from latentlit.aggregation.registry import AGGREGATORS
from latentlit.evaluation.text import interval, pct, points
from latentlit.runs.records import PREDICTIONS, read_records

_LABELS = {"greedy": "greedy", "coverage": "coverage", **{a.name: a.label for a in AGGREGATORS}}
# sampler settings always shown (when the sampler has them); any other one is shown when it differs
_SAMPLER_KEYS = ("p", "attention_p", "sigma", "relative", "mask_scope", "prefill")
# config entries with rows of their own (or, for the sampler and N, their own cells)
_OWN_ROWS = ("sampler", "n_samples", "seed", "adaptive")


def load_run(directory: str | Path) -> dict:
    """``metrics.json`` of an output directory, with its ``name`` (the directory's name).

    When the directory still holds its ``predictions.jsonl``, its records are read back
    (``latentlit.lit.writer.read_records``: each question once) and must be as many as the
    questions ``metrics.json`` counted, so that no table shows metrics of records counted twice.

    Raises:
        FileNotFoundError: no ``metrics.json`` there (names the path).
        ValueError: two different records of one question in ``predictions.jsonl``, or a
            question count that differs from ``metrics.json``'s (names the directory).
    """
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give output directories of latentlit predict")
    run = json.loads(path.read_text())
    run["name"] = Path(directory).resolve().name
    if (Path(directory) / PREDICTIONS).is_file():
        held = len(read_records(Path(directory)))
        counted = (run.get("counts") or {}).get("questions")
        if counted is not None and held != counted:
            raise ValueError(f"{directory}: metrics.json counts {counted} questions but predictions.jsonl holds {held} "
                             "distinct ones: the metrics are not those of these records; re-run the predict command "
                             "into this directory to rewrite metrics.json")
    return run


def _methods(runs: list[dict]) -> list[str]:
    names = ["greedy", "coverage"]
    for a in AGGREGATORS:
        if any(any(k.startswith(f"{a.name}@") for k in r["metrics"]) for r in runs):
            names.append(a.name)
    # aggregators a run has but this installation does not register
    for r in runs:
        for key in r["metrics"]:
            name = key.split("@")[0]
            if "@" in key and name not in names and name != "majority_vote_first":
                names.append(name)
    return names


def _key(run: dict, method: str, k: int | None) -> str:
    if method == "greedy":
        return "greedy_accuracy"
    return f"{method}@{run['config']['n_samples'] if k is None else k}"


def _adaptive_points(run: dict) -> list[tuple[str, str, dict]]:
    """(rule, threshold key, ``{"accuracy", "mean_trajectories", ...}``) of a run's ``adaptive``
    section (live or replayed); malformed entries are left out."""
    out = []
    for rule, by_threshold in (run.get("adaptive") or {}).items():
        for threshold, point in (by_threshold or {}).items() if isinstance(by_threshold, dict) else ():
            if isinstance(point, dict) and "accuracy" in point and "mean_trajectories" in point:
                out.append((rule, str(threshold), point))
    return out


def _live(run: dict) -> dict | None:
    """The ``config.adaptive`` of a live adaptive run (the rule decided while sampling), else None."""
    spec = run["config"].get("adaptive")
    return spec if isinstance(spec, dict) and spec.get("live") else None


def rows(runs: list[dict], every_k: bool = False) -> list[dict]:
    """Long-format rows: one per (run, metric): ``run``, ``metric``, ``k``, ``value``, ``low``,
    ``high``, ``minus_greedy``, ``diff_low``, ``diff_high`` (fractions; None where absent),
    ``threshold`` and ``trajectories`` (per question: k for a method at k, 1 for greedy, the
    mean for an adaptive rule). Adaptive rules are rows with ``metric`` ``adaptive:<rule>``
    and their ``threshold`` (no interval: ``metrics.json`` has none for them)."""
    out = []
    for run in runs:
        iv = run.get("intervals", {})
        for method in _methods(runs):
            ks = [None]
            if every_k and method != "greedy":
                ks = sorted({int(key.split("@")[1]) for key in run["metrics"] if key.startswith(f"{method}@")})
            for k in ks:
                key = _key(run, method, k)
                if key not in run["metrics"]:
                    continue
                a = iv.get("accuracy", {}).get(key, {})
                d = iv.get("minus_greedy", {}).get(key, {})
                at = int(key.split("@")[1]) if "@" in key else None
                out.append({"run": run["name"], "metric": method, "k": at,
                            "value": run["metrics"][key], "low": a.get("low"), "high": a.get("high"),
                            "minus_greedy": d.get("diff"), "diff_low": d.get("low"), "diff_high": d.get("high"),
                            "threshold": None, "trajectories": 1 if at is None else at})
        for rule, threshold, point in _adaptive_points(run):
            out.append({"run": run["name"], "metric": f"adaptive:{rule}", "k": None, "value": point["accuracy"],
                        "low": None, "high": None, "minus_greedy": None, "diff_low": None, "diff_high": None,
                        "threshold": threshold, "trajectories": point["mean_trajectories"]})
    return out


def _cell(value, low, high, signed: bool = False) -> str:
    if value is None:
        return ""
    return (points if signed else pct)(value) + (f" {interval(low, high, signed)}" if low is not None and high is not None else "")


def _shown(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def sampler_cells(runs: list[dict]) -> list[str]:
    """The ``sampler`` row: class name, strength (``p`` / ``sigma``, ``attention_p`` when set),
    ``relative``, ``mask_scope`` and ``prefill``, and any other sampler setting that differs
    between the runs (e.g. ``targets``)."""
    samplers = [r["config"].get("sampler") or {} for r in runs]
    others = sorted({k for s in samplers for k in s} - set(_SAMPLER_KEYS) - {"name"})
    differing = [k for k in others if len({_shown(s.get(k)) for s in samplers}) > 1]
    cells = []
    for s in samplers:
        parts = [str(s.get("name", ""))]
        for key in (*_SAMPLER_KEYS, *differing):
            if key in s and not (key == "attention_p" and not s[key]):
                parts.append(f"{key}={_shown(s[key])}")
        cells.append(" ".join(parts))
    return cells


def _n_cell(run: dict) -> str:
    n = str(run["config"]["n_samples"])
    live = _live(run)
    if live is None:
        return n
    return f"{n} (live adaptive run: every question's first {n} samples; budget N_max {live.get('n_max')})"


def markdown(runs: list[dict], every_k: bool = False) -> str:
    """The side-by-side table as GitHub markdown."""
    table = rows(runs, every_k)
    names = [r["name"] for r in runs]
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

    def add(label: str, cells: list[str]) -> None:
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    add("sampler", sampler_cells(runs))
    add("seed", [str(r["config"].get("seed", "")) for r in runs])
    add("N", [_n_cell(r) for r in runs])
    others = [k for k in dict.fromkeys(k for r in runs for k in r["config"]) if k not in _OWN_ROWS]
    for key in others:  # any other setting that tells the runs apart
        values = [_shown(r["config"].get(key)) if key in r["config"] else "" for r in runs]
        if len(set(values)) > 1:
            add(key, values)
    add("questions", [str(r["counts"]["questions"]) for r in runs])
    # methods only: an adaptive rule has a row per (rule, threshold), below, not per k
    methods = [r for r in table if not r["metric"].startswith("adaptive:")]
    index = {(r["run"], r["metric"], r["k"]): r for r in methods}
    labels = []
    for r in methods:
        at = (r["metric"], r["k"] if every_k else None)
        if at not in labels:
            labels.append(at)
    for method, k in labels:
        cells = []
        for run in runs:
            kk = k if every_k else (None if method == "greedy" else run["config"]["n_samples"])
            r = index.get((run["name"], method, kk))
            cells.append("" if r is None else _cell(r["value"], r["low"], r["high"]))
        at = "" if method == "greedy" else (f"@{k}" if every_k else "@N")
        add(f"{_LABELS.get(method, method)}{at} (%)", cells)
    for method, k in labels:
        if method == "greedy":
            continue
        cells = []
        for run in runs:
            kk = k if every_k else run["config"]["n_samples"]
            r = index.get((run["name"], method, kk))
            cells.append("" if r is None else _cell(r["minus_greedy"], r["diff_low"], r["diff_high"], signed=True))
        add(f"{_LABELS.get(method, method)}{f'@{k}' if every_k else '@N'} - greedy (points)", cells)
    adaptive = list(dict.fromkeys((rule, threshold) for run in runs for rule, threshold, _ in _adaptive_points(run)))
    for rule, threshold in adaptive:
        cells = []
        for run in runs:
            point = next((p for r, t, p in _adaptive_points(run) if (r, t) == (rule, threshold)), None)
            live = _live(run)
            mode = "live" if live is not None else "replayed"
            cells.append("" if point is None else f"{pct(point['accuracy'])} ({point['mean_trajectories']:.2f} "
                         f"trajectories, {mode})")
        at = "" if threshold in ("-", "None") else f"@{threshold}"
        add(f"adaptive {rule}{at} (%, mean trajectories per question)", cells)
    conf_names = []
    for run in runs:
        conf_names += [c for c in run.get("selective", {}) if c not in conf_names]
    for c in conf_names:
        cells = []
        for run in runs:
            s = run.get("selective", {}).get(c)
            ci = (s or {}).get("gain@50%_interval") or [None, None]
            cells.append("" if s is None else _cell(s["gain@50%"], ci[0], ci[1], signed=True))
        add(f"selective gain at 50% answered, {c} (points)", cells)
    return "\n".join(lines)


def write_csv(runs: list[dict], path: str | Path, every_k: bool = False) -> None:
    """:func:`rows` as CSV (fractions, not %)."""
    table = rows(runs, every_k)
    fields = ["run", "metric", "k", "value", "low", "high", "minus_greedy", "diff_low", "diff_high", "threshold",
              "trajectories"]
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(table)


def metric_curve(run: dict, metric: str) -> dict[int, float]:
    """``{k: value}`` of ``<metric>@k`` in a run's ``metrics.json`` (``load_run``), k ascending.

    Raises:
        KeyError: the run has no ``<metric>@k`` entry.
    """
    prefix = f"{metric}@"
    curve = {int(name[len(prefix):]): float(v) for name, v in (run.get("metrics") or {}).items()
             if name.startswith(prefix) and name[len(prefix):].isdigit() and v is not None}
    if not curve:
        raise KeyError(f"run {run.get('name')} has no {metric}@k metric")
    return dict(sorted(curve.items()))


def crossing(a: dict[int, float], b: dict[int, float]) -> int | None:
    """The smallest k at which curve ``b - a`` no longer has the sign it has at the smallest
    common k (at or past equality), or None when it keeps that sign at every common k.

    Answers "at which k does the trained model's coverage@k fall to the start's": with b above a
    at k = 1 and below from k = 8, the answer is 8.

    Raises:
        ValueError: the curves share no k.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two curves share no k")
    sign = (b[common[0]] > a[common[0]]) - (b[common[0]] < a[common[0]])
    for k in common[1:]:
        now = (b[k] > a[k]) - (b[k] < a[k])
        if now != sign:
            return k
    return None
