"""Each sampler's policy log-probability (latentlit.training.policy) against a hand computation on a
tiny model: one uncached forward pass per trajectory over prompt, latents and answer."""

import math

import pytest
import torch

from latentlit.rng import trajectory_keys
from latentlit.sampling import AGN, LearnedSampler, MCDropout
from latentlit.testing.tiny import tiny_backbone
from latentlit.training.grpo import grpo_loss
from latentlit.training.policy import answer_token_mask, draw_rollouts, policy_logprobs, rollout_keys

QUESTIONS = ["Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", "Mia has 1 shells . buys 2 . how many ?"]


def _rollouts(bb, sampler, g=3, seed=0):
    ids = ["a", "b"]
    keys = rollout_keys(seed, ids, g, 0)
    return draw_rollouts(bb, sampler, ids, QUESTIONS, ["30", "3"], g, keys, max_new_tokens=4)


def _by_hand(bb, rollouts, row, sigma):
    """log N(h*_t; h_t, (sigma RMS(h_t))^2) per step and log p(y_j) per answer token, from one
    full forward pass of the row alone over [prompt, h*_1..h*_T, <|end-latent|>, y_1..y_{L-1}]."""
    cfg = bb.latent_config
    prompt = bb.prompt_tokens([rollouts.questions[row // rollouts.group_size]])[0]
    lat = rollouts.latents[row]
    ans = rollouts.answer_ids[row].tolist()
    n_ans = ans.index(cfg.eos_id) + 1 if cfg.eos_id in ans else len(ans)
    tokens = torch.tensor([cfg.end_latent_id] + ans[:n_ans - 1])
    embeds = torch.cat([bb.embed(torch.tensor(prompt)), lat, bb.embed(tokens)])[None]
    hidden = bb.lm.base_model(inputs_embeds=embeds).last_hidden_state[0]
    p, t = len(prompt), lat.shape[0]
    step_lp = []
    for i in range(t):
        mu = hidden[p - 1 + i]
        s = sigma * mu.pow(2).mean().sqrt()
        step_lp.append(torch.distributions.Normal(mu, s).log_prob(lat[i]).sum())
    logits = bb.lm.lm_head(hidden[p + t:])
    token_lp = torch.log_softmax(logits, -1)[torch.arange(n_ans), torch.tensor(ans[:n_ans])]
    return torch.stack(step_lp), token_lp


def test_agn_policy_logprob_matches_the_hand_computation():
    torch.manual_seed(0)
    bb = tiny_backbone(num_latents=3)
    rollouts = _rollouts(bb, AGN(0.5))
    got = policy_logprobs(bb, AGN(0.5), rollouts)
    assert got.latent_logp.shape == (6, 3)
    for row in range(6):
        steps, tokens = _by_hand(bb, rollouts, row, 0.5)
        assert torch.allclose(got.latent_logp[row], steps, atol=2e-3, rtol=1e-5)
        n = len(tokens)
        assert torch.allclose(got.token_logp[row, :n], tokens, atol=1e-4)
        assert got.token_mask[row, :n].all() and not got.token_mask[row, n:].any()
    logp, mask = got.actions()
    assert logp.shape == (6, 3 + rollouts.answer_ids.shape[1]) and mask[:, :3].all()


def test_the_rollouts_are_draws_of_that_gaussian():
    """Both sides: the fed latents sit at a typical distance from the recomputed mean (z ~ N(0, 1)
    per coordinate), and latents of another seed's rollouts are not the same draws."""
    bb = tiny_backbone(num_latents=3)
    a = _rollouts(bb, AGN(0.5))
    got = policy_logprobs(bb, AGN(0.5), a)
    z = (a.latents - got.latent_mean) / got.latent_std
    assert abs(z.pow(2).mean().item() - 1.0) < 0.25
    b = _rollouts(bb, AGN(0.5), seed=1)
    assert not torch.allclose(a.latents, b.latents)


def test_rollouts_are_keyed_by_round_and_reproducible():
    bb = tiny_backbone(num_latents=3)
    assert torch.equal(rollout_keys(0, ["a"], 4, 2), rollout_keys(0, ["a"], 4, 2))
    assert not torch.equal(rollout_keys(0, ["a"], 4, 2), rollout_keys(0, ["a"], 4, 3))
    assert not torch.equal(rollout_keys(0, ["a"], 4, 0), trajectory_keys(0, ["a"], 4))
    one, two = _rollouts(bb, AGN(0.5)), _rollouts(bb, AGN(0.5))
    assert torch.equal(one.latents, two.latents) and torch.equal(one.answer_ids, two.answer_ids)


def test_mc_dropout_policy_is_the_masked_network():
    """The teacher-forced pass reproduces the rollout's keyed masks: the first answer token's
    log-probability equals the one from the logits decoding saw, and every decoded token is the
    argmax of its teacher-forced logits; under other keys (other masks) it differs."""
    bb = tiny_backbone(num_latents=3, dropout=0.3)
    sampler = MCDropout(p=0.3, mask_scope="trajectory")
    r = _rollouts(bb, sampler)
    got = policy_logprobs(bb, sampler, r)
    assert got.latent_logp is None
    out = bb.generate(r.questions, n_samples=r.group_size, sampler=sampler, keys=r.keys, max_new_tokens=4)
    first = torch.log_softmax(out.first_logits, -1).gather(-1, r.answer_ids[:, :1])[:, 0]
    assert torch.allclose(got.token_logp[:, 0], first, atol=1e-5)
    tf_logits = bb.answer_logits(*_state_after_latents(bb, sampler, r), r.answer_ids, sampler=sampler, keys=r.keys)
    assert (tf_logits.argmax(-1)[got.token_mask] == r.answer_ids[got.token_mask]).all()
    other = r.__class__(**{**r.__dict__, "keys": r.keys + 12345})
    assert not torch.allclose(policy_logprobs(bb, sampler, other).token_logp[:, 0], first, atol=1e-5)


def _state_after_latents(bb, sampler, r):
    state = bb.prefill_samples(r.questions, r.group_size, sampler, r.keys)
    state, _, _ = bb.run_latents(state, sampler=sampler, keys=r.keys)
    return (state,)


def test_mc_dropout_needs_the_answer_tokens():
    bb = tiny_backbone(num_latents=3)
    sampler = MCDropout(p=0.2, mask_scope="trajectory")
    with pytest.raises(ValueError, match="answer_logprob must be true"):
        policy_logprobs(bb, sampler, _rollouts(bb, sampler), answer_tokens=False)


def test_zero_advantage_gives_zero_gradient_through_the_backbone():
    bb = tiny_backbone(num_latents=3)
    r = _rollouts(bb, AGN(0.5))
    logp, mask = policy_logprobs(bb, AGN(0.5), r).actions()
    loss, _ = grpo_loss(logp, logp.detach(), torch.zeros(logp.shape[0]), mask)
    loss.sum().backward()
    grads = [p.grad for p in bb.parameters() if p.grad is not None]
    assert grads and all((g == 0).all() for g in grads)
    bb.zero_grad()
    logp, mask = policy_logprobs(bb, AGN(0.5), r).actions()
    loss, _ = grpo_loss(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.0, 0.5, -0.5, 0.0]), mask)
    loss.sum().backward()
    assert any((p.grad != 0).any() for p in bb.parameters() if p.grad is not None)


def test_learned_sampler_starts_as_relative_agn_and_round_trips(tmp_path):
    bb = tiny_backbone(num_latents=3)
    learned = LearnedSampler(sigma=0.5, hidden_size=8)
    learned.bind(bb)
    h = torch.randn(4, bb.hidden_size)
    mean, std = learned.latent_distribution(h, 1)
    agn_mean, agn_std = AGN(0.5).latent_distribution(h, 1)
    assert torch.allclose(mean, agn_mean) and torch.allclose(std, agn_std)
    r = _rollouts(bb, learned)
    got = policy_logprobs(bb, learned, r)
    for row in range(6):
        steps, _ = _by_hand(bb, r, row, 0.5)
        assert torch.allclose(got.latent_logp[row], steps, atol=2e-3, rtol=1e-5)
    # trained a little: the shift and scale change, and a saved sampler gives the same trajectories
    with torch.no_grad():
        learned.net[2].bias.add_(0.3)
    learned.save(tmp_path / "s")
    loaded = LearnedSampler(path=str(tmp_path / "s"))
    a, b = _rollouts(bb, learned), _rollouts(bb, loaded)
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, r.latents)
    assert loaded.describe()["weights"] == learned.describe()["weights"] != LearnedSampler(sigma=0.5).describe()["weights"]
    std = loaded.latent_distribution(h, 1)[1]
    assert torch.allclose(std, agn_std * math.exp(3.0 * math.tanh(0.3 / 3.0)), rtol=1e-5)


