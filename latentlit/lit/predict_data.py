"""LightningDataModule serving problems to ``latentlit predict`` (and skipping finished ones)."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from latentlit.data.problem import Problem
from latentlit.data.sources import NoProblemsError, ProblemSource, SyntheticProblems


class IndexedProblems(Dataset):
    """(index in the full problem list, Problem) pairs; the index orders merged outputs.

    Items ``(-1, None)`` are placeholders (see :meth:`ProblemDataModule.predict_dataloader`):
    ``predict_step`` skips them."""

    def __init__(self, items: list[tuple[int, Problem]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Problem]:
        return self.items[i]


def _as_list(batch):
    return batch


class ProblemDataModule(L.LightningDataModule):
    """Problems for prediction.

    Args:
        problems: a problem source (default: the synthetic test split, 500 problems).
        batch_size: questions per ``predict_step`` (each expands to N trajectories; the model's
            ``max_trajectories`` bounds the rows actually run at once).

    Finished questions (resume) are skipped inside the modules' ``predict_step``, not here: under
    DDP every rank must still receive batches, or Lightning's distributed sampler fails on a rank
    left without work.

    Raises:
        ValueError: ``batch_size`` below 1. NoProblemsError: (setup) the source yields no
            problem, whatever the source (a run over nothing is an error, never an empty result).
    """

    def __init__(self, problems: ProblemSource | None = None, batch_size: int = 16):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1 (questions per batch; --batch_size)")
        self.source = problems or SyntheticProblems("test")
        self.batch_size = batch_size
        self.problems: list[Problem] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.problems:
            self.problems = self.source.load()
            if not self.problems:
                raise NoProblemsError(f"no problems to run: {self.source.describe()} yields none")
            seen: set[str] = set()
            for p in self.problems:
                if p.id in seen:
                    raise ValueError(f"duplicate problem id {p.id!r} in {self.source.describe()}")
                seen.add(p.id)

    def predict_dataloader(self) -> DataLoader:
        items = list(enumerate(self.problems))
        # Lightning's predict sampler under DDP asserts that every process gets an item: with fewer
        # problems than processes, placeholders give the idle processes one to skip, so that they
        # run the loop (and its collective metric reduction) to the end with the others
        world = self.trainer.world_size if self.trainer is not None else 1
        if items:
            items += [(-1, None)] * max(0, world - len(items))
        return DataLoader(IndexedProblems(items), batch_size=self.batch_size, shuffle=False, collate_fn=_as_list)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # batches are lists of Problem records (frozen dataclasses Lightning cannot move);
        # the modules build tensors on their device themselves
        return batch
