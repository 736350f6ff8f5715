"""Make a LatentRM ensemble directory: the mean of K LatentRMs' scores, usable wherever a LatentRM is.

    python scripts/make_ensemble.py OUT_DIR RM_DIR RM_DIR [RM_DIR ...]
    latentlit predict --config configs/quickstart/predict_bon.yaml --model.init_args.latent_rm OUT_DIR

The members stay where they are (OUT_DIR/latent_rm_ensemble.json names them;
docs/latentrm-and-search.md#ensembles).
"""

from __future__ import annotations

from latentlit.cli.scripts import ScriptParser, run
from latentlit.models.ensemble import save_ensemble


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the ensemble directory to write")
    parser.add_argument("members", nargs="+", help="LatentRM directories (two or more; relative paths are relative to "
                        "OUT_DIR when they exist there, else to the working directory)")
    args = parser.parse_args(argv)
    path = save_ensemble(args.out_dir, args.members)
    print(f"[latentlit] ensemble of {len(args.members)} LatentRMs written to {path}")
    return 0


if __name__ == "__main__":
    run(main)
