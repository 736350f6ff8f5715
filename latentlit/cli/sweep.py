"""Diversity sweep (paper Sec. 4, the "sweet spot" analysis): coverage@N, majority@N and trajectory
diversity against sampler strength (MC-dropout p, AGN sigma), driven by a YAML grid.

Each grid point is (sampler, strength): one normal ``latentlit predict`` run at the largest N of
the sweep, into its own output directory (``<output_dir>/<sampler>/<strength>=<value>/``, holding
its ``config.yaml``, ``predictions.jsonl``, ``metrics.json`` and ``sweep_point.json``). Sample j of
a question does not depend on N (randomness is keyed by (seed, question id, j)), so the figures
for every smaller N are read from that one run, with the estimators of ``metrics.json``
(:func:`latentlit.evaluation.values.question_values`): coverage@k is the unbiased pass@k over all N
samples, majority_vote@k the expected vote accuracy of a random k-subset of them
(:mod:`latentlit.aggregation.at_k`), majority_vote_first@k the vote of the first k samples (what a
run with N = k gives); distinct answers@k counts the first k samples' answers. Trajectory
diversity is the mean pairwise cosine distance of the N latent vectors
(:func:`latentlit.evaluation.metrics.trajectory_diversity`), averaged over the steps where it is
defined (two or more trajectories; with a dynamic stop late steps may have fewer) and over the
questions that have such a step; it estimates the same expectation at every N, so it is reported
once per point.

A point whose ``sweep_point.json`` holds the same configuration is not run again on a re-run (its
figures are recomputed from its records, a few seconds); an interrupted point resumes question
by question (``latentlit predict``'s own resume).

Sweep YAML::

    base: configs/quickstart/predict_dropout.yaml   # a latentlit predict config
    output_dir: outputs/quickstart_sweep
    n_samples: 64                                   # the N every point runs at
    ns: [1, 4, 16, 64]                              # the N reported (default: powers of 2 and N)
    overrides: {data: {init_args: {...}}}           # merged into the base config of every point
    samplers:
      mc_dropout:
        sampler: {class_path: latentlit.sampling.MCDropout, init_args: {...}}   # replaces the base's
        strength: p                                                             # the init arg swept
        values: [0.02, 0.05, 0.1, 0.2]

Run with ``python scripts/sweep.py configs/quickstart/sweep.yaml``; it writes ``sweep.csv``,
``sweep.md`` and ``sweet_spot.png`` into ``output_dir``. ``--split test`` runs the same grid on
another split of the problems (``output_dir`` becomes ``<output_dir>-test``, so the two never mix).
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from latentlit.aggregation import registry
from latentlit.aggregation.vote import group_answers
from latentlit.cli.aliases import load_class
from latentlit.cli.entry import main as cli_main
from latentlit.evaluation.metrics import coverage_ks
from latentlit.evaluation.plots import plot_sweet_spot, save
from latentlit.evaluation.values import question_values
from latentlit.runs.records import read_records

POINT_FILE = "sweep_point.json"
TABLE_FIELDS = ["sampler", "strength", "value", "n", "coverage", "majority_vote", "majority_vote_first",
                "distinct_answers", "diversity", "greedy", "questions"]


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: ``sampler`` (the grid's name for it), the swept init arg ``strength`` at
    ``value``, its output directory and its full ``latentlit predict`` config."""

    sampler: str
    strength: str
    value: float
    directory: Path
    config: dict


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep YAML (see the module docstring)."""

    output_dir: Path
    n_samples: int
    ns: list[int]
    points: list[SweepPoint]


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _fmt(value: float) -> str:
    return str(int(value)) if float(value) == int(value) else repr(float(value))


def _with_split(config: dict, split: str, where: str) -> dict:
    problems = config.get("data", {}).get("init_args", {}).get("problems")
    class_path = problems.get("class_path", "") if isinstance(problems, dict) else ""
    cls = load_class(class_path)
    if cls is None or "split" not in inspect.signature(cls).parameters:
        raise ValueError(f"{where}: --split {split}: the problems ({class_path or 'none given'}) take no split; "
                         "set data.init_args.problems in the sweep's overrides instead")
    config = _merge(config, {"data": {"init_args": {"problems": {"init_args": {"split": split}}}}})
    try:  # a misspelt split is refused now, not after the grid's first point has started
        cls(**config["data"]["init_args"]["problems"]["init_args"])
    except ValueError as err:
        raise ValueError(f"{where}: --split {split}: {err}") from None
    return config


def load_sweep(path: str | Path, split: str | None = None) -> Sweep:
    """Read and check a sweep YAML; expand its grid into points.

    Args:
        split: run on this split of the problems instead of the YAML's (``data.init_args.problems``
            must take a ``split``); the output directory gets ``-<split>`` appended when it differs.

    Raises:
        FileNotFoundError: the sweep file or its base config is missing.
        ValueError: a missing or malformed field (named, with the file), N < 1, a reported N
            above N, a sampler whose init args are not a mapping, or a split the problems do not take.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}

    def need(key: str, kind: type, where: dict = spec, label: str = ""):
        if key not in where:
            raise ValueError(f"{path}: missing field {label + key!r}")
        if not isinstance(where[key], kind):
            raise ValueError(f"{path}: field {label + key!r} must be a {kind.__name__}, got {where[key]!r}")
        return where[key]

    unknown = set(spec) - {"base", "output_dir", "n_samples", "ns", "overrides", "samplers"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    base_path = Path(need("base", str))
    if not base_path.is_file():
        raise FileNotFoundError(f"{path}: base config {base_path} does not exist")
    output_dir = Path(need("output_dir", str))
    n = need("n_samples", int)
    if n < 1:
        raise ValueError(f"{path}: n_samples must be >= 1, got {n}")
    ns = spec.get("ns") or coverage_ks(n)
    if not isinstance(ns, list) or not all(isinstance(k, int) and 1 <= k <= n for k in ns):
        raise ValueError(f"{path}: ns must be a list of integers in [1, n_samples={n}], got {ns!r}")
    base = _merge(yaml.safe_load(base_path.read_text()), spec.get("overrides") or {})
    if split is not None:
        own = base.get("data", {}).get("init_args", {}).get("problems", {}).get("init_args", {}).get("split")
        base = _with_split(base, split, str(path))
        if split != own:
            output_dir = output_dir.with_name(f"{output_dir.name}-{split}")
    points = []
    for name, grid in need("samplers", dict).items():
        label = f"samplers.{name}."
        if not isinstance(grid, dict):
            raise ValueError(f"{path}: field 'samplers.{name}' must be a mapping (sampler, strength, values)")
        sampler = need("sampler", dict, grid, label)
        class_path = need("class_path", str, sampler, label + "sampler.")
        init_args = sampler.get("init_args") or {}
        if not isinstance(init_args, dict):
            raise ValueError(f"{path}: field '{label}sampler.init_args' must be a mapping, got {init_args!r}")
        strength = need("strength", str, grid, label)
        values = need("values", list, grid, label)
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{path}: field '{label}values' must be a non-empty list of numbers, got {values!r}")
        for value in values:
            directory = output_dir / name / f"{strength}={_fmt(value)}"
            config = _merge(base, {"model": {"init_args": {"n_samples": n, "output_dir": str(directory)}}})
            # replaced, not merged: the base's sampler arguments (MC-dropout's p) must not reach AGN
            config["model"]["init_args"]["sampler"] = {"class_path": class_path,
                                                       "init_args": {**copy.deepcopy(init_args), strength: value}}
            points.append(SweepPoint(name, strength, float(value), directory, config))
    if not points:
        raise ValueError(f"{path}: no grid points (samplers is empty)")
    return Sweep(output_dir, n, sorted(set(ns)), points)


def point_metrics(records: list[dict], ns: list[int], seed: int = 0) -> dict:
    """Sweep figures of one point from its prediction records.

    Args:
        seed: the run's seed (keys the random k-subsets of the vote estimator, as in the run).

    Returns:
        ``{"questions", "greedy", "diversity", "diversity_questions", "per_n": {k: {"coverage",
        "majority_vote", "majority_vote_first", "distinct_answers"}}}``: means over questions of
        :func:`latentlit.evaluation.values.question_values` (the values ``metrics.json``
        averages), distinct answers among the first k samples, and diversity = mean over the
        ``diversity_questions`` questions with a defined step of their mean over defined steps
        (None when no question has one).

    Raises:
        ValueError: no records, records of different N, or a k above N.
    """
    if not records:
        raise ValueError("no prediction records")
    n = len(records[0]["answers"])
    if any(len(r["answers"]) != n for r in records):
        raise ValueError("records hold different numbers of samples (a live adaptive run?); a sweep point needs fixed N")
    if max(ns) > n:
        raise ValueError(f"k = {max(ns)} exceeds the {n} samples per question")
    vote = [registry.get("majority_vote")]
    values = [question_values(r, ns, vote, seed).values for r in records]
    per_n = {}
    for k in ns:
        per_n[k] = {
            "coverage": statistics.fmean(v[f"coverage@{k}"] for v in values),
            "majority_vote": statistics.fmean(v[f"majority_vote@{k}"] for v in values),
            "majority_vote_first": statistics.fmean(v[f"majority_vote_first@{k}"] for v in values),
            "distinct_answers": statistics.fmean(len(group_answers(r["answers"][:k])) for r in records),
        }
    # a step fewer than two trajectories reached has no diversity (null): left out, not read as 0
    defined = [[x for x in r["diversity"] if x is not None] for r in records]
    diversity = [statistics.fmean(d) for d in defined if d]
    return {"questions": len(records), "greedy": statistics.fmean(float(r["greedy"]["correct"]) for r in records),
            "diversity": statistics.fmean(diversity) if diversity else None,
            "diversity_questions": len(diversity), "per_n": per_n}


def _diversity(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _predict_here(config_path: Path) -> None:
    cli_main(["predict", "--config", str(config_path)])


def _finished(point: SweepPoint) -> dict | None:
    marker = point.directory / POINT_FILE
    if not marker.is_file():
        return None
    stored = json.loads(marker.read_text())
    return stored if stored.get("config") == json.loads(json.dumps(point.config)) else None


def run_point(point: SweepPoint, ns: list[int], run_predict=None) -> dict:
    """Run (or resume) one point's ``latentlit predict`` and store its figures in
    ``sweep_point.json``; a point already finished with the same config is not rerun.

    Args:
        run_predict: ``fn(config_path)`` running ``latentlit predict --config config_path``
            (default: the CLI in this process).

    Returns:
        the point's :func:`point_metrics`.
    """
    done = _finished(point)
    point.directory.mkdir(parents=True, exist_ok=True)
    config_path = point.directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(point.config, sort_keys=False))
    if done is None:
        (run_predict or _predict_here)(config_path)
    seed = int(point.config.get("model", {}).get("init_args", {}).get("seed", 0))
    metrics = point_metrics(read_records(point.directory), ns, seed)
    (point.directory / POINT_FILE).write_text(json.dumps({"config": point.config, "metrics": metrics}, indent=2))
    return metrics


def sweep_rows(sweep: Sweep, results: list[dict]) -> list[dict]:
    """One table row per (point, N): the fields of :data:`TABLE_FIELDS`, values in [0, 1]."""
    rows = []
    for point, m in zip(sweep.points, results):
        for k in sweep.ns:
            rows.append({"sampler": point.sampler, "strength": point.strength, "value": point.value, "n": k,
                         "coverage": m["per_n"][k]["coverage"], "majority_vote": m["per_n"][k]["majority_vote"],
                         "majority_vote_first": m["per_n"][k]["majority_vote_first"],
                         "distinct_answers": m["per_n"][k]["distinct_answers"], "diversity": m["diversity"],
                         "greedy": m["greedy"], "questions": m["questions"]})
    return rows


def write_table(rows: list[dict], output_dir: Path) -> None:
    """``sweep.csv`` (every row, full precision) and ``sweep.md`` (percentages, one block per sampler)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler]
        lines += [f"**{sampler}** ({mine[0]['questions']} questions, greedy {100 * mine[0]['greedy']:.1f}%)", "",
                  f"| {mine[0]['strength']} | N | coverage@N | majority@N | majority (first N)@N | distinct answers@N "
                  "| diversity |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in mine:
            lines.append(f"| {_fmt(r['value'])} | {r['n']} | {100 * r['coverage']:.1f} | {100 * r['majority_vote']:.1f} "
                         f"| {100 * r['majority_vote_first']:.1f} | {r['distinct_answers']:.2f} | {_diversity(r['diversity'])} |")
        lines.append("")
    (output_dir / "sweep.md").write_text("\n".join(lines))


def run_sweep(path: str | Path, run_predict=None, log=print, split: str | None = None) -> list[dict]:
    """Run every point of the sweep YAML ``path`` (skipping finished ones), then write the table
    and the sweet-spot figure into its ``output_dir`` (``split``: as in :func:`load_sweep`).

    Returns:
        the table rows (:func:`sweep_rows`).
    """
    sweep = load_sweep(path, split)
    results = []
    for i, point in enumerate(sweep.points, 1):
        state = "finished, skipped" if _finished(point) is not None else "running"
        log(f"[sweep] point {i}/{len(sweep.points)}: {point.sampler} {point.strength}={_fmt(point.value)} ({state})")
        results.append(run_point(point, sweep.ns, run_predict))
    rows = sweep_rows(sweep, results)
    write_table(rows, sweep.output_dir)
    save(plot_sweet_spot(rows), sweep.output_dir / "sweet_spot.png")
    log(f"[sweep] {len(sweep.points)} points; table and figure in {sweep.output_dir} (sweep.md, sweep.csv, sweet_spot.png)")
    return rows
