"""LightningDataModule for backbone training: problems in, tokenizer owned here."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from latentlit.data.problem import Problem
from latentlit.data.sources import ProblemSource, SyntheticProblems
from latentlit.data.tokenizer import build_bpe_tokenizer, build_word_tokenizer, problem_corpus


def _as_list(batch: list[Problem]) -> list[Problem]:
    return batch


class CurriculumDataModule(L.LightningDataModule):
    """Training and validation problems for the COCONUT curriculum.

    Training batches are plain lists of :class:`Problem`; the module builds the stage-dependent
    tensors, since the stage is training state, not data. Validation batches are lists of
    (index in ``val_problems``, Problem) pairs.

    Args:
        train / val: problem sources.
        tokenizer: a tokenizer directory; ``None`` builds one from the training corpus
            (``tokenizer_kind``: ``word`` for the synthetic task, ``bpe`` for GSM8K), unless the
            model was initialised from a checkpoint, whose tokenizer is then used.
        batch_size / val_batch_size: problems per batch.

    Raises:
        ValueError: a batch size below 1, or an unknown ``tokenizer_kind``.
    """

    def __init__(self, train: ProblemSource | None = None, val: ProblemSource | None = None, tokenizer: str | None = None,
                 tokenizer_kind: str = "word", bpe_vocab_size: int = 4096, batch_size: int = 64,
                 val_batch_size: int = 250, seed: int = 0):
        super().__init__()
        self.train_source = train or SyntheticProblems("train")
        self.val_source = val or SyntheticProblems("val")
        for name, size in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{name}={size!r} must be >= 1 (problems per batch)")
        if tokenizer_kind not in ("word", "bpe"):
            raise ValueError(f"tokenizer_kind={tokenizer_kind!r}; expected 'word' or 'bpe'")
        self.tokenizer_path, self.tokenizer_kind, self.bpe_vocab_size = tokenizer, tokenizer_kind, bpe_vocab_size
        self.batch_size, self.val_batch_size, self.seed = batch_size, val_batch_size, seed
        self.tokenizer = None
        self.train_problems: list[Problem] = []
        self.val_problems: list[Problem] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.train_problems:
            self.train_problems = self.train_source.load()
            self.val_problems = self.val_source.load()
        if self.tokenizer is None:
            if self.tokenizer_path is not None:
                if not Path(self.tokenizer_path).exists():
                    raise FileNotFoundError(f"tokenizer directory not found: {self.tokenizer_path}")
                self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
            elif self.tokenizer_kind == "word":
                self.tokenizer = build_word_tokenizer(problem_corpus(self.train_problems))
            else:
                self.tokenizer = build_bpe_tokenizer(problem_corpus(self.train_problems), vocab_size=self.bpe_vocab_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_problems, batch_size=self.batch_size, shuffle=True, collate_fn=_as_list, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        # (index, problem) pairs: under DDP the sampler repeats items to even out the processes,
        # and the index lets the accuracy count each problem once
        return DataLoader(list(enumerate(self.val_problems)), batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=_as_list)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # batches are lists of Problem records (frozen dataclasses Lightning cannot move);
        # the modules build tensors on their device themselves
        return batch
