"""MC-dropout on attention probabilities (``MCDropout(attention_p=...)``)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from latentlit.models.attention import IMPLEMENTATION, use_keyed_attention
from latentlit.models.checkpoints import load_backbone
from latentlit.rng import trajectory_keys
from latentlit.sampling import Deterministic, MCDropout
from latentlit.testing.checkpoints import write_tiny_colar
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = [
    "Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?",
    "Tom has 55 books . buys 4 . loses 3 . gives away 2 . how many ?",
    "3",
]
IDS = ["q-a", "q-b", "q-c"]
ATTN = "transformer.h.0.attn"


@pytest.fixture()
def backbone():
    return tiny_backbone(num_latents=3)


@contextmanager
def attention_probs(backbone, sampler):
    """Record (phase, step, probs (R, H, S, K)) of layer 0's attention."""
    records = []
    module = dict(backbone.lm.named_modules())[ATTN]

    def hook(mod, inputs, output):
        ctx = getattr(sampler, "_ctx", None)
        records.append((ctx.phase if ctx else None, ctx.step if ctx else None, output[1].detach().clone()))

    handle = module.register_forward_hook(hook)
    try:
        yield records
    finally:
        handle.remove()


def _padded_logits(lm, ids, mask):
    with torch.no_grad():
        return lm(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_keyed_attention_is_exact_eager_outside_the_sampler(tmp_path, kind):
    backbone = tiny_backbone(num_latents=2) if kind == "gpt2" else load_backbone(write_tiny_colar(tmp_path / "colar"))
    lm = backbone.lm
    if kind == "llama-gqa":
        assert lm.config.num_key_value_heads < lm.config.num_attention_heads
    ids, mask = backbone.encode_prompts(["Ann has 18 stones . multiplies by 2 .", "3 ."])
    assert (mask == 0).any()  # left padding exercised
    reference = _padded_logits(lm, ids, mask)
    use_keyed_attention(lm)
    assert lm.config._attn_implementation == IMPLEMENTATION
    keyed = _padded_logits(lm, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(keyed[real], reference[real], atol=1e-5, rtol=1e-5)


def test_attention_dropout_rate_rescale_and_phases(backbone):
    p = 0.3
    sampler = MCDropout(p=0.0, attention_p=p, prefill="shared")
    assert sampler.stochastic
    keys = trajectory_keys(0, IDS, 16)
    with attention_probs(backbone, sampler) as dropped:
        backbone.generate(QUESTIONS, n_samples=16, sampler=sampler, keys=keys, max_new_tokens=2)
    with attention_probs(backbone, sampler) as plain:
        backbone.generate(QUESTIONS, n_samples=16, sampler=Deterministic(), keys=keys, max_new_tokens=2)
    # the shared prefill runs once per distinct prompt length (3 here), outside the sampler
    pre = len({len(r) for r in backbone.prompt_tokens(QUESTIONS)})
    assert pre == 3
    assert [(ph, st) for ph, st, _ in dropped] == [(None, None)] * pre + [("latent", 1), ("latent", 2), ("latent", 3),
                                                                          (None, None), (None, None)]
    assert sampler.describe()["attention_modules"] == 2
    for i in range(pre):
        torch.testing.assert_close(dropped[i][2], plain[i][2])  # the shared prefill is untouched
    for (_, _, a), (_, _, b) in zip(dropped[pre + 3:], plain[pre + 3:]):  # answer tokens: nothing dropped
        assert a.eq(0).sum() == b.eq(0).sum()
    # latent step 1 sees identical inputs in both runs, so dropped = plain * keep / (1 - p) exactly
    a, b = dropped[pre][2], plain[pre][2]
    visible = b > 0
    kept = a[visible] != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.03
    torch.testing.assert_close(a[visible][kept], b[visible][kept] / (1 - p))
    # masked (padded) keys stay at zero probability
    assert a[~visible].eq(0).all()


def test_attention_mask_scope(backbone):
    keys = trajectory_keys(0, IDS, 4)
    for scope, same in (("trajectory", True), ("step", False)):
        sampler = MCDropout(p=0.0, attention_p=0.4, mask_scope=scope, prefill="shared")
        with attention_probs(backbone, sampler) as rec:
            backbone.generate(QUESTIONS, n_samples=4, sampler=sampler, keys=keys, max_new_tokens=1)
        steps = [probs for ph, _, probs in rec if ph == "latent"]  # (R, H, 1, K_t), K grows by one per step
        k1 = steps[0].shape[-1]
        drops = [s[..., -1, :k1].eq(0) for s in steps]
        assert drops[0].any()
        assert all(torch.equal(d, drops[0]) for d in drops) == same, scope
        assert not torch.equal(drops[0][0], drops[0][1])  # samples of one question differ


def test_attention_dropout_independent_of_batch_and_padding(backbone):
    from latentlit.search.nway import sample_questions

    make = lambda: MCDropout(p=0.0, attention_p=0.3, prefill="per_sample")  # noqa: E731
    ref = sample_questions(backbone, make(), IDS, QUESTIONS, 3, 5, max_new_tokens=2)
    # alone, the short question has no left padding; in the batch it has a lot
    alone = sample_questions(backbone, make(), IDS[2:], QUESTIONS[2:], 3, 5, max_new_tokens=2)
    torch.testing.assert_close(alone[0].latents, ref[2].latents, atol=1e-5, rtol=1e-5)
    assert alone[0].texts == ref[2].texts
    assert not torch.allclose(ref[0].latents[0], ref[0].latents[1])


def test_attention_dropout_on_llama(tmp_path):
    backbone = load_backbone(write_tiny_colar(tmp_path / "colar"))
    sampler = MCDropout(p=0.0, attention_p=0.3, prefill="shared")
    keys = trajectory_keys(0, IDS[:1], 3)
    out = backbone.generate(QUESTIONS[:1], n_samples=3, sampler=sampler, keys=keys, max_new_tokens=2)
    assert sampler.attention_names == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert not torch.allclose(out.latents[0], out.latents[1])


def test_attention_dropout_validation(backbone):
    with pytest.raises(ValueError, match="attention_p"):
        MCDropout(attention_p=1.0)
    with pytest.raises(ValueError, match="attention_targets"):
        MCDropout(attention_p=0.1, attention_targets=["*.nothing"]).bind(backbone)
    with pytest.raises(ValueError, match=r"not attention modules.*transformer.h.0.mlp \(GPT2MLP\)"):
        MCDropout(attention_p=0.1, attention_targets=["*.mlp"]).bind(backbone)
    with pytest.warns(UserWarning, match="attention_p is 0"):
        MCDropout(attention_targets=["*.attn"])
    assert not MCDropout(p=0.0).stochastic
