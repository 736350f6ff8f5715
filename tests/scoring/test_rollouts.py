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


@pytest.mark.parametrize("prefix", ["shared", "per_rollout"])
@pytest.mark.parametrize("sampler", [MCDropout(p=0.3), AGN(sigma=1.0)])
def test_labels_do_not_depend_on_batching(backbone, sampler, prefix):
    together, _ = label_problems(backbone, sampler, PROBLEMS, n_samples=2, n_rollouts=3, drop_all_correct=False,
                                 drop_all_wrong=False, seed=5, rollout_prefix=prefix)
    for i, p in enumerate(PROBLEMS):
        alone, _ = label_problems(backbone, sampler, [p], n_samples=2, n_rollouts=3, drop_all_correct=False,
                                  drop_all_wrong=False, seed=5, rollout_prefix=prefix)
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
    # the prefix encoding of rollouts is recorded (run.json, summary.json) and a mix is refused
    assert json.loads((tmp_path / "part" / "run.json").read_text())["rollout_prefix"] == "per_rollout"
    assert json.loads(summary)["config"]["rollout_prefix"] == "per_rollout"
    with pytest.raises(ValueError, match=r"other settings.*rollout_prefix.*per_rollout.*shared"):
        _label(tiny_backbone_dir, tmp_path / "part", 3, "--model.rollout_prefix", "shared")
    # groups labelled before rollouts branched ahead of h_t (no rollout_branch in run.json): refused
    run = json.loads((tmp_path / "part" / "run.json").read_text())
    assert run.pop("rollout_branch") == "before_feeding_h_t"
    (tmp_path / "part" / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"other settings.*rollout_branch"):
        _label(tiny_backbone_dir, tmp_path / "part", 3)


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
from latentlit.rng import derive_keys, trajectory_keys  # noqa: E402
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
    """Rebuild one (trajectory, step) label through the public seams: the state before h_1, then M
    continuations that each feed h_1 with their own keys and stop when the LM head says so,
    answers decoded greedily."""
    from latentlit.data.answers import answers_match, extract_answer

    sampler, m = AGN(sigma=1.0), 6
    problems, out = _gold_from_samples(llama, sampler, PROBLEMS[:1], 3)
    groups, _ = label_problems(llama, sampler, problems, n_samples=3, n_rollouts=m, max_new_tokens=3,
                               drop_all_correct=False, drop_all_wrong=False, answer_format="last_number")
    keys = trajectory_keys(0, [problems[0].id], 3)
    row = int(out.latent_mask.sum(1).argmax())  # the longest trajectory has rollouts at t = 1
    state = llama.prefill_samples([problems[0].question], 3, sampler, keys)
    h1 = llama.propose_latent(state, 1, sampler=sampler, keys=keys)
    prefix = state.select(torch.tensor([row])).repeat_interleave(m)
    rkeys = derive_keys(derive_keys(keys[[row]].repeat_interleave(m), _ROLLOUT_STREAM, 1) ^ torch.arange(m), _ROLLOUT_STREAM)
    prefix = llama.feed_latent(prefix, h1[[row]].repeat_interleave(m, 0), 1, sampler=sampler, keys=rkeys)
    prefix, _, rmask = llama.run_latents(prefix, llama.latent_config.max_latents, sampler=sampler, keys=rkeys, start_step=2)
    answers, _ = llama.decode_answer(prefix, max_new_tokens=3)
    right = [answers_match(extract_answer(t, "last_number"), problems[0].answer) for t in llama.decode(answers)]
    assert groups[0].labels[row, 0].item() == pytest.approx(sum(right) / m)
    assert len(set(rmask.sum(1).tolist())) > 1  # the rollouts themselves stop at different steps


