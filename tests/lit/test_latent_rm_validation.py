"""LatentRM validation metrics are exact under DDP (issue 10, item 6): recall@1 and the loss
count every validation group once, so 1 and 2 processes give the same values.

Lightning's DistributedSampler pads 3 validation groups to 4 on 2 processes by repeating the
first. The groups are built so that the repeat would show: the first group's N candidates are
all correct and the other two's all wrong, so recall@1 is 1/3 whatever the RM scores (0.5 with
the repeat counted).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from latentlit.cli.lightning_cli import LatentLitCLI
from latentlit.evaluation.metrics import DistinctMean, distinct_mean
from latentlit.testing.ddp import run_cli_ddp
from latentlit.testing.groups import random_group, split_ids, write_groups
from latentlit.testing.tiny import write_tiny_backbone


def test_distinct_mean_counts_each_item_once():
    index = torch.tensor([0, 2, 1, 0])  # rank 0 got items 0 and 2, rank 1 got 1 and the padded repeat of 0
    hit = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert float(hit.mean()) == 0.5  # the padded mean
    assert float(distinct_mean(index, hit)) == pytest.approx(1 / 3)
    m = DistinctMean()
    m.update(index[:2], hit[:2])
    m.update(index[2:], hit[2:])
    assert float(m.compute()) == pytest.approx(1 / 3)
    m.reset()
    m.update(torch.tensor([5, 7]), torch.tensor([True, True]))
    assert float(m.compute()) == 1.0
    with pytest.raises(ValueError, match="2 indices but 3 values"):
        m.update(torch.tensor([1, 2]), torch.tensor([1.0, 2.0, 3.0]))


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    backbone = write_tiny_backbone(tmp_path / "backbone", dropout=0.0)
    train, val = split_ids(4, 3)
    groups = [random_group(q, 32) for q in train]
    groups += [random_group(q, 32, final_correct=[i == 0] * 3) for i, q in enumerate(val)]
    return backbone, write_groups(tmp_path / "groups", groups)


def _config(tmp_path: Path, name: str, backbone: Path, groups: Path, batch_size: int) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "num_sanity_val_steps": 0,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / name),
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / name), "name": "csv", "version": 0}}},
        "model": {"class_path": "latentlit.lit.LatentRMModule",
                  "init_args": {"backbone": str(backbone), "head_dropout": 0.0, "seed": 0,
                                "export_dir": str(tmp_path / name / "rm")}},
        # 4 training groups: one optimiser step per epoch (one batch of 4, or 2 per process), then validation
        "data": {"class_path": "latentlit.lit.LatentRMDataModule",
                 "init_args": {"groups_dir": str(groups), "val_fraction": 0.5, "batch_size": batch_size}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _logged(tmp_path: Path, name: str) -> dict[str, float]:
    rows = list(csv.DictReader((tmp_path / name / "csv" / "version_0" / "metrics.csv").open()))
    val = [r for r in rows if r.get("val/recall@1")]
    assert len(val) == 1
    return {"recall": float(val[0]["val/recall@1"]), "loss": float(val[0]["val/loss"])}


def test_one_process_recall_counts_three_groups(tmp_path):
    backbone, groups = _setup(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LatentLitCLI(subclass_mode_model=True, subclass_mode_data=True, auto_configure_optimizers=False,
                           args=["fit", "--config", str(_config(tmp_path, "one", backbone, groups, batch_size=4))])
    assert len(cli.datamodule.val_groups) == 3
    logged = _logged(tmp_path, "one")
    assert logged["recall"] == pytest.approx(1 / 3, abs=1e-7)
    assert cli.model._best[0] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_two_processes_give_the_one_process_values(tmp_path):
    backbone, groups = _setup(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LatentLitCLI(subclass_mode_model=True, subclass_mode_data=True, auto_configure_optimizers=False,
                     args=["fit", "--config", str(_config(tmp_path, "one", backbone, groups, batch_size=4))])
    one = _logged(tmp_path, "one")
    proc = run_cli_ddp("fit", _config(tmp_path, "two", backbone, groups, batch_size=2), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    two = _logged(tmp_path, "two")
    assert two["recall"] == pytest.approx(1 / 3, abs=1e-7)  # not 0.5: the padded repeat counts once
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    # the exported "best" RM is chosen on the exact value
    assert "best validation recall@1 0.333" in proc.stdout
