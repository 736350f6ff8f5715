"""``LatentRMDataModule``: rollout-labelled step groups for LatentRM training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from latentlit.aggregation.at_k import answer_labels
from latentlit.rng import question_key
from latentlit.scoring.rollouts import LabelledGroup
from latentlit.scoring.shards import load_groups, read_index


def collate_groups(groups: list[LabelledGroup] | list[tuple[int, LabelledGroup]]) -> dict:
    """Stack whole groups into a batch, padding N and T.

    Args:
        groups: groups, or (index, group) pairs (then the batch also has ``index``).

    Returns:
        dict with ``questions`` (G,), ``ids`` (G,), ``latents`` (G, N, T, d), ``latent_mask``
        (G, N, T) bool (False = padding), ``labels`` (G, N, T), ``final_correct`` (G, N) bool,
        ``candidate_mask`` (G, N) bool; with pairs, ``index`` (G,) long. When every group holds its
        trajectories' answers (labelled by this version): ``answer_groups`` (G, N) long, the
        candidate's answer group within its question (numerically equal answers share one; a
        candidate without an answer is a group of its own; -1 for padding), and ``answer_texts``
        (G lists of N decoded answer texts, "" for padding).
    """
    index = None
    if groups and isinstance(groups[0], tuple):
        index = torch.tensor([i for i, _ in groups], dtype=torch.long)
        groups = [x for _, x in groups]
    g = len(groups)
    n = max(x.latents.shape[0] for x in groups)
    t = max(x.latents.shape[1] for x in groups)
    d = groups[0].latents.shape[-1]
    latents = torch.zeros(g, n, t, d)
    mask = torch.zeros(g, n, t, dtype=torch.bool)
    labels = torch.zeros(g, n, t)
    final = torch.zeros(g, n, dtype=torch.bool)
    cand = torch.zeros(g, n, dtype=torch.bool)
    for i, x in enumerate(groups):
        ni, ti = x.latents.shape[:2]
        latents[i, :ni, :ti] = x.latents
        mask[i, :ni, :ti] = x.latent_mask
        labels[i, :ni, :ti] = x.labels
        final[i, :ni] = x.final_correct
        cand[i, :ni] = True
    batch = {"questions": [x.question for x in groups], "ids": [x.id for x in groups], "latents": latents,
             "latent_mask": mask, "labels": labels, "final_correct": final, "candidate_mask": cand}
    if index is not None:
        batch["index"] = index
    if all(x.answers is not None for x in groups):
        batch["answer_groups"] = torch.full((g, n), -1, dtype=torch.long)
        for i, x in enumerate(groups):
            batch["answer_groups"][i, :len(x.answers)] = torch.from_numpy(own_groups(answer_labels(x.answers)))
        batch["answer_texts"] = [list(x.texts) + [""] * (n - len(x.texts)) for x in groups]
    return batch


def own_groups(labels: np.ndarray) -> np.ndarray:
    """Answer-group labels (-1: no answer) with each unanswered candidate given a group of its own."""
    out = labels.copy()
    missing = np.flatnonzero(out < 0)
    out[missing] = out.max(initial=-1) + 1 + np.arange(len(missing))
    return out


LABEL_SOURCES = ("rollouts", "outcome")


class LatentRMDataModule(L.LightningDataModule):
    """Step groups from a groups directory written by the rollout labeller
    (``latentlit predict --config configs/quickstart/label.yaml``).

    Args:
        groups_dir: the directory. val_fraction: share of questions held out for validation
            (chosen by a hash of the question id, so the split is stable). batch_size: groups.
        labels: ``rollouts`` (the paper's: y_t = fraction of the M rollouts from h_1..h_t that are
            right) | ``outcome`` (the paper's ablation "w/o stochastic rollouts": every step of a
            trajectory labelled with its own final correctness, no rollout read).

    Raises:
        FileNotFoundError: (at setup) the directory has no labelled groups; the message gives
            the labelling command.
    """

    def __init__(self, groups_dir: str = "outputs/latentrm_groups", val_fraction: float = 0.1, batch_size: int = 16,
                 seed: int = 0, labels: str = "rollouts"):
        super().__init__()
        if labels not in LABEL_SOURCES:
            raise ValueError(f"labels={labels!r}; expected one of {LABEL_SOURCES}")
        self.labels = labels
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1 (groups per batch)")
        self.groups_dir, self.val_fraction, self.batch_size, self.seed = groups_dir, val_fraction, batch_size, seed
        self.train_groups: list[LabelledGroup] = []
        self.val_groups: list[LabelledGroup] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_groups or self.val_groups:
            return
        label = (f"label first: latentlit predict --config configs/quickstart/label.yaml --model.init_args.output_dir "
                 f"{self.groups_dir}")
        if not Path(self.groups_dir).exists():
            raise FileNotFoundError(f"groups directory {self.groups_dir} does not exist; {label}")
        if not read_index(self.groups_dir):
            raise FileNotFoundError(f"no labelled groups (index.r*.jsonl) in {self.groups_dir}; {label}")
        for group in load_groups(self.groups_dir):
            if self.labels == "outcome":
                group.labels = group.final_correct.float()[:, None] * group.latent_mask.float()
            bucket = (question_key(self.seed, group.id) & 0xFFFF) / 0x10000
            (self.val_groups if bucket < self.val_fraction else self.train_groups).append(group)
        if not self.train_groups:
            raise ValueError(f"{self.groups_dir}: no training groups (label more questions, or lower val_fraction)")
        if self.val_fraction > 0 and not self.val_groups:
            # rank zero only, and attributed to this line (not to the Lightning hook that called setup)
            rank_zero_warn(f"{self.groups_dir}: {len(self.train_groups)} groups and none fell in the validation split "
                           f"(val_fraction={self.val_fraction}); recall@1 will not be measured")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_groups, batch_size=self.batch_size, shuffle=True, collate_fn=collate_groups)

    def val_dataloader(self) -> DataLoader:
        # (index, group) pairs: under DDP the sampler repeats groups to even out the processes,
        # and the index lets recall@1 and the loss count each group once
        return DataLoader(list(enumerate(self.val_groups)), batch_size=max(self.batch_size, 64), shuffle=False,
                          collate_fn=collate_groups)