@pytest.mark.parametrize("prefix", ["shared", "per_rollout"])
@pytest.mark.parametrize("sampler", [MCDropout(p=0.3), AGN(sigma=1.0)])
def test_dynamic_labels_do_not_depend_on_batching(llama, sampler, prefix):
    together, _ = label_problems(llama, sampler, PROBLEMS, n_samples=3, n_rollouts=2, drop_all_correct=False,
                                 drop_all_wrong=False, seed=2, rollout_prefix=prefix)
    for i, p in enumerate(PROBLEMS):
        alone, _ = label_problems(llama, sampler, [p], n_samples=3, n_rollouts=2, drop_all_correct=False,
                                  drop_all_wrong=False, seed=2, rollout_prefix=prefix)
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


# ---------------------------------------------------------------- where rollouts branch (before h_t is fed)
from latentlit.data.answers import answers_match, extract_answer  # noqa: E402
from latentlit.data.sources import SyntheticProblems  # noqa: E402
from latentlit.models.checkpoints import load_backbone
from latentlit.sampling import Deterministic  # noqa: E402
from latentlit.scoring.rollouts import rollout_keys, rollouts_at_last_step  # noqa: E402


@torch.no_grad()
def _one_at_a_time(backbone, sampler, problem, n, m, *, max_new_tokens, fmt, seed=0, branch_after_feed=False,
                   prefix="shared"):
    """One question's labels, every rollout run alone from a fresh prefill through the public
    seams: trajectory j is rebuilt with its own keys up to h_t; the rollout feeds h_t with its
    own keys (``branch_after_feed``: with the trajectory's, as latentlit did before), continues
    with the backbone's own stop and decodes. ``prefix="per_rollout"``: the rollout instead
    prefills the prompt alone with its own key and feeds the trajectory's h_1..h_t with it.
    Returns labels (n, width), final correctness (n,), and {t: (M, d) the rollouts' h_{t+1}}
    of every trajectory that has one."""
    cap = backbone.latent_config.max_latents if backbone.latent_config.latent_stop_id is not None \
        else backbone.latent_config.num_latents
    keys = trajectory_keys(seed, [problem.id], n)

    def correct(state, key):
        ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=key, first_step=cap + 1)
        return float(answers_match(extract_answer(backbone.decode(ids)[0], fmt), problem.answer))

    def before(j, t):  # trajectory j's state before h_t is fed, and its h_1..h_t
        state, hs = backbone.prefill_samples([problem.question], 1, sampler, keys[[j]]), []
        for s in range(1, t):
            state, h = backbone.latent_step(state, s, sampler=sampler, keys=keys[[j]])
            hs.append(h)
        return state, hs + [backbone.propose_latent(state, t, sampler=sampler, keys=keys[[j]])]

    finals, lengths, rows, nexts = [], [], [], {}
    for j in range(n):
        state = backbone.prefill_samples([problem.question], 1, sampler, keys[[j]])
        state, _, mask = backbone.run_latents(state, cap, sampler=sampler, keys=keys[[j]])
        finals.append(correct(state, keys[[j]]))
        lengths.append(int(mask.sum()))
        row = []
        for t in range(1, lengths[-1] + 1):
            if t == lengths[-1] and (branch_after_feed or not rollouts_at_last_step(sampler)):
                row.append(finals[-1])
                continue
            right, hs = 0.0, []
            for k in range(m):
                rkey = rollout_keys(keys[[j]], t, m)[[k]]
                state, hs_traj = before(j, t)
                if prefix == "per_rollout":
                    state = backbone.prefill_samples([problem.question], 1, sampler, rkey)
                    for s, h in enumerate(hs_traj[:-1], 1):
                        state = backbone.feed_latent(state, h, s, sampler=sampler, keys=rkey)
                state = backbone.feed_latent(state, hs_traj[-1], t, sampler=sampler,
                                             keys=keys[[j]] if branch_after_feed else rkey)
                state, rest, rmask = backbone.run_latents(state, cap, sampler=sampler, keys=rkey, start_step=t + 1)
                if rmask.shape[1] and bool(rmask[0, 0]):
                    hs.append(rest[0, 0])
                right += correct(state, rkey)
            row.append(right / m)
            if len(hs) == m:
                nexts.setdefault(t, []).append(torch.stack(hs))
        rows.append(row)
    width = max(lengths)
    labels = torch.tensor([r + [0.0] * (width - len(r)) for r in rows])
    return labels, torch.tensor(finals, dtype=torch.bool), nexts


