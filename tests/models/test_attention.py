"""Shared-prefix KV (shared prefill without N copies): the attention, the cache and the backbone
path against the copying path."""

from __future__ import annotations

import pytest
import torch

from latentlit.data.synthetic import generate_problems
from latentlit.models.attention import shared_prefix_attention, supports_prefix_attention
from latentlit.models.cache import LatentCache, SharedPrefixCache
from latentlit.models.checkpoints import load_backbone
from latentlit.rng import trajectory_keys
from latentlit.sampling import AGN, Deterministic, MCDropout
from latentlit.scoring.rollouts import label_problems
from latentlit.testing.checkpoints import write_tiny_colar
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = [
    "Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?",
    "3",
    "Tom has 55 books . buys 4 . loses 3 . gives away 2 . how many ?",
]
IDS = ["q-a", "q-b", "q-c"]


# ---------------------------------------------------------------------- the attention function
def _copied_eager(query, key, value, prefix_key, prefix_value, additive, scaling):
    """Reference: every row gets its own copy of its prefix, then plain eager attention."""
    g = query.shape[0] // prefix_key.shape[0]
    keys = torch.cat([prefix_key.repeat_interleave(g, 0), key], -2)
    values = torch.cat([prefix_value.repeat_interleave(g, 0), value], -2)
    logits = torch.matmul(query, keys.transpose(-1, -2)) * scaling
    if additive is not None:
        logits = logits + additive
    probs = torch.softmax(logits, -1)
    return torch.matmul(probs, values).transpose(1, 2), probs


@pytest.mark.parametrize("s", [1, 3])
def test_shared_prefix_attention_equals_eager_over_copies(s):
    g = torch.Generator().manual_seed(0)
    q_pre, group, heads, dh, lp, ls = 2, 3, 2, 4, 5, 4
    rows = q_pre * group
    query = torch.randn(rows, heads, s, dh, generator=g)
    key, value = torch.randn(rows, heads, ls, dh, generator=g), torch.randn(rows, heads, ls, dh, generator=g)
    pk, pv = torch.randn(q_pre, heads, lp, dh, generator=g), torch.randn(q_pre, heads, lp, dh, generator=g)
    # prefix 1 is left-padded by 2 positions; causal within the suffix's last s positions
    visible = torch.ones(rows, 1, s, lp + ls, dtype=torch.bool)
    visible[group:, ..., :2] = False
    visible &= torch.ones(s, lp + ls, dtype=torch.bool).tril(lp + ls - s)
    additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    ref_out, ref_probs = _copied_eager(query, key, value, pk, pv, additive, 0.5)
    for mask in (visible, additive):
        out, probs = shared_prefix_attention(query, key, value, pk, pv, mask, 0.5)
        assert out.shape == (rows, s, heads, dh) and probs.shape == (rows, heads, s, lp + ls)
        torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-5)
    assert probs[group:, ..., :2].eq(0).all() and probs[:group, ..., :2].gt(0).all()
    # no mask: every key visible for one query, causal within the suffix for several
    out, _ = shared_prefix_attention(query, key, value, pk, pv, None, 0.5)
    causal = torch.zeros(s, lp + ls).masked_fill(~torch.ones(s, lp + ls, dtype=torch.bool).tril(lp + ls - s),
                                                 torch.finfo(torch.float32).min)
    torch.testing.assert_close(out, _copied_eager(query, key, value, pk, pv, causal, 0.5)[0], atol=1e-6, rtol=1e-5)

    # the probabilities hook sees prefix then suffix keys, and its result is what is applied
    def drop_first_prefix_key(probs, mask):
        assert mask is not None and mask.shape[-1] == lp + ls
        probs = probs.clone()
        probs[..., 0] = 0
        return probs

    out, probs = shared_prefix_attention(query, key, value, pk, pv, additive, 0.5, probs_hook=drop_first_prefix_key)
    expected = torch.matmul(ref_probs.clone().index_fill_(-1, torch.tensor([0]), 0),
                            torch.cat([pv.repeat_interleave(group, 0), value], -2)).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="rows for"):
        shared_prefix_attention(query[:5], key[:5], value[:5], pk, pv, None, 0.5)


# ---------------------------------------------------------------------- through the backbone
def _llama(tmp_path_factory):
    return load_backbone(write_tiny_colar(tmp_path_factory.mktemp("colar") / "colar"))


SAMPLERS = {
    "deterministic": lambda: Deterministic(),
    "agn": lambda: AGN(sigma=1.0),
    "mc_shared": lambda: MCDropout(p=0.2, prefill="shared"),
    "mc_attention": lambda: MCDropout(p=0.1, attention_p=0.2, prefill="shared"),
}


