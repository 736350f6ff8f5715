"""Predict and labelling write nothing outside their output directory: Lightning's config and
TensorBoard logs go inside it unless ``--trainer.default_root_dir`` is on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentlit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "quickstart"
SMALL = ["--limit", "3", "--n_samples", "2", "--trainer.enable_progress_bar", "false"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_labelling_writes_only_into_its_output_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("my_groups", "other_groups"):  # a second run into another directory touches neither the first
        main(["predict", "--config", str(CONFIGS / "label.yaml"), *SMALL, "--n_rollouts", "2", "--output_dir", name])
    # these 3 questions are all dropped (N = 2 samples agree): no label statistics are made up
    out = capsys.readouterr().out
    assert "kept 0 (0.0%; dropped 0 all-correct, 3 all-wrong); no labels (no question kept);" in out
    summary = json.loads((tmp_path / "my_groups" / "summary.json").read_text())
    assert summary["this_run"]["labels"] == 0 and summary["questions_total"] == 3
    assert all(summary["this_run"][k] is None for k in ("label_mean", "label_std", "label_fraction_0", "label_fraction_1"))
    assert not [k for k in summary["config"] if k.startswith("_")] and summary["config"]["n_rollouts"] == 2
    # a smaller --limit than the directory holds: the rule of predict (refused, saying why)
    with pytest.raises(ValueError, match=r"holds 3 questions, 1 of them not among this run's 2 problems .*smaller --limit"):
        main(["predict", "--config", str(CONFIGS / "label.yaml"), *SMALL, "--n_rollouts", "2", "--output_dir",
              "my_groups", "--limit", "2"])
    files = _tree(tmp_path)
    assert all(f.startswith(("my_groups/", "other_groups/")) for f in files), files
    assert {"my_groups/config.yaml", "other_groups/config.yaml", "my_groups/run.json", "my_groups/summary.json",
            "my_groups/index.r0.jsonl"} <= set(files)
    assert "output_dir: other_groups" in (tmp_path / "other_groups" / "config.yaml").read_text()
    assert not any(f.endswith(".latentlit.lock") for f in files)  # the lock goes with the run


def test_predict_logs_inside_its_output_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(CONFIGS / "predict_dropout.yaml"), *SMALL, "--output_dir", "my_pred"])
    files = _tree(tmp_path)
    assert all(f.startswith("my_pred/") for f in files), files
    assert "my_pred/runs/version_0/config.yaml" in files
    assert any(f.startswith("my_pred/runs/version_0/events.out.tfevents.") for f in files)
    # the derived (hash-named) directory holds its own logs too
    main(["predict", "--config", str(CONFIGS / "predict_dropout.yaml"), *SMALL])
    derived = [p for p in (tmp_path / "outputs").iterdir()]
    assert len(derived) == 1 and derived[0].name.startswith("quickstart_predict_dropout-")
    assert (derived[0] / "runs" / "version_0" / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_pred", "outputs"]


def test_default_root_dir_on_the_command_line_keeps_the_logs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(CONFIGS / "predict_dropout.yaml"), *SMALL, "--trainer.default_root_dir", "root"])
    (out,) = (tmp_path / "root" / "outputs").iterdir()
    assert (out / "predictions.jsonl").is_file() and not (out / "runs").exists()
    assert (tmp_path / "root" / "runs" / out.name / "version_0" / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_fit_on_a_groups_directory_without_groups_says_how_to_label(tmp_path):
    (tmp_path / "empty").mkdir()
    hint = (f"; label first: latentlit predict --config configs/quickstart/label.yaml --model.init_args.output_dir "
            f"{tmp_path / 'empty'}")
    for groups in ("empty", "missing"):
        with pytest.raises(FileNotFoundError) as err:
            main(["fit", "--config", str(CONFIGS / "latentrm.yaml"), "--groups_dir", str(tmp_path / groups),
                  "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
        assert str(err.value).endswith(hint.replace("empty", groups))
