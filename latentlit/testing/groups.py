"""Synthetic rollout-labelled step groups for tests of LatentRM training (seeded, no backbone run)."""

from __future__ import annotations

from pathlib import Path

import torch

from latentlit.rng import question_key
from latentlit.scoring.rollouts import LabelledGroup
from latentlit.scoring.shards import GroupShardWriter


def split_ids(n_train: int, n_val: int, val_fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """Question ids that :class:`~latentlit.lit.LatentRMDataModule` (same ``val_fraction`` and
    ``seed``) puts ``n_train`` in training and ``n_val`` in validation."""
    train, val, i = [], [], 0
    while len(train) < n_train or len(val) < n_val:
        qid = f"g{i}"
        in_val = (question_key(seed, qid) & 0xFFFF) / 0x10000 < val_fraction
        bucket, want = (val, n_val) if in_val else (train, n_train)
        if len(bucket) < want:
            bucket.append(qid)
        i += 1
    return train, val


def random_group(qid: str, width: int, n: int = 3, t: int = 3, final_correct: list[bool] | None = None,
                 seed: int = 0) -> LabelledGroup:
    """A group of ``n`` trajectories of ``t`` random ``width``-dim latents with random soft labels;
    ``final_correct`` defaults to random answers' correctness. Right trajectories answer the gold,
    wrong ones each another number (texts ``### <answer>``)."""
    gen = torch.Generator().manual_seed(question_key(seed, qid) & 0x7FFFFFFF)
    correct = torch.tensor(final_correct) if final_correct is not None else torch.rand(n, generator=gen) > 0.5
    number = int(qid.strip("g") or 0) % 50 + 2
    answers = [str(number + 1) if ok else str(number + 2 + i) for i, ok in enumerate(correct.tolist())]
    return LabelledGroup(id=qid, question=f"Ann has {number} stones . buys 1 . how many ?", gold=str(number + 1),
                         latents=torch.randn(n, t, width, generator=gen), latent_mask=torch.ones(n, t, dtype=torch.bool),
                         labels=torch.rand(n, t, generator=gen), final_correct=correct,
                         texts=[f"### {a}" for a in answers], answers=answers)


def write_groups(directory: str | Path, groups: list[LabelledGroup]) -> Path:
    """Write ``groups`` (equal N and T) as one shard + index, as the rollout labeller does."""
    writer = GroupShardWriter(directory, rank=0, shard_size=max(len(groups), 1))
    for i, g in enumerate(groups):
        writer.add(i, g.id, g.question, g.gold, g)
    writer.flush()
    return Path(directory)
