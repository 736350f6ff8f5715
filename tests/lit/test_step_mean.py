"""One optimiser step's gradient does not depend on how its batch is cut (issue 10, item 5).

Through a Lightning Trainer: the same problems as one batch and as accumulated micro-batches
give the gradient of the mean loss over the whole step (per target token for the backbone, per
group for the LatentRM), equal to a direct computation outside Lightning. The old rule (each
micro-batch divided by its own count, then averaged) is computed too, to show that the cut
does change the gradient there, so the comparison can fail.
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import yaml

from latentlit.data.sources import SyntheticProblems
from latentlit.lit import CurriculumDataModule, LatentBackboneModule, LatentRMDataModule, LatentRMModule
from latentlit.lit.backbone_module import build_gpt2_backbone
from latentlit.lit.latent_rm_data import collate_groups
from latentlit.lit.step_mean import gradient_scale
from latentlit.scoring.rollouts import LabelledGroup
from latentlit.testing.ddp import StepGradient, run_cli_ddp
from latentlit.testing.tiny import write_tiny_backbone

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
ARCH = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, **NO_DROPOUT}


def _fit_one_step(model, dm, accumulate: int, root) -> StepGradient:
    probe = StepGradient()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1, callbacks=[probe], default_root_dir=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1 and probe.grads
    return probe


def _relative(a: dict, b: dict) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in a)
    return (num / sum(float(b[k].pow(2).sum()) for k in a)) ** 0.5


def _grads(module: torch.nn.Module, loss: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss.backward()
    return {prefix + n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def test_gradient_scale():
    assert gradient_scale(1, 1, 64) == 1 / 64
    assert gradient_scale(2, 1, 64) == 2 / 64  # Lightning divided each micro-batch by 2
    assert gradient_scale(2, 4, 64) == 8 / 64  # ... and DDP averaged over 4 processes
    assert gradient_scale(3, 2, 0) == 0.0
    with pytest.raises(ValueError, match="accumulate_grad_batches=0"):
        gradient_scale(0, 1, 5)


# ---------------------------------------------------------------------- backbone: unit = token
def _curriculum(batch_size: int) -> CurriculumDataModule:
    sizes = {"n_train": 32, "n_val": 4, "n_test": 4}
    return CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes),
                                batch_size=batch_size)


def _backbone_module() -> LatentBackboneModule:
    # stage0_length=0: the one step trains at stage 1 (one latent thought), so the latent chain is in the graph
    return LatentBackboneModule(arch=ARCH, num_stages=1, thoughts_per_step=1, stage0_length=0, stage_length=10,
                                lr=1e-3, seed=0)


def _backbone_reference():
    """Outside Lightning, on the 32 training problems: the gradient and loss of the mean token
    loss over all of them, and the gradient of the old rule for halves of 16 (each half divided
    by its own tokens, halves averaged)."""
    from latentlit.data.curriculum import build_stage_batch

    dm = _curriculum(32)
    dm.setup("fit")
    problems = dm.train_problems
    ref = _backbone_module()
    ref.backbone = build_gpt2_backbone(dm.tokenizer, ARCH, 1, ref.hparams.prompt_template, ref.hparams.answer_format, seed=0)
    ref.backbone.train()
    cfg = ref.backbone.latent_config

    def loss_of(items):
        b = build_stage_batch(ref._tokens(items), 1, 1, cfg.end_latent_id, cfg.pad_id)
        return ref.backbone.forward_train(b["prompt_ids"], b["prompt_mask"], b["num_latents"], b["suffix_ids"],
                                          b["suffix_mask"])

    total, tokens = loss_of(problems)
    expected = _grads(ref.backbone, total / tokens, "backbone.")
    (s1, n1), (s2, n2) = loss_of(problems[:16]), loss_of(problems[16:])
    assert int(n1) != int(n2)  # the halves hold different token counts
    old = _grads(ref.backbone, (s1 / n1 + s2 / n2) / 2, "backbone.")
    return expected, float((total / tokens).detach()), old


def test_backbone_gradient_same_for_batch_32_and_accumulation_2x16(tmp_path):
    expected, expected_loss, old = _backbone_reference()
    assert _relative(old, expected) > 1e-3  # the old rule is measurably off: the comparison can fail

    whole = _fit_one_step(_backbone_module(), _curriculum(32), accumulate=1, root=tmp_path / "whole")
    halves = _fit_one_step(_backbone_module(), _curriculum(16), accumulate=2, root=tmp_path / "halves")
    for run in (whole, halves):
        assert run.grads.keys() == expected.keys()
        assert _relative(run.grads, expected) < 1e-5
        assert run.loss == pytest.approx(expected_loss, rel=1e-6)
    assert _relative(halves.grads, whole.grads) < 1e-5


@pytest.mark.slow
def test_backbone_gradient_same_on_two_ddp_processes(tmp_path):
    """2 processes x 16 problems (each its own token count) = one batch of 32."""
    expected, expected_loss, _ = _backbone_reference()
    dump = tmp_path / "grads.pt"
    sizes = {"n_train": 32, "n_val": 4, "n_test": 4}
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "limit_val_batches": 0, "num_sanity_val_steps": 0, "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "latentlit.testing.ddp.StepGradient", "init_args": {"path": str(dump)}}]},
        "model": {"class_path": "latentlit.lit.LatentBackboneModule",
                  "init_args": {"arch": ARCH, "num_stages": 1, "thoughts_per_step": 1, "stage0_length": 0,
                                "stage_length": 10, "lr": 1e-3, "seed": 0, "export_dir": str(tmp_path / "export")}},
        "data": {"class_path": "latentlit.lit.CurriculumDataModule", "init_args": {
            "train": {"class_path": "latentlit.data.sources.SyntheticProblems", "init_args": {"split": "train", **sizes}},
            "val": {"class_path": "latentlit.data.sources.SyntheticProblems", "init_args": {"split": "val", **sizes}},
            "batch_size": 16}},
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_cli_ddp("fit", path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    got = torch.load(dump, weights_only=True)
    assert got["grads"].keys() == expected.keys()
    assert _relative(got["grads"], expected) < 1e-5
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-6)


# ---------------------------------------------------------------------- LatentRM: unit = group
def _groups(count: int, width: int) -> list[LabelledGroup]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for i in range(count):
        n = 2 + i % 2  # groups of 2 and 3 candidates: padding inside a batch
        mask = torch.ones(n, 3, dtype=torch.bool)
        out.append(LabelledGroup(id=f"q{i}", question=f"Ann has {i + 2} stones . buys 1 . how many ?", gold=str(i + 3),
                                 latents=torch.randn(n, 3, width, generator=gen), latent_mask=mask,
                                 labels=torch.rand(n, 3, generator=gen), final_correct=torch.rand(n, generator=gen) > 0.5))
    return out


def _rm_data(groups, batch_size: int) -> LatentRMDataModule:
    dm = LatentRMDataModule("unused", val_fraction=0.0, batch_size=batch_size)
    dm.train_groups = list(groups)
    return dm


def test_latent_rm_gradient_same_for_batch_5_and_accumulation_3_plus_2(tmp_path):
    backbone = write_tiny_backbone(tmp_path / "backbone", dropout=0.0)
    groups = _groups(5, 32)

    def module():
        return LatentRMModule(backbone=str(backbone), head_dropout=0.0, seed=0)

    ref = module()
    ref.train()
    batch = collate_groups(groups)
    total = ref._loss(ref._scores(batch), batch)
    expected = _grads(ref, total / 5, "")
    # the old rule: a micro-batch of 3 groups and the epoch's last of 2, each divided by its own size
    b1, b2 = collate_groups(groups[:3]), collate_groups(groups[3:])
    old = _grads(ref, (ref._loss(ref._scores(b1), b1) / 3
                       + ref._loss(ref._scores(b2), b2) / 2) / 2, "")
    assert _relative(old, expected) > 1e-2

    whole = _fit_one_step(module(), _rm_data(groups, 5), accumulate=1, root=tmp_path / "whole")
    parts = _fit_one_step(module(), _rm_data(groups, 3), accumulate=2, root=tmp_path / "parts")  # shuffled: 3 groups, then the other 2
    for run in (whole, parts):
        assert run.grads.keys() == expected.keys()
        assert _relative(run.grads, expected) < 1e-5
        assert run.loss == pytest.approx(float(total) / 5, rel=1e-6)
