"""Not reached is not zero: with a dynamic latent stop, a step that fewer than two of a question's
trajectories reached has no diversity. Records store null there (and end at the last step any of
the question's trajectories reached, whatever the batch ran), and metrics.json averages each step
over the questions that have a value, with their count."""

import json
import math

import pytest

from latentlit.cli import main


def _run(backbone, out, batch_size):
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "3.0", "--model.n_samples", "3",
          "--model.max_new_tokens", "2", "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule",
          "--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.n_train", "10",
          "--data.problems.n_val", "2", "--data.problems.n_test", "12", "--data.batch_size", str(batch_size),
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text())["metrics"]


def test_diversity_of_a_dynamic_stop_run_leaves_unreached_steps_out(tiny_llama_backbone_dir, tmp_path):
    records, m = _run(tiny_llama_backbone_dir, tmp_path / "b4", 4)
    for r in records:
        steps = r["compute"]["latents"]  # each trajectory's own number of latent steps
        assert len(r["diversity"]) == max(steps)  # ends at the last step reached
        for t, value in enumerate(r["diversity"], start=1):
            reached = sum(s >= t for s in steps)
            assert (value is None) == (reached < 2), (r["id"], t, steps, r["diversity"])
    # the run is ragged: some question has a step reached by one trajectory only
    assert any(None in r["diversity"] for r in records)
    # metrics.json, recomputed by hand from the records
    width = max(len(r["diversity"]) for r in records)
    for t in range(width):
        values = [r["diversity"][t] for r in records if t < len(r["diversity"]) and r["diversity"][t] is not None]
        assert m["diversity_questions_per_step"][t] == len(values)
        if values:
            assert m["diversity_per_step"][t] == pytest.approx(sum(values) / len(values), abs=1e-4)  # 4 decimals
        else:
            assert m["diversity_per_step"][t] is None
    zeros_read_as_values = [sum((r["diversity"][t] or 0.0) if t < len(r["diversity"]) else 0.0 for r in records)
                            / sum(t < len(r["diversity"]) for r in records) for t in range(width)]
    assert any(not math.isclose(a or 0.0, b) for a, b in zip(m["diversity_per_step"], zeros_read_as_values))
    # the records do not depend on the batch: a question's steps are its own
    other, m1 = _run(tiny_llama_backbone_dir, tmp_path / "b1", 1)
    for a, b in zip(other, records):
        assert [x is None for x in a["diversity"]] == [x is None for x in b["diversity"]]
        assert [x for x in a["diversity"] if x is not None] == pytest.approx([x for x in b["diversity"] if x is not None],
                                                                             abs=2e-4)
    assert m1["diversity_questions_per_step"] == m["diversity_questions_per_step"]


@pytest.mark.parametrize("t, per_step", [(0, [None]), (1, "one value")])
def test_runs_of_zero_or_one_latent_step_report_their_diversity(tiny_backbone_dir, tmp_path, t, per_step):
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(tiny_backbone_dir),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "3", "--model.max_new_tokens", "2",
          "--model.num_latents", str(t), "--model.output_dir", str(tmp_path / "out"), "--data",
          "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
          "--data.problems.n_train", "10", "--data.problems.n_val", "2", "--data.problems.n_test", "3",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    records = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    if t == 0:  # no latent step: no diversity anywhere
        assert m["diversity_per_step"] == per_step and m["diversity_questions_per_step"] == [0]
        assert all(r["diversity"] == [] for r in records)
    else:
        assert m["diversity_questions_per_step"] == [3]
        assert m["diversity_per_step"][0] == pytest.approx(sum(r["diversity"][0] for r in records) / 3, abs=1e-4)
