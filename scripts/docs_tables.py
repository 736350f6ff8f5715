"""Regenerate the results tables of README.md and docs/results.md from fresh runs of the shipped
quickstart backbone and LatentRM (test split, 500 problems).

    python scripts/docs_tables.py                  # run (or resume) the four runs, print the tables
    python scripts/docs_tables.py --write          # ... and replace the tables in the docs
    python scripts/docs_tables.py --limit 8        # a quick look on the first 8 problems (no --write)
    python scripts/docs_tables.py --sweep --write  # ... and the diversity sweep's table (12 min more)

The runs go to ``--out`` (default ``outputs/docs_tables/<run>``); ``latentlit predict`` resumes them
question by question, so a second call only recomputes the tables:

    main   latentlit predict --config configs/quickstart/predict_dropout.yaml             (N = 64)
    bon4   latentlit predict --config configs/quickstart/predict_bon.yaml --n_samples 4 --beam_width 2 --dvts_width 2
    bon16  latentlit predict --config configs/quickstart/predict_bon.yaml                 (N = 16, 4 x 4)
    bon64  latentlit predict --config configs/quickstart/predict_bon.yaml --n_samples 64 --beam_width 8 --dvts_width 8

Every table is read from those runs' ``metrics.json``; in the docs, each follows a
``<!-- docs_tables.py: <name> -->`` line, which ``--write`` uses to find it. About 12 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from latentlit.cli.scripts import ScriptParser, run

ROOT = Path(__file__).resolve().parents[1]
BON = ["--config", "configs/quickstart/predict_bon.yaml"]
RUNS = {
    "main": ["--config", "configs/quickstart/predict_dropout.yaml"],
    "bon4": [*BON, "--n_samples", "4", "--beam_width", "2", "--dvts_width", "2"],
    "bon16": BON,
    "bon64": [*BON, "--n_samples", "64", "--beam_width", "8", "--dvts_width", "8"],
}
MARKER = "<!-- docs_tables.py: {} -->"


def command(name: str) -> str:
    return " ".join(["latentlit predict", *RUNS[name]])


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def _amount(x: float) -> str:
    return f"{x:.0f}" if x >= 100 or x == int(x) else f"{x:.1f}"


def _m(summary: dict, key: str) -> float:
    metrics = summary["metrics"]
    if key not in metrics:
        raise KeyError(f"{key} is not in the run's metrics.json (ran with {summary['config']})")
    return metrics[key]


def _search_labels(summary: dict) -> tuple[str, str]:
    c = summary["config"]
    n, b, w = int(c["n_samples"]), c.get("beam_width"), c.get("dvts_width")
    return f"{b}x{n // b}" if b else "-", f"{n // w} subtrees of width {w}" if w else "-"


def headline(runs: dict) -> tuple[list[str], list[list[str]]]:
    """README's table: the main job (N = 64) and ``predict_bon`` (N = 16)."""
    main, bon = runs["main"], runs["bon16"]
    n = int(bon["config"]["n_samples"])
    b, w = bon["config"]["beam_width"], bon["config"]["dvts_width"]
    cover = " / ".join(_pct(_m(main, f"coverage@{k}")) for k in (1, 4, 16, 64))
    rows = [["greedy (one trajectory, no noise)", "1", _pct(_m(main, "greedy_accuracy")), "both runs"],
            ["coverage@1 / @4 / @16 / @64 (unbiased pass@k)", "64", cover, "main job"],
            ["majority vote@64", "64", _pct(_m(main, "majority_vote@64")), "main job"],
            [f"coverage@{n}", str(n), _pct(_m(bon, f"coverage@{n}")), "`predict_bon`"],
            [f"majority vote@{n}", str(n), _pct(_m(bon, f"majority_vote@{n}")), "`predict_bon`"],
            ["best-of-N, shipped LatentRM", str(n), _pct(_m(bon, f"best_of_n@{n}")), "`predict_bon`"],
            ["RM-weighted vote", str(n), _pct(_m(bon, f"weighted_vote@{n}")), "`predict_bon`"],
            [f"latent beam search, B x K = {b} x {n // b}", str(n), _pct(_m(bon, f"beam_search@{n}")), "`predict_bon`"],
            [f"DVTS, {n // w} subtrees of width {w}", str(n), _pct(_m(bon, f"dvts@{n}")), "`predict_bon`"]]
    return ["method", "N", "accuracy", "from"], rows


