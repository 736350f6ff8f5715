"""Short options, concise help, config order and one-line parser errors of the ``latentlit`` CLI."""

from pathlib import Path

import pytest
import yaml

from latentlit.cli import main
from latentlit.cli.aliases import ALIASES, rewrite

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DROPOUT = str(CONFIGS / "quickstart" / "predict_dropout.yaml")
LABEL = str(CONFIGS / "quickstart" / "label.yaml")


def _config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def _error(capsys, monkeypatch, *args: str) -> str:
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("latentlit: error: "), err  # the error and its hint
    assert "usage:" not in err and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("short,long", [
    (["--n_samples", "16", "--sampler", "agn", "--sigma", "0.5", "--data_file", "data/gsm_test.json", "--limit", "50"],
     ["--model.init_args.n_samples", "16", "--model.init_args.sampler", "latentlit.sampling.AGN",
      "--model.init_args.sampler.init_args.sigma", "0.5", "--data.init_args.problems", "latentlit.data.sources.ProblemFile",
      "--data.init_args.problems.init_args.path", "data/gsm_test.json", "--data.init_args.problems.init_args.limit", "50"]),
    (["--backbone", "ckpt/x", "--p", "0.2", "--seed", "3", "--output_dir", "out/x", "--latent_rm", "quickstart",
      "--beam_width", "4", "--dtype", "bfloat16", "--batch_size", "8"],
     ["--model.init_args.backbone", "ckpt/x", "--model.init_args.sampler.init_args.p", "0.2", "--model.init_args.seed", "3",
      "--model.init_args.output_dir", "out/x", "--model.init_args.latent_rm", "quickstart",
      "--model.init_args.beam_width", "4", "--model.init_args.dtype", "bfloat16", "--data.init_args.batch_size", "8"]),
    (["--dvts_width", "4", "--num_latents", "3", "--save_latents"],
     ["--model.init_args.dvts_width", "4", "--model.init_args.num_latents", "3", "--model.init_args.save_latents", "true"]),
    (["--save_latents", "true", "--limit", "5", "--data_file", "x.json"],  # --limit before the source keeps its value
     ["--model.init_args.save_latents", "true", "--data.init_args.problems", "latentlit.data.sources.ProblemFile",
      "--data.init_args.problems.init_args.path", "x.json", "--data.init_args.problems.init_args.limit", "5"]),
])
def test_short_options_give_the_config_of_their_long_forms(capsys, short, long):
    plain = _config(capsys, "predict", "--config", DROPOUT)
    with_short = _config(capsys, "predict", "--config", DROPOUT, *short)
    assert with_short == _config(capsys, "predict", "--config", DROPOUT, *long)
    assert with_short != plain  # they did change something
    if "--sampler" in short:
        model = with_short["model"]["init_args"]
        assert model["sampler"]["class_path"] == "latentlit.sampling.AGN" and model["sampler"]["init_args"]["sigma"] == 0.5
        assert model["n_samples"] == 16
        assert with_short["data"]["init_args"]["problems"] == {
            "class_path": "latentlit.data.sources.ProblemFile",
            "init_args": {"path": "data/gsm_test.json", "format": "auto", "exclude": None, "limit": 50,
                          "on_bad_answer": "fail"}}


def test_labelling_and_fit_short_options(capsys):
    label = _config(capsys, "predict", "--config", LABEL, "--n_rollouts", "64", "--n_samples", "8", "--limit", "10")
    assert label == _config(capsys, "predict", "--config", LABEL, "--model.init_args.n_rollouts", "64",
                            "--model.init_args.n_samples", "8", "--data.init_args.problems.init_args.limit", "10")
    assert label["model"]["init_args"]["n_rollouts"] == 64
    rm = str(CONFIGS / "quickstart" / "latentrm.yaml")
    fit = _config(capsys, "fit", "--config", rm, "--groups_dir", "g", "--loss", "bce", "--export_dir", "e", "--max_steps", "7")
    assert fit == _config(capsys, "fit", "--config", rm, "--data.init_args.groups_dir", "g", "--model.init_args.loss", "bce",
                          "--model.init_args.export_dir", "e", "--trainer.max_steps", "7")
    assert fit["trainer"]["max_steps"] == 7 and fit["model"]["init_args"]["loss"] == "bce"