@pytest.fixture(scope="module")
def quickstart():
    return load_backbone("quickstart")


# validation questions 0 and 4: the quickstart's MC-dropout samples of each are partly right
MIXED = [SyntheticProblems("val").load()[i] for i in (0, 4)]


def test_mc_dropout_rollouts_differ_from_h_t_plus_1_and_match_one_at_a_time(quickstart):
    """Under MC-dropout the M rollouts from h_1..h_t differ in h_{t+1} (they branch before the
    forward pass that consumes h_t), the batched labels equal running every rollout alone, and
    they differ from the labels of rollouts branched after that forward pass (which share
    h_{t+1}: spread 0)."""
    sampler, n, m = MCDropout(p=0.2), 4, 4
    groups, stats = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                                   drop_all_correct=False, drop_all_wrong=False, rollout_prefix="shared")
    changed = 0
    for g, p in zip(groups, MIXED):
        labels, finals, nexts = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut")
        assert torch.equal(g.labels, labels) and torch.equal(g.final_correct, finals)
        assert set(nexts) == {1, 2, 3}
        for t, hs in nexts.items():
            assert all(float(h.std(0).max()) > 1e-3 for h in hs), t  # the rollouts' own h_{t+1}
        old, _, old_nexts = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut",
                                           branch_after_feed=True)
        assert all(float(h.std(0).max()) == 0.0 for hs in old_nexts.values() for h in hs)
        changed += int((old != labels).sum())
    assert changed >= 3  # the setting tells the two branch points apart


def test_agn_labels_are_unchanged_by_the_branch_point(quickstart):
    """AGN acts on the proposed latent, not in forward passes: branching before or after h_t is
    fed gives the same rollouts, and the last step's label is the trajectory's own correctness."""
    sampler, n, m = AGN(sigma=1.0), 4, 4
    groups, _ = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                               drop_all_correct=False, drop_all_wrong=False)
    for g, p in zip(groups, MIXED):
        labels, finals, _ = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut")
        old, _, _ = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut", branch_after_feed=True)
        assert torch.equal(g.labels, labels) and torch.equal(labels, old)
        assert torch.equal(g.labels[:, -1], finals.float())
    assert ((torch.cat([g.labels[:, :-1] for g in groups]) * m) % m != 0).any()  # fractional labels


@pytest.mark.parametrize("prefix", ["shared", "per_rollout"])
@pytest.mark.parametrize("sampler", [MCDropout(p=0.3), AGN(sigma=1.0)])
def test_dynamic_stop_labels_match_one_at_a_time(llama, sampler, prefix):
    """Llama with a CoLaR-style stop: rollouts (the last step's too under MC-dropout) stop on
    their own hidden states, and the batched labels equal running each rollout alone, with
    either prefix encoding."""
    problems, _ = _gold_from_samples(llama, sampler, PROBLEMS[:2], 3)
    groups, _ = label_problems(llama, sampler, problems, n_samples=3, n_rollouts=3, max_new_tokens=3,
                               drop_all_correct=False, drop_all_wrong=False, answer_format="last_number",
                               rollout_prefix=prefix)
    for g, p in zip(groups, problems):
        labels, finals, _ = _one_at_a_time(llama, sampler, p, 3, 3, max_new_tokens=3, fmt="last_number", prefix=prefix)
        assert torch.equal(g.labels, labels) and torch.equal(g.final_correct, finals)


