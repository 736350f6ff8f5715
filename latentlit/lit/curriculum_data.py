"""LightningDataModule for backbone training: problems in, tokenizer owned here."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from latentlit.data.sources import ProblemSource
from latentlit.data.tokenizer import build_bpe_tokenizer, build_word_tokenizer, problem_corpus
from latentlit.lit.splits_data import SplitsDataModule, as_list


class CurriculumDataModule(SplitsDataModule):
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
        super().__init__(train, val, batch_size, val_batch_size, seed)
        if tokenizer_kind not in ("word", "bpe"):
            raise ValueError(f"tokenizer_kind={tokenizer_kind!r}; expected 'word' or 'bpe'")
        self.tokenizer_path, self.tokenizer_kind, self.bpe_vocab_size = tokenizer, tokenizer_kind, bpe_vocab_size
        self.tokenizer = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
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
        return DataLoader(self.train_problems, batch_size=self.batch_size, shuffle=True, collate_fn=as_list, drop_last=True)
