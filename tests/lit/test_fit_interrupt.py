"""``latentlit fit`` stopped by SIGTERM: a resumable checkpoint, the resume command, a non-zero exit,
and a resumed fit whose summary covers the whole run."""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import torch

from latentlit.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "backbone.yaml"


def _fit_args(tmp: Path) -> list[str]:
    sizes = []
    for split in ("train", "val"):
        for key, n in (("n_train", 256), ("n_val", 16), ("n_test", 16)):
            sizes += [f"--data.init_args.{split}.init_args.{key}", str(n)]
    return ["fit", "--config", str(CONFIG), "--model.init_args.arch", "{n_layer: 1, n_embd: 32, n_head: 2, n_positions: 128}",
            "--model.init_args.stage0_length", "10", "--model.init_args.stage_length", "10", "--max_steps", "100000",
            *sizes, "--data.init_args.batch_size", "8", "--data.init_args.val_batch_size", "16",
            "--trainer.val_check_interval", "5", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
            "--model.init_args.val_max_new_tokens", "3", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
            "--export_dir", str(tmp / "export")]


def test_sigterm_during_fit_saves_a_resumable_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "latentlit.cli", *_fit_args(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = []
    for line in proc.stdout:  # the first validation print means training is under way
        seen.append(line)
        if line.startswith("[latentlit] step"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    out = "".join(seen) + out
    assert proc.returncode == 143, (out, err[-2000:])
    assert not (tmp_path / "export").exists()  # training did not finish: nothing exported
    stopped = next(x for x in out.splitlines() if x.startswith("[latentlit] fit stopped by SIGTERM"))
    checkpoint = Path(stopped.split("Resumable checkpoint: ")[1])
    # the run is named after its config and what the command line changed (whole words, at most 48 characters)
    name = "quickstart_backbone-arch-stage0_length10-stage_length10"
    assert checkpoint == tmp_path / "runs" / name / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    step = state["global_step"]
    assert step >= 5 and state["optimizer_states"] and state["latentlit"]["validation_history"][0]["step"] == 5
    resume = next(x for x in out.splitlines() if x.startswith("[latentlit] resume with: "))
    argv = shlex.split(resume.split("resume with: ")[1])
    assert argv[0] == "latentlit" and argv[-2:] == ["--ckpt_path", str(checkpoint)]
    assert argv[1:-2] == _fit_args(tmp_path)

    # the printed command resumes (with fewer steps to go, for the test's sake)
    main([*argv[1:], "--max_steps", str(step + 7)])
    summary = json.loads((tmp_path / "export" / "training_summary.json").read_text())
    assert summary["global_step"] == step + 7
    steps = [v["step"] for v in summary["validation"]]
    assert steps[0] == 5 and steps == sorted(steps) and steps[-1] > step  # before and after the interruption
    assert summary["train_seconds"] >= state["latentlit"]["train_seconds"]



def test_a_step_limited_fit_shows_its_step_limit_not_a_negative_epoch_count():
    import lightning as L

    from latentlit.lit.callbacks import StepProgressBar

    bar = StepProgressBar()
    # max_epochs -1: what a step-limited fit runs with (the quickstart configs give max_steps only)
    bar._trainer = L.Trainer(max_steps=7, max_epochs=-1, callbacks=[bar], logger=False, enable_checkpointing=False)
    assert bar._get_train_description(1).strip() == "Epoch 1 (until step 7)"
    by_epochs = StepProgressBar()
    by_epochs._trainer = L.Trainer(max_epochs=3, callbacks=[by_epochs], logger=False, enable_checkpointing=False)
    assert by_epochs._get_train_description(1).strip() == "Epoch 1/2"
