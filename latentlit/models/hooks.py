"""Sampler seam: how a sampler acts on the latent loop.

The backbone's latent loop calls a sampler at exactly two places, and nowhere else:

* ``perturb(latent, keys, step)`` on each latent vector h_t before it is fed back (AGN acts here);
* ``scope(phase, keys, step, positions)``, a context manager around each forward pass, during
  which the sampler's hooks on the transformer may act (MC-dropout acts here).

``phase`` is one of ``"prefill"`` (the question, only with ``prefill="per_sample"``),
``"latent"`` (the T latent steps) and ``"answer"`` (answer decoding, only with ``on_answer=True``).
A sampler knows nothing about aggregation.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

PHASES = ("prefill", "latent", "answer")
PREFILL_MODES = ("shared", "per_sample")


@dataclass
class ForwardContext:
    """What a hook needs to key its randomness: the phase, the latent step (0 for prefill,
    1..T for latent steps, T+1.. for answer tokens), the (R,) int64 row keys and the (R, S)
    position ids of the tokens in this forward pass."""

    phase: str
    step: int
    keys: torch.Tensor
    positions: torch.Tensor


class Sampler(nn.Module):
    """Base sampler: deterministic (no randomness at all), hence N identical trajectories.

    Args:
        prefill: ``"shared"`` prefills each question once and copies its KV cache N times;
            ``"per_sample"`` prefills each sample separately inside :meth:`scope` (only differs
            for samplers that act on forward passes, i.e. MC-dropout).
        on_answer: keep the sampler active while decoding the answer (default off: answers are
            decoded greedily and dropout-free, paper Sec. 3).

    Raises:
        ValueError: unknown ``prefill`` value.
    """

    def __init__(self, prefill: str = "shared", on_answer: bool = False):
        super().__init__()
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill={prefill!r}; expected one of {PREFILL_MODES}")
        self.prefill = prefill
        self.on_answer = bool(on_answer)
        self._ctx: ForwardContext | None = None
        self._bound: int | None = None

    @property
    def stochastic(self) -> bool:
        """False when every trajectory of a question is the same (so one greedy pass suffices)."""
        return False

    @property
    def stochastic_forward(self) -> bool:
        """True when the sampler's hooks make forward passes random (MC-dropout, attention
        dropout): then running a *given* input (a latent vector h_t, an answer token) through the
        model is itself a draw. False when the randomness is only in :meth:`perturb` (AGN) or
        absent. Rollout labelling uses it to decide whether the continuations of a whole
        trajectory can differ from it (``latentlit.scoring.rollouts.rollouts_at_last_step``)."""
        return False

    def bind(self, backbone: nn.Module) -> None:
        """Attach to ``backbone`` (idempotent). Samplers that hook modules override :meth:`_attach`."""
        if self._bound == id(backbone):
            return
        self._attach(backbone)
        self._bound = id(backbone)

    def _attach(self, backbone: nn.Module) -> None:
        pass

    def active_in(self, phase: str) -> bool:
        """Whether forward-pass hooks act in ``phase``."""
        if phase == "latent":
            return True
        if phase == "prefill":
            return self.prefill == "per_sample"
        return self.on_answer

    @contextmanager
    def scope(self, phase: str, keys: torch.Tensor, step: int, positions: torch.Tensor) -> Iterator[None]:
        """Forward passes inside this context may be perturbed by the sampler's hooks."""
        if not self.active_in(phase):
            yield
            return
        self._ctx = ForwardContext(phase, step, keys, positions)
        try:
            yield
        finally:
            self._ctx = None

    def perturb(self, latent: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """Latent vector (R, d) at latent step ``step`` (1-based) -> perturbed (R, d)."""
        return latent

    def latent_distribution(self, latent: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a sampler whose :meth:`perturb` draws h*_t ~ N(mean, std^2 I): (mean (R, d), std
        (R, d) or (R, 1)) given the unperturbed latent (R, d) at step ``step``, as differentiable
        functions of it; the policy log-probability of GRPO reads them (``latentlit.training``).
        None (this base class, MC-dropout) when the perturbation is not a Gaussian draw."""
        return None

    def describe(self) -> dict:
        """JSON-able settings, recorded in ``metrics.json``."""
        return {"name": type(self).__name__, "prefill": self.prefill, "on_answer": self.on_answer}


class Deterministic(Sampler):
    """No sampling: every one of the N trajectories equals the greedy one (the baseline)."""
