import subprocess
import sys
from pathlib import Path

import pytest

from latentlit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("args,expect", [
    (["--help"], ["fit", "validate", "test", "predict"]),
    (["fit", "--help"], ["--model", "--data", "--trainer"]),
    (["predict", "--help"], ["--ckpt_path", "--model"]),
])
def test_help_prints(capsys, args, expect):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in expect:
        assert word in out


def test_print_config_applies_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(CONFIGS / "quickstart" / "predict_agn.yaml"), "--model.init_args.n_samples", "3",
              "--model.init_args.sampler.init_args.sigma", "0.25", "--print_config"])
    out = capsys.readouterr().out
    assert "n_samples: 3" in out and "sigma: 0.25" in out and "latentlit.sampling.AGN" in out


def test_arch_override_keeps_numbers_numeric(capsys):
    import yaml

    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "quickstart" / "backbone.yaml"), "--model.init_args.arch.resid_pdrop", "0.3",
              "--model.init_args.arch.n_layer", "3", "--print_config"])
    arch = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["arch"]
    # GPT2Config rejects the string "0.3", so a CLI override must arrive as a float.
    assert arch["resid_pdrop"] == 0.3 and isinstance(arch["resid_pdrop"], float)
    assert arch["n_layer"] == 3 and isinstance(arch["n_layer"], int)


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "latentlit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "predict" in out.stdout


def test_bad_config_value_is_reported_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(CONFIGS / "quickstart" / "predict_dropout.yaml"),
              "--model.init_args.sampler.init_args.p", "1.5", "--model.init_args.backbone", "does-not-matter"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "latentlit: error: ValueError: MCDropout p=1.5 must be in [0, 1)" in err
    assert "Traceback" not in err


def test_input_error_at_run_time_is_reported_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "#### 3"}\n{"question": "q2"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(CONFIGS / "quickstart" / "predict_dropout.yaml"),
              "--data.init_args.problems", "latentlit.data.sources.ProblemFile",
              "--data.init_args.problems.init_args.path", str(bad), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path), "--model.init_args.output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"latentlit: error: DataFormatError: {bad}, line 2: missing required field 'answer'" in err
    assert "Traceback" not in err


def test_debug_env_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("LATENTLIT_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["predict", "--config", str(CONFIGS / "quickstart" / "predict_dropout.yaml"),
              "--model.init_args.n_samples", "0"])


def _is_sweep(path) -> bool:
    import yaml

    return "samplers" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("config", sorted(p for p in CONFIGS.rglob("*.yaml") if not _is_sweep(p)),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_parses(config, capsys):
    import yaml

    model = yaml.safe_load(config.read_text())["model"]["class_path"]
    command = "predict" if model.endswith(("TTSPredictor", "RolloutLabeller")) else "fit"
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["class_path"] == model


@pytest.mark.parametrize("config", sorted(p for p in CONFIGS.rglob("*.yaml") if _is_sweep(p)),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_sweep_config_expands_into_configs_that_parse(config, capsys, monkeypatch, tmp_path):
    import yaml

    from latentlit.cli.sweep import load_sweep

    monkeypatch.chdir(CONFIGS.parent)  # sweep files name their base config from the repository root
    sweep = load_sweep(config)
    for i, point in enumerate(sweep.points):
        path = tmp_path / f"point{i}.yaml"
        path.write_text(yaml.safe_dump(point.config, sort_keys=False))
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--config", str(path), "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["sampler"]
        assert printed["class_path"] == point.config["model"]["init_args"]["sampler"]["class_path"]
        assert printed["init_args"][point.strength] == point.value