def test_mixed_short_and_long_forms_the_later_one_wins(capsys):
    def n(*args):
        return _config(capsys, "predict", "--config", DROPOUT, *args)["model"]["init_args"]["n_samples"]

    assert n("--n_samples", "8", "--model.init_args.n_samples", "12") == 12
    assert n("--model.init_args.n_samples", "12", "--n_samples", "8") == 8


def test_config_position_does_not_change_the_result(capsys):
    first = _config(capsys, "predict", "--config", DROPOUT, "--model.init_args.n_samples", "8", "--seed", "2")
    last = _config(capsys, "predict", "--model.init_args.n_samples", "8", "--seed", "2", "--config", DROPOUT)
    assert first == last
    assert last["model"]["init_args"]["n_samples"] == 8 and last["model"]["init_args"]["seed"] == 2
    argv, _ = rewrite(["predict", "--n_samples", "8", "-c", "a.yaml", "--seed", "1", "--config=b.yaml"], {"predict"})
    assert argv == ["predict", "-c", "a.yaml", "--config=b.yaml", "--model.init_args.n_samples", "8",
                    "--model.init_args.seed", "1"]


def test_option_typo_is_one_line_with_a_suggestion(capsys, monkeypatch):
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--model.init_args.n_sample", "8")
    assert line == ("latentlit: error: --model.init_args.n_sample 8: TTSPredictor has no option 'n_sample'; "
                    "did you mean `n_samples`?")
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--n_sample", "8")
    assert line == "latentlit: error: --n_sample 8: not an option of latentlit predict; did you mean `--n_samples`?"
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--trainer.max_step", "8")  # no silent abbreviation
    assert line.endswith("did you mean `--trainer.max_steps`?")


def test_config_file_errors_are_one_line(capsys, monkeypatch, tmp_path):
    line = _error(capsys, monkeypatch, "predict", "--config", str(CONFIGS / "quickstart" / "predict_dropuot.yaml"))
    assert line.startswith("latentlit: error: --config: file does not exist: ")
    assert line.endswith(f"did you mean `{CONFIGS / 'quickstart' / 'predict_dropout.yaml'}`?")
    typo = tmp_path / "typo.yaml"
    typo.write_text(Path(DROPOUT).read_text().replace("    n_samples: 64", "    n_sample: 64"))
    line = _error(capsys, monkeypatch, "predict", "--config", str(typo))
    assert line == (f"latentlit: error: model.init_args.n_sample (in {typo}): TTSPredictor has no option "
                    "'n_sample'; did you mean `n_samples`?")


