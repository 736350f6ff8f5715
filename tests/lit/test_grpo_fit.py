"""``latentlit fit`` with the GRPO module: an interrupted run (SIGTERM, ``--ckpt_path``) continues with
the same rollouts and losses as an uninterrupted one; 2 DDP processes follow the loss trajectory of
1 process with the same global batch; the learned sampler trains and loads at predict time."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latentlit.cli import main
from latentlit.models.checkpoints import SHIPPED
from latentlit.testing.ddp import run_cli_ddp

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "grpo.yaml"
SIZES = {"n_train": 64, "n_val": 8, "n_test": 8}
QUICKSTART = "quickstart"


def _args(tmp: Path, backbone: str | Path, run: str, *extra: str) -> list[str]:
    sizes = [f"--data.init_args.{split}.init_args.{k}={v}" for split in ("train", "val") for k, v in SIZES.items()]
    return ["--model.init_args.backbone", str(backbone), "--model.init_args.group_size", "4",
            "--model.init_args.lr", "0.001", "--model.init_args.max_new_tokens", "3", "--data.init_args.batch_size", "4",
            *sizes, "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
            "--trainer.logger.init_args.save_dir", str(tmp / run),
            "--model.init_args.export_dir", str(tmp / run / "export"), *extra]


def _losses(root: Path, tag: str = "train/loss") -> dict[int, float]:
    """``tag`` by step over every TensorBoard event file under ``root``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(root.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


@pytest.mark.slow
def test_a_grpo_fit_stopped_by_sigterm_resumes_with_the_same_rollouts_and_losses(tmp_path):
    # two updates per round of rollouts: a stop inside a round must bring back its rollouts and
    # the old policy's log-probabilities from the checkpoint
    common = ("--model.init_args.updates_per_batch", "2")
    main(["fit", "--config", str(CONFIG), *_args(tmp_path, QUICKSTART, "whole", *common), "--max_steps", "9"])
    whole = _losses(tmp_path / "whole")
    assert sorted(whole) == list(range(9)) and len({round(v, 6) for v in whole.values()}) > 3

    argv = [sys.executable, "-m", "latentlit.cli", "fit", "--config", str(CONFIG),
            *_args(tmp_path, QUICKSTART, "parts", *common), "--max_steps", "100000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if line.startswith("[latentlit] step 2"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err[-3000:])
    checkpoint = next((tmp_path / "parts").rglob("last.ckpt"))
    stopped_at = torch.load(checkpoint, weights_only=False, map_location="cpu")["global_step"]
    assert 2 <= stopped_at < 9
    main(["fit", "--config", str(CONFIG), *_args(tmp_path, QUICKSTART, "parts", *common), "--max_steps", "9",
          "--ckpt_path", str(checkpoint)])
    before = _losses(next((tmp_path / "parts").rglob("version_0")))
    after = _losses(next((tmp_path / "parts").rglob("version_1")))
    # the steps before the stop, then every step after it: the same losses in the same order
    # (Lightning numbers the resumed run's TensorBoard steps from stopped_at + 1)
    assert [before[k] for k in sorted(before)] == pytest.approx([whole[k] for k in range(len(before))], rel=1e-6)
    assert len(before) == stopped_at and len(after) == 9 - stopped_at
    assert [after[k] for k in sorted(after)] == pytest.approx([whole[k] for k in range(stopped_at, 9)], rel=1e-5,
                                                              abs=1e-7)
    a = load_file(str(tmp_path / "whole" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "export" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = load_file(str(SHIPPED["quickstart"] / "model.safetensors"))
    assert any(not torch.allclose(a[k], start[k]) for k in a)  # it trained


@pytest.mark.slow
def test_grpo_on_two_ddp_processes_follows_one_process(tmp_path):
    """Global batch 4 questions: 2 processes x 2 = 1 process x 4, loss trajectory and weights.

    On the shipped quickstart backbone, whose rollouts are right about half the time: a random
    model's all-zero rewards leave only the KL's float-noise gradient, which Adam amplifies."""
    def probe(run):  # the first step's gradient, after latentlit's per-step normalisation
        spec = {"class_path": "latentlit.testing.ddp.StepGradient", "init_args": {"path": str(tmp_path / f"{run}.pt")}}
        return f"--trainer.callbacks+={json.dumps(spec)}"

    main(["fit", "--config", str(CONFIG), *_args(tmp_path, QUICKSTART, "one"), "--max_steps", "4",
          "--trainer.limit_val_batches", "0", probe("one")])
    proc = run_cli_ddp("fit", CONFIG, tmp_path, 2, *_args(tmp_path, QUICKSTART, "two"), "--trainer.max_steps", "4",
                       "--trainer.limit_val_batches", "0", probe("two"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    grads = [torch.load(tmp_path / f"{run}.pt", weights_only=True)["grads"] for run in ("one", "two")]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    norm = sum(g.pow(2).sum() for g in grads[0].values()).sqrt()
    assert norm > 0 and sum((grads[0][k] - grads[1][k]).pow(2).sum() for k in grads[0]).sqrt() < 1e-5 * norm
    single, ddp = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert _losses(tmp_path / "one", "train/advantage_abs")[0] > 0  # real advantages, not only the KL
    assert sorted(single) == sorted(ddp) == [0, 1, 2, 3]
    # Adam divides each coordinate by its own running scale, so coordinates whose gradient is float
    # noise (the KL's at the start) move by ~lr either way: later steps agree to 1e-3, not 1e-5
    for step in single:
        assert ddp[step] == pytest.approx(single[step], rel=1e-3, abs=1e-7), step


@pytest.mark.slow
def test_a_learned_sampler_trains_on_a_frozen_backbone_and_predicts(tmp_path, tiny_backbone_dir):
    main(["fit", "--config", str(CONFIG), *_args(tmp_path, tiny_backbone_dir, "learned"), "--max_steps", "3",
          "--model.init_args.train", "sampler", "--model.init_args.sampler", "latentlit.sampling.LearnedSampler",
          "--model.init_args.sampler.init_args.hidden_size", "8", "--trainer.limit_val_batches", "0"])
    export = tmp_path / "learned" / "export"
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["train"] == "sampler" and summary["global_step"] == 3
    weights = load_file(str(export / "sampler.safetensors"))
    assert weights["2.weight"].abs().sum() > 0  # moved from its zero start
    out = tmp_path / "pred"
    main(["predict", "--config", str(CONFIG.parent / "predict_agn.yaml"), "--backbone", str(tiny_backbone_dir),
          "--sampler", "learned", "--sampler_path", str(export), "--n_samples", "4", "--limit", "3",
          "--output_dir", str(out), "--model.init_args.max_new_tokens", "3", "--trainer.enable_progress_bar", "false"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sampler"]["name"] == "LearnedSampler"
    assert metrics["config"]["sampler"]["path"] == str(export)
