"""A study across runs: one tidy table and overlay figures from several ``latentlit predict`` output
directories, each run named by what differs between them (docs/outputs.md#a-study-across-runs).

Rows are long format, one per (run, method, k): the run's label, sampler and strength, N, the
method, k, its accuracy with the run's 95% bootstrap interval (``metrics.json``), and, against a
baseline run on the same questions, the paired difference and its interval
(:func:`latentlit.evaluation.paired.paired_difference`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from latentlit.aggregation.registry import AGGREGATORS, COVERAGE_STYLE, style
from latentlit.evaluation.compare import load_run
from latentlit.evaluation.paired import paired_difference
from latentlit.evaluation.plots import plot_study
from latentlit.runs.records import read_records

DEFAULT_KS = (1, 4, 16, 64)
DEFAULT_METHODS = ("coverage", "majority_vote", "best_of_n")
# methods besides the aggregators of the registry
OWN_METHODS = ("greedy", "coverage", "majority_vote_first")
FIELDS = ["run", "sampler", "strength", "n", "method", "k", "accuracy", "low", "high", "minus_baseline",
          "minus_low", "minus_high", "directory"]
# settings that name a run first when they differ (then any other that differs, by name)
FIRST = ("sampler.name", "sampler.p", "sampler.sigma", "sampler.attention_p", "n_samples", "latent_rm", "seed")
# (a selector's calibration follows its temperature and RM: its temperature names it)
NOT_LABELS = ("backbone_fingerprint", "latent_rm_fingerprint", "selector.calibration", "sampler.target_modules",
              "sampler.attention_modules")


@dataclass
class StudyRun:
    """One output directory: its ``metrics.json`` (``summary``), ``run.json`` (``settings``) and,
    read when a paired difference needs them, its records."""

    directory: Path
    summary: dict
    settings: dict
    label: str = ""
    _records: list | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.summary["config"]["n_samples"])

    @property
    def records(self) -> list[dict]:
        if self._records is None:
            self._records = read_records(self.directory)
        return self._records


def load_study_runs(directories) -> list[StudyRun]:
    """The runs of ``directories`` (each with ``metrics.json``), labelled by what differs between them.

    Raises:
        FileNotFoundError / ValueError: a directory without ``metrics.json``, or whose records do
            not match it (:func:`latentlit.evaluation.compare.load_run`); no directory at all.
    """
    if not directories:
        raise ValueError("no run directories given")
    runs = []
    for d in directories:
        summary = load_run(d)
        settings_file = Path(d) / "run.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else dict(summary.get("config", {}))
        runs.append(StudyRun(Path(d), summary, settings))
    for run, label in zip(runs, labels([r.settings for r in runs], [r.directory.name for r in runs])):
        run.label = label
    return runs


def _flat(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def labels(settings: list[dict], names: list[str]) -> list[str]:
    """Each run's label, from the settings that differ between the runs: the sampler by its name and
    strength (``AGN sigma=0.5``; its other options only where runs of that sampler differ), then every
    other differing setting (``N 64``, ``latent_rm ...``); the directory names when none differs."""
    samplers = [s.get("sampler") or {} for s in settings]
    flat = [_flat({k: v for k, v in s.items() if k != "sampler"}) for s in settings]
    keys = sorted({k for f in flat for k in f if not k.endswith(NOT_LABELS)})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    differing.sort(key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), k))
    sampler_parts = []
    for s in samplers:
        same_kind = [o for o in samplers if o.get("name") == s.get("name")]
        own = [k for k in s if k != "name" and not k.endswith(NOT_LABELS) and (
            k in ("p", "sigma") or (k == "attention_p" and s[k]) or
            len({json.dumps(o.get(k), sort_keys=True, default=str) for o in same_kind}) > 1)]
        sampler_parts.append(" ".join([str(s.get("name", "")), *(f"{k}={s[k]}" for k in own)]).strip())
    show_sampler = len(set(sampler_parts)) > 1
    out = []
    for part, f in zip(sampler_parts, flat):
        words = [part] if show_sampler else []
        words += [f"{ {'n_samples': 'N'}.get(k, k)} {f[k]}" for k in differing if k in f]
        out.append(", ".join(words))
    if not any(out):
        return list(names)
    if len(set(out)) < len(out):  # runs that differ only in what labels leave out: add the directory
        out = [f"{label} ({name})" for label, name in zip(out, names)]
    return out


def _strength(settings: dict) -> tuple[str, str]:
    sampler = settings.get("sampler") or {}
    for key in ("p", "sigma"):
        if key in sampler:
            return str(sampler.get("name", "")), f"{key}={sampler[key]}"
    return str(sampler.get("name", "")), ""


def _key(method: str, k: int) -> str:
    return "greedy_accuracy" if method == "greedy" else f"{method}@{k}"


def check_methods(methods) -> list[str]:
    """The chosen method names, each ``greedy``, ``coverage``, ``majority_vote_first`` or an aggregator.

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    known = [*OWN_METHODS, *(a.name for a in AGGREGATORS)]
    for m in methods:
        if m not in known:
            raise ValueError(f"--methods: no method {m!r}; known: {', '.join(known)}")
    return list(methods)


