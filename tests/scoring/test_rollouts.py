import json

import pytest
import torch

from latentlit.cli import main
from latentlit.data.synthetic import generate_problems
from latentlit.sampling import AGN, MCDropout
from latentlit.scoring.rollouts import label_problems, reference_forward_tokens
from latentlit.scoring.shards import load_groups, read_index
from latentlit.testing.tiny import tiny_backbone

PROBLEMS = generate_problems(4, seed=7)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(num_latents=3)


def test_labels_are_fractions_and_last_step_is_own_correctness(backbone):
    groups, stats = label_problems(backbone, AGN(sigma=1.0), PROBLEMS[:2], n_samples=3, n_rollouts=4,
                                   drop_all_correct=False, drop_all_wrong=False)
    for g in groups:
        assert g.latents.shape == (3, 3, backbone.hidden_size)
        assert g.labels.shape == (3, 3)
        assert ((g.labels * 4).round() == g.labels * 4).all()  # multiples of 1/M
        assert torch.equal(g.labels[:, -1], g.final_correct.float())
    assert stats.kept == 2 and stats.questions == 2


def test_filters_drop_all_wrong_questions(backbone):
    groups, stats = label_problems(backbone, AGN(sigma=1.0), PROBLEMS[:2], n_samples=3, n_rollouts=2)
    # a random backbone answers nothing right: every question is all-wrong and dropped
    assert groups == [None, None]
    assert stats.all_wrong == 2 and stats.kept == 0


@pytest.mark.parametrize("sampler", [MCDropout(p=0.3), AGN(sigma=1.0)])
def test_labels_do_not_depend_on_batching(backbone, sampler):
    together, _ = label_problems(backbone, sampler, PROBLEMS, n_samples=2, n_rollouts=3, drop_all_correct=False,
                                 drop_all_wrong=False, seed=5)
    for i, p in enumerate(PROBLEMS):
        alone, _ = label_problems(backbone, sampler, [p], n_samples=2, n_rollouts=3, drop_all_correct=False,
                                  drop_all_wrong=False, seed=5)
        assert torch.equal(alone[0].labels, together[i].labels)
        assert torch.allclose(alone[0].latents, together[i].latents, atol=1e-5)


def test_rollout_cost_beats_reprefill_baseline(backbone):
    _, stats = label_problems(backbone, AGN(sigma=1.0), PROBLEMS, n_samples=4, n_rollouts=8, drop_all_correct=False,
                              drop_all_wrong=False)
    assert stats.reference_forward_tokens >= 3 * stats.forward_tokens
    assert reference_forward_tokens(10, 2, 3, 4, 5) == 2 * 3 * 4 * (10 + 3 + 5)


def _label(backbone_dir, out, batch_size, *extra):
    main(["predict", "--model", "latentlit.lit.RolloutLabeller", "--model.backbone", str(backbone_dir),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "2", "--model.n_rollouts", "2",
          "--model.drop_all_wrong", "false", "--model.max_new_tokens", "3", "--model.output_dir", str(out),
          "--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
          "--data.problems.split", "test", "--data.problems.n_train", "50", "--data.problems.n_val", "10",
          "--data.problems.n_test", "6", "--data.batch_size", str(batch_size), "--trainer.logger", "false",
          "--trainer.default_root_dir", str(out.parent),
          "--trainer.enable_progress_bar", "false", *extra])


