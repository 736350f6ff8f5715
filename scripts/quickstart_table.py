"""Collect the reproduction runs of scripts/reproduce_quickstart.sh into one table.

Reads ``<out>/predict_N<n>_<rm>/metrics.json`` and writes ``<out>/table.json`` as
``{"<N>": {"<method>": accuracy}}`` (accuracies in [0, 1]), then prints it in percent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METHODS = ["greedy", "coverage", "majority_vote", "best_of_n (contrastive)", "best_of_n (bce)",
           "best_of_n (random head)", "weighted_vote (contrastive)", "beam_search (contrastive)", "random"]


def main(out: str) -> None:
    out = Path(out)
    table: dict[str, dict[str, float]] = {}
    for n in (4, 16, 64):
        runs = {rm: json.loads((out / f"predict_N{n}_{rm}" / "metrics.json").read_text())["metrics"]
                for rm in ("contrastive", "bce", "random")}
        c = runs["contrastive"]
        table[str(n)] = {
            "greedy": c["greedy_accuracy"], "coverage": c[f"coverage@{n}"], "majority_vote": c[f"majority_vote@{n}"],
            "best_of_n (contrastive)": c[f"best_of_n@{n}"], "best_of_n (bce)": runs["bce"][f"best_of_n@{n}"],
            "best_of_n (random head)": runs["random"][f"best_of_n@{n}"],
            "weighted_vote (contrastive)": c[f"weighted_vote@{n}"], "beam_search (contrastive)": c[f"beam_search@{n}"],
            "random": c[f"random@{n}"],
        }
    (out / "table.json").write_text(json.dumps(table, indent=2))
    print(f"{'method':<30}" + "".join(f"{'N=' + n:>9}" for n in table))
    for m in METHODS:
        print(f"{m:<30}" + "".join(f"{100 * table[n][m]:>8.1f}%" for n in table))
    print(f"table written to {out / 'table.json'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/reproduce_quickstart")
