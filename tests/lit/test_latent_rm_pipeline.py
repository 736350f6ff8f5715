"""LatentRM end to end through the CLI on a tiny random backbone: label -> fit -> predict."""

import json

import torch

from latentlit.cli import main
from latentlit.lit.latent_rm_data import LatentRMDataModule, collate_groups
from latentlit.models.latent_rm import LatentRM

SYNTH = ["--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.n_train", "16",
         "--data.problems.n_val", "2", "--data.problems.n_test", "4"]


def test_label_fit_predict(tiny_backbone_dir, tmp_path):
    groups = tmp_path / "groups"
    main(["predict", "--model", "latentlit.lit.RolloutLabeller", "--model.backbone", str(tiny_backbone_dir),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "3", "--model.n_rollouts", "2",
          "--model.drop_all_wrong", "false", "--model.max_new_tokens", "2", "--model.output_dir", str(groups),
          "--data", "latentlit.lit.ProblemDataModule", *SYNTH, "--data.problems.split", "train",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    summary = json.loads((groups / "summary.json").read_text())
    assert summary["questions_total"] == 16 and summary["groups_total"] == 16
    assert summary["this_run"]["saving_vs_reference"] > 1.0

    dm = LatentRMDataModule(str(groups), val_fraction=0.25, batch_size=4)
    dm.setup()
    assert len(dm.train_groups) + len(dm.val_groups) == 16 and dm.val_groups
    batch = collate_groups(dm.train_groups[:2])
    assert batch["latents"].shape[:3] == batch["labels"].shape == (2, 3, 3)

    rm_dir = tmp_path / "rm"
    main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(tiny_backbone_dir),
          "--model.export_dir", str(rm_dir), "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups),
          "--data.val_fraction", "0.25", "--data.batch_size", "4", "--trainer.max_steps", "6", "--trainer.logger", "false",
          "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path)])
    # groups of the 32-wide tiny backbone cannot train an RM of the 128-wide quickstart one
    import pytest

    with pytest.raises(ValueError, match=r"hold 32-dim latents but the RM built from backbone quickstart reads 128-dim"):
        main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", "quickstart",
              "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups), "--trainer.max_steps", "1",
              "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    rm = LatentRM.from_pretrained(rm_dir)
    scores = rm.score_groups(["Leo has 3 apples . buys 2 . how many ?"], torch.zeros(1, 2, 3, rm.transformer.config.n_embd))
    assert scores.shape == (1, 2, 3) and torch.isfinite(scores).all()

    for n, beam in (("1", []), ("4", ["--model.beam_width", "2"])):
        out = tmp_path / f"pred{n}"
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(tiny_backbone_dir),
              "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", n, "--model.latent_rm", str(rm_dir),
              *beam, "--model.max_new_tokens", "2", "--model.output_dir", str(out),
              "--data", "latentlit.lit.ProblemDataModule", *SYNTH, "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
        records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(records) == 4
        for r in records:
            assert len(r["rm_scores"]) == int(n)
            assert r["best_of_n"]["answer"] == r["answers"][r["best_of_n"]["index"]]
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert f"best_of_n@{n}" in metrics and f"weighted_vote@{n}" in metrics
        if beam:
            assert "beam_search@4" in metrics and all("beam_search" in r for r in records)
