"""``latentlit rescore RUN --latent_rm PATH``: a finished run's saved latents scored by a LatentRM,
without sampling again (docs/latentrm-and-search.md#re-scoring-a-finished-run)."""

from __future__ import annotations

from latentlit.cli.scripts import ScriptParser
from latentlit.lit.rescore import rescore


def main(argv: list[str]) -> int:
    parser = ScriptParser(prog="latentlit rescore", description="Score the saved latents of a finished latentlit "
                          "predict run (--save_latents) with a LatentRM, into a derived run directory with best-of-N, "
                          "the weighted vote and the RM's scores; the run's own files are not touched. Beam search and "
                          "DVTS steer sampling with their RM: they need a new run.")
    parser.add_argument("run", help="the output directory of a latentlit predict run made with --save_latents")
    parser.add_argument("--latent_rm", action="append", required=True, metavar="PATH",
                        help="a LatentRM directory (or quickstart); repeat for several (one derived directory each)")
    parser.add_argument("--rm_score", default="sum", help="trajectory score from step scores: sum (paper), mean, last, min")
    parser.add_argument("--output_dir", help="the derived directory (one --latent_rm only; default: beside the run)")
    parser.add_argument("--selector", help="a selector file fitted on validation for this RM (scripts/fit_selector.py): "
                        "adds the tempered vote and its calibrated confidence")
    args = parser.parse_args(argv)
    if args.output_dir and len(args.latent_rm) > 1:
        parser.error("--output_dir names one derived directory: give one --latent_rm with it")
    for path in args.latent_rm:
        rescore(args.run, path, output_dir=args.output_dir, rm_score=args.rm_score, selector=args.selector)
    return 0
