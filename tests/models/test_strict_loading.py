"""Loading is strict for every checkpoint kind: latentlit's own format (the shipped quickstart
backbone), its latent head, and a LatentRM given as a backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentlit.cli import main
from latentlit.models.backbone import LATENT_HEAD_FILE
from latentlit.models.checkpoints import SHIPPED, SHIPPED_RM, detect_layout, load_backbone, save_backbone
from latentlit.testing.checkpoints import write_tiny_codi, write_tiny_released_latentrm

DROPPED = "transformer.h.1.mlp.c_fc.weight"


def _copy_quickstart(tmp_path: Path) -> Path:
    path = tmp_path / "backbone"
    shutil.copytree(SHIPPED["quickstart"], path)
    return path


def _edit_weights(path: Path, edit) -> None:
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def test_quickstart_copy_loads_and_a_missing_tensor_fails_naming_it(tmp_path):
    path = _copy_quickstart(tmp_path)
    assert detect_layout(path) == "latentlit"
    load_backbone(path)  # the intact copy loads
    _edit_weights(path, lambda t: t.pop(DROPPED))
    with pytest.raises(ValueError, match=rf"strict LM loading failed: missing tensor\(s\) \['{DROPPED}'\]") as err:
        load_backbone(path)
    assert str(path) in str(err.value)


def test_predict_refuses_a_backbone_missing_a_tensor(tmp_path):
    """The issue's example: `latentlit predict` exited 0 with the layer randomly initialised."""
    path = _copy_quickstart(tmp_path)
    _edit_weights(path, lambda t: t.pop(DROPPED))
    with pytest.raises(ValueError, match=DROPPED):
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(path), "--model.n_samples", "1",
              "--model.output_dir", str(tmp_path / "out"), "--data", "latentlit.lit.ProblemDataModule",
              "--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.limit", "2",
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_unexpected_and_mis_shaped_tensors_fail_naming_them(tmp_path):
    path = _copy_quickstart(tmp_path)
    _edit_weights(path, lambda t: t.update({"transformer.h.9.mlp.c_fc.weight": torch.zeros(2, 2)}))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['transformer.h.9.mlp.c_fc.weight'\]"):
        load_backbone(path)
    path = _copy_quickstart(tmp_path / "shape")
    _edit_weights(path, lambda t: t.update({DROPPED: t[DROPPED][:, :100].contiguous()}))
    with pytest.raises(ValueError, match=DROPPED):
        load_backbone(path)


def test_latentlit_latent_head_is_strict(tmp_path):
    saved = tmp_path / "saved"
    save_backbone(load_backbone(write_tiny_codi(tmp_path / "codi")), saved)  # f = projector, with weights
    load_backbone(saved)
    head = load_file(str(saved / LATENT_HEAD_FILE))
    save_file({k: v for k, v in head.items() if k != "proj.1.weight" and not k.endswith("1.weight")},
              str(saved / LATENT_HEAD_FILE))
    with pytest.raises(ValueError, match=r"latent head f='projector' tensors do not match: missing \['[\w.]*1.weight'\]"):
        load_backbone(saved)
    (saved / LATENT_HEAD_FILE).unlink()  # f would be left at its random initialisation
    with pytest.raises(ValueError, match=rf"no {LATENT_HEAD_FILE}.*missing \["):
        load_backbone(saved)


@pytest.mark.parametrize("kind", ["quickstart", "released"])
def test_a_latent_rm_given_as_backbone_says_so(tmp_path, kind):
    path = SHIPPED_RM["quickstart"] if kind == "quickstart" else write_tiny_released_latentrm(tmp_path / "rm")
    for call in (lambda: detect_layout(path), lambda: load_backbone(path), lambda: load_backbone(path, layout="latentlit")):
        with pytest.raises(ValueError, match=r"is a LatentRM \(.*\), not a latent reasoning backbone: pass it as the LatentRM"):
            call()
