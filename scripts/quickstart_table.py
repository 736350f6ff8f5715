"""Collect the reproduction runs of scripts/reproduce_quickstart.sh into one table.

Reads ``<out>/predict_N<n>_<rm>/metrics.json`` (``rm`` in contrastive, bce, random; the runs
present) and writes ``<out>/table.json`` as ``{"<N>": {"<method>": accuracy}}`` (accuracies in
[0, 1]) plus ``{"<N>": {"latent_steps": {...}}}`` (latent steps per question each search spent),
then prints it in percent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from latentlit.cli.scripts import run

METHODS = ["greedy", "coverage", "majority_vote", "best_of_n (contrastive)", "best_of_n (bce)",
           "best_of_n (random head)", "weighted_vote (contrastive)", "beam_search (contrastive)", "dvts (contrastive)",
           "dvts_vote (contrastive)", "random"]
RMS = {"contrastive": "contrastive", "bce": "bce", "random": "random head"}


def main(out: str) -> None:
    out = Path(out)
    table: dict[str, dict[str, float]] = {}
    for n in (4, 16, 64):
        runs = {rm: json.loads(path.read_text())["metrics"] for rm in RMS
                if (path := out / f"predict_N{n}_{rm}" / "metrics.json").exists()}
        if "contrastive" not in runs:
            raise FileNotFoundError(f"{out / f'predict_N{n}_contrastive' / 'metrics.json'} does not exist: run "
                                    "scripts/reproduce_quickstart.sh into that directory first")
        c = runs["contrastive"]
        row = {"greedy": c["greedy_accuracy"], "coverage": c[f"coverage@{n}"], "majority_vote": c[f"majority_vote@{n}"],
               "random": c[f"random@{n}"]}
        row.update({f"best_of_n ({RMS[rm]})": m[f"best_of_n@{n}"] for rm, m in runs.items()})
        for name in ("weighted_vote", "beam_search", "dvts", "dvts_vote"):
            if f"{name}@{n}" in c:
                row[f"{name} (contrastive)"] = c[f"{name}@{n}"]
        row["latent_steps"] = c.get("latent_steps_per_question", {})
        table[str(n)] = row
    (out / "table.json").write_text(json.dumps(table, indent=2))
    print(f"{'method':<30}" + "".join(f"{'N=' + n:>9}" for n in table))
    for m in METHODS:
        if all(m in table[n] for n in table):
            print(f"{m:<30}" + "".join(f"{100 * table[n][m]:>8.1f}%" for n in table))
    for name in ("samples", "beam_search", "dvts"):
        if all(name in table[n]["latent_steps"] for n in table):
            print(f"{'latent steps: ' + name:<30}" + "".join(f"{table[n]['latent_steps'][name]:>9.1f}" for n in table))
    print(f"table written to {out / 'table.json'}")


if __name__ == "__main__":
    run(lambda: main(sys.argv[1] if len(sys.argv) > 1 else "outputs/reproduce_quickstart"))
