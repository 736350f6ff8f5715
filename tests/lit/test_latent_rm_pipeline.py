"""LatentRM end to end through the CLI on tiny random backbones of both families: label -> fit ->
predict with best-of-N, weighted vote, beam search and DVTS. GPT-2 has a fixed T = 3; the Llama
one stops dynamically (CoLaR-style, 1..4 latents)."""

import json

import pytest
import torch

from latentlit.aggregation import majority_vote
from latentlit.cli import main
from latentlit.lit.latent_rm_data import LatentRMDataModule, collate_groups
from latentlit.models.latent_rm import LatentRM

SYNTH = ["--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.n_train", "16",
         "--data.problems.n_val", "2", "--data.problems.n_test", "4"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_label_fit_predict(family, tiny_backbone_dir, tiny_llama_backbone_dir, tmp_path):
    backbone = tiny_backbone_dir if family == "gpt2" else tiny_llama_backbone_dir
    groups = tmp_path / "groups"
    main(["predict", "--model", "latentlit.lit.RolloutLabeller", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "3", "--model.n_rollouts", "2",
          "--model.drop_all_wrong", "false", "--model.max_new_tokens", "2", "--model.output_dir", str(groups),
          "--data", "latentlit.lit.ProblemDataModule", *SYNTH, "--data.problems.split", "train", *QUIET,
          "--trainer.default_root_dir", str(tmp_path)])
    summary = json.loads((groups / "summary.json").read_text())
    assert summary["questions_total"] == 16 and summary["groups_total"] == 16
    assert summary["this_run"]["saving_vs_reference"] > 1.0

    dm = LatentRMDataModule(str(groups), val_fraction=0.25, batch_size=4)
    dm.setup()
    assert len(dm.train_groups) + len(dm.val_groups) == 16 and dm.val_groups
    lengths = torch.cat([g.latent_mask.sum(1) for g in dm.train_groups + dm.val_groups])
    if family == "gpt2":
        assert (lengths == 3).all()
        batch = collate_groups(dm.train_groups[:2])
        assert batch["latents"].shape[:3] == batch["labels"].shape == (2, 3, 3)
    else:  # ragged step groups: each trajectory has its own T_n <= 4
        assert lengths.max() <= 4 and len(set(lengths.tolist())) >= 3

    rm_dir = tmp_path / "rm"
    main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", str(backbone),
          "--model.export_dir", str(rm_dir), "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups),
          "--data.val_fraction", "0.25", "--data.batch_size", "4", "--trainer.max_steps", "6", *QUIET,
          "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path)])
    rm = LatentRM.from_pretrained(rm_dir)
    assert rm.transformer.config.model_type == family
    scores = rm.score_groups(["Leo has 3 apples . buys 2 . how many ?"], torch.zeros(1, 2, 3, rm.latent_size))
    assert scores.shape == (1, 2, 3) and torch.isfinite(scores).all()
    if family == "gpt2":
        # groups of the 32-wide tiny backbone cannot train an RM of the 128-wide quickstart one
        with pytest.raises(ValueError, match=r"hold 32-dim latents but the RM built from backbone quickstart reads 128-dim"):
            main(["fit", "--model", "latentlit.lit.LatentRMModule", "--model.backbone", "quickstart",
                  "--data", "latentlit.lit.LatentRMDataModule", "--data.groups_dir", str(groups), "--trainer.max_steps", "1",
                  *QUIET, "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path)])

    for n, search in (("1", []), ("4", ["--model.beam_width", "2", "--model.dvts_width", "2"])):
        out = tmp_path / f"pred{n}"
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
              "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", n, "--model.latent_rm", str(rm_dir),
              *search, "--model.max_new_tokens", "2", "--model.output_dir", str(out),
              "--data", "latentlit.lit.ProblemDataModule", *SYNTH, *QUIET, "--trainer.default_root_dir", str(tmp_path)])
        records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert len(records) == 4
        for r in records:
            assert len(r["rm_scores"]) == int(n)
            s = [x if x is not None else float("-inf") for x in r["rm_scores"]]
            assert r["best_of_n"]["index"] == max(range(int(n)), key=lambda i: (s[i], -i))
            assert r["best_of_n"]["answer"] == r["answers"][r["best_of_n"]["index"]]
            steps = r["latent_steps"]
            assert 0 < steps["samples"] <= int(n) * (3 if family == "gpt2" else 4)
            if family == "gpt2":
                assert steps["samples"] == int(n) * 3
        # aggregate metrics equal an independent recomputation from the records
        names = ["best_of_n", "weighted_vote"] + (["beam_search", "dvts", "dvts_vote"] if search else [])
        for name in names:
            assert metrics[f"{name}@{n}"] == pytest.approx(sum(r[name]["correct"] for r in records) / 4, abs=1e-6)
        for name, value in metrics["latent_steps_per_question"].items():
            assert value == pytest.approx(sum(r["latent_steps"][name] for r in records) / 4, abs=1e-4)
        if search:
            assert set(metrics["latent_steps_per_question"]) == {"samples", "beam_search", "dvts"}
            for r in records:
                assert len(r["dvts"]["subtree_answers"]) == 2  # N / W subtrees
                assert r["dvts_vote"]["answer"] == majority_vote(r["dvts"]["subtree_answers"]).answer
                assert r["dvts"]["score"] == max(x for x in r["dvts"]["subtree_scores"] if x is not None)
                if family == "gpt2":  # fixed T: every search feeds N trajectories' worth of latents
                    assert r["latent_steps"]["beam_search"] == r["latent_steps"]["dvts"] == 4 * 3
                # the record says the DVTS width as set (W = 2 of N = 4: 2 subtrees, each a beam of 1
                # proposing W candidates a step)
                c = r["compute"]["dvts"]
                assert (c["width"], c["beam_width"], c["candidates"], c["subtrees"]) == (2, 1, 2, 2)
                assert c["prefills"] == 1  # AGN: shared prefill
            if family == "gpt2":
                # DVTS compute by hand: one prefill of P; steps 2 and 3 feed the 4 candidates'
                # parents' latents, then the 2 subtree winners feed their last one; 2 answers;
                # the RM encodes its prompt once and one position per proposed latent (3 x 4)
                assert all(r["compute"]["dvts"]["fed"] == [4, 4, 2] for r in records)
                assert all(r["compute"]["dvts"]["proposed"] == [4, 4, 4] for r in records)
                hand_bb = sum(r["compute"]["prompt"] + 4 + 4 + 2 + sum(r["compute"]["dvts"]["answers"]) for r in records) / 4
                hand_rm = sum(r["compute"]["rm_prompt"] + 12 for r in records) / 4
                rows = json.loads((out / "metrics.json").read_text())["compute"]["rows"]
                row = next(x for x in rows if x["method"] == "dvts")
                assert (row["k"], row["trajectories"]) == (4, 4)
                assert row["backbone_tokens"] == pytest.approx(hand_bb, abs=0.01)
                assert row["rm_tokens"] == pytest.approx(hand_rm, abs=0.01)
                beam = next(x for x in rows if x["method"] == "beam_search")  # B x K = 2 x 2: the same budget
                assert beam["rm_tokens"] == row["rm_tokens"]
