"""Diversity sweep ("sweet spot" figure): run a YAML grid of sampler strengths, one
``latentlit predict`` per point (resumable; finished points are skipped), then write
``sweep.csv``, ``sweep.md`` and ``sweet_spot.png`` (see ``latentlit.cli.sweep``).

    python scripts/sweep.py configs/quickstart/sweep.yaml
"""

from __future__ import annotations

import argparse

from latentlit.cli.scripts import ScriptParser, run
from latentlit.cli.sweep import run_sweep


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the sweep YAML")
    args = parser.parse_args()
    run_sweep(args.config)


if __name__ == "__main__":
    run(main)
