"""A seconds-long curriculum training run lowers the loss and exports a loadable backbone."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch

from latentlit.data.sources import SyntheticProblems
from latentlit.lit import CurriculumDataModule, LatentBackboneModule
from latentlit.models.checkpoints import SHIPPED, load_backbone


class _LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []
        self.stages: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.stages.append(pl_module.current_stage())  # the stage this step trains at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # the step's mean loss per target token (training_step returns the summed loss)
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


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
    loaded = load_backbone(export)
    assert loaded.latent_config.num_latents == 2 * 2
    out = loaded.generate(["Ann has 18 stones . buys 2 . how many ?"], max_new_tokens=3)
    assert out.latents.shape == (1, 4, 32)
    # the exported weights are the trained ones
    trained = model.backbone.lm.state_dict()
    for k, v in loaded.lm.state_dict().items():
        assert torch.equal(v, trained[k].cpu()), k


def test_training_resumes_from_a_checkpoint(tmp_path):
    """fit with ckpt_path restores weights and step, and continues the curriculum where it stopped."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    sizes = {"n_train": 128, "n_val": 16, "n_test": 16}

    def run(max_steps, ckpt_path=None, ckpt_dir=None):
        dm = CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes),
                                  batch_size=32)
        model = LatentBackboneModule(arch={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, "resid_pdrop": 0.0,
                                           "embd_pdrop": 0.0, "attn_pdrop": 0.0},
                                     num_stages=2, thoughts_per_step=1, stage0_length=6, stage_length=3, lr=3e-3,
                                     export_dir=str(tmp_path / f"export{max_steps}{'r' if ckpt_path else ''}"), seed=0)
        recorder = _LossRecorder()
        callbacks = [recorder] + ([ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=4)] if ckpt_dir else [])
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=bool(ckpt_dir), callbacks=callbacks,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            accelerator="cpu", devices=1, default_root_dir=tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, model, recorder

    run(8, ckpt_dir=tmp_path / "ckpt")  # "interrupted" after 8 steps (checkpoint at step 8)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 8
    trainer, resumed, recorder = run(12, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 12
    assert len(recorder.losses) == 4  # only the 4 missing steps ran
    assert recorder.stages == [1, 2, 2, 2]  # steps 8..11: stage 1 ends at step 9
    assert resumed.current_stage() == 2  # 6 steps of stage 0, 3 of stage 1, then stage 2
    saved = {k[len("backbone."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    now = resumed.backbone.state_dict()
    assert saved.keys() <= now.keys()
    # it trained on from the checkpoint: 4 more steps moved the weights, and not from scratch
    moved = [float((now[k] - v).abs().max()) for k, v in saved.items() if v.is_floating_point()]
    assert max(moved) > 0
    exported = load_backbone(tmp_path / "export12r")
    assert exported.latent_config.num_latents == 2


def test_validation_accuracy_counts_each_problem_once(tmp_path):
    """val/acc is the mean over the validation problems of the answer's correctness, recomputed
    here from the backbone's own greedy answers; three golds are made wrong so it is neither 0
    nor 1. (Batches are (index, problem) pairs: under DDP the padded repeat counts once, as
    tests/lit/test_latent_rm_validation.py checks on two processes.)"""
    from latentlit.data.answers import answers_match, extract_answer
    from latentlit.data.sources import ProblemFile

    problems = SyntheticProblems("val", n_train=16, n_val=7, n_test=4).load()
    rows = [{"id": p.id, "question": p.question, "answer": str(int(p.answer) + 1) if i % 2 else p.answer}
            for i, p in enumerate(problems)]
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = CurriculumDataModule(train=SyntheticProblems("train", n_train=16, n_val=7, n_test=4), val=ProblemFile(str(path)),
                              val_batch_size=3)
    # stage 1 at step 0 with 4 thoughts per step: the quickstart backbone's T = 4
    model = LatentBackboneModule(init_from="quickstart", num_stages=1, thoughts_per_step=4, stage0_length=0,
                                 val_max_new_tokens=8)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (result,) = trainer.validate(model, datamodule=dm)
    bb = load_backbone("quickstart")
    texts = bb.generate([r["question"] for r in rows], num_latents=4, max_new_tokens=8).answers_text
    correct = [answers_match(extract_answer(t, bb.latent_config.answer_format), r["answer"]) for t, r in zip(texts, rows)]
    assert 0 < sum(correct) < len(rows)
    assert result["val/acc"] == pytest.approx(sum(correct) / len(rows), abs=1e-7)
    assert model.history[-1]["val_acc"] == pytest.approx(sum(correct) / len(rows), abs=1e-7)


def test_llama_with_a_dynamic_stop_trains_and_exports(tmp_path):
    """arch model_type llama + dynamic_stop: the exported backbone is a LlamaForCausalLM whose latent
    phase ends when its LM head emits <|end-latent|>, after at most num_stages * c latents."""
    from transformers import LlamaForCausalLM

    from latentlit.lit.backbone_module import check_arch

    sizes = {"n_train": 256, "n_val": 16, "n_test": 16}
    dm = CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes), batch_size=32)
    export = tmp_path / "export"
    model = LatentBackboneModule(arch={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                       "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128},
                                 num_stages=3, thoughts_per_step=1, stage0_length=20, stage_length=10, lr=3e-3,
                                 export_dir=str(export), seed=0, dynamic_stop=True, val_max_new_tokens=4)
    recorder = _LossRecorder()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=50, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=50, check_val_every_n_epoch=None, accelerator="cpu", devices=1,
                        callbacks=[recorder], default_root_dir=tmp_path, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    history = json.loads((export / "training_summary.json").read_text())["validation"]
    assert {"mean_latents", "stop_exact"} <= set(history[-1]) and 0 <= history[-1]["mean_latents"] <= 3
    loaded = load_backbone(export)
    cfg = loaded.latent_config
    assert isinstance(loaded.lm, LlamaForCausalLM)
    assert (cfg.latent_stop_id, cfg.max_latents, cfg.num_latents) == (cfg.end_latent_id, 3, 3)
    out = loaded.generate(["Ann has 18 stones . buys 2 . how many ?"], max_new_tokens=3)
    assert out.latent_mask.shape[1] <= 3
    with pytest.raises(ValueError, match="'hidden_sise' is not a llama config field"):
        check_arch({"model_type": "llama", "hidden_sise": 32})
    with pytest.raises(ValueError, match="model_type='lama' is not a transformers model type"):
        check_arch({"model_type": "lama"})


def test_validating_an_untrained_backbone_warns_and_a_loaded_one_does_not(tmp_path):
    sizes = {"n_train": 16, "n_val": 8, "n_test": 8}
    # the shipped tokenizer reads every synthetic question (one built from 16 problems would not)
    dm = CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes), batch_size=8,
                              tokenizer=str(SHIPPED["quickstart"]))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1, default_root_dir=tmp_path)
    scratch = LatentBackboneModule(arch={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128},
                                   num_stages=1, thoughts_per_step=2, seed=0)
    with pytest.warns(UserWarning, match=r"no trained weights were loaded: the backbone is built from scratch"):
        trainer.validate(scratch, datamodule=dm, verbose=False)
    loaded = LatentBackboneModule(init_from="quickstart", num_stages=1, thoughts_per_step=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(loaded, datamodule=dm, verbose=False)
    assert not [w for w in caught if "no trained weights were loaded" in str(w.message)]
