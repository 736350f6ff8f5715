"""latentlit's answer extraction and equivalence against HF's math-verify (lighteval / open-r1).

Measures, on the gold answers of every shipped data file, on the prediction texts of
``latentlit predict`` output directories, and on hand-written hard cases:

- read-back: does each checker read a gold as the number it is;
- distinct numbers: does a checker accept a different number (gold + 1; gold x (1 + 1e-7));
- predictions: do the checkers extract the same answer and give the same correctness;
- cost: microseconds per (extract + compare) of one prediction against its gold.

    pip install math-verify   # not a latentlit dependency
    python scripts/compare_answer_checkers.py --runs outputs/quickstart_predict_dropout-<hash> outputs/quickstart_predict_bon-<hash>

Data files are read from ``../shared/data`` (``--data``).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from latentlit.cli.scripts import ScriptParser
from latentlit.cli.scripts import run as run_script
from latentlit.data.answers import answers_match, extract_answer, normalize_answer
from latentlit.runs.records import read_records

HARD_CASES = [  # (gold, prediction text in the coconut format, right answer?)
    ("0.5", "### 1/2", True),
    ("1", "### 1/2", False),
    ("460", "### \\$460", True),
    ("9500", "### 9{,}500", True),
    ("9", "### 9{,}500", False),
    ("12", "### 12,34", False),
    ("10000", "### 10001", False),
    ("3244047.0999999996", "### 3244047.1", True),
    ("0.30000000000000004", "### 0.3", True),
    ("0.1234567", "### 0.1234568", False),
    ("0.0000083099", "### 8.3099e-06", True),
    ("8.3099", "### 8.3099e-06", False),
    ("50", "### 50%", True),
    ("0.5", "### 50%", False),
    ("2.5", "### 2 1/2", True),
    ("18", "### 18 ### 99", True),
    ("99", "### 18 ### 99", False),
    ("5.3333333333", "### 16/3", False),
]


def _mv():
    try:
        import math_verify
    except ImportError as err:  # pragma: no cover - a measurement script
        raise SystemExit("this script needs math-verify: pip install math-verify") from err
    return math_verify


def _golds(data: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted((data / "coconut_format").glob("*.json")):
        out[path.name] = [str(r["answer"]) for r in json.loads(path.read_text())]
    for path in sorted((data / "gsm8k").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[f"gsm8k/{path.name}"] = [r["answer"].rsplit("####", 1)[1] for r in rows]
    return out


def _neighbours(gold: str) -> list[str]:
    """Numbers that differ from ``gold``: gold + 1, and gold x (1 + 1e-7) for non-integers."""
    value = Fraction(normalize_answer(gold))
    out = [str(value + 1) if value.denominator == 1 else format(Decimal(value.numerator) / value.denominator + 1, "f")]
    if value.denominator != 1:
        out.append(format(Decimal(value.numerator) / value.denominator * (1 + Decimal("1e-7")), "f"))
    return out


def compare_golds(mv, data: Path) -> dict:
    report = {}
    for name, golds in _golds(data).items():
        ours_fail = mv_fail = disagree = 0
        ours_neighbour = mv_neighbour = 0
        examples = []
        for gold in golds:
            ours = normalize_answer(gold)
            parsed = mv.parse(gold)
            ours_fail += ours is None
            mv_fail += not parsed
            if ours is None or not parsed:
                continue
            if not mv.verify(mv.parse(ours), parsed):
                disagree += 1
                if len(examples) < 3:
                    examples.append({"gold": gold.strip(), "latentlit": ours, "math_verify": str(parsed[-1])})
            for other in _neighbours(gold):
                ours_neighbour += answers_match(ours, other)
                mv_neighbour += bool(mv.verify(parsed, mv.parse(other)))
        report[name] = {"golds": len(golds), "latentlit_unreadable": ours_fail, "math_verify_unreadable": mv_fail,
                        "read_differently": disagree, "examples": examples,
                        "latentlit_accepts_a_different_number": ours_neighbour,
                        "math_verify_accepts_a_different_number": mv_neighbour}
    return report


def compare_runs(mv, runs: list[Path], limit: int) -> dict:
    report, timing = {}, {"latentlit_us": [], "math_verify_us": []}
    for run in runs:
        fmt = json.loads((run / "metrics.json").read_text())["config"]["answer_format"]
        rows = read_records(run)  # each question once (latentlit.runs.records)
        pairs = [(r["gold"], t) for r in rows
                 for t in [r["greedy"]["text"], *r["texts"], *([r["beam_search"]["text"]] if "beam_search" in r else [])]]
        extracted_differently = correct_differently = 0
        examples = []
        for gold, text in pairs:
            ours = extract_answer(text, fmt)
            parsed = mv.parse(text)
            same_answer = (ours is None and not parsed) or (ours is not None and bool(parsed) and mv.verify(mv.parse(ours), parsed))
            extracted_differently += not same_answer
            mv_right = bool(parsed) and mv.verify(mv.parse(gold), parsed)
            if answers_match(ours, gold) != mv_right:
                correct_differently += 1
                if len(examples) < 3:
                    examples.append({"gold": gold, "text": text, "latentlit": ours, "math_verify": str(parsed)})
        report[str(run)] = {"answer_format": fmt, "texts": len(pairs), "extracted_differently": extracted_differently,
                            "scored_differently": correct_differently, "examples": examples}
        sample = pairs[:limit]
        start = time.perf_counter()
        for gold, text in sample:
            answers_match(extract_answer(text, fmt), gold)
        timing["latentlit_us"].append(1e6 * (time.perf_counter() - start) / max(len(sample), 1))
        start = time.perf_counter()
        for gold, text in sample:
            mv.verify(mv.parse(gold), mv.parse(text))
        timing["math_verify_us"].append(1e6 * (time.perf_counter() - start) / max(len(sample), 1))
    return {"runs": report, "microseconds_per_comparison": {k: [round(x, 1) for x in v] for k, v in timing.items()}}


def hard_cases(mv) -> list[dict]:
    out = []
    for gold, text, right in HARD_CASES:
        parsed = mv.parse(text)
        out.append({"gold": gold, "text": text, "right": right, "latentlit": answers_match(extract_answer(text, "coconut"), gold),
                    "math_verify": bool(parsed) and bool(mv.verify(mv.parse(gold), parsed))})
    return out


def main() -> None:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="latentlit predict output directories")
    parser.add_argument("--timing_texts", type=int, default=2000, help="texts per run timed (each checker)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    mv = _mv()
    report = {"golds": compare_golds(mv, args.data), **compare_runs(mv, args.runs, args.timing_texts),
              "hard_cases": hard_cases(mv)}
    for name, r in report["golds"].items():
        print(f"{name:>22}: {r['golds']} golds; unreadable latentlit {r['latentlit_unreadable']} / math-verify "
              f"{r['math_verify_unreadable']}; read differently {r['read_differently']} {r['examples'][:1]}; a different "
              f"number accepted: latentlit {r['latentlit_accepts_a_different_number']}, math-verify "
              f"{r['math_verify_accepts_a_different_number']}")
    for name, r in report["runs"].items():
        print(f"{name}: {r['texts']} texts ({r['answer_format']}): extracted differently {r['extracted_differently']}, "
              f"scored differently {r['scored_differently']} {r['examples'][:2]}")
    if report["runs"]:
        print("microseconds per comparison:", report["microseconds_per_comparison"])
    print(f"{'gold':>20} {'prediction':>22} {'right':>6} {'latentlit':>10} {'math-verify':>12}")
    for c in report["hard_cases"]:
        print(f"{c['gold']:>20} {c['text']!s:>22} {c['right']!s:>6} {c['latentlit']!s:>10} {c['math_verify']!s:>12}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    run_script(main)
