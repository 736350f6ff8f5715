"""The checkpoints shipped in latentlit/assets load and meet the embedded default's targets."""

import json
import warnings

import pytest
import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.sources import SyntheticProblems
from latentlit.models.checkpoints import SHIPPED, load_backbone
from latentlit.models.latent_rm import LatentRM


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("quickstart")


def _accuracy(backbone, problems, t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = backbone.generate([p.question for p in problems], num_latents=t, max_new_tokens=8)
    return sum(answers_match(extract_answer(x, "coconut"), p.answer) for x, p in zip(out.answers_text, problems)) / len(problems)


def test_shipped_backbone_uses_its_latents(backbone):
    problems = SyntheticProblems("test").load()
    assert backbone.latent_config.num_latents == 4
    trained, none = _accuracy(backbone, problems, 4), _accuracy(backbone, problems, 0)
    assert trained >= 0.40
    assert trained - none >= 0.15


@pytest.mark.parametrize("name", ["quickstart", "quickstart_pairwise"])
def test_shipped_latent_rm_prefers_correct_trajectories(backbone, name):
    """On validation questions, the top-scored of 8 MC-dropout trajectories is right more often
    than a random one (the paper-recipe RM and the pairwise one)."""
    from latentlit.models.latent_rm import trajectory_score
    from latentlit.sampling import MCDropout
    from latentlit.search.nway import sample_questions

    rm = LatentRM.from_pretrained(name)
    problems = SyntheticProblems("val").load()[:150]
    sampler = MCDropout(p=0.05, targets=["*.attn.resid_dropout", "*.mlp.dropout", "transformer.drop"], mask_scope="trajectory")
    samples = sample_questions(backbone, sampler, [p.id for p in problems], [p.question for p in problems], 8, seed=0,
                               max_new_tokens=6)
    correct = torch.tensor([[answers_match(extract_answer(t, "coconut"), p.answer) for t in s.texts]
                            for s, p in zip(samples, problems)], dtype=torch.float32)
    scores = trajectory_score(rm.score_groups([p.question for p in problems], torch.stack([s.latents for s in samples])))
    best = correct.gather(1, scores.argmax(1, keepdim=True)).mean()
    assert best > correct.mean() + 0.02


def test_shipped_llama_backbone_stops_after_each_problems_own_steps():
    """The Llama quickstart learned its dynamic stop: on the test problems its latent phase ends
    after exactly as many latents as the problem has operations (2..4), and it reaches the
    embedded default's accuracy target."""
    from transformers import LlamaForCausalLM

    llama = load_backbone("quickstart_llama")
    cfg = llama.latent_config
    assert isinstance(llama.lm, LlamaForCausalLM) and cfg.latent_stop_id == cfg.end_latent_id and cfg.max_latents == 4
    problems = SyntheticProblems("test").load()[:200]
    out = llama.generate([p.question for p in problems], max_new_tokens=8)
    assert out.latent_mask.sum(1).tolist() == [len(p.steps) for p in problems]
    accuracy = sum(answers_match(extract_answer(x, "coconut"), p.answer) for x, p in zip(out.answers_text, problems))
    assert accuracy / len(problems) >= 0.40
    rm = LatentRM.from_pretrained("quickstart_llama")  # its LatentRM: a Llama over the same latents
    assert rm.transformer.config.model_type == "llama" and rm.latent_size == llama.hidden_size and rm.projection is None


def test_shipped_grpo_backbone_answers_greedily_better_than_its_start(backbone):
    """GRPO on AGN rollouts of the train split (docs/rl.md): greedy test accuracy 71.6 against the
    start's 51.8; here at least 10 points above the start."""
    problems = SyntheticProblems("test").load()
    grpo = load_backbone("quickstart_grpo")
    start, trained = _accuracy(backbone, problems, 4), _accuracy(grpo, problems, 4)
    assert trained >= 0.65 and trained - start >= 0.10
    summary = json.loads((SHIPPED["quickstart_grpo"] / "training_summary.json").read_text())
    assert summary["train"] == "backbone" and summary["train_seconds"] <= 1800  # the 30-minute budget


def test_shipped_learned_sampler_draws_more_right_samples_than_agn(backbone):
    """On 150 validation questions, 8 samples each: the learned sampler's samples are right more
    often than those of the AGN it started from (0.526 against 0.407 on the 500 at N = 16)."""
    from latentlit.rng import trajectory_keys
    from latentlit.sampling import AGN, LearnedSampler

    problems = SyntheticProblems("val").load()[:150]
    keys = trajectory_keys(0, [p.id for p in problems], 8)
    rates = []
    for sampler in (AGN(1.0), LearnedSampler("quickstart")):
        out = backbone.generate([p.question for p in problems], n_samples=8, sampler=sampler, keys=keys, max_new_tokens=6)
        rates.append(sum(answers_match(extract_answer(t, "coconut"), problems[i // 8].answer)
                         for i, t in enumerate(out.answers_text)) / len(out.answers_text))
    assert rates[1] > rates[0] + 0.05
