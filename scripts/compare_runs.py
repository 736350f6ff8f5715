"""Tabulate several ``latentlit predict`` output directories side by side, with 95% intervals.

    python scripts/compare_runs.py outputs/quickstart_predict_dropout-<hash> outputs/quickstart_predict_bon-<hash> [--csv runs.csv] [--every-k]

Prints a markdown table (methods at each run's N with bootstrap intervals, their paired
differences against greedy, the selective-prediction gains) and writes the same rows as CSV with
``--csv``. ``--every-k`` adds every k of the k table.

    python scripts/compare_runs.py RUN_A RUN_B --paired best_of_n@16 [--paired majority_vote@16,best_of_n@16]

``--paired METRIC`` (two directories of one question set): run B's METRIC minus run A's, with a
paired bootstrap interval over the questions (``latentlit.evaluation.paired``); ``A_METRIC,B_METRIC``
compares two metrics. Repeatable.

    python scripts/compare_runs.py RUN_A RUN_B --curve coverage [--curve majority_vote]

``--curve METRIC`` prints METRIC@k of both runs at every k and the k at which B's curve crosses A's
(e.g. a trained model above its start at small k and below it at large k).
"""

from __future__ import annotations

import json
from pathlib import Path

from latentlit.cli.scripts import ScriptParser, run
from latentlit.evaluation.compare import crossing, load_run, markdown, metric_curve, write_csv
from latentlit.evaluation.paired import paired_difference
from latentlit.evaluation.text import interval, points
from latentlit.runs.records import read_records


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="output directories of latentlit predict (each with metrics.json)")
    parser.add_argument("--csv", help="also write the rows (long format, fractions) to this CSV file")
    parser.add_argument("--every-k", action="store_true", help="one row per k, not only at N")
    parser.add_argument("--paired", action="append", default=[], metavar="METRIC[,METRIC_B]",
                        help="with two directories: run B minus run A, paired bootstrap interval (repeatable)")
    parser.add_argument("--curve", action="append", default=[], metavar="METRIC",
                        help="with two directories: METRIC@k of both at every k, and where they cross (repeatable)")
    args = parser.parse_args(argv)
    if args.curve:
        _curves(args.dirs, args.curve)
    if args.paired:
        return _paired(args.dirs, args.paired)
    if args.curve:
        return 0
    runs = [load_run(d) for d in args.dirs]
    print(markdown(runs, args.every_k))
    if args.csv:
        write_csv(runs, args.csv, args.every_k)
        print(f"\nrows written to {args.csv}")
    return 0


def _curves(dirs: list[str], metrics: list[str]) -> None:
    if len(dirs) != 2:
        raise ValueError(f"--curve compares two runs (A then B), got {len(dirs)} directories")
    runs = [load_run(d) for d in dirs]
    for metric in metrics:
        a, b = (metric_curve(r, metric) for r in runs)
        ks = sorted(set(a) & set(b))
        print(f"{metric}@k | " + " | ".join(str(k) for k in ks))
        for name, curve in ((f"A {runs[0]['name']}", a), (f"B {runs[1]['name']}", b)):
            print(f"{name} | " + " | ".join(f"{100 * curve[k]:.1f}" for k in ks))
        k = crossing(a, b)
        print(f"B - A changes sign at k = {k}" if k else f"B - A keeps its sign at every k up to {ks[-1]}")


def _paired(dirs: list[str], metrics: list[str]) -> int:
    if len(dirs) != 2:
        raise ValueError(f"--paired compares two runs (A then B), got {len(dirs)} directories")
    runs = [load_run(d) for d in dirs]
    records = [read_records(Path(d)) for d in dirs]
    seeds = [int(json.loads((Path(d) / "run.json").read_text()).get("seed", 0)) if (Path(d) / "run.json").is_file()
             else int((r.get("config") or {}).get("seed", 0)) for d, r in zip(dirs, runs)]
    for spec in metrics:
        metric_a, _, metric_b = spec.partition(",")
        d = paired_difference(records[0], records[1], metric_a, metric_b or None, seed_a=seeds[0], seed_b=seeds[1],
                              names=(f"A ({dirs[0]})", f"B ({dirs[1]})"))
        print(f"{d['metric_b']} of B ({runs[1]['name']}) minus {d['metric_a']} of A ({runs[0]['name']}): "
              f"{points(d['diff'])} points {interval(d['low'], d['high'], signed=True)} "
              f"({100 * d['b']:.1f}% vs {100 * d['a']:.1f}%; paired bootstrap over {d['questions']} questions, "
              f"{d['resamples']} resamples, {100 * d['level']:.0f}%)")
    return 0


if __name__ == "__main__":
    run(main)