def test_labelling_job_resumes_after_interruption(tiny_backbone_dir, tmp_path):
    _label(tiny_backbone_dir, tmp_path / "full", batch_size=2)
    full = load_groups(tmp_path / "full")
    assert len(full) == 6 and json.loads((tmp_path / "full" / "summary.json").read_text())["questions_total"] == 6
    # interrupted run: only the first batch was indexed
    _label(tiny_backbone_dir, tmp_path / "part", batch_size=2)
    index = tmp_path / "part" / "index.r0.jsonl"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:2]))
    _label(tiny_backbone_dir, tmp_path / "part", batch_size=3)
    resumed = load_groups(tmp_path / "part")
    assert [g.id for g in resumed] == [g.id for g in full]
    assert len(read_index(tmp_path / "part")) == 6
    for a, b in zip(full, resumed):
        assert torch.equal(a.labels, b.labels)
        assert torch.allclose(a.latents, b.latents, atol=1e-5)
    # a finished directory re-run keeps its summary; other settings are refused, not mixed in
    summary = (tmp_path / "part" / "summary.json").read_text()
    _label(tiny_backbone_dir, tmp_path / "part", batch_size=3)
    assert (tmp_path / "part" / "summary.json").read_text() == summary
    assert json.loads((tmp_path / "part" / "run.json").read_text())["sampler"]["name"] == "AGN"
    with pytest.raises(ValueError, match=r"other settings.*n_rollouts"):
        _label(tiny_backbone_dir, tmp_path / "part", 3, "--model.n_rollouts", "4")


