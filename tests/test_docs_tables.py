"""scripts/docs_tables.py regenerates the results tables of README.md and docs/results.md from fresh
runs of the shipped assets: on a few questions, every regenerated table has the documented shape
(header and row labels of the table after its marker in the docs), its cells are the runs'
``metrics.json`` values, and ``--write`` replaces exactly the marked tables."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "docs_tables.py"), run_name="docs_tables")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs_tables")
    return out, SCRIPT["run_all"](out, limit=3)


def test_every_table_has_the_documented_shape(small_runs):
    _, runs = small_runs
    assert {s["counts"]["questions"] for s in runs.values()} == {3}
    for name, file, build in SCRIPT["TABLES"]:
        header, rows = build(runs)
        _, _, documented = SCRIPT["find_table"]((ROOT / file).read_text(), name, file)
        assert _cells(documented[0]) == header, (name, documented[0])
        assert [_cells(line)[0] for line in documented[2:]] == [r[0] for r in rows], name
        assert all(len(r) == len(header) for r in rows)


def test_cells_are_the_runs_metrics(small_runs):
    out, runs = small_runs
    read = {name: json.loads((out / name / "metrics.json").read_text())["metrics"] for name in SCRIPT["RUNS"]}
    pct = lambda x: f"{100 * x:.1f}"
    header, rows = SCRIPT["every_k"](runs)
    assert header == ["k", "1", "2", "4", "8", "16", "32", "64"]
    by_label = {r[0]: r[1:] for r in rows}
    assert by_label["best-of-N@k"] == [pct(read["bon64"][f"best_of_n@{k}"]) for k in header[1:]]
    assert by_label["coverage@k"][-1] == pct(read["bon64"]["coverage@64"])
    _, rows = SCRIPT["headline"](runs)
    assert rows[0][2] == pct(read["main"]["greedy_accuracy"]) == pct(read["bon16"]["greedy_accuracy"])
    assert rows[1][2] == " / ".join(pct(read["main"][f"coverage@{k}"]) for k in (1, 4, 16, 64))
    assert rows[5][2] == pct(read["bon16"]["best_of_n@16"]) and rows[7][0] == "latent beam search, B x K = 4 x 4"
    header, rows = SCRIPT["shipped_rm"](runs)
    assert header == ["method", "N=4", "N=16", "N=64"]
    assert rows[5] == ["beam search (B x K = 2x2, 4x4, 8x8)"] + [pct(read[f"bon{n}"][f"beam_search@{n}"]) for n in (4, 16, 64)]
    _, rows = SCRIPT["compute"](runs)
    assert rows[-1][0] == "best-of-N@64" and rows[-1][-1] == pct(read["bon64"]["best_of_n@64"])


def test_write_replaces_only_the_marked_table():
    text = "intro\n<!-- docs_tables.py: t -->\n| a | b |\n| --- | --- |\n| x | 1 |\n\nafter\n| other | table |\n"
    new = SCRIPT["replace_table"](text, "t", ["| a | b |", "| --- | --- |", "| x | 2 |", "| y | 3 |"])
    assert new == "intro\n<!-- docs_tables.py: t -->\n| a | b |\n| --- | --- |\n| x | 2 |\n| y | 3 |\n\nafter\n| other | table |\n"
    # bold stays where the value did not change, and goes where it did
    bold = text.replace("| x | 1 |", "| **x** | **1** |").replace("| a | b |", "| a | **b** |")
    new = SCRIPT["replace_table"](bold, "t", ["| a | b |", "| --- | --- |", "| **x** | 1 |", "| y | 3 |"])
    assert "| a | **b** |\n| --- | --- |\n| **x** | **1** |\n| y | 3 |\n" in new
    new = SCRIPT["replace_table"](bold, "t", ["| a | b |", "| --- | --- |", "| **x** | 2 |"])
    assert "| **x** | 2 |\n\n" in new
    with pytest.raises(ValueError, match="0 lines"):
        SCRIPT["find_table"](text, "missing", "README.md")
    with pytest.raises(ValueError, match="2 lines"):
        SCRIPT["find_table"](text + "<!-- docs_tables.py: t -->\n| z |\n", "t", "README.md")
    with pytest.raises(ValueError, match="no table right after"):
        SCRIPT["find_table"]("<!-- docs_tables.py: t -->\n\n| a |\n", "t", "README.md")


def test_write_refuses_a_subset(monkeypatch, capsys):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["docs_tables.py", "--limit", "3", "--write"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / "docs_tables.py"), run_name="__main__")
    assert stop.value.code == 2 and "--write with --limit" in capsys.readouterr().err


def test_the_sweep_table_has_the_documented_shape():
    # rows as latentlit.cli.sweep.sweep_rows gives them, for the grid of configs/quickstart/sweep.yaml
    import yaml

    spec = yaml.safe_load((ROOT / "configs/quickstart/sweep.yaml").read_text())
    rows = [{"sampler": sampler, "strength": grid["strength"], "value": float(v), "n": n, "coverage": 0.5 + v / 100,
             "majority_vote": 0.4, "majority_vote_first": 0.4, "distinct_answers": 2.0, "diversity": None if v == 4 else v / 10,
             "greedy": 0.5, "questions": 500}
            for sampler, grid in spec["samplers"].items() for v in grid["values"] for n in spec["ns"]]
    header, table = SCRIPT["sweep_table"](rows)
    _, _, documented = SCRIPT["find_table"]((ROOT / "docs/results.md").read_text(), "sweep", "docs/results.md")
    assert _cells(documented[0]) == header
    assert [_cells(line)[0] for line in documented[2:]] == [r[0] for r in table]
    assert table[1] == ["p = 0.05 (shipped config)", "50.0", "40.0", "50.0", "40.0", "2.00", "0.005"]
    assert table[-1][-1] == "-"  # no diversity: a dash, not 0
