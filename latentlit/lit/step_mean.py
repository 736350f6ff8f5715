"""The loss of one optimiser step as a mean over the whole step, however its batch is cut.

A step's batch can be cut into micro-batches (``accumulate_grad_batches``) and processes (DDP).
Dividing each micro-batch's summed loss by its own count (tokens, groups) and then averaging
micro-batches and processes weights a unit by the size of the piece it fell in: accumulation
2 x 16 and one batch of 32 then give different gradients for the same problems. Here every
micro-batch hands Lightning its *summed* loss; after the step's last backward, the gradients are
rescaled once by the step's total count (summed over micro-batches and processes), so the
optimiser sees the gradient of sum(loss) / sum(count) over the step, whatever the cut.

Lightning 2.6 divides each micro-batch's loss by ``accumulate_grad_batches`` and DDP averages
gradients over the ``world_size`` processes: the factor below undoes both. The rescale runs in
``on_before_optimizer_step``: after the closure (all backward passes, DDP's all-reduce and AMP's
unscale) and before gradient clipping, so clipping sees the true gradient.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def gradient_scale(accumulate_grad_batches: int, world_size: int, count: float) -> float:
    """Factor turning Lightning's accumulated gradient of summed losses into the gradient of the
    step's mean: ``accumulate_grad_batches * world_size / count``.

    Lightning leaves sum_i grad(S_i) / A (A = accumulate_grad_batches) and DDP divides by the W
    processes, so the gradient in hand is sum grad(S) / (A W); the mean over the step's ``count``
    units (tokens, groups; all micro-batches and processes) is sum grad(S) / count.

    Returns 0 for a step without any unit (there is no loss to follow).

    Raises:
        ValueError: accumulate_grad_batches or world_size < 1, or a negative count.
    """
    if accumulate_grad_batches < 1 or world_size < 1 or count < 0:
        raise ValueError(f"accumulate_grad_batches={accumulate_grad_batches}, world_size={world_size}, count={count}: "
                         "expected >= 1, >= 1 and >= 0")
    return 0.0 if count == 0 else accumulate_grad_batches * world_size / count


def scale_gradients(params: Iterable[torch.nn.Parameter], factor: float) -> None:
    """Multiply every existing ``.grad`` in place by ``factor``."""
    for p in params:
        if p.grad is not None:
            p.grad.mul_(factor)


class StepMean:
    """Per-optimiser-step accumulator of a summed loss and its unit count.

    Use from a LightningModule with automatic optimisation::

        def training_step(self, batch, i):
            loss_sum, count = ...
            return self.step_mean.add(loss_sum, count)        # what Lightning back-propagates

        def on_before_optimizer_step(self, optimizer):
            mean = self.step_mean.finish(self.trainer, optimizer)  # rescales the gradients
            self.log("train/loss", mean)

    Strategies that accumulate gradients themselves (DeepSpeed) are refused by :meth:`check`.
    """

    def __init__(self):
        self._loss: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    @staticmethod
    def check(trainer) -> None:
        """Raise ValueError for a strategy whose gradient accumulation this rescale cannot see."""
        if trainer.strategy.handles_gradient_accumulation:
            raise ValueError(f"strategy {type(trainer.strategy).__name__} accumulates gradients itself; latentlit's "
                             "per-step loss normalisation needs Lightning's accumulation (use ddp or a single device)")

    def add(self, loss_sum: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
        """Record one micro-batch: ``loss_sum`` (scalar, summed over its ``count`` units).

        Returns ``loss_sum`` itself: the loss to back-propagate."""
        count = torch.as_tensor(count, dtype=torch.float64, device=loss_sum.device)
        loss = loss_sum.detach().to(torch.float64)
        self._loss = loss if self._loss is None else self._loss + loss
        self._count = count if self._count is None else self._count + count
        return loss_sum

    def finish(self, trainer, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
        """End the step: sum loss and count over processes, rescale the optimiser's gradients by
        :func:`gradient_scale`, reset. Call on every process (it all-reduces).

        Returns:
            the step's mean loss (float64 scalar, the same on every process), or None when no
            micro-batch was recorded since the last call.
        """
        if self._count is None:
            return None
        totals = torch.stack([self._loss, self._count])
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
        self._loss = self._count = None
        loss, count = totals[0], float(totals[1])
        params = (p for group in optimizer.param_groups for p in group["params"])
        scale_gradients(params, gradient_scale(trainer.accumulate_grad_batches, trainer.world_size, count))
        return loss / max(count, 1.0)
