"""Every LatentRM training objective (``LatentRMModule(loss=...)``) trains and validates a step."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from latentlit.lit import LatentRMModule
from latentlit.lit.latent_rm_data import collate_groups
from latentlit.lit.latent_rm_module import LOSSES
from latentlit.testing.groups import random_group


def test_unknown_loss_lists_every_objective(tiny_backbone_dir):
    with pytest.raises(ValueError, match=r"loss='nope'; expected one of \('contrastive', 'bce', 'pairwise', "
                                         r"'listwise', 'group'\)"):
        LatentRMModule(backbone=str(tiny_backbone_dir), loss="nope")


@pytest.mark.parametrize(("loss", "read_answer"), [(loss, False) for loss in LOSSES] + [("contrastive", True)])
def test_each_loss_trains_and_validates_one_step(loss, read_answer, tiny_backbone_dir, tmp_path):
    # groups of 2 and 3 candidates: padding candidates in every batch
    groups = [random_group(f"g{i}", 32, n=2 + i % 2, final_correct=[True, False, True][:2 + i % 2]) for i in range(3)]
    model = LatentRMModule(backbone=str(tiny_backbone_dir), loss=loss, head_dropout=0.0, seed=0,
                           export_dir=str(tmp_path / "rm"), read_answer=read_answer)
    before = {k: v.clone() for k, v in model.rm.state_dict().items()}
    loader = DataLoader(groups, batch_size=3, collate_fn=collate_groups)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1,
                        default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert model._best is not None  # validation ran (its per-group losses included)
    assert any(not torch.equal(before[k], v) for k, v in model.rm.state_dict().items())


def test_group_loss_without_answers_asks_for_relabelling(tiny_backbone_dir):
    model = LatentRMModule(backbone=str(tiny_backbone_dir), loss="group", head_dropout=0.0)
    batch = collate_groups([random_group("g0", 32)])
    batch.pop("answer_groups")
    with pytest.raises(ValueError, match="hold no answers.*relabel"):
        model._loss(model._scores(batch), batch)


def test_answer_reading_rm_without_answers_asks_for_relabelling(tiny_backbone_dir):
    model = LatentRMModule(backbone=str(tiny_backbone_dir), read_answer=True, head_dropout=0.0)
    batch = collate_groups([random_group("g0", 32)])
    batch.pop("answer_texts")
    with pytest.raises(ValueError, match="read_answer=True needs each trajectory's answer text.*relabel"):
        model._scores(batch)


def test_answer_step_is_labelled_with_the_trajectory_outcome(tiny_backbone_dir):
    model = LatentRMModule(backbone=str(tiny_backbone_dir), read_answer=True, head_dropout=0.0)
    groups = [random_group("g0", 32, n=3, final_correct=[True, False, False]), random_group("g1", 32, n=2, final_correct=[False, True])]
    batch = collate_groups(groups)
    assert batch["answer_groups"].tolist() == [[0, 1, 2], [0, 1, -1]]
    assert batch["answer_texts"][1] == [groups[1].texts[0], groups[1].texts[1], ""]
    scores, targets = model._scores(batch), model._targets(batch)
    assert scores.shape == (2, 3, 4) and targets["labels"].shape == (2, 3, 4)
    assert targets["labels"][..., -1].tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert targets["latent_mask"][..., -1].tolist() == [[True, True, True], [True, True, False]]
    torch.testing.assert_close(targets["labels"][..., :3], batch["labels"])


def test_outcome_labels_are_the_ablation_without_rollouts(tmp_path):
    from latentlit.lit.latent_rm_data import LatentRMDataModule
    from latentlit.testing.groups import write_groups

    groups = [random_group(f"g{i}", 8, n=3, t=2) for i in range(6)]
    write_groups(tmp_path / "groups", groups)
    rollouts = LatentRMDataModule(str(tmp_path / "groups"), val_fraction=0.0)
    outcome = LatentRMDataModule(str(tmp_path / "groups"), val_fraction=0.0, labels="outcome")
    rollouts.setup(), outcome.setup()
    for r, o, g in zip(rollouts.train_groups, outcome.train_groups, groups):
        torch.testing.assert_close(r.labels, g.labels)  # the rollout fractions, as labelled
        assert o.labels.tolist() == [[float(c)] * 2 for c in g.final_correct.tolist()]
        torch.testing.assert_close(o.latents, r.latents)
    with pytest.raises(ValueError, match="labels='coin'; expected one of \\('rollouts', 'outcome'\\)"):
        LatentRMDataModule(str(tmp_path / "groups"), labels="coin")