def test_learned_sampler_refuses_a_missing_directory_and_a_wrong_width(tmp_path):
    with pytest.raises(FileNotFoundError, match="sampler.json"):
        LearnedSampler(path=str(tmp_path))
    learned = LearnedSampler(hidden_size=4)
    learned.bind(tiny_backbone(n_embd=32))
    learned.save(tmp_path / "s")
    with pytest.raises(ValueError, match="width 32"):
        LearnedSampler(path=str(tmp_path / "s")).bind(tiny_backbone(n_embd=16))


def test_answer_token_mask_keeps_tokens_up_to_eos():
    ids = torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8], [1, 0, 0, 0]])
    assert answer_token_mask(ids, 1).tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]


def test_a_dynamic_stop_backbone_keeps_each_rollouts_own_latent_count():
    """Llama with a dynamic latent stop: the teacher-forced pass feeds each row only the latents its
    rollout had, so the first answer token's log-probability is the one decoding saw."""
    from latentlit.testing.tiny import tiny_llama_backbone

    bb = tiny_llama_backbone()
    sampler = AGN(0.3)
    r = _rollouts(bb, sampler, g=4)
    counts = r.latent_mask.sum(1)
    assert counts.min() < counts.max()  # the rows stop after different numbers of latents
    got = policy_logprobs(bb, sampler, r)
    out = bb.generate(r.questions, n_samples=4, sampler=sampler, keys=r.keys, max_new_tokens=4)
    first = torch.log_softmax(out.first_logits, -1).gather(-1, r.answer_ids[:, :1])[:, 0]
    assert torch.allclose(got.token_logp[:, 0], first, atol=1e-4)
    assert torch.equal(got.latent_mask, r.latent_mask)
    assert torch.isfinite(got.latent_logp[got.latent_mask]).all()


def test_a_trained_sampler_refuses_other_sizes_and_scales_instead_of_ignoring_them(tmp_path):
    learned = LearnedSampler(hidden_size=4, sigma=0.5)
    learned.bind(tiny_backbone())
    learned.save(tmp_path / "s")
    assert LearnedSampler(path=str(tmp_path / "s"), sigma=0.5, hidden_size=4).sigma == 0.5  # the same: accepted
    with pytest.raises(ValueError, match="sigma=1.0, but the sampler in .* was trained with sigma=0.5"):
        LearnedSampler(path=str(tmp_path / "s"), sigma=1.0)
    with pytest.raises(ValueError, match="hidden_size=64"):
        LearnedSampler(path=str(tmp_path / "s"), hidden_size=64)