@pytest.mark.slow
def test_labelling_under_ddp_equals_one_process(tiny_backbone_dir, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    _label(tiny_backbone_dir, tmp_path / "one", batch_size=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(var, None)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "latentlit.cli", "predict", "--model", "latentlit.lit.RolloutLabeller",
           "--model.backbone", str(tiny_backbone_dir), "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "2",
           "--model.n_rollouts", "2", "--model.drop_all_wrong", "false", "--model.max_new_tokens", "3",
           "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule", "--data.problems",
           "latentlit.data.sources.SyntheticProblems", "--data.problems.split", "test", "--data.problems.n_train", "50",
           "--data.problems.n_val", "10", "--data.problems.n_test", "6", "--data.batch_size", "2", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list(out.glob("index.r*.jsonl"))) == 2  # both ranks wrote
    one, ddp = load_groups(tmp_path / "one"), load_groups(out)
    assert [g.id for g in ddp] == [g.id for g in one]
    for a, b in zip(one, ddp):
        assert torch.equal(a.labels, b.labels)
        assert torch.allclose(a.latents, b.latents, atol=1e-5)
    assert json.loads((out / "summary.json").read_text())["questions_total"] == 6


# ---------------------------------------------------------------- dynamic latent length (Llama, CoLaR-style stop)
from latentlit.data.problem import Problem  # noqa: E402
from latentlit.sampling.rng import derive_keys, trajectory_keys  # noqa: E402
from latentlit.scoring.rollouts import _ROLLOUT_STREAM  # noqa: E402
from latentlit.testing.tiny import tiny_llama_backbone  # noqa: E402


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_backbone()


def _gold_from_samples(backbone, sampler, problems, n):
    """Golds that some but not all samples reach ("last_number" reads the random model's outputs)."""
    from latentlit.data.answers import extract_answer

    out = backbone.generate([p.question for p in problems], n_samples=n, sampler=sampler,
                            keys=trajectory_keys(0, [p.id for p in problems], n), max_new_tokens=3)
    golds = [extract_answer(out.answers_text[i * n], "last_number") or "0" for i in range(len(problems))]
    return [Problem(p.id, p.question, p.steps, g) for p, g in zip(problems, golds)], out


def test_dynamic_length_labels_exist_for_each_trajectorys_own_steps(llama):
    sampler = AGN(sigma=1.0)
    problems, out = _gold_from_samples(llama, sampler, PROBLEMS, 4)
    groups, stats = label_problems(llama, sampler, problems, n_samples=4, n_rollouts=4, max_new_tokens=3,
                                   drop_all_correct=False, drop_all_wrong=False, answer_format="last_number")
    lengths = out.latent_mask.sum(1).reshape(len(problems), 4)
    assert len(set(lengths.flatten().tolist())) >= 3  # ragged: the stop fires at different steps
    for g, own in zip(groups, lengths):
        t = int(own.max())
        assert g.latents.shape == (4, t, llama.hidden_size) and g.labels.shape == g.latent_mask.shape == (4, t)
        assert torch.equal(g.latent_mask.sum(1), own)  # T_n <= max_latents, the same as plain sampling
        assert torch.equal(g.latent_mask, torch.arange(t)[None] < own[:, None])
        assert (g.labels[~g.latent_mask] == 0).all() and (g.latents[~g.latent_mask] == 0).all()
        assert ((g.labels * 4).round() == g.labels * 4).all()
        for n in range(4):  # the last step's label is the trajectory's own correctness
            assert g.labels[n, own[n] - 1] == float(g.final_correct[n])
    assert 0 < stats.summary()["label_mean"] < 1
    assert len(stats.labels) == int(lengths.sum())  # statistics over real steps only


def test_dynamic_rollouts_continue_with_the_backbones_own_stopping(llama):
    """Rebuild one (trajectory, step) label through the public seams: prefix h_1..h_t, then M
    continuations that stop when the LM head says so, answers decoded greedily."""
    from latentlit.data.answers import answers_match, extract_answer

    sampler, m = AGN(sigma=1.0), 6
    problems, out = _gold_from_samples(llama, sampler, PROBLEMS[:1], 3)
    groups, _ = label_problems(llama, sampler, problems, n_samples=3, n_rollouts=m, max_new_tokens=3,
                               drop_all_correct=False, drop_all_wrong=False, answer_format="last_number")
    keys = trajectory_keys(0, [problems[0].id], 3)
    row = int(out.latent_mask.sum(1).argmax())  # the longest trajectory has rollouts at t = 1
    state = llama.prefill_samples([problems[0].question], 3, sampler, keys)
    state, _ = llama.latent_step(state, 1, sampler=sampler, keys=keys)
    prefix = state.select(torch.tensor([row])).repeat_interleave(m)
    rkeys = derive_keys(derive_keys(keys[[row]].repeat_interleave(m), _ROLLOUT_STREAM, 1) ^ torch.arange(m), _ROLLOUT_STREAM)
    prefix, _, rmask = llama.run_latents(prefix, llama.latent_config.max_latents, sampler=sampler, keys=rkeys, start_step=2)
    answers, _ = llama.decode_answer(prefix, max_new_tokens=3)
    right = [answers_match(extract_answer(t, "last_number"), problems[0].answer) for t in llama.decode(answers)]
    assert groups[0].labels[row, 0].item() == pytest.approx(sum(right) / m)
    assert len(set(rmask.sum(1).tolist())) > 1  # the rollouts themselves stop at different steps


def test_dynamic_labels_do_not_depend_on_batching(llama):
    sampler = AGN(sigma=1.0)
    together, _ = label_problems(llama, sampler, PROBLEMS, n_samples=3, n_rollouts=2, drop_all_correct=False,
                                 drop_all_wrong=False, seed=2)
    for i, p in enumerate(PROBLEMS):
        alone, _ = label_problems(llama, sampler, [p], n_samples=3, n_rollouts=2, drop_all_correct=False,
                                  drop_all_wrong=False, seed=2)
        assert torch.equal(alone[0].labels, together[i].labels) and torch.equal(alone[0].latent_mask, together[i].latent_mask)
        assert torch.allclose(alone[0].latents, together[i].latents, atol=1e-5)


def test_ragged_groups_survive_shards(llama, tmp_path):
    from latentlit.scoring.shards import GroupShardWriter

    groups, _ = label_problems(llama, AGN(sigma=1.0), PROBLEMS, n_samples=2, n_rollouts=2, drop_all_correct=False,
                               drop_all_wrong=False, seed=3)
    assert [g.latents.shape[1] for g in groups] == [2, 4, 2, 4]  # groups of different lengths in one shard
    writer = GroupShardWriter(tmp_path)
    for i, g in enumerate(groups):
        writer.add(i, g.id, g.question, g.gold, g)
    writer.flush()
    for a, b in zip(groups, load_groups(tmp_path)):
        assert torch.equal(a.latents, b.latents) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.latent_mask, b.latent_mask)
