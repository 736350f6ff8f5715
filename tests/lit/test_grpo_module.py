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


@pytest.mark.parametrize("sampler", [MCDropout(p=0.3, mask_scope="trajectory"), AGN(0.5)], ids=["dropout", "agn"])
def test_at_the_start_the_reference_is_the_policy_and_both_keep_their_masks(tiny_backbone_dir, sampler):
    """KL = 0 before any update: the frozen reference applies the same masks (or Gaussian) as the
    policy; computing it leaves the policy's sampler hooks in place (its log-probabilities do not
    change, and they differ from the same backbone without its sampler)."""
    from latentlit.training.policy import policy_logprobs

    module = GRPOModule(backbone=str(tiny_backbone_dir), sampler=sampler, group_size=3, kl_coef=0.1, max_new_tokens=3)
    module.setup("fit")
    rollouts, _ = module._rollouts(SyntheticProblems("train", n_train=20, n_val=2, n_test=2).load()[:2])
    first = policy_logprobs(module.backbone, module.sampler, rollouts)
    with torch.no_grad():
        ref = policy_logprobs(*module._reference, rollouts)
    again = policy_logprobs(module.backbone, module.sampler, rollouts)
    assert torch.equal(first.token_logp, again.token_logp)
    assert torch.allclose(ref.token_logp, first.token_logp, atol=1e-6)
    assert module._kl(first, ref).abs().max() < 1e-5
    bare = policy_logprobs(load_backbone(tiny_backbone_dir), AGN(0.5) if isinstance(sampler, AGN) else MCDropout(p=0.0001),
                           rollouts)
    if isinstance(sampler, MCDropout):  # without the masks the answer tokens' probabilities move
        assert not torch.allclose(bare.token_logp, first.token_logp, atol=1e-4)


def test_a_process_resumed_inside_a_round_it_does_not_hold_warns_and_redraws(tiny_backbone_dir):
    module = GRPOModule(backbone=str(tiny_backbone_dir), sampler=AGN(0.5), group_size=2, updates_per_batch=2,
                        kl_coef=0.0, max_new_tokens=3)
    module.setup("fit")
    problems = SyntheticProblems("train", n_train=20, n_val=2, n_test=2).load()[:2]
    drawn, _ = module._rollouts(problems)
    module._round = (*module._round[:3], torch.zeros(4, 5))
    same, old = module._rollouts(problems)  # the same round, the same questions: reused with its old log-probs
    assert same is drawn and old.shape == (4, 5)
    module._round = (0, ["another rank's question"], drawn, torch.zeros(4, 5))  # rank zero's round, restored
    with pytest.warns(UserWarning, match="resumed inside round 0"):
        again, old = module._rollouts(problems)
    assert old is None and torch.equal(again.latents, drawn.latents)  # the same keys: the same rollouts


def test_an_untrained_learned_sampler_at_predict_time_warns_and_a_too_large_batch_fails_at_setup():
    from latentlit.lit.grpo_data import GRPODataModule
    from latentlit.lit.predictor import TTSPredictor

    with pytest.warns(UserWarning, match="without a path is untrained"):
        TTSPredictor(sampler=LearnedSampler())
    dm = GRPODataModule(train=SyntheticProblems("train", n_train=8, n_val=2, n_test=2), batch_size=16)
    with pytest.raises(ValueError, match="batch_size=16 is larger than the 8 training problems"):
        dm.setup("fit")
