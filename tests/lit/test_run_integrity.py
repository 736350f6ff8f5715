"""Run integrity: no result of ``latentlit predict`` or of rollout labelling is mixed with, or
attributed to, other weights or settings (weights fingerprints in run.json, LatentRM provenance,
save_latents as a run setting, throughput of a no-op re-run, unreadable questions, untrained
models, options checked before the output directory is bound, RM scores at float32)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from latentlit.cli import main
from latentlit.models.checkpoints import load_backbone
from latentlit.models.latent_rm import LatentRM
from latentlit.runs.directory import EARLIER_RUN
from latentlit.runs.files import read_latents
from latentlit.runs.fingerprint import weights_fingerprint
from latentlit.testing.tiny import write_tiny_backbone

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
SYNTH = ["--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
         "--data.problems.n_train", "8", "--data.problems.n_val", "2", "--data.problems.n_test", "3"]


def _predict(backbone: Path, out: Path, *extra: str) -> None:
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "2", "--model.max_new_tokens", "2",
          "--model.output_dir", str(out), *SYNTH, *QUIET, "--trainer.default_root_dir", str(out.parent), *extra])


def _label(backbone: Path, out: Path, limit: str = "3") -> None:
    main(["predict", "--model", "latentlit.lit.RolloutLabeller", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "2", "--model.n_rollouts", "2",
          "--model.drop_all_wrong", "false", "--model.drop_all_correct", "false", "--model.max_new_tokens", "2",
          "--model.output_dir", str(out), *SYNTH, "--data.problems.split", "train", "--limit", limit, *QUIET,
          "--trainer.default_root_dir", str(out.parent)])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_predict_resume_refuses_weights_retrained_in_place(tmp_path, capsys, monkeypatch):
    backbone = write_tiny_backbone(tmp_path / "backbone", seed=0)
    before = weights_fingerprint(load_backbone(backbone))
    out = tmp_path / "pred"
    _predict(backbone, out, "--limit", "2")
    run = _json(out / "run.json")
    assert run["backbone_fingerprint"] == before and run["latent_rm_fingerprint"] is None
    assert _json(out / "metrics.json")["config"]["backbone_fingerprint"] == before
    write_tiny_backbone(backbone, seed=1)  # "retrained" into the same directory
    after = weights_fingerprint(load_backbone(backbone))
    assert after != before
    with pytest.raises(ValueError, match=rf"the backbone loaded from {backbone} has weights fingerprint {after} but "
                                         rf"the stored results were made with weights fingerprint {before}"):
        _predict(backbone, out)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2  # nothing added or lost
    # what the user sees: one line
    monkeypatch.delenv("LATENTLIT_DEBUG")
    with pytest.raises(SystemExit) as stop:
        _predict(backbone, out)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("latentlit: error:")]
    assert len(err) == 1 and before in err[0] and after in err[0] and str(backbone) in err[0]


def test_labelling_records_its_backbone_and_refuses_other_weights_on_resume(tmp_path):
    backbone = write_tiny_backbone(tmp_path / "backbone", seed=0)
    groups = tmp_path / "groups"
    _label(backbone, groups, limit="2")
    fp = weights_fingerprint(load_backbone(backbone))
    assert _json(groups / "run.json")["backbone_fingerprint"] == fp
    write_tiny_backbone(backbone, seed=1)
    with pytest.raises(ValueError, match=rf"loaded from {backbone} has weights fingerprint \w+ but the stored "
                                         rf"results were made with weights fingerprint {fp}"):
        _label(backbone, groups)
    assert sum(len(p.read_text().splitlines()) for p in groups.glob("index.r*.jsonl")) == 2


def test_latentrm_provenance_is_exported_and_compared_at_predict(tmp_path):
    """A LatentRM trained on groups of backbone A records A's fingerprint; predict with A says the
    RM matches (true), with another backbone of the same width warns and records false; an RM
    without provenance (the released COCONUT one) is unknown (null)."""
    a = write_tiny_backbone(tmp_path / "a", seed=0)
    b = write_tiny_backbone(tmp_path / "b", seed=1)
    groups = tmp_path / "groups"
    _label(a, groups, limit="8")
    rm_dir = tmp_path / "rm"
    main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(a), "--model.export_dir",
          str(rm_dir), "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups),
          "--data.val_fraction", "0.25", "--data.batch_size", "4", "--trainer.max_steps", "1", *QUIET,
          "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path)])
    provenance = _json(rm_dir / "latent_rm.json")["provenance"]
    fp_a = weights_fingerprint(load_backbone(a))
    fp_b = weights_fingerprint(load_backbone(b))
    assert provenance["backbone_fingerprint"] == fp_a and provenance["trained_steps"] == 1
    assert provenance["groups"] == str(groups) and provenance["backbone"] == str(a)

    # an RM built from backbone b on groups that a labelled: warned, and the provenance is a's
    with pytest.warns(UserWarning, match=rf"groups in {groups} were labelled with backbone '{a}' .*fingerprint {fp_a}"):
        main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(b), "--model.export_dir",
              str(tmp_path / "rm_b"), "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups),
              "--data.val_fraction", "0.25", "--data.batch_size", "4", "--trainer.max_steps", "1", *QUIET,
              "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert _json(tmp_path / "rm_b" / "latent_rm.json")["provenance"]["backbone_fingerprint"] == fp_a

    same = tmp_path / "pred_a"
    _predict(a, same, "--model.latent_rm", str(rm_dir), "--limit", "1")
    assert _json(same / "metrics.json")["config"]["latent_rm_backbone_match"] is True
    assert _json(same / "run.json")["latent_rm_fingerprint"] == weights_fingerprint(LatentRM.from_pretrained(rm_dir))

    other = tmp_path / "pred_b"
    with pytest.warns(UserWarning, match=rf"LATENTRM / BACKBONE MISMATCH.*fingerprint {fp_a}.*{b} has fingerprint {fp_b}"):
        _predict(b, other, "--model.latent_rm", str(rm_dir), "--limit", "1")
    assert _json(other / "metrics.json")["config"]["latent_rm_backbone_match"] is False

    meta = _json(rm_dir / "latent_rm.json")
    del meta["provenance"]
    (rm_dir / "latent_rm.json").write_text(json.dumps(meta))
    unknown = tmp_path / "pred_unknown"
    _predict(b, unknown, "--model.latent_rm", str(rm_dir), "--limit", "1")
    assert _json(unknown / "metrics.json")["config"]["latent_rm_backbone_match"] is None
    assert _json(unknown / "run.json")["latent_rm_fingerprint"] == _json(other / "run.json")["latent_rm_fingerprint"]


def test_untrained_latentrm_warns_at_predict(tmp_path, tiny_backbone_dir):
    from latentlit.lit.predictor import TTSPredictor

    rm = LatentRM.from_backbone(load_backbone(tiny_backbone_dir), seed=0)
    rm.provenance = {"backbone": str(tiny_backbone_dir), "backbone_fingerprint": "0" * 16, "trained_steps": 0}
    rm.save_pretrained(tmp_path / "rm")
    with pytest.warns(UserWarning, match=r"after 0 training steps.*randomly initialised"):
        TTSPredictor(backbone=str(tiny_backbone_dir), latent_rm=str(tmp_path / "rm"))
    rm.provenance["trained_steps"] = 5
    rm.save_pretrained(tmp_path / "rm")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        TTSPredictor(backbone=str(tiny_backbone_dir), latent_rm=str(tmp_path / "rm"))
    assert not [w for w in seen if "training steps" in str(w.message)]


def test_validating_an_untrained_latentrm_warns(tmp_path):
    from latentlit.testing.groups import random_group, split_ids, write_groups

    backbone = write_tiny_backbone(tmp_path / "backbone", dropout=0.0)
    train, val = split_ids(4, 2)
    groups = write_groups(tmp_path / "groups", [random_group(q, 32) for q in train + val])
    args = ["validate", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(backbone),
            "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups), "--data.val_fraction", "0.5",
            *QUIET, "--trainer.default_root_dir", str(tmp_path)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main(args)
    untrained = [str(w.message) for w in seen if "no trained weights were loaded" in str(w.message)]
    assert len(untrained) == 1 and "the LatentRM's head is randomly initialised" in untrained[0]
    # the same validation from a checkpoint of a fit says nothing of the kind
    main(["fit", *args[1:], "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "true"])
    ckpt = next((tmp_path).rglob("*.ckpt"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main([*args, "--ckpt_path", str(ckpt)])
    assert not [w for w in seen if "no trained weights were loaded" in str(w.message)]


def test_save_latents_is_a_run_setting_and_honoured(tmp_path):
    backbone = write_tiny_backbone(tmp_path / "backbone")
    off = tmp_path / "off"
    _predict(backbone, off, "--limit", "2")
    assert _json(off / "run.json")["save_latents"] is False and not (off / "latents").exists()
    with pytest.raises(ValueError, match=r'"save_latents": \{"stored": false, "now": true\}'):
        _predict(backbone, off, "--model.save_latents", "true")
    on = tmp_path / "on"
    _predict(backbone, on, "--model.save_latents", "true", "--limit", "2")
    assert _json(on / "run.json")["save_latents"] is True

    saved = {k: v for f in sorted((on / "latents").glob("*.safetensors")) for k, v in read_latents(f).items()}
    ids = [json.loads(x)["id"] for x in (on / "predictions.jsonl").read_text().splitlines()]
    assert sorted(saved) == sorted(ids) and all(v.shape == (2, 3, 32) for v in saved.values())
    # the same records either way (saving decides what the directory holds, not the records)
    strip = lambda d: [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
    assert strip(on) == strip(off)


def test_a_no_op_rerun_keeps_the_measured_throughput(tmp_path, capsys):
    backbone = write_tiny_backbone(tmp_path / "backbone")
    out = tmp_path / "pred"
    _predict(backbone, out, "--limit", "2")
    first = _json(out / "metrics.json")
    speed = first["trajectories_per_second"]
    assert speed > 0 and first["throughput"]["measured_by"] == "this run" and first["throughput"]["trajectories"] == 4
    seconds = first["throughput"]["seconds"]  # rounded to 1 ms
    assert 4 / (seconds + 5e-4) - 1e-3 <= speed <= 4 / (seconds - 5e-4) + 1e-3
    for _ in range(2):  # twice: the carried figures survive a carried-over run too
        _predict(backbone, out, "--limit", "2")
        again = _json(out / "metrics.json")
        assert again["counts"]["trajectories_this_run"] == 0
        assert again["trajectories_per_second"] == speed
        assert again["throughput"] == {**first["throughput"], "measured_by": EARLIER_RUN}
        assert again["metrics"] == first["metrics"]
    assert f"({speed} trajectories/s measured by {EARLIER_RUN})" in capsys.readouterr().out


def test_a_question_the_tokenizer_cannot_read_is_refused(tmp_path):
    backbone = write_tiny_backbone(tmp_path / "backbone")
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": "ok", "question": "Leo has 3 apples . buys 2 . how many ?", "answer": "5"},
            {"id": "zebra-7", "question": "Leo has 3 zebras . buys 2 quokkas . how many ?", "answer": "5"}]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"question 'zebra-7' has words the tokenizer .* reads as its unknown token "
                                         r"'<\|unk\|>': \['zebras', 'quokkas'\] \(1 of 2 questions"):
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
              "--model.n_samples", "2", "--model.max_new_tokens", "2", "--model.output_dir", str(tmp_path / "out"),
              "--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.ProblemFile",
              "--data.problems.path", str(problems), *QUIET, "--trainer.default_root_dir", str(tmp_path)])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option,value,message", [
    ("--model.answer_format", "gsm8kk", r"answer_format='gsm8kk'; expected one of \('auto', 'coconut'"),
    ("--model.max_new_tokens", "0", r"TTSPredictor: max_new_tokens \(0\) must be >= 1"),
])
def test_bad_options_fail_in_one_line_before_the_output_directory_is_bound(tmp_path, capsys, monkeypatch,
                                                                           option, value, message):
    backbone = write_tiny_backbone(tmp_path / "backbone")
    monkeypatch.delenv("LATENTLIT_DEBUG")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone), option, value,
              *SYNTH, *QUIET, "--trainer.default_root_dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[0]) and err[0].startswith("latentlit: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone"]  # no outputs/ folder, no run.json


def test_rm_scores_are_float32_under_autocast(tiny_backbone_dir):
    """Whatever the compute dtype around it (a bf16-mixed trainer autocasts predict_step), the RM
    scores at its own float32: best-of-N ranks the same values on every process and dtype."""
    from latentlit.models.latent_rm import LatentRMStepScorer

    rm = LatentRM.from_backbone(load_backbone(tiny_backbone_dir), seed=0).eval()
    questions = ["Leo has 3 apples . buys 2 . how many ?"]
    latents = torch.randn(1, 4, 3, rm.latent_size, generator=torch.Generator().manual_seed(0))
    plain = rm.score_groups(questions, latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = rm.score_groups(questions, latents)
        scorer = LatentRMStepScorer(rm, questions, how="last")
        scorer.reset(torch.zeros(4, dtype=torch.long))
        for t in range(3):
            stepped = scorer.extend(torch.arange(4), latents[0, :, t])
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)
    assert torch.allclose(stepped, plain[0, :, -1], atol=1e-5)
    # what autocast would have given: bfloat16-rounded scores (the precision this guards against)
    unguarded = LatentRM.score_groups.__wrapped__.__wrapped__  # under no_grad and _rm_precision
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = unguarded(rm, questions, latents)
    assert not torch.equal(rounded, plain)
    assert torch.equal(rounded, rounded.to(torch.bfloat16).float())  # bfloat16 values in a float32 tensor


def test_a_fit_into_an_export_directory_held_by_another_run_is_refused(tmp_path, capsys, monkeypatch):
    """Two fits exporting to one directory would overwrite each other's weights: the second is
    refused in one line before it trains, and runs once the holder is gone (lock file removed)."""
    import os
    import subprocess
    import sys

    from latentlit.testing.groups import random_group, split_ids, write_groups

    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    backbone = write_tiny_backbone(tmp_path / "backbone", dropout=0.0)
    train, val = split_ids(4, 2)
    groups = write_groups(tmp_path / "groups", [random_group(q, 32) for q in train + val])
    export = tmp_path / "rm"
    args = ["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(backbone), "--model.export_dir",
            str(export), "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups),
            "--data.val_fraction", "0.5", "--trainer.max_steps", "1", *QUIET, "--trainer.enable_checkpointing", "false",
            "--trainer.default_root_dir", str(tmp_path / "logs")]
    hold = "import sys, time; from latentlit.runs import lock; lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(export)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("latentlit: error")]
        assert err == [f"latentlit: error: DirectoryInUse: {export} is in use by another latentlit run (process "
                       f"{holder.pid}): wait for it to end (or stop it), or give another output directory"]
        assert sorted(p.name for p in export.iterdir()) == [".latentlit.lock"]  # nothing exported
    finally:
        holder.kill()
        holder.wait()
    main(args)
    assert (export / "model.safetensors").is_file() and not (export / ".latentlit.lock").exists()


def test_a_directory_whose_fingerprint_names_the_same_weights_resumes(tmp_path):
    """run.json written by the version whose fingerprint was the bfloat16 digest alone (its first
    half is today's) resumes; a fingerprint of other weights is refused."""
    backbone = write_tiny_backbone(tmp_path / "backbone", seed=0)
    out = tmp_path / "pred"
    _predict(backbone, out, "--limit", "2")
    run = _json(out / "run.json")
    now = run["backbone_fingerprint"]
    (out / "run.json").write_text(json.dumps({**run, "backbone_fingerprint": now[:8] + "0123abcd"}))  # version 1
    _predict(backbone, out, "--limit", "3")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3
    other = ("f" if now[0] != "f" else "e") + now[1:8] + "0123abcd"
    (out / "run.json").write_text(json.dumps({**run, "backbone_fingerprint": other}))
    with pytest.raises(ValueError, match="holds results of other weights"):
        _predict(backbone, out, "--limit", "3")
