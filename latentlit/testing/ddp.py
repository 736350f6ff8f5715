"""Helpers for tests that run latentlit under DDP on CPU (2 gloo processes) and compare with one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli_ddp(subcommand: str, config: str | Path, cwd: str | Path, devices: int = 2, *extra: str,
                timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m latentlit.cli <subcommand> --config <config>`` with ``devices`` CPU processes
    (strategy ddp, gloo) in a fresh interpreter; returns the finished process (stdout, stderr)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PL_GLOBAL_SEED": "0",
           "OMP_NUM_THREADS": "1"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "latentlit.cli", subcommand, "--config", str(config), "--trainer.strategy", "ddp",
           "--trainer.devices", str(devices), "--trainer.accelerator", "cpu", *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class StepGradient(L.Callback):
    """Records the gradient the optimiser stepped with at optimiser step ``step`` (1-based), and
    the step's logged ``train/loss``; with ``path``, rank zero also saves both there
    (``torch.save`` of ``{"grads": {name: tensor}, "loss": float}``).

    Read in ``on_train_batch_end`` of the step's last micro-batch: Lightning zeroes gradients only
    when the next step starts, so ``.grad`` still holds what the optimiser used (after
    ``on_before_optimizer_step``, i.e. after latentlit's per-step normalisation)."""

    def __init__(self, path: str | None = None, step: int = 1):
        self.path, self.step = path, step
        self.grads: dict[str, torch.Tensor] | None = None
        self.loss: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.grads is not None or trainer.global_step != self.step:
            return
        self.grads = {n: p.grad.detach().cpu().clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        self.loss = float(trainer.callback_metrics["train/loss"])
        if self.path and trainer.is_global_zero:
            torch.save({"grads": self.grads, "loss": self.loss}, self.path)
