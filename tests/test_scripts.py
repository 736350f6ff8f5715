"""Every script under scripts/ reports bad arguments and bad input as the latentlit command does: one
``latentlit: error:`` line and a hint, exit status 2, no usage dump or traceback. (Each script runs
as ``__main__`` in this process, as ``python scripts/X.py ...`` runs it.)"""

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


def _run(monkeypatch, capsys, script: str, *args: str) -> tuple[int, list[str]]:
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err
    return stop.value.code, err.strip().splitlines()


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in ("check_quickstart_backbone.py", "quickstart_table.py")])
def test_an_unknown_argument_is_one_line(monkeypatch, capsys, script):
    code, lines = _run(monkeypatch, capsys, script, "--no-such-option")
    assert code == 2 and len(lines) == 2 and lines[0].startswith("latentlit: error: "), lines
    # a script whose positional argument comes first says that one is missing
    assert "--no-such-option" in lines[0] or "the following arguments are required" in lines[0]


@pytest.mark.parametrize("script, args, contains", [
    ("compare_runs.py", ["MISSING"], "MISSING"),
    ("compare_runs.py", ["MISSING", "MISSING", "--paired", "greedy"], "MISSING"),
    ("compare_runs.py", ["MISSING", "MISSING", "--curve", "coverage"], "MISSING"),
    ("plot_grpo.py", ["MISSING", "--start", "A", "--trained", "B", "--out", "x.png"],
     "no val/greedy_accuracy scalars under MISSING"),
    ("vote_breakdown.py", ["MISSING"], "MISSING does not exist"),
    ("plot_trajectories.py", ["MISSING"], "no latents in MISSING"),
    ("sweep.py", ["MISSING.yaml"], "MISSING.yaml"),
    ("check_quickstart_backbone.py", ["MISSING"], "MISSING"),
    ("quickstart_table.py", ["MISSING"], "MISSING"),
])
def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, script, args, contains):
    missing = str(tmp_path / "missing")
    code, lines = _run(monkeypatch, capsys, script, *(a.replace("MISSING", missing) for a in args))
    assert code == 2 and len(lines) == 2 and lines[0].startswith("latentlit: error: "), lines
    assert contains.replace("MISSING", missing) in lines[0]