def test_value_and_class_errors_are_one_line(capsys, monkeypatch):
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--model.init_args.n_samples", "abc")
    assert line == "latentlit: error: --model.init_args.n_samples abc: expects an integer, got 'abc'"
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--p", "high")
    assert line == "latentlit: error: --p high: expects a number, got 'high'"
    # a nested null on the command line (jsonargparse reads it as 'None') names the form that works
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--model.init_args.adaptive.threshold", "null")
    assert line == ("latentlit: error: --model.init_args.adaptive.threshold null: null cannot be given to a nested "
                    "option on the command line; give its group whole, e.g. --model.init_args.adaptive "
                    "\"{..., threshold: null}\", or set it in a config file")
    config = _config(capsys, "predict", "--config", DROPOUT, "--model.init_args.adaptive", "{rule: exact, threshold: null}")
    assert config["model"]["init_args"]["adaptive"]["rule"] == "exact"
    assert config["model"]["init_args"]["adaptive"]["threshold"] is None
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--model.init_args.sampler", "AGM")
    assert line.endswith("no class 'AGM' can be imported; did you mean `latentlit.sampling.agn.AGN`?")
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--sampler", "agm")
    assert line.endswith("--sampler agm: not one of dropout, agn, deterministic, learned; did you mean `agn`?")
    # a setting of another class than the one configured at that point says which and what to do
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--sigma", "0.5")
    assert line == "latentlit: error: --sigma 0.5: MCDropout has no option 'sigma'; 'sigma' belongs to --sampler agn (AGN) or --sampler learned (LearnedSampler)"
    # --sampler is already before it, but the option is another sampler's: name the one that takes it
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--sampler", "agn", "--sigma", "0.5", "--p", "0.1")
    assert line == "latentlit: error: --p 0.1: AGN has no option 'p'; 'p' belongs to --sampler dropout (MCDropout)"
    line = _error(capsys, monkeypatch, "predict", "--config", LABEL, "--latent_rm", "x")
    assert "RolloutLabeller" in line and "has no option 'latent_rm'" in line
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--data", "problems.json")
    assert "--data_file" in line
    line = _error(capsys, monkeypatch, "predickt")
    assert line.endswith("did you mean `predict`?")


def test_an_error_no_option_is_to_blame_for_is_the_parsers_own_message_on_one_line(capsys, monkeypatch):
    # every option parses, the config is incomplete: jsonargparse's own (one-line) message
    assert _error(capsys, monkeypatch, "predict") == "latentlit: error: the following arguments are required: predict.model"
    assert _error(capsys, monkeypatch).startswith("latentlit: error: a subcommand is needed: one of fit, validate, predict")
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--n_samples")
    assert line == "latentlit: error: --n_samples takes one value (N)"


def test_help_lists_the_everyday_options_briefly(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    overview = capsys.readouterr().out
    assert "parallel test-time scaling of latent reasoning models" in overview
    for name in ("fit", "validate", "predict"):
        assert any(line.startswith(f"  {name} ") for line in overview.splitlines())
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = capsys.readouterr().out
    assert len(help_text.splitlines()) < 60
    for flag, alias in ALIASES["predict"].items():
        assert f"  {flag} {alias.metavar}" in help_text and alias.targets.replace("=", " ") in help_text
    assert "--trainer.max_steps" not in help_text
    with pytest.raises(SystemExit):
        main(["predict", "--help_all"])
    assert "--trainer.max_steps" in capsys.readouterr().out


def test_ctrl_c_before_the_run_is_one_line(capsys, monkeypatch):
    import latentlit.cli.entry as cli

    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_cli", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--config", DROPOUT])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "latentlit: interrupted\n"


def test_predict_before_training_says_what_to_train_first(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no outputs/gsm8k_backbone here
    line = _error(capsys, monkeypatch, "predict", "--config", str(CONFIGS / "gsm8k" / "predict_gsm_test.yaml"))
    assert line.startswith("latentlit: error: FileNotFoundError: backbone outputs/gsm8k_backbone does not exist yet: "
                           "train it first with `latentlit fit --config ")
    assert line.endswith("configs/gsm8k/backbone.yaml` (or give another one with --backbone)")
    line = _error(capsys, monkeypatch, "predict", "--config", str(CONFIGS / "coconut" / "predict_dropout.yaml"))
    assert "backbone checkpoints/coconut does not exist: this config expects a released checkpoint there" in line
    line = _error(capsys, monkeypatch, "fit", "--config", str(CONFIGS / "quickstart" / "latentrm.yaml"))
    assert line.startswith("latentlit: error: FileNotFoundError: groups_dir outputs/quickstart_groups does not exist yet: "
                           "make it first with `latentlit predict --config ")


def test_ctrl_c_while_the_command_starts_is_one_line():
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "latentlit.cli", "predict", "--config", DROPOUT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(1.0)  # importing torch and Lightning takes longer than this
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err, out) == (130, "latentlit: interrupted\n", "")


