"""Default output directory and TensorBoard run per setting; failed starts leave no log folder."""

import json
from pathlib import Path

import pytest
import yaml

from latentlit.cli import main
from latentlit.runs.directory import run_dir_name, settings_hash

SIZES = ["--data.init_args.problems.init_args.n_train", "20", "--data.init_args.problems.init_args.n_val", "4",
         "--data.init_args.problems.init_args.n_test", "6"]


@pytest.fixture
def config(tiny_backbone_dir, tmp_path) -> Path:
    """configs/mini.yaml: MC-dropout on the tiny backbone, no output_dir, logger name unset."""
    cfg = {
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path)},
        "model": {"class_path": "latentlit.lit.TTSPredictor", "init_args": {
            "backbone": str(tiny_backbone_dir), "n_samples": 2, "max_new_tokens": 2,
            "sampler": {"class_path": "latentlit.sampling.MCDropout", "init_args": {"p": 0.1}}}},
        "data": {"class_path": "latentlit.lit.ProblemDataModule", "init_args": {
            "problems": {"class_path": "latentlit.data.sources.SyntheticProblems", "init_args": {"split": "test"}},
            "batch_size": 4}},
    }
    path = tmp_path / "configs" / "mini.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(cfg))
    return path


def _predict(config: Path, capsys, *extra: str) -> tuple[Path, str]:
    root = config.parents[1]
    main(["predict", "--config", str(config), "--trainer.logger.init_args.save_dir", str(root / "runs"), *SIZES,
          "--limit", "2", *extra])
    out = capsys.readouterr().out
    start = next(line for line in out.splitlines() if "output directory" in line)
    folder = Path(start.split("output directory ")[1].split(" (")[0])
    assert f"predictions and metrics written to {folder}" in out  # printed at start and end
    return folder, out


def test_settings_hash_is_stable_and_order_free():
    settings = {"n_samples": 16, "sampler": {"name": "AGN", "sigma": 0.5}, "seed": 0}
    assert settings_hash(settings) == settings_hash(dict(reversed(settings.items())))
    # pinned: directories written by earlier runs must keep their name across versions and machines
    # (sha256 of {"n_samples":16,"sampler":{"name":"AGN","sigma":0.5},"seed":0}, as `sha256sum` gives it)
    assert settings_hash(settings) == "5dc9a08d"
    assert run_dir_name("cfg", settings) != run_dir_name("cfg", {**settings, "seed": 1})
    assert run_dir_name("cfg", settings, {"class": "ProblemFile", "path": "a.json"}) != run_dir_name(
        "cfg", settings, {"class": "ProblemFile", "path": "b.json"})


def test_same_command_resumes_and_each_deciding_setting_gets_its_own_directory(config, capsys):
    root = config.parents[1]
    first, _ = _predict(config, capsys)
    assert first.parent == root / "outputs" and first.name.startswith("configs_mini-")
    assert len((first / "predictions.jsonl").read_text().splitlines()) == 2
    # the same command again, and with a setting that does not decide the records: same directory
    again, out = _predict(config, capsys, "--model.init_args.max_trajectories", "3")
    assert again == first and "resuming: 2 questions done" in out and "no new questions this run" in out
    # the README's sampler switch right after the main job, then another deciding setting
    # (test_predictor_run_dir_name_hashes_its_run_settings covers each setting)
    agn, _ = _predict(config, capsys, "--sampler", "agn", "--sigma", "0.5")
    seed, _ = _predict(config, capsys, "--seed", "1")
    assert len({first, agn, seed}) == 3
    # the names say what the command line changed in the config, then the settings hash
    sizes = "n_train20-n_val4-n_test6"  # SIZES, given on the command line of every run here
    assert first.name.startswith(f"configs_mini-{sizes}-") and first.name.count("-") == 4
    assert agn.name.startswith(f"configs_mini-agn-sigma0.5-{sizes}-") and seed.name.startswith(f"configs_mini-seed1-{sizes}-")
    assert json.loads((agn / "run.json").read_text())["sampler"]["name"] == "AGN"
    grown, _ = _predict(config, capsys, "--limit", "3")  # limit is not a deciding setting: the run grows
    assert grown == first and len((first / "predictions.jsonl").read_text().splitlines()) == 3
    # TensorBoard runs follow the same rule
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted({first.name, agn.name, seed.name})
    assert len(list((root / "runs" / first.name).iterdir())) == 3  # three runs of that setting: version_0..2


def test_explicit_output_dir_wins_and_a_failed_start_leaves_no_log_folder(config, capsys):
    root = config.parents[1]
    first, _ = _predict(config, capsys)
    versions = sorted(p.name for p in (root / "runs" / first.name).iterdir())
    with pytest.raises(ValueError, match="other settings"):
        _predict(config, capsys, "--output_dir", str(first), "--seed", "5")
    # the seed-5 setting's run folder was created by Lightning while starting and removed after the error
    assert sorted(p.name for p in (root / "runs").iterdir()) == [first.name]
    assert sorted(p.name for p in (root / "runs" / first.name).iterdir()) == versions
    custom = root / "custom"
    folder, _ = _predict(config, capsys, "--output_dir", str(custom))
    assert folder == custom and (custom / "predictions.jsonl").exists()


def test_predictor_run_dir_name_hashes_its_run_settings(tiny_backbone_dir):
    from latentlit.data.sources import ProblemFile, SyntheticProblems
    from latentlit.lit import ProblemDataModule, TTSPredictor
    from latentlit.sampling import AGN

    def name(problems=None, **kwargs):
        model = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=AGN(kwargs.pop("sigma", 1.0)), **kwargs)
        model.run_name = "cfg"
        return model.run_dir_name(ProblemDataModule(problems or SyntheticProblems("test")))

    base = name()
    assert base == name() and base.startswith("cfg-")
    assert name(max_trajectories=7) == base  # not stored in run.json
    assert name(problems=SyntheticProblems("test", limit=3)) == base
    others = {name(sigma=0.5), name(seed=1), name(n_samples=4), name(max_new_tokens=3), name(save_latents=True),
              name(problems=SyntheticProblems("val")), name(problems=ProblemFile("x.json"))}
    assert base not in others and len(others) == 7
