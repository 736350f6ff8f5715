"""Diversity sweep ("sweet spot" figure): run a YAML grid of sampler strengths, one
``latentlit predict`` per point (resumable; finished points are skipped), then write
``sweep.csv``, ``sweep.md`` and ``sweet_spot.png`` (see ``latentlit.cli.sweep``).

    python scripts/sweep.py configs/quickstart/sweep.yaml
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the sweep YAML")
    args = parser.parse_args()
    from latentlit.cli.sweep import run_sweep

    try:
        run_sweep(args.config)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("LATENTLIT_DEBUG"):
            raise
        sys.stderr.write(f"latentlit: error: {type(err).__name__}: {err}\n(LATENTLIT_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