def test_last_step_rule_is_forward_pass_randomness():
    assert rollouts_at_last_step(MCDropout(p=0.1)) and rollouts_at_last_step(MCDropout(p=0.0, attention_p=0.1))
    assert rollouts_at_last_step(MCDropout(p=0.1, on_answer=True))
    assert not rollouts_at_last_step(MCDropout(p=0.0))
    assert not rollouts_at_last_step(AGN(sigma=1.0)) and not rollouts_at_last_step(AGN(sigma=1.0, on_answer=True))
    assert not rollouts_at_last_step(Deterministic())


def test_pre_final_statistic_recomputed_from_the_groups(quickstart):
    groups, stats = label_problems(quickstart, MCDropout(p=0.2), MIXED, n_samples=4, n_rollouts=4, max_new_tokens=6,
                                   drop_all_correct=False, drop_all_wrong=False)
    pre = equal = 0
    for g in groups:
        for labels, mask, final in zip(g.labels, g.latent_mask, g.final_correct):
            before_last = labels[: int(mask.sum()) - 1]
            pre += len(before_last)
            equal += int((before_last == float(final)).sum())
    assert stats.pre_final == pre == 24 and stats.pre_final_equal_final == equal < pre
    assert stats.summary()["label_fraction_pre_final_equal_final"] == pytest.approx(equal / pre)


def test_label_statistics_are_rounded_and_absent_without_labels():
    from latentlit.scoring.rollouts import DECIMALS, LabelStats

    labels = [1 / 3, 2 / 3, 0.0, 1.0, 0.25]
    s = LabelStats(questions=4, kept=2, forward_tokens=30, reference_forward_tokens=100, labels=labels).summary()
    mean = sum(labels) / 5
    std = (sum((x - mean) ** 2 for x in labels) / 4) ** 0.5
    assert DECIMALS == 6
    assert s["label_mean"] == round(mean, 6) == 0.45 and s["label_std"] == round(std, 6) == 0.389087
    assert s["label_fraction_0"] == 0.2 and s["label_fraction_1"] == 0.2 and s["labels"] == 5
    assert s["kept_fraction"] == 0.5 and s["saving_vs_reference"] == 3.333333
    empty = LabelStats(questions=3, all_wrong=3).summary()
    assert empty["kept_fraction"] == 0.0 and empty["labels"] == 0 and empty["saving_vs_reference"] is None
    assert [empty[k] for k in ("label_mean", "label_std", "label_fraction_0", "label_fraction_1",
                               "label_fraction_pre_final_equal_final")] == [None] * 5
    s = LabelStats(questions=1, kept=1, labels=[0.5], pre_final=3, pre_final_equal_final=2).summary()
    assert s["label_fraction_pre_final_equal_final"] == 0.666667 and s["label_std"] is None


# ---------------------------------------------------------------- prefix encoding of rollouts (shared / per_rollout)
def test_per_rollout_prefix_matches_one_at_a_time_and_leaves_the_outcome(quickstart):
    """MC-dropout with one mask per trajectory: every per-rollout label equals the one-rollout-at-
    a-time rebuild (own prompt prefill and own h_1..h_t feeds), and fewer labels before a
    trajectory's last step copy its outcome than with the shared prefix."""
    sampler = MCDropout(p=0.05, targets=["*.attn.resid_dropout", "*.mlp.dropout", "transformer.drop"],
                        mask_scope="trajectory")
    n, m = 4, 4
    per, per_stats = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                                    drop_all_correct=False, drop_all_wrong=False, rollout_prefix="per_rollout")
    shared, shared_stats = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                                          drop_all_correct=False, drop_all_wrong=False, rollout_prefix="shared")
    for g, s, p in zip(per, shared, MIXED):
        labels, finals, _ = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut",
                                           prefix="per_rollout")
        assert torch.equal(g.labels, labels) and torch.equal(g.final_correct, finals)
        assert torch.equal(g.latents, s.latents) and torch.equal(g.final_correct, s.final_correct)  # same trajectories
    assert per_stats.pre_final == shared_stats.pre_final == 2 * n * 3  # T = 4: three steps before the last
    assert per_stats.pre_final_equal_final < shared_stats.pre_final_equal_final
    assert any(not torch.equal(g.labels, s.labels) for g, s in zip(per, shared))


