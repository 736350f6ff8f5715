"""The part the training DataModules share: a train and a validation problem source, loaded once,
validation served as (index, problem) pairs, batches kept as lists of Problem records."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from latentlit.data.problem import Problem
from latentlit.data.sources import ProblemSource, SyntheticProblems


def as_list(batch):
    """collate_fn: a batch stays the list of items it is."""
    return batch


class SplitsDataModule(L.LightningDataModule):
    """Training and validation problems (default: the synthetic train / val splits).

    Args:
        train / val: problem sources. batch_size / val_batch_size: problems per batch.

    Raises:
        ValueError: a batch size below 1.
    """

    def __init__(self, train: ProblemSource | None = None, val: ProblemSource | None = None, batch_size: int = 64,
                 val_batch_size: int = 250, seed: int = 0):
        super().__init__()
        for name, size in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{name}={size!r} must be >= 1 (problems per batch)")
        self.train_source = train or SyntheticProblems("train")
        self.val_source = val or SyntheticProblems("val")
        self.batch_size, self.val_batch_size, self.seed = batch_size, val_batch_size, seed
        self.train_problems: list[Problem] = []
        self.val_problems: list[Problem] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.train_problems:
            self.train_problems = self.train_source.load()
            self.val_problems = self.val_source.load()

    def val_dataloader(self) -> DataLoader:
        # (index, problem) pairs: under DDP the sampler repeats items to even out the processes,
        # and the index lets the accuracy count each problem once
        return DataLoader(list(enumerate(self.val_problems)), batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=as_list)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # batches are lists of Problem records (frozen dataclasses Lightning cannot move);
        # the modules build tensors on their device themselves
        return batch