def _generate(backbone, sampler, share: bool, n: int = 4, **kwargs):
    backbone.share_prefix_kv = share
    try:
        keys = trajectory_keys(3, IDS, n)
        return backbone.generate(QUESTIONS, n_samples=n, sampler=sampler, keys=keys, max_new_tokens=3, **kwargs)
    finally:
        backbone.share_prefix_kv = True


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_shared_prefix_generate_equals_copying_path(kind, name, tmp_path_factory):
    backbone = tiny_backbone(num_latents=3) if kind == "gpt2" else _llama(tmp_path_factory)
    if kind == "llama-gqa":
        assert backbone.lm.config.num_key_value_heads < backbone.lm.config.num_attention_heads
    shared = _generate(backbone, SAMPLERS[name](), True)
    copied = _generate(backbone, SAMPLERS[name](), False)
    assert (shared.latents - copied.latents).abs().max() < 1e-5
    assert (shared.first_logits - copied.first_logits).abs().max() < 1e-5
    assert torch.equal(shared.answer_ids, copied.answer_ids)
    assert shared.answers_text == copied.answers_text
    if name != "deterministic":  # the samples of a question do differ
        assert not torch.allclose(shared.latents[0], shared.latents[1])
    # the shared run switched the model to an attention that reads the prefix
    expected = "latentlit_keyed_eager" if name == "mc_attention" else "latentlit_prefix_sdpa"
    assert backbone.lm.config._attn_implementation == expected and supports_prefix_attention(backbone.lm)


def test_shared_prefix_cache_holds_the_prompt_once(tmp_path_factory):
    backbone = tiny_backbone(num_latents=3)
    n, room = 8, 3 + 3
    keys = trajectory_keys(3, IDS, n)
    with torch.no_grad():
        state = backbone.prefill_samples(QUESTIONS, n, AGN(sigma=1.0), keys, room=room)
    assert isinstance(state.cache, SharedPrefixCache) and state.rows == 3 * n
    widest = max(len(r) for r in backbone.prompt_tokens(QUESTIONS))
    for layer in state.cache.layers:
        assert layer.prefix_keys.shape[0] == 3 and layer.prefix_keys.shape[-2] == widest  # once per question
        assert layer.get_seq_length() == widest and layer.suffix_length == 0
    with torch.no_grad():
        state, _ = backbone.latent_step(state, 1, sampler=AGN(sigma=1.0), keys=keys)
    for layer in state.cache.layers:
        # per row: only the suffix, in a buffer of exactly `room` positions
        assert layer.keys.shape[0] == 3 * n and layer.suffix_length == 1 and layer._k.shape[-2] == room
        assert layer.get_seq_length() == widest + 1
    assert state.attention_mask.shape == (3 * n, widest + 1)
    # a shared-prefix cache must not be run by an attention that ignores the prefix
    with torch.no_grad(), pytest.raises(RuntimeError, match="SharedPrefixCache"):
        backbone.lm.base_model(inputs_embeds=torch.zeros(3 * n, 1, backbone.hidden_size), cache=state.cache,
                               attention_mask=torch.cat([state.attention_mask, torch.ones(3 * n, 1, dtype=torch.long)], 1),
                               position_ids=state.next_position[:, None], use_cache=True)


@torch.no_grad()
def test_shared_prefix_forks_equal_copying_forks():
    """select/repeat_interleave of a shared-prefix state (rollouts, beam-style forks) continue
    exactly as forks of the copied state."""
    backbone = tiny_backbone(num_latents=3)
    sampler, n = AGN(sigma=1.0), 2
    keys = trajectory_keys(3, IDS, n)
    states = {}
    for share in (True, False):
        backbone.share_prefix_kv = share
        state = backbone.prefill_samples(QUESTIONS, n, sampler, keys, room=8)
        state, _ = backbone.latent_step(state, 1, sampler=sampler, keys=keys)
        states[share] = state
    backbone.share_prefix_kv = True
    assert isinstance(states[True].cache, SharedPrefixCache) and type(states[False].cache) is LatentCache
    whole = torch.tensor([4, 5, 0, 1])  # questions 2 and 0, whole: still shared (prefixes picked)
    any_rows = torch.tensor([5, 0, 0, 3])  # arbitrary rows: prefix copied per row
    for index, shared_type in ((whole, SharedPrefixCache), (any_rows, LatentCache)):
        a, b = states[True].select(index).repeat_interleave(2), states[False].select(index).repeat_interleave(2)
        assert type(a.cache) is shared_type
        k = keys[index].repeat_interleave(2) ^ torch.arange(8)
        a, la, _ = backbone.run_latents(a, sampler=sampler, keys=k, start_step=2)
        b, lb, _ = backbone.run_latents(b, sampler=sampler, keys=k, start_step=2)
        assert (la - lb).abs().max() < 1e-5
        ia, fa = backbone.decode_answer(a, max_new_tokens=3, keys=k, first_step=4)
        ib, fb = backbone.decode_answer(b, max_new_tokens=3, keys=k, first_step=4)
        assert torch.equal(ia, ib) and (fa - fb).abs().max() < 1e-5
    # a fork's suffix writes do not reach the parent's prefix or suffix
    parent = states[True]
    before = [layer.keys.clone() for layer in parent.cache.layers]
    child = parent.select(torch.arange(parent.rows))
    backbone.latent_step(child, 2, sampler=sampler, keys=keys)
    assert all(torch.equal(layer.keys, b) for layer, b in zip(parent.cache.layers, before))


def test_rollout_labels_equal_with_and_without_prefix_sharing():
    backbone = tiny_backbone(num_latents=3)
    problems = generate_problems(3, seed=7)
    out = {}
    for share in (True, False):
        backbone.share_prefix_kv = share
        out[share], _ = label_problems(backbone, AGN(sigma=1.0), problems, n_samples=3, n_rollouts=2,
                                       drop_all_correct=False, drop_all_wrong=False, seed=5)
    backbone.share_prefix_kv = True
    for a, b in zip(out[True], out[False]):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.final_correct, b.final_correct)
        assert (a.latents - b.latents).abs().max() < 1e-5
