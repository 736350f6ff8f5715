"""Where majority vote@k gains or loses against greedy, from a ``predictions.jsonl``.

    python scripts/vote_breakdown.py outputs/quickstart_predict_dropout-<hash>/predictions.jsonl [--k 16]

Prints the questions the vote fixes and breaks, how often the vote is right exactly when at
least half the k samples are, and how the wrong answers of questions with mixed samples spread
(``latentlit.analysis.vote_breakdown``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentlit.analysis import vote_breakdown
from latentlit.lit.writer import read_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="a predictions.jsonl (or the directory holding it)")
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args()
    if not args.predictions.exists():
        parser.error(f"{args.predictions} does not exist")
    folder = args.predictions if args.predictions.is_dir() else args.predictions.parent
    records = read_records(folder)
    if not records:
        parser.error(f"no prediction records in {folder}")
    n = len(records[0]["answers"])
    if not 1 <= args.k <= n:
        parser.error(f"--k {args.k}: the run has N = {n} samples per question")
    b = vote_breakdown(records, args.k)
    print(f"{b['questions']} questions, k = {b['k']}: greedy {100 * b['greedy']:.1f}%, majority vote "
          f"{100 * b['majority']:.1f}% ({100 * (b['majority'] - b['greedy']):+.1f} points)")
    print(f"  the vote fixes {b['wrong_to_right']} greedy-wrong questions and breaks {b['right_to_wrong']} greedy-right ones")
    print(f"  vote right exactly when >= half the samples are: {b['vote_right_iff_half_right']} of {b['questions']}")
    print(f"  {b['mixed']} questions with both right and wrong samples: {b['distinct_wrong']:.2f} distinct wrong "
          f"answers each, the commonest holding {100 * b['top_wrong_share']:.0f}% of the wrong samples")


if __name__ == "__main__":
    main()
