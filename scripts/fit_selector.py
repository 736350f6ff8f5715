"""Fit a selector (the tempered vote's temperature and a calibrated confidence) on a validation run.

    python scripts/fit_selector.py VALIDATION_RUN --out selector.json [--no-calibration]

VALIDATION_RUN is the output directory of ``latentlit predict`` with a LatentRM on the validation
split; a run on the test split is refused (its labels must not choose what is reported on it).
Then ``latentlit predict ... --model.init_args.latent_rm RM --model.init_args.selector selector.json``
on test adds the ``tempered_vote`` aggregator and the ``calibrated`` confidence
(docs/latentrm-and-search.md#selectors-fitted-on-validation).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from latentlit.aggregation.selector import fit_selector, run_split
from latentlit.cli.scripts import ScriptParser, run
from latentlit.runs.records import read_records


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output directory of latentlit predict (validation split, with a LatentRM)")
    parser.add_argument("--out", required=True, help="selector file to write (JSON)")
    parser.add_argument("--no-calibration", action="store_true", help="fit the temperature only")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "predictions.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} has no predictions.jsonl: give the output directory of latentlit predict")
    settings = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    # config.yaml sits in the run directory, or in its TensorBoard version folders when a logger ran; a
    # re-scored run has none: its parent's tells the split
    homes = [run_dir] + ([Path(settings["rescored_from"]["directory"])] if settings.get("rescored_from") else [])
    configs = [p for home in homes for p in (home / "config.yaml", *sorted(home.glob("runs/**/config.yaml")))]
    splits = {run_split(yaml.safe_load(p.read_text()) or {}) for p in configs if p.is_file()}
    split = "test" if "test" in splits else next(iter(splits - {None}), None)
    if split == "test":
        raise ValueError(f"{run_dir} ran on the test split: fit the selector on a validation run (e.g. "
                         "--data.init_args.problems.init_args.split val) and report on test")
    if split is None:
        print(f"[latentlit] warning: cannot tell which split {run_dir} ran on (no config.yaml or no split in it): "
              "make sure it is not the split you report on")
    source = {"run": str(run_dir), "split": split, "latent_rm": settings.get("latent_rm"),
              "latent_rm_fingerprint": settings.get("latent_rm_fingerprint"), "rm_score": settings.get("rm_score")}
    selector = fit_selector(read_records(run_dir), calibrate=not args.no_calibration, source=source)
    selector.save(args.out)
    acc = selector.fitted_on["accuracy_by_temperature"]
    print(f"[latentlit] tempered vote on {selector.fitted_on['questions']} {split or 'unknown-split'} questions: "
          + ", ".join(f"tau {t:g}: {100 * a:.1f}" for t, a in acc.items()))
    print(f"[latentlit] chosen temperature {selector.temperature:g} ({100 * acc[selector.temperature]:.1f}%); "
          f"calibration (w_share, w_mass, w_top, b) = {selector.calibration}; written to {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
