"""Plot a GRPO fit and what it did to coverage (docs/rl.md).

    python scripts/plot_grpo.py LOG_DIR --start RUN_A --trained RUN_B --out docs/images/grpo.png

LOG_DIR: the fit's TensorBoard folder (``runs/.../version_0``). RUN_A / RUN_B: ``latentlit predict``
output directories of the starting and the trained model with the same settings. Left: validation
greedy accuracy and the rollouts' training accuracy (mean over windows of 100 steps) against the
step. Right: coverage@k and majority@k of both runs against k, and each run's greedy accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from latentlit.cli.scripts import ScriptParser, run
from latentlit.evaluation.compare import load_run, metric_curve


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    out = []
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    if not out:
        raise FileNotFoundError(f"no {tag} scalars under {log_dir}: give the fit's TensorBoard folder")
    return sorted(out)


def _windows(points: list[tuple[int, float]], width: int = 100) -> tuple[list[float], list[float]]:
    buckets: dict[int, list[float]] = {}
    for step, value in points:
        buckets.setdefault(step // width, []).append(value)
    keys = sorted(buckets)
    return [(k + 0.5) * width for k in keys], [100 * sum(buckets[k]) / len(buckets[k]) for k in keys]


def main() -> int:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--start", required=True, help="predict output directory of the starting model")
    parser.add_argument("--trained", required=True, help="predict output directory of the trained model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    val = _scalars(args.log_dir, "val/greedy_accuracy")
    left.plot([s for s, _ in val], [100 * v for _, v in val], "o-", label="greedy, validation")
    left.plot(*_windows(_scalars(args.log_dir, "train/accuracy")), label="rollouts, training questions")
    left.set_xlabel("optimiser step")
    left.set_ylabel("accuracy (%)")
    left.set_title("GRPO fit")
    left.legend()
    for directory, style in ((args.start, "--"), (args.trained, "-")):
        result = load_run(directory)
        for metric in ("coverage", "majority_vote"):
            curve = metric_curve(result, metric)
            right.plot(list(curve), [100 * v for v in curve.values()], style, marker=".",
                       label=f"{metric} ({'start' if directory == args.start else 'GRPO'})")
        greedy = (result.get("metrics") or {}).get("greedy_accuracy")
        if greedy is not None:
            right.axhline(100 * greedy, linestyle=":" if directory == args.start else "-.", color="grey", linewidth=1,
                          label=f"greedy ({'start' if directory == args.start else 'GRPO'})")
    right.set_xscale("log", base=2)
    right.set_xlabel("k (samples)")
    right.set_ylabel("accuracy (%)")
    right.set_title("test, same sampler")
    right.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
