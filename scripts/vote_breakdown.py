"""Where majority vote gains or loses against greedy, from a ``predictions.jsonl``.

    python scripts/vote_breakdown.py outputs/quickstart_predict_dropout-<hash>/predictions.jsonl [--k 16]

Everything here is about the vote over the FIRST k samples of each question (one draw of k
samples; ``majority_vote_first@k`` in ``metrics.json``), so that each question's vote is one
answer whose flips can be counted. ``metrics.json``'s ``majority_vote@k`` is another number: the
expected vote over random k-subsets of the N samples; it is printed next to it when the run's
``metrics.json`` is there. Prints the questions the vote fixes and breaks, how often the vote is
right exactly when at least half the k samples are, and how the wrong answers of questions with
mixed samples spread (``latentlit.evaluation.analysis.vote_breakdown``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latentlit.cli.scripts import ScriptParser, run
from latentlit.evaluation.analysis import vote_breakdown
from latentlit.evaluation.text import pct, points
from latentlit.runs.records import read_records


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="a predictions.jsonl (or the directory holding it)")
    parser.add_argument("--k", type=int, default=16, help="votes use each question's first k samples")
    args = parser.parse_args(argv)
    if not args.predictions.exists():
        parser.error(f"{args.predictions} does not exist")
    folder = args.predictions if args.predictions.is_dir() else args.predictions.parent
    records = read_records(folder)  # a corrupt line, two different records of one question: one error line
    if not records:
        parser.error(f"no prediction records in {folder}")
    n = min(len(r["answers"]) for r in records)  # a live adaptive run's records hold what each question drew
    if not 1 <= args.k <= n:
        parser.error(f"--k {args.k}: the run has {n} samples per question (the fewest any question has); give k between "
                     f"1 and {n}")
    b = vote_breakdown(records, args.k)
    k = b["k"]
    print(f"{b['questions']} questions, k = {k}: greedy {pct(b['greedy'])}%, majority vote over the first {k} samples "
          f"{pct(b['majority'])}% ({points(b['majority'] - b['greedy'])} points; metrics.json majority_vote_first@{k})")
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()).get("metrics", {}) if metrics_path.is_file() else {}
    if f"majority_vote@{k}" in metrics:
        print(f"  metrics.json majority_vote@{k}, the expected vote over random {k}-subsets of the samples: "
              f"{pct(metrics[f'majority_vote@{k}'])}%")
    first = metrics.get(f"majority_vote_first@{k}")
    if first is not None and abs(first - b["majority"]) > 5e-6:
        print(f"vote_breakdown: warning: metrics.json majority_vote_first@{k} = {first} but these records give "
              f"{b['majority']:.6f}: the records and metrics.json are not from the same run", file=sys.stderr)
    print(f"  the vote fixes {b['wrong_to_right']} greedy-wrong questions and breaks {b['right_to_wrong']} greedy-right ones")
    print(f"  vote right exactly when >= half the samples are: {b['vote_right_iff_half_right']} of {b['questions']}")
    print(f"  {b['mixed']} questions with both right and wrong samples: {b['distinct_wrong']:.2f} distinct wrong "
          f"answers each, the commonest holding {100 * b['top_wrong_share']:.0f}% of the wrong samples")
    return 0


if __name__ == "__main__":
    run(main)