def shipped_rm(runs: dict) -> tuple[list[str], list[list[str]]]:
    """Every method with the shipped LatentRM at N = 4, 16, 64 (one ``predict_bon`` run each)."""
    bons = [runs[f"bon{n}"] for n in (4, 16, 64)]
    ns = [int(r["config"]["n_samples"]) for r in bons]

    def row(label: str, key: str) -> list[str]:
        return [label] + [_pct(_m(r, key.format(n=n))) for r, n in zip(bons, ns)]

    beams = ", ".join(_search_labels(r)[0] for r in bons)
    subtrees = ", ".join(str(n // r["config"]["dvts_width"]) for r, n in zip(bons, ns))
    widths = ", ".join(str(r["config"]["dvts_width"]) for r in bons)
    steps = [" / ".join(_amount(r["metrics"]["latent_steps_per_question"][s]) for s in ("samples", "beam_search", "dvts"))
             for r in bons]
    rows = [row("greedy", "greedy_accuracy"), row("coverage@N", "coverage@{n}"), row("majority vote", "majority_vote@{n}"),
            row("best-of-N, shipped LatentRM", "best_of_n@{n}"),
            row("weighted vote (softmax of the LatentRM's scores)", "weighted_vote@{n}"),
            row(f"beam search (B x K = {beams})", "beam_search@{n}"),
            row(f"DVTS ({subtrees} subtrees of width {widths}): best subtree winner", "dvts@{n}"),
            row("DVTS, same runs: majority vote of the subtree winners", "dvts_vote@{n}"),
            row("random pick (expected, = coverage@1)", "random@{n}"),
            ["latent steps per question: samples / beam / DVTS", *steps]]
    return ["method", *(f"N={n}" for n in ns)], rows


def every_k(runs: dict) -> tuple[list[str], list[list[str]]]:
    """Each aggregator's expected accuracy at every k from the one N = 64 run."""
    bon = runs["bon64"]
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if f"coverage@{k}" in bon["metrics"]]
    names = [("coverage@k", "coverage"), ("majority vote@k", "majority_vote"), ("best-of-N@k", "best_of_n"),
             ("weighted vote@k", "weighted_vote"), ("random pick@k", "random")]
    return ["k", *map(str, ks)], [[label] + [_pct(_m(bon, f"{key}@{k}")) for k in ks] for label, key in names]


def selective(runs: dict) -> tuple[list[str], list[list[str]]]:
    """Answer the most confident half: each confidence of ``metrics.json``'s ``selective`` section."""
    rows = []
    for name in ("bon16", "bon64"):
        summary = runs[name]
        for conf in ("vote", "rm", "vote+rm"):
            s = summary["selective"][conf]
            low, high = s["gain@50%_interval"]
            rows.append([str(summary["config"]["n_samples"]), s["definition"], _pct(s["accuracy_all"]),
                         _pct(s["accuracy@50%"]), f"{_signed(s['gain@50%'])} [{_signed(low)}, {_signed(high)}]",
                         f"{s['aurc']:.3f}", f"{100 * s['ece']:.1f}%"])
    return ["N", "confidence (answer it rates)", "accuracy, all", "accuracy, 50% most confident", "gain", "AURC",
            "ECE"], rows


def compute(runs: dict) -> tuple[list[str], list[list[str]]]:
    """Accuracy against compute, per question, from the N = 64 run's ``compute`` section."""
    bon = runs["bon64"]
    n, b, w = int(bon["config"]["n_samples"]), bon["config"]["beam_width"], bon["config"]["dvts_width"]
    found = {(r["method"], r["k"]): r for r in bon["compute"]["rows"]}
    wanted = [("greedy", 1, "greedy"), ("majority_vote", 16, "majority vote@16"),
              *(("best_of_n", k, f"best-of-N@{k}") for k in (4, 8, 16, 32) if k < n),
              ("beam_search", n, f"beam search {b} x {n // b}"), ("dvts", n, f"DVTS {n // w} x width {w}"),
              ("dvts_vote", n, f"DVTS {n // w} x width {w}, vote of the winners"), ("best_of_n", n, f"best-of-N@{n}")]
    rows = []
    for method, k, label in wanted:
        if (method, k) not in found:
            raise KeyError(f"no compute row for {method}@{k} in the N = {n} run")
        r = found[method, k]
        searched = method in ("beam_search", "dvts", "dvts_vote")
        rows.append([label, f"{k} candidates" if searched else str(r["trajectories"]), _amount(r["backbone_tokens"]),
                     _amount(r["rm_tokens"]) if r["rm_tokens"] else "0", _amount(r["flops"] / 1e6), _pct(r["accuracy"])])
    return ["method", "trajectories", "backbone tokens", "RM tokens", "MFLOPs", "accuracy"], rows


def sweep_table(rows: list[dict], n: int = 64, small: int = 4) -> tuple[list[str], list[list[str]]]:
    """The diversity sweep at N = ``n`` (and ``small``) from :func:`latentlit.cli.sweep.sweep_rows`;
    the strengths of the shipped predict configs are marked."""
    shipped = {"p": _sampler_arg("predict_dropout.yaml", "p"), "sigma": _sampler_arg("predict_agn.yaml", "sigma")}
    names = {"mc_dropout": "MC-dropout", "agn": "AGN"}
    at = {(r["sampler"], r["value"], r["n"]): r for r in rows}
    out, seen = [], set()
    for r in rows:
        if r["n"] != n:
            continue
        first = r["sampler"] not in seen
        seen.add(r["sampler"])
        label = (f"{names.get(r['sampler'], r['sampler'])} " if first else "") + f"{r['strength']} = {r['value']:g}"
        label += " (shipped config)" if shipped.get(r["strength"]) == r["value"] else ""
        s = at[r["sampler"], r["value"], small]
        diversity = "-" if r["diversity"] is None else f"{r['diversity']:.3f}"
        out.append([label, _pct(r["coverage"]), _pct(r["majority_vote"]), _pct(s["coverage"]), _pct(s["majority_vote"]),
                    f"{r['distinct_answers']:.2f}", diversity])
    return [f"validation, N = {n}", f"coverage@{n}", f"majority@{n}", f"coverage@{small}", f"majority@{small}",
            f"distinct answers@{n}", "diversity"], out


def _sampler_arg(config: str, arg: str) -> float:
    import yaml

    spec = yaml.safe_load((ROOT / "configs" / "quickstart" / config).read_text())
    return float(spec["model"]["init_args"]["sampler"]["init_args"][arg])


# (table name, the file it lives in, its builder)
TABLES: list[tuple[str, str, Callable]] = [
    ("headline", "README.md", headline),
    ("shipped-rm", "docs/results.md", shipped_rm),
    ("every-k", "docs/results.md", every_k),
    ("selective", "docs/results.md", selective),
    ("compute", "docs/results.md", compute),
]


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def find_table(text: str, name: str, where: str = "") -> tuple[int, int, list[str]]:
    """The lines ``[start, end)`` of the table after ``name``'s marker in ``text``, and those lines.

    Raises:
        ValueError: no marker, more than one, or no table right after it.
    """
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip() == MARKER.format(name)]
    if len(marks) != 1:
        raise ValueError(f"{where}: {len(marks)} lines {MARKER.format(name)!r}; expected one")
    start = end = marks[0] + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    if end == start:
        raise ValueError(f"{where}: no table right after {MARKER.format(name)!r}")
    return start, end, lines[start:end]


