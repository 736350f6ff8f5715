"""LightningDataModule for GRPO: the questions of each optimiser step, as a function of the step.

Batch i of a run is fixed by (seed, i) alone: questions come from a seeded permutation per pass
over the training split (the last incomplete batch of a pass is dropped), each batch is served
``repeats`` times in a row (the PPO updates that reuse one round of rollouts), and the stream
starts at the trainer's restored step. So a run resumed from a checkpoint (``--ckpt_path``) sees
the same questions as one that never stopped, and 2 processes see the two halves of the global
batch that 1 process sees.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, IterableDataset

from latentlit.data.problem import Problem
from latentlit.data.sources import NoProblemsError, ProblemSource
from latentlit.lit.splits_data import SplitsDataModule, as_list


def batch_indices(n_problems: int, batch_size: int, seed: int, batch: int) -> list[int]:
    """Indices into the training problems of global batch ``batch`` (0-based).

    Raises:
        ValueError: fewer problems than one batch.
    """
    per_pass = n_problems // batch_size
    if per_pass < 1:
        raise ValueError(f"GRPO batch_size={batch_size} is larger than the {n_problems} training problems")
    epoch, j = divmod(batch, per_pass)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_problems, generator=generator)
    return order[j * batch_size:(j + 1) * batch_size].tolist()


class StepBatches(IterableDataset):
    """The endless stream of this process's share of global batches ``start, start + 1, ...``,
    each global batch split into ``world_size`` contiguous parts."""

    def __init__(self, problems: list[Problem], batch_size: int, seed: int, repeats: int, start: int, rank: int,
                 world_size: int):
        self.problems, self.batch_size, self.seed, self.repeats = problems, batch_size, seed, repeats
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self):
        part = self.batch_size // self.world_size
        i = self.start
        while True:
            index = batch_indices(len(self.problems), self.batch_size, self.seed, i // self.repeats)
            yield [self.problems[k] for k in index[self.rank * part:(self.rank + 1) * part]]
            i += 1


class GRPODataModule(SplitsDataModule):
    """Training questions for GRPO (the rewards come from their gold answers) and validation
    questions for the greedy accuracy.

    Args:
        train / val: problem sources (default: the synthetic train / val splits).
        batch_size: questions per optimiser step over all processes (each gets G rollouts);
            divisible by the number of processes.
        val_batch_size: questions per validation batch.
        seed: the order of the training questions.

    Raises:
        ValueError: a batch size below 1, or (fit) not divisible by the number of processes.
        NoProblemsError: a source without problems.
    """

    def __init__(self, train: ProblemSource | None = None, val: ProblemSource | None = None, batch_size: int = 16,
                 val_batch_size: int = 250, seed: int = 0):
        super().__init__(train, val, batch_size, val_batch_size, seed)

    def setup(self, stage: str | None = None) -> None:
        if not self.train_problems:
            super().setup(stage)
            if not self.train_problems:
                raise NoProblemsError(f"GRPODataModule: the training source {self.train_source!r} yields no problem")
            if self.batch_size > len(self.train_problems):  # before the model loads, not at the first step
                raise ValueError(f"GRPO batch_size={self.batch_size} is larger than the {len(self.train_problems)} "
                                 "training problems")

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(f"GRPO batch_size={self.batch_size} must be divisible by the {world} processes")
        repeats = getattr(trainer.lightning_module, "updates_per_batch", 1) if trainer is not None else 1
        # the trainer's step is restored before the loaders are built: a resumed run starts
        # where the checkpoint stopped, at an optimiser-step boundary
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        stream = StepBatches(self.train_problems, self.batch_size, self.seed, repeats, start, rank, world)
        return DataLoader(stream, batch_size=None, collate_fn=as_list)