def study_rows(runs: list[StudyRun], ks=DEFAULT_KS, methods=DEFAULT_METHODS, baseline: StudyRun | None = None) -> list[dict]:
    """The table's rows: every (run, method, k) that the run measured (k <= its N; a method measured
    at N only, such as beam search, at k = N), with the baseline's paired difference where both runs
    hold the same questions and the baseline measured the same metric."""
    rows = []
    for run in runs:
        metrics = run.summary["metrics"]
        intervals = (run.summary.get("intervals") or {}).get("accuracy") or {}
        sampler, strength = _strength(run.settings)
        for method in check_methods(methods):
            for k in ([1] if method == "greedy" else sorted(set(ks) | ({run.n} if run.n in ks else set()))):
                key = _key(method, k)
                if key not in metrics or k > run.n:
                    continue
                row = {"run": run.label, "sampler": sampler, "strength": strength, "n": run.n, "method": method, "k": k,
                       "accuracy": metrics[key], "low": intervals.get(key, {}).get("low"),
                       "high": intervals.get(key, {}).get("high"), "minus_baseline": None, "minus_low": None,
                       "minus_high": None, "directory": str(run.directory)}
                if baseline is not None and run is not baseline and key in baseline.summary["metrics"]:
                    try:
                        d = paired_difference(baseline.records, run.records, key, seed_a=int(baseline.settings.get("seed", 0)),
                                              seed_b=int(run.settings.get("seed", 0)))
                        row.update(minus_baseline=d["diff"], minus_low=d["low"], minus_high=d["high"])
                    except ValueError:  # other questions: no paired difference
                        pass
                rows.append(row)
    return rows


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict], baseline: StudyRun | None = None) -> str:
    """The rows as a markdown table (percent; intervals in brackets)."""
    head = ["run", "method", "k", "accuracy [95% CI]"] + ([f"minus {baseline.label} [95% CI]"] if baseline else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["run"], r["method"], str(r["k"]), f"{_pct(r['accuracy'])} [{_pct(r['low'])}, {_pct(r['high'])}]"
                 if r["low"] is not None else _pct(r["accuracy"])]
        if baseline is not None:
            cells.append("" if r["minus_baseline"] is None else
                         f"{100 * r['minus_baseline']:+.1f} [{100 * r['minus_low']:+.1f}, {100 * r['minus_high']:+.1f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows in long format (fractions; empty cells where there is no value)."""
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def figures(runs: list[StudyRun], rows: list[dict], methods=DEFAULT_METHODS) -> dict:
    """name -> matplotlib Figure: ``accuracy_vs_k`` (one panel per method, one line per run, 95%
    bands) and ``accuracy_vs_compute`` (each run's methods against FLOPs per question, from the
    ``compute`` section of its ``metrics.json``)."""
    colours = {m: (COVERAGE_STYLE if m == "coverage" else style(m) if m in {a.name for a in AGGREGATORS} else ("k", "o"))
               for m in methods}
    compute = {run.label: [r for r in (run.summary.get("compute") or {}).get("rows", []) if r.get("method") in methods]
               for run in runs}
    titles = {"greedy": "greedy", "coverage": "coverage@k", "majority_vote_first": "majority vote (first k)",
              **{a.name: a.label for a in AGGREGATORS}}
    return plot_study(rows, [run.label for run in runs], list(methods), compute, colours, titles)
