"""Several ``latentlit predict`` output directories side by side, with their 95% intervals
(``scripts/compare_runs.py``).

Reads each directory's ``metrics.json``. Rows are methods at the run's N (``@N``; runs may have
different N), optionally at every k, then each method minus greedy (paired intervals), then the
selective-prediction gains; columns are runs. Cells read ``52.2 [47.8, 56.6]`` (accuracy %, 95%
bootstrap interval); a run without a method leaves its cell empty.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from latentlit.aggregation.registry import AGGREGATORS

_LABELS = {"greedy": "greedy", "coverage": "coverage", **{a.name: a.label for a in AGGREGATORS}}


def load_run(directory: str | Path) -> dict:
    """``metrics.json`` of an output directory, with its ``name`` (the directory's name).

    Raises:
        FileNotFoundError: no ``metrics.json`` there (names the path).
    """
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give output directories of latentlit predict")
    run = json.loads(path.read_text())
    run["name"] = Path(directory).resolve().name
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


def rows(runs: list[dict], every_k: bool = False) -> list[dict]:
    """Long-format rows: one per (run, metric): ``run``, ``metric``, ``k``, ``value``, ``low``,
    ``high``, ``minus_greedy``, ``diff_low``, ``diff_high`` (fractions; None where absent)."""
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
                out.append({"run": run["name"], "metric": method, "k": int(key.split("@")[1]) if "@" in key else None,
                            "value": run["metrics"][key], "low": a.get("low"), "high": a.get("high"),
                            "minus_greedy": d.get("diff"), "diff_low": d.get("low"), "diff_high": d.get("high")})
    return out


def _cell(value, low, high, signed: bool = False) -> str:
    if value is None:
        return ""
    fmt = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: f"{100 * x:.1f}")
    return fmt(value) + (f" [{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else "")


def markdown(runs: list[dict], every_k: bool = False) -> str:
    """The side-by-side table as GitHub markdown."""
    table = rows(runs, every_k)
    names = [r["name"] for r in runs]
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

    def add(label: str, cells: list[str]) -> None:
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    add("sampler", [r["config"]["sampler"].get("name", "") for r in runs])
    add("N", [str(r["config"]["n_samples"]) for r in runs])
    add("questions", [str(r["counts"]["questions"]) for r in runs])
    index = {(r["run"], r["metric"], r["k"]): r for r in table}
    labels = []
    for r in table:
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
    fields = ["run", "metric", "k", "value", "low", "high", "minus_greedy", "diff_low", "diff_high"]
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(table)