def _stdout(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_class_help_lists_that_classes_options(capsys):
    out = _stdout(capsys, "predict", "--model.help", "latentlit.lit.TTSPredictor")
    assert "Help for --model.help=latentlit.lit.TTSPredictor" in out and "subcommands:" not in out
    for name in ("dvts_width", "save_latents", "answer_format", "num_latents", "rm_score", "adaptive", "beam_width"):
        assert f"--model.{name}" in out
    out = _stdout(capsys, "predict", "--data.help", "ProblemDataModule")  # short class names too
    assert "--data.batch_size" in out and "--data.problems" in out
    assert "--model.loss" in _stdout(capsys, "fit", "--model.help", "LatentRMModule")
    nested = _stdout(capsys, "predict", "--model.help", "TTSPredictor", "--model.sampler.help", "AGN")
    assert "--model.sampler.sigma" in nested and "--model.sampler.p " not in nested


def test_help_all_lists_the_options_of_the_model_and_data_classes(capsys):
    out = _stdout(capsys, "predict", "--help_all")
    assert "--trainer.max_steps" in out
    for option in ("--model.init_args.dvts_width", "--model.init_args.save_latents", "--model.init_args.answer_format",
                   "--model.init_args.rm_score", "--model.init_args.adaptive", "--model.init_args.sampler.init_args.p",
                   "--data.init_args.batch_size", "--data.init_args.problems.init_args.limit"):
        assert option in out, option
    assert "options of --model latentlit.lit.TTSPredictor (the default;" in out
    # with a config: the classes it configures
    out = _stdout(capsys, "predict", "--help_all", "--config", str(CONFIGS / "quickstart" / "predict_agn.yaml"))
    assert "options of --model.init_args.sampler latentlit.sampling.AGN (as configured;" in out
    assert "--model.init_args.sampler.init_args.sigma" in out and "--model.init_args.sampler.init_args.p " not in out
    out = _stdout(capsys, "fit", "--config", str(CONFIGS / "quickstart" / "latentrm.yaml"), "--help_all")
    assert "options of --model latentlit.lit.LatentRMModule (as configured;" in out and "--model.init_args.loss" in out


def test_a_short_option_the_chosen_class_does_not_take_is_an_error(capsys, monkeypatch):
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--p", "0.2", "--sampler", "agn")
    assert line == ("latentlit: error: --p 0.2: AGN (the model.init_args.sampler this command line ends with) has no "
                    "option 'p'; 'p' belongs to --sampler dropout (MCDropout)")
    # the same through the long form of the class
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--p", "0.2", "--model.init_args.sampler",
                  "latentlit.sampling.AGN")
    assert "--p 0.2" in line and "AGN" in line and "has no option 'p'" in line
    # and the same even when only printing the config
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--p", "0.2", "--sampler", "agn", "--print_config")
    assert "--p 0.2" in line
    config = _config(capsys, "predict", "--config", DROPOUT, "--sampler", "agn", "--sigma", "0.5")
    assert config["model"]["init_args"]["sampler"]["init_args"]["sigma"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["--batch_size", "0"], "ValueError: batch_size=0 must be >= 1 (questions per batch; --batch_size)"),
    (["--limit", "0"], "ValueError: SyntheticProblems(split='test'): limit=0 must be >= 1"),
    (["--limit", "-3"], "ValueError: SyntheticProblems(split='test'): limit=-3 must be >= 1"),
    (["--data_file", "DATA", "--limit", "0"], "ValueError: ProblemFile(DATA): limit=0 must be >= 1"),
    (["--data_file", "EMPTY"], "NoProblemsError: EMPTY: no problems to run (the file is empty)"),
    (["--data.init_args.problems.init_args.n_test", "0"], "NoProblemsError: no problems to run: {'class': 'SyntheticProblems'"),
    (["--output_dir", "/proc/latentlit-x"], "FileNotFoundError: --output_dir /proc/latentlit-x cannot be created or written "
                                            "(creating a directory in /proc fails"),
    (["--output_dir", "FILE/sub"], "NotADirectoryError: --output_dir FILE/sub cannot be created or written (FILE is a file"),
    (["--trainer.default_root_dir", "FILE"], "NotADirectoryError: the default output directory under FILE/outputs cannot"),
])
def test_bad_numbers_and_paths_are_one_line_before_any_work(capsys, monkeypatch, tmp_path, args, message):
    data, empty, blocker = tmp_path / "one.jsonl", tmp_path / "empty.jsonl", tmp_path / "a_file"
    data.write_text('{"question": "Ann has 3 .", "answer": "#### 3"}\n')
    empty.write_text("")
    blocker.write_text("")
    names = {"DATA": str(data), "EMPTY": str(empty), "FILE": str(blocker)}
    for key, value in names.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)
    if not any(a in ("--output_dir", "--trainer.default_root_dir") for a in args):
        args += ["--output_dir", str(tmp_path / "out")]
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--n_samples", "2", "--trainer.logger", "false", *args)
    assert line.startswith(f"latentlit: error: {message}"), line
    assert not (tmp_path / "out").exists()  # nothing was started: no directory, no run.json


