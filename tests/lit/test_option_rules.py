"""Every option that reaches a prediction run is in the run's identity, provably changes no number,
or is refused (latentlit.lit.options.PREDICT_OPTIONS, listed in docs/determinism.md): the table
covers every option of the classes and of the Trainer, and each rule holds."""

import inspect
import re
from pathlib import Path

import lightning as L
import pytest

from latentlit.cli import main
from latentlit.data.sources import ProblemFile, SyntheticProblems
from latentlit.lit import ProblemDataModule, RolloutLabeller, TTSPredictor
from latentlit.lit.options import PREDICT_OPTIONS, RULES, check_inference_run
from latentlit.sampling import AGN, MCDropout

DOCS = Path(__file__).resolve().parents[2] / "docs" / "determinism.md"
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "predict_dropout.yaml")


def _options(cls, prefix: str = "") -> set[str]:
    return {prefix + n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "args", "kwargs")}


def test_every_option_has_a_rule():
    wanted = (_options(TTSPredictor) | _options(RolloutLabeller) | _options(MCDropout, "sampler.")
              | _options(AGN, "sampler.") | _options(ProblemDataModule) | _options(L.Trainer, "trainer.")
              | {"seed_everything", "ckpt_path"})
    assert sorted(wanted - set(PREDICT_OPTIONS)) == []  # a new option (ours or Lightning's) needs a rule
    assert sorted(set(PREDICT_OPTIONS) - wanted) == []
    assert set(PREDICT_OPTIONS.values()) <= set(RULES)


def test_the_docs_list_every_option_with_its_rule():
    text = DOCS.read_text()
    for option, rule in PREDICT_OPTIONS.items():
        row = re.search(rf"^\| `{re.escape(option)}` \| ([a-z]+) \|", text, re.M)
        assert row is not None and row.group(1) == rule, option


def test_settings_options_are_in_run_json(tiny_backbone_dir):
    """Each 'setting' option of the predictor changes run_settings() (and so the directory hash)."""
    base = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=MCDropout(p=0.1), n_samples=4, max_new_tokens=2)
    changed = {"n_samples": 8, "seed": 1, "num_latents": 2, "max_new_tokens": 3, "answer_format": "last_number",
               "dtype": "bfloat16", "rm_score": "mean", "save_latents": True, "adaptive": {"round_size": 2}}
    for option, value in changed.items():
        assert PREDICT_OPTIONS[option] == "setting"
        kwargs = {"backbone": str(tiny_backbone_dir), "sampler": MCDropout(p=0.1), "n_samples": 4, "max_new_tokens": 2,
                  option: value}
        with pytest.warns(UserWarning) if option == "num_latents" else _no_warning():
            other = TTSPredictor(**kwargs)
        assert other.run_settings() != base.run_settings(), option
        assert other.run_dir_name() != base.run_dir_name(), option
    for name, value in {"p": 0.2, "mask_scope": "trajectory", "prefill": "shared", "on_answer": True,
                        "attention_p": 0.1}.items():
        other = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=MCDropout(**{"p": 0.1, name: value}), n_samples=4,
                             max_new_tokens=2)
        assert other.run_settings()["sampler"] != base.run_settings()["sampler"], name
    agn = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=AGN(sigma=0.5), n_samples=4, max_new_tokens=2)
    for name, value in {"sigma": 0.6, "relative": False}.items():
        other = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=AGN(**{"sigma": 0.5, name: value}), n_samples=4,
                             max_new_tokens=2)
        assert other.run_settings()["sampler"] != agn.run_settings()["sampler"], name
    # 'float' and 'where' options of the predictor are not in the settings: they cannot make another run
    wider = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=MCDropout(p=0.1), n_samples=4, max_new_tokens=2,
                         max_trajectories=3, output_dir="elsewhere")
    assert wider.run_settings() == base.run_settings()


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_problem_source_names_the_directory(tiny_backbone_dir):
    model = TTSPredictor(backbone=str(tiny_backbone_dir), n_samples=2, max_new_tokens=2)
    names = {model.run_dir_name(ProblemDataModule(source)) for source in (
        SyntheticProblems("test"), SyntheticProblems("val"), SyntheticProblems("test", seed=1),
        ProblemFile("a.jsonl"), ProblemFile("b.jsonl"), ProblemFile("a.jsonl", on_bad_answer="skip"))}
    assert len(names) == 6
    # but not the limit (a larger one grows the directory) nor the batch size
    assert model.run_dir_name(ProblemDataModule(SyntheticProblems("test", limit=5), batch_size=3)) == \
        model.run_dir_name(ProblemDataModule(SyntheticProblems("test")))


@pytest.mark.parametrize("args, message", [
    (["--trainer.precision", "bf16-mixed"], "--trainer.precision bf16-mixed: latentlit predict runs in the weights' dtype"),
    (["--trainer.precision", "bf16-true"], "--trainer.precision bf16-true"),
    (["--trainer.precision", "64-true"], "--trainer.precision 64-true"),
    (["--seed_everything", "123"], "--seed_everything 123 keys nothing a prediction draws"),
    (["--ckpt_path", "CKPT"], "--ckpt_path CKPT: latentlit predict takes its weights from --backbone"),
    (["--trainer.use_distributed_sampler", "false"], "--trainer.use_distributed_sampler false: latentlit predict splits"),
])
def test_refused_options_are_one_line_before_any_directory(capsys, monkeypatch, tmp_path, args, message):
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    args = [a.replace("CKPT", str(ckpt)) for a in args]
    message = message.replace("CKPT", str(ckpt))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", CONFIG, "--n_samples", "2", "--limit", "2", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"latentlit: error: ValueError: {message}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]  # nothing made: no outputs/, no runs/


def test_python_runs_refuse_them_too(tiny_backbone_dir, tmp_path):
    for trainer in (L.Trainer(precision="bf16-mixed", logger=False), L.Trainer(precision="64-true", logger=False)):
        with pytest.raises(ValueError, match="leave precision at 32-true and give --dtype"):
            check_inference_run(trainer, "TTSPredictor")
    model = TTSPredictor(backbone=str(tiny_backbone_dir), n_samples=2, max_new_tokens=2, output_dir=str(tmp_path / "o"))
    data = ProblemDataModule(SyntheticProblems("test", n_train=4, n_val=2, n_test=2))
    with pytest.raises(ValueError, match=r"--trainer.precision bf16-mixed would change its numbers"):
        L.Trainer(precision="bf16-mixed", logger=False, enable_progress_bar=False).predict(model, datamodule=data)
    assert not (tmp_path / "o").exists()
    check_inference_run(L.Trainer(precision="32-true", logger=False), "TTSPredictor")  # full precision runs
