"""Diversity sweep ("sweet spot" figure): run a YAML grid of sampler strengths, one
``latentlit predict`` per point (resumable; finished points are skipped), then write
``sweep.csv``, ``sweep.md`` and ``sweet_spot.png`` (see ``latentlit.cli.sweep``).

    python scripts/sweep.py configs/quickstart/sweep.yaml               (the YAML's split: validation)
    python scripts/sweep.py configs/quickstart/sweep.yaml --split test  (into <output_dir>-test)
"""

from __future__ import annotations

import argparse

from latentlit.cli.scripts import ScriptParser, run
from latentlit.cli.sweep import run_sweep


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the sweep YAML")
    parser.add_argument("--split", help="run on this split of the problems instead of the YAML's (train, val, test)")
    args = parser.parse_args()
    run_sweep(args.config, split=args.split)


if __name__ == "__main__":
    run(main)