@pytest.mark.parametrize("config,args,message", [
    (DROPOUT, ["--model.init_args.max_trajectories", "0"], "max_trajectories (0) must be >= 1"),
    (LABEL, ["--n_rollouts", "0"], "n_rollouts (0) must be >= 1"),
])
def test_other_counts_below_one_are_one_line_errors(capsys, monkeypatch, tmp_path, config, args, message):
    line = _error(capsys, monkeypatch, "predict", "--config", config, "--n_samples", "2", "--limit", "1",
                  "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                  "--output_dir", str(tmp_path / "out"), *args)
    assert line.startswith("latentlit: error: ValueError: ") and message in line


def test_ctrl_c_during_a_run_exits_130_with_the_resume_hint(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "latentlit.cli", "predict", "--config", DROPOUT, "--n_samples", "8",
                             "--batch_size", "1", "--output_dir", str(out), "--trainer.logger", "false",
                             "--trainer.enable_progress_bar", "false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    predictions = out / "predictions.jsonl"
    deadline = time.time() + 120
    while not (predictions.exists() and predictions.stat().st_size) and time.time() < deadline:
        time.sleep(0.1)  # the run is under way once its first records are written
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.endswith("latentlit: interrupted\n") and "Traceback" not in stderr
    assert "Detected KeyboardInterrupt" not in stdout + stderr
    assert f"results written so far are in {out}: run the same command again to resume" in stdout
    assert predictions.read_text().count("\n") >= 1  # what was done is kept


def test_typos_in_list_options_and_shipped_names_are_named(capsys, monkeypatch):
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--latent_rm", "quickstart",
                  "--model.init_args.searches+=latentlit.search.BeemSearch")
    assert line.endswith("no class 'latentlit.search.BeemSearch' can be imported; did you mean "
                         "`latentlit.search.BeamSearch`?")
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--latent_rm", "quickstart",
                  "--model.init_args.searches+=latentlit.search.BeamSearch", "--model.init_args.searches.widht", "4")
    assert line.endswith("BeamSearch has no option 'widht'; did you mean `width`?")
    # a typo of a shipped model is refused at once (not tried as a hub id, with network retries)
    line = _error(capsys, monkeypatch, "predict", "--config", DROPOUT, "--backbone", "quickstrat")
    assert line == ("latentlit: error: FileNotFoundError: backbone quickstrat is neither a directory nor a shipped "
                    "model; did you mean `quickstart`?")