@pytest.mark.parametrize("sampler", [AGN(sigma=1.0), Deterministic(), MCDropout(p=0.0)])
def test_without_forward_randomness_per_rollout_prefix_equals_shared(quickstart, sampler):
    """No forward-pass randomness: re-encoding the prompt and h_1..h_t per rollout (rebuilt one
    rollout at a time) gives the cached prefix's labels, so label_problems runs the shared path
    (same labels, same forward tokens)."""
    n, m = 4, 4
    per, per_stats = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                                    drop_all_correct=False, drop_all_wrong=False, rollout_prefix="per_rollout")
    shared, shared_stats = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                                          drop_all_correct=False, drop_all_wrong=False, rollout_prefix="shared")
    for g, s, p in zip(per, shared, MIXED):
        assert torch.equal(g.labels, s.labels)
        if isinstance(sampler, AGN):  # the real per-rollout re-encoding agrees
            labels, _, _ = _one_at_a_time(quickstart, sampler, p, n, m, max_new_tokens=6, fmt="coconut",
                                          prefix="per_rollout")
            assert torch.equal(g.labels, labels)
    assert per_stats.forward_tokens == shared_stats.forward_tokens


def test_per_rollout_forward_tokens_close_to_the_reference_count(quickstart):
    """Forward tokens are the positions actually run: with per-rollout prefixes (MC-dropout, last
    step rolled out too) about the reference re-prefill estimate (which counts real prompt
    lengths and the trajectories' answer length; the batches run padding and the rollouts' own
    answer lengths: 4080 vs 4012 here), and several times the shared prefix's count."""
    sampler, n, m = MCDropout(p=0.2), 4, 4
    _, per = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                            drop_all_correct=False, drop_all_wrong=False, rollout_prefix="per_rollout")
    _, shared = label_problems(quickstart, sampler, MIXED, n_samples=n, n_rollouts=m, max_new_tokens=6,
                               drop_all_correct=False, drop_all_wrong=False, rollout_prefix="shared")
    assert per.reference_forward_tokens == shared.reference_forward_tokens
    assert 0.9 < per.forward_tokens / per.reference_forward_tokens < 1.1
    assert per.forward_tokens > 2 * shared.forward_tokens


def test_unknown_rollout_prefix_is_refused(quickstart):
    with pytest.raises(ValueError, match="rollout_prefix='cached'"):
        label_problems(quickstart, AGN(sigma=1.0), MIXED, rollout_prefix="cached")


def test_per_rollout_prefix_with_a_shared_prompt_prefill_sampler(llama):
    """MC-dropout with ``prefill="shared"`` (dropout in latent steps only): the per-rollout prompt
    encoding is the sampler's own (deterministic, one prefill per trajectory row reused by its M
    rollouts), h_1..h_t are re-fed with each rollout's keys; labels equal the one-at-a-time
    rebuild."""
    sampler = MCDropout(p=0.3, prefill="shared")
    problems, _ = _gold_from_samples(llama, sampler, PROBLEMS[:2], 3)
    kw = dict(n_samples=3, n_rollouts=3, max_new_tokens=3, drop_all_correct=False, drop_all_wrong=False,
              answer_format="last_number")
    per, per_stats = label_problems(llama, sampler, problems, rollout_prefix="per_rollout", **kw)
    _, shared_stats = label_problems(llama, sampler, problems, rollout_prefix="shared", **kw)
    for g, p in zip(per, problems):
        labels, _, _ = _one_at_a_time(llama, sampler, p, 3, 3, max_new_tokens=3, fmt="last_number", prefix="per_rollout")
        assert torch.equal(g.labels, labels)
    # the prompt runs once per rolled-out trajectory row (not per rollout), h_1..h_{t-1} per rollout
    assert shared_stats.forward_tokens < per_stats.forward_tokens < per_stats.reference_forward_tokens
