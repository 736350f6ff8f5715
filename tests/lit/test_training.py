"""A seconds-long curriculum training run lowers the loss and exports a loadable backbone."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch

from latentlit.data.sources import SyntheticProblems
from latentlit.lit import CurriculumDataModule, LatentBackboneModule
from latentlit.models.backbone import LatentBackbone


class _LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []
        self.stages: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.stages.append(pl_module.current_stage())  # the stage this step trains at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny matrices: one thread is as fast, and far faster when the machine's cores are busy
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_short_training_lowers_loss(tmp_path):
    sizes = {"n_train": 256, "n_val": 32, "n_test": 32}
    dm = CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes), batch_size=32)
    export = tmp_path / "export"
    model = LatentBackboneModule(arch={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128},
                                 num_stages=2, thoughts_per_step=2, stage0_length=20, stage_length=5, lr=3e-3,
                                 export_dir=str(export), seed=0)
    recorder = _LossRecorder()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=40, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1,
                        callbacks=[recorder], default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)

    assert trainer.global_step == 40
    assert len(recorder.losses) == 40
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    # the curriculum ran: stage 0 for 20 steps, then stages 1 and 2
    assert recorder.stages[:20] == [0] * 20
    assert recorder.stages[20:25] == [1] * 5
    assert recorder.stages[-1] == 2
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert first > 3.5  # ~ln(vocab) at random init
    assert last < 0.75 * first, (first, last)

    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "training_summary.json"):
        assert (export / name).is_file(), name
    assert (export / "tokenizer.json").is_file() or (export / "vocab.json").is_file()
    assert json.loads((export / "config.json").read_text())["latentlit"]["num_latents"] == 4
    assert json.loads((export / "training_summary.json").read_text())["global_step"] == 40
    loaded = LatentBackbone.from_pretrained(export)
    assert loaded.latent_config.num_latents == 2 * 2
    out = loaded.generate(["Ann has 18 stones . buys 2 . how many ?"], max_new_tokens=3)
    assert out.latents.shape == (1, 4, 32)
    # the exported weights are the trained ones
    trained = model.backbone.lm.state_dict()
    for k, v in loaded.lm.state_dict().items():
        assert torch.equal(v, trained[k].cpu()), k
