"""The answers given before torch loads (latentlit.cli.quick) equal the full parser's, and its tables its options."""

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from latentlit.cli import lightning_cli, quick
from latentlit.cli.aliases import load_class

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DROPOUT = str(CONFIGS / "quickstart" / "predict_dropout.yaml")
LABEL = str(CONFIGS / "quickstart" / "label.yaml")


def _outcome(fn, argv, capsys) -> tuple[object, str, str]:
    """(exit status or None when ``fn`` returned, stdout, stderr)."""
    try:
        fn(argv)
        code = None
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv", [
    ["--help"], ["predict", "--help"], ["fit", "-h"], [], ["predct"],
    ["predict", "--config", DROPOUT, "--n_samples", "abc"],
    ["predict", "--config", DROPOUT, "--n_sample", "8"],
    ["predict", "--config", DROPOUT, "--sampler", "agn", "--sigma", "x"],
    ["predict", "--config", DROPOUT, "--p", "0.1", "--save_latents", "maybe"],
    ["predict", "--config", DROPOUT, "--trainer.max_stepz", "3"],
    ["predict", "--config", DROPOUT, "--data_file", "x.jsonl", "--limit", "all"],
    ["predict", "--config", LABEL, "--n_rollouts", "many"],
    ["predict", "--config", str(CONFIGS / "quickstart" / "predict_dropot.yaml")],
    ["predict", "--config", DROPOUT, "--sampler", "agm"],
    ["fit", "--config", str(CONFIGS / "quickstart" / "latentrm.yaml"), "--max_steps", "ten"],
])
def test_the_quick_answer_is_the_full_parsers(argv, capsys, monkeypatch):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    fast = _outcome(quick.answer, argv, capsys)
    assert fast[0] in (0, 2), f"{argv} was left to the full parser"
    assert fast == _outcome(lightning_cli.run, argv, capsys)


@pytest.mark.parametrize("argv", [
    ["predict", "--config", DROPOUT, "--sigma", "x"],  # MCDropout has no sigma: the class's signature says so
    ["predict", "--config", DROPOUT, "--trainer.devices", "x", "--n_sample", "8"],  # a value it cannot judge first
    ["predict", "--config", DROPOUT, "--model", "my.Predictor", "--n_samples", "x"],  # a class it does not know
    ["predict", "--config", DROPOUT, "--model.init_args.n_samplez", "8"],
    ["predict", "--config", DROPOUT, "--n_samples", "8"],  # nothing wrong
    ["predict", "--config", DROPOUT, "--help_all"],
])
def test_what_needs_a_class_is_left_to_the_full_parser(argv, capsys, monkeypatch):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    assert _outcome(quick.answer, argv, capsys) == (None, "", "")


def _parser():
    built = {}

    def keep(self, parser, args):
        built["parser"] = parser
        raise SystemExit(0)

    original = lightning_cli.LatentLitCLI.parse_arguments
    lightning_cli.LatentLitCLI.parse_arguments = keep
    try:
        with pytest.raises(SystemExit):
            lightning_cli.run(["predict"])
    finally:
        lightning_cli.LatentLitCLI.parse_arguments = original
    return built["parser"]


def test_the_option_and_type_tables_are_the_parsers_and_the_signatures():
    for command, sub in _parser()._subcommands_action.choices.items():
        assert set(sub._option_string_actions) == {*quick.OPTIONS[command], *(f"--trainer.{n}" for n in quick.TRAINER)}
    from lightning.pytorch import Trainer

    simple = {"int": {int, int | None}, "float": {float, float | None}, "bool": {bool}, "str": {str, str | None}}
    for path, kinds in quick.KINDS.items():
        cls = Trainer if path == "trainer" else load_class(path)
        assert cls is not None, path
        hints = typing.get_type_hints(cls.__init__)
        for name, kind in kinds.items():
            assert hints[name] in simple[kind], (path, name, hints[name])


def test_help_and_usage_errors_do_not_import_torch():
    code = ("import sys\nfrom latentlit.cli import main\n"
            "for argv in (['--help'], ['predict', '--help'], ['predict', '--n_sample', '3']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'lightning' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "LATENTLIT_DEBUG"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr
