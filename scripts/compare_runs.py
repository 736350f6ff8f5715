"""Tabulate several ``latentlit predict`` output directories side by side, with 95% intervals.

    python scripts/compare_runs.py outputs/quickstart_predict_dropout-<hash> outputs/quickstart_predict_bon-<hash> [--csv runs.csv] [--every-k]

Prints a markdown table (methods at each run's N with bootstrap intervals, their paired
differences against greedy, the selective-prediction gains) and writes the same rows as CSV with
``--csv``. ``--every-k`` adds every k of the k table.
"""

from __future__ import annotations

import argparse
import sys

from latentlit.reporting.compare import load_run, markdown, write_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="output directories of latentlit predict (each with metrics.json)")
    parser.add_argument("--csv", help="also write the rows (long format, fractions) to this CSV file")
    parser.add_argument("--every-k", action="store_true", help="one row per k, not only at N")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.dirs]
    except (FileNotFoundError, ValueError) as err:
        print(f"compare_runs: error: {err}", file=sys.stderr)
        return 2
    print(markdown(runs, args.every_k))
    if args.csv:
        write_csv(runs, args.csv, args.every_k)
        print(f"\nrows written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