def replace_table(text: str, name: str, table: list[str], where: str = "") -> str:
    """``text`` with ``name``'s table replaced by ``table``; a cell the docs set in bold stays bold
    while its value is unchanged (a row is matched by its first cell)."""
    start, end, old = find_table(text, name, where)
    before = {_split(line)[0]: _split(line) for line in old}
    new = []
    for line in table:
        cells, was = _split(line), before.get(_split(line)[0], [])
        if any(c.startswith("**") for c in was):
            cells = [w if w == f"**{c}**" else c for c, w in zip(cells, was + [""] * len(cells))]
            line = "| " + " | ".join(cells) + " |"
        new.append(line)
    lines = text.split("\n")
    return "\n".join(lines[:start] + new + lines[end:])


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def run_all(out: Path, limit: int | None, predict: Callable[[list[str]], None] | None = None) -> dict:
    """Run (or resume) every run of :data:`RUNS` into ``out/<name>`` and return their ``metrics.json``."""
    if predict is None:
        from latentlit.cli.entry import main as cli_main

        def predict(args: list[str]) -> None:
            cli_main(["predict", *args])

    runs = {}
    for name, args in RUNS.items():
        print(f"[docs_tables] {name}: {command(name)}", flush=True)
        args = [str(ROOT / a) if a.startswith("configs/") else a for a in args]  # from any directory
        extra = ["--output_dir", str(out / name), "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
        predict([*args, *extra, *(["--limit", str(limit)] if limit else [])])
        runs[name] = json.loads((out / name / "metrics.json").read_text())
    greedy = {name: s["metrics"]["greedy_accuracy"] for name, s in runs.items()}
    if len(set(greedy.values())) != 1:  # one backbone, no noise: the runs must agree
        raise ValueError(f"greedy accuracy differs between the runs: {greedy}")
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/docs_tables", help="where the runs go (default %(default)s)")
    parser.add_argument("--limit", type=int, help="only the first K test problems (a quick look; not with --write)")
    parser.add_argument("--write", action="store_true", help="replace the tables in README.md and docs/results.md")
    parser.add_argument("--sweep", action="store_true", help="also run (or resume) the diversity sweep, "
                        "configs/quickstart/sweep.yaml (about 12 min more), and regenerate its table")
    args = parser.parse_args(argv)
    if args.write and args.limit:
        parser.error("--write with --limit would put a subset's figures into the docs")
    if args.sweep and args.limit:
        parser.error("--sweep runs the sweep YAML's whole split; it takes no --limit")
    out = Path(args.out).resolve()
    os.chdir(ROOT)  # the sweep YAML's paths are relative to the repository root
    runs = run_all(out, args.limit)
    questions = {s["counts"]["questions"] for s in runs.values()}
    tables = [(name, file, build(runs)) for name, file, build in TABLES]
    if args.sweep:
        from latentlit.cli.sweep import run_sweep

        tables.append(("sweep", "docs/results.md", sweep_table(run_sweep("configs/quickstart/sweep.yaml"))))
    texts = {}
    for name, file, built in tables:
        table = markdown(*built)
        print(f"\n{file} ({name}; {', '.join(map(str, sorted(questions)))} questions)\n" + "\n".join(table))
        if args.write:
            path = ROOT / file
            texts[path] = replace_table(texts.get(path, path.read_text()), name, table, file)
    for path, text in texts.items():
        path.write_text(text)
        print(f"[docs_tables] wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    run(main)
