"""``latentlit study RUN [RUN ...]``: one table and overlay figures across runs (docs/outputs.md#a-study-across-runs)."""

from __future__ import annotations

import glob
from pathlib import Path

from latentlit.cli.scripts import ScriptParser
from latentlit.evaluation.plots import save
from latentlit.evaluation.study import (
    DEFAULT_KS,
    DEFAULT_METHODS,
    figures,
    load_study_runs,
    markdown,
    study_rows,
    write_csv,
)


def main(argv: list[str]) -> int:
    parser = ScriptParser(prog="latentlit study", description="One tidy table (markdown and CSV, long format) and "
                          "overlay figures (accuracy against k per method, accuracy against compute) of several "
                          "latentlit predict output directories, each run named by what differs between them.")
    parser.add_argument("runs", nargs="+", help="output directories of latentlit predict (a quoted glob works too)")
    parser.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="the k to report (default %(default)s)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="methods to report: greedy, coverage, majority_vote_first or an aggregator "
                             "(majority_vote, best_of_n, weighted_vote, random, beam_search, dvts, dvts_vote); "
                             "default %(default)s")
    parser.add_argument("--baseline", help="a run directory the others are compared with (paired intervals, same "
                                           "questions)")
    parser.add_argument("--output", help="write study.md, study.csv, study_accuracy_vs_k.png and "
                                         "study_accuracy_vs_compute.png here (default: print the table only)")
    args = parser.parse_args(argv)
    directories = []
    for pattern in args.runs:
        found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        directories += [d for d in found if d not in directories]
    if args.baseline and Path(args.baseline).resolve() not in {Path(d).resolve() for d in directories}:
        directories.insert(0, args.baseline)
    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        parser.error(f"--k {args.k}: give integers separated by commas (e.g. 1,4,16,64)")
    methods = [m for m in args.methods.split(",") if m]
    runs = load_study_runs(directories)
    baseline = next((r for r in runs if args.baseline and r.directory.resolve() == Path(args.baseline).resolve()), None)
    rows = study_rows(runs, ks, methods, baseline)
    table = markdown(rows, baseline)
    print(table, end="")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "study.md").write_text(table)
        write_csv(rows, out / "study.csv")
        for name, fig in figures(runs, rows, methods).items():
            save(fig, out / f"study_{name}.png")
        print(f"[latentlit] study of {len(runs)} runs written to {out} (study.md, study.csv, study_accuracy_vs_k.png, "
              "study_accuracy_vs_compute.png)")
    return 0
