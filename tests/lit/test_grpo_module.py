"""GRPOModule pieces that need no trainer: option checks, the LatentRM reward term, the question
stream (same batches whatever the resume point or the number of processes)."""

import pytest
import torch

from latentlit.data.sources import SyntheticProblems
from latentlit.lit.grpo_data import StepBatches, batch_indices
from latentlit.lit.grpo_module import GRPOModule
from latentlit.models.checkpoints import load_backbone
from latentlit.models.latent_rm import LatentRM
from latentlit.sampling import AGN, Deterministic, LearnedSampler, MCDropout


def test_options_are_checked_before_anything_loads():
    with pytest.raises(ValueError, match="train='policy'"):
        GRPOModule(train="policy")
    with pytest.raises(ValueError, match="advantage='median'"):
        GRPOModule(advantage="median")
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        GRPOModule(group_size=1)
    with pytest.raises(ValueError, match="LearnedSampler"):
        GRPOModule(train="sampler", sampler=AGN(1.0))
    with pytest.raises(ValueError, match="stochastic sampler"):
        GRPOModule(sampler=Deterministic())
    with pytest.raises(ValueError, match="answer_logprob must be true"):
        GRPOModule(sampler=MCDropout(0.1), answer_logprob=False)
    with pytest.raises(ValueError, match="set both"):
        GRPOModule(latent_rm="quickstart")
    GRPOModule(sampler=LearnedSampler(), train="sampler", answer_logprob=False)  # accepted


def test_the_latent_rm_term_adds_each_rollouts_own_score(tmp_path, tiny_backbone_dir):
    LatentRM.from_backbone(load_backbone(tiny_backbone_dir), seed=2).save_pretrained(tmp_path / "rm")
    module = GRPOModule(backbone=str(tiny_backbone_dir), sampler=AGN(0.5), group_size=3, latent_rm=str(tmp_path / "rm"),
                        rm_weight=0.5, max_new_tokens=3)
    module.setup("fit")
    problems = SyntheticProblems("train", n_train=20, n_val=2, n_test=2).load()[:2]
    rollouts, old = module._rollouts(problems)
    assert old is None
    rm = LatentRM.from_pretrained(tmp_path / "rm").eval()
    # scored one question at a time: the batched scores keep each row with its own rollout
    for q in range(2):
        rows = slice(3 * q, 3 * q + 3)
        alone = rm.score_trajectories([problems[q].question], rollouts.latents[rows][None],
                                      rollouts.latent_mask[rows][None])[0]
        expected = rollouts.correct[rows].float() + 0.5 * alone
        assert torch.allclose(rollouts.rewards[rows], expected, atol=1e-5)
    assert not torch.equal(rollouts.rewards, rollouts.correct.float())


def test_question_batches_are_a_function_of_the_step_and_split_across_processes():
    problems = list(range(10))
    first = [batch_indices(10, 4, 0, b) for b in range(4)]
    assert all(len(set(b)) == 4 for b in first)
    assert set(first[0]) | set(first[1]) <= set(problems) and not set(first[0]) & set(first[1])  # one pass: disjoint
    assert first[2] != first[0]  # the next pass is another permutation
    stream = iter(StepBatches(problems, 4, 0, repeats=2, start=0, rank=0, world_size=1))
    got = [next(stream) for _ in range(4)]
    assert got[0] == got[1] == first[0] and got[2] == got[3] == first[1]  # each batch served for its 2 updates
    resumed = iter(StepBatches(problems, 4, 0, repeats=2, start=3, rank=0, world_size=1))
    assert next(resumed) == first[1]
    halves = [next(iter(StepBatches(problems, 4, 0, 1, 1, r, 2))) for r in (0, 1)]
    assert halves[0] + halves[1] == first[1]
    with pytest.raises(ValueError, match="larger than the 3 training problems"):
        batch_indices(3, 4, 0, 0)
