"""``--ckpt_path`` (issue 10, item 5): the checkpoint restores weights, optimiser and step; every
option comes from the config and command line, with a warning naming those that differ; the
best LatentRM so far travels in the checkpoint, so a resumed run exports it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from latentlit.cli.lightning_cli import LatentLitCLI
from latentlit.lit.resume import option_differences, override_optimizer_options
from latentlit.testing.groups import random_group, split_ids, write_groups
from latentlit.testing.tiny import write_tiny_backbone


def test_option_differences():
    stored = {"lr": 1e-3, "loss": "contrastive", "export_dir": "/a", "arch": {"n_layer": 1}, "seed": 0,
              "_class_path": "latentlit.lit.LatentRMModule", "_instantiator": "x"}
    config = {"class_path": "latentlit.lit.LatentRMModule",
              "init_args": {"lr": 5e-4, "loss": "contrastive", "export_dir": Path("/b"), "arch": {"n_layer": 1}, "seed": 0,
                            "sampler": {"class_path": "x"}}}
    assert option_differences(stored, config) == {"lr": (1e-3, 5e-4), "export_dir": ("/a", Path("/b"))}
    assert option_differences({**stored, "export_dir": "/b", "lr": 5e-4}, config) == {}  # a path equals its string
    assert option_differences({"_class_path": "A"}, {"class_path": "B", "init_args": {}}) == {"class_path": ("A", "B")}
    assert option_differences({"old_option": 3}, {"lr": 1}) == {"old_option": (3, None)}


def test_override_optimizer_options():
    ckpt = {"optimizer_states": [{"param_groups": [{"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999)},
                                                   {"lr": 1e-3, "weight_decay": 0.0}]}]}
    assert override_optimizer_options(ckpt, lr=5e-4, weight_decay=0.0) == ["lr: 0.001 -> 0.0005"]
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [5e-4, 5e-4]
    assert override_optimizer_options({}, lr=1.0) == []


def _fit(tmp_path: Path, name: str, backbone: Path, groups: Path, *, export: Path, lr: float, loss: str,
         max_steps: int, ckpt_path: Path | None = None) -> LatentLitCLI:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "max_steps": max_steps, "num_sanity_val_steps": 0,
                    "default_root_dir": str(tmp_path / f"{name}_root"),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True, "save_top_k": 0}}]},
        "model": {"class_path": "latentlit.lit.LatentRMModule",
                  "init_args": {"backbone": str(backbone), "lr": lr, "loss": loss, "export_dir": str(export), "seed": 0}},
        "data": {"class_path": "latentlit.lit.LatentRMDataModule",
                 "init_args": {"groups_dir": str(groups), "val_fraction": 0.5, "batch_size": 2}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["fit", "--config", str(path)] + (["--ckpt_path", str(ckpt_path)] if ckpt_path else [])
    return LatentLitCLI(subclass_mode_model=True, subclass_mode_data=True, args=args, auto_configure_optimizers=False,
                        save_config_kwargs={"overwrite": True})


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


def test_resumed_fit_takes_options_from_the_command_line_and_exports_the_stored_best(tmp_path):
    backbone = write_tiny_backbone(tmp_path / "backbone")
    train, val = split_ids(4, 2)
    groups = write_groups(tmp_path / "groups", [random_group(q, 32) for q in train + val])
    first = tmp_path / "rm_first"
    # 2 batches of 2 groups per epoch: validation (and the last checkpoint) after steps 2 and 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = _fit(tmp_path, "first", backbone, groups, export=first, lr=1e-3, loss="contrastive", max_steps=2)
    ckpt_path = tmp_path / "ckpt" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 2
    # the best RM so far is in the checkpoint: the weights of step 2 (its only validation)
    best_recall, best = ckpt["latentlit"]["best_recall"], ckpt["latentlit"]["best_rm"]
    assert best_recall == run.model._best[0]
    assert all(torch.equal(best[k], v.cpu()) for k, v in run.model.rm.state_dict().items())
    first_export = {p.name: p.read_bytes() for p in first.iterdir()}
    # an unbeatable stored best (recall 1.0; a later one must be higher to replace it) fixes the
    # outcome: the resumed run must export these step-2 weights, not its own last or best ones
    ckpt["latentlit"]["best_recall"] = 1.0
    torch.save(ckpt, ckpt_path)

    second = tmp_path / "rm_second"
    with pytest.warns(UserWarning, match="differ from the checkpoint's") as caught:
        resumed = _fit(tmp_path, "second", backbone, groups, export=second, lr=5e-4, loss="bce", max_steps=4,
                       ckpt_path=ckpt_path)
    message = next(str(w.message) for w in caught if str(w.message).startswith("--ckpt_path"))
    assert "loss: checkpoint 'contrastive', now 'bce'" in message
    assert "lr: checkpoint 0.001, now 0.0005" in message
    assert f"export_dir: checkpoint '{first}', now '{second}'" in message
    assert "backbone" not in message and "seed" not in message
    # options from the command line, state from the checkpoint
    assert resumed.trainer.global_step == 4
    assert resumed.model.hparams.loss == "bce" and resumed.model.hparams.export_dir == str(second)
    assert [g["lr"] for g in resumed.trainer.optimizers[0].param_groups] == [5e-4]
    assert resumed.trainer.optimizers[0].state  # AdamW moments restored, not fresh
    # the old export is untouched; the new one holds the stored best, not the last weights
    assert {p.name: p.read_bytes() for p in first.iterdir()} == first_export
    exported = _tensors(second)
    assert exported.keys() == best.keys()
    for k, v in exported.items():
        assert torch.equal(v, best[k]), k
    # it trained on: the weights of step 4 (the checkpoint it wrote) are not the exported ones
    last = torch.load(ckpt_path, weights_only=True)
    assert last["global_step"] == 4 and last["latentlit"]["best_recall"] == 1.0
    assert any(not torch.equal(last["state_dict"]["rm." + k], v) for k, v in best.items())
    # validate (like test and predict) follows the same rule: checkpoint weights, config options
    with pytest.warns(UserWarning, match=r"score: checkpoint 'sum', now 'last'"):
        validated = LatentLitCLI(subclass_mode_model=True, subclass_mode_data=True, auto_configure_optimizers=False,
                                 save_config_kwargs={"overwrite": True}, args=["validate", "--config", str(tmp_path / "second.yaml"), "--ckpt_path", str(ckpt_path),
                                       "--model.init_args.score", "last"])
    assert validated.model.hparams.score == "last" and validated.model.hparams.loss == "bce"
    for k, v in validated.model.rm.state_dict().items():
        assert torch.equal(v, last["state_dict"]["rm." + k]), k
