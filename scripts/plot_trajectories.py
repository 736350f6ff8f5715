"""Plot the latent trajectories of a predict run (paper Sec. 4's trajectory figures).

Run predict with ``--model.init_args.save_latents true``, then::

    python scripts/plot_trajectories.py OUTPUT_DIR [--questions 3] [--projection pca|tsne]

Writes ``OUTPUT_DIR/trajectories.png`` (``trajectories_tsne.png`` with t-SNE): for the first questions whose N samples disagree, each
trajectory h_1..h_T projected to 2-D (principal components, or t-SNE), green when it reaches the gold
answer, red when not; and ``OUTPUT_DIR/diversity.png``: mean pairwise cosine distance per step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt

from latentlit.cli.scripts import ScriptParser, run
from latentlit.evaluation.plots import plot_trajectories
from latentlit.runs.files import read_latents
from latentlit.runs.records import read_records


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--projection", choices=["pca", "tsne"], default="pca",
                        help="2-D projection of each question's latent vectors (t-SNE: scikit-learn)")
    args = parser.parse_args()
    files = sorted((args.output_dir / "latents").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no latents in {args.output_dir / 'latents'}: run predict with --save_latents")
    latents = {k: v for f in files for k, v in read_latents(f).items()}
    records = read_records(args.output_dir)  # each question once (latentlit.runs.records)
    mixed = [r for r in records if r["id"] in latents and 0 < sum(r["correct"]) < len(r["correct"])]
    chosen = (mixed or [r for r in records if r["id"] in latents])[: args.questions]
    fig = plot_trajectories([latents[r["id"]] for r in chosen], [r["correct"] for r in chosen],
                            [f"{r['id']}: {sum(r['correct'])}/{len(r['correct'])} correct" for r in chosen],
                            projection=args.projection)
    name = "trajectories.png" if args.projection == "pca" else f"trajectories_{args.projection}.png"
    fig.savefig(args.output_dir / name, dpi=120)
    metrics = json.loads((args.output_dir / "metrics.json").read_text())["metrics"]
    div = [float("nan") if x is None else x for x in metrics["diversity_per_step"]]  # null: undefined at that step
    fig2, ax = plt.subplots(figsize=(4, 3))
    ax.bar(range(1, len(div) + 1), div)
    ax.set_xlabel("latent step t")
    ax.set_ylabel("mean pairwise cosine distance")
    ax.set_title("trajectory diversity")
    fig2.tight_layout()
    fig2.savefig(args.output_dir / "diversity.png", dpi=120)
    print(f"wrote {args.output_dir / name} and {args.output_dir / 'diversity.png'}")


if __name__ == "__main__":
    run(main)
