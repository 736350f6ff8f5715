"""LatentBackbone: batching invariance, cached loop vs full recomputation, save/load, training."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT
from latentlit.models.backbone import LatentBackbone, blocked_linear, length_buckets
from latentlit.models.checkpoints import load_backbone, save_backbone
from latentlit.testing.tiny import tiny_backbone

SHORT_Q = "3"
LONG_Q = " ".join(["Tom has 55 books . buys 4 . loses 3 . gives away 2 ."] * 4) + " how many ?"


@pytest.fixture(scope="module")
def backbone() -> LatentBackbone:
    return tiny_backbone(num_latents=3)


def test_question_lengths(backbone):
    ids, mask = backbone.encode_prompts([SHORT_Q, LONG_Q])
    lengths = mask.sum(1).tolist()
    assert lengths[0] == 2  # "3 <|start-latent|>"
    assert 55 <= lengths[1] <= 70
    # left padding: the short row is padded at the front, both end with <|start-latent|>
    assert ids[0, : ids.shape[1] - 2].eq(backbone.latent_config.pad_id).all()
    assert ids[:, -1].eq(backbone.latent_config.start_latent_id).all()


def test_batch_equals_single(backbone):
    both = backbone.generate([SHORT_Q, LONG_Q], max_new_tokens=5)
    for row, q in enumerate([SHORT_Q, LONG_Q]):
        alone = backbone.generate([q], max_new_tokens=5)
        assert alone.latents.shape == (1, 3, backbone.hidden_size)
        assert (both.latents[row] - alone.latents[0]).abs().max() < 1e-5
        assert (both.first_logits[row] - alone.first_logits[0]).abs().max() < 1e-5
        width = alone.answer_ids.shape[1]
        assert both.answer_ids[row, :width].tolist() == alone.answer_ids[0].tolist()
        # columns past the single run's length can only be padding (the other row went on)
        assert both.answer_ids[row, width:].eq(backbone.latent_config.pad_id).all()
        assert both.answers_text[row] == alone.answers_text[0]


def test_blocked_linear_equals_linear():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 5, 16, generator=g), torch.randn(4100, 16, generator=g), torch.randn(4100, generator=g)
    for bias in (b, None):
        out = blocked_linear(x, w, bias, 1000)
        assert out.shape == (3, 5, 4100)
        torch.testing.assert_close(out, torch.nn.functional.linear(x, w, bias), atol=1e-6, rtol=1e-6)


def test_length_buckets():
    lengths = [10, 58, 57, 100, 95, 58, 30, 91]
    assert length_buckets(lengths, 0.0) == [[3], [4], [7], [1, 5], [2], [6], [0]]
    assert length_buckets(lengths, 0.1) == [[3, 4, 7], [1, 2, 5], [6], [0]]  # rows >= 90% of the bucket's longest
    assert length_buckets([100, 89, 90], 0.1) == [[0, 2], [1]]
    assert length_buckets(lengths, 1.0) == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert length_buckets([], 0.1) == []
    with pytest.raises(ValueError, match="max_padding"):
        length_buckets(lengths, 1.5)


@torch.no_grad()
def test_prefill_by_length_equals_one_padded_batch():
    """Prompts prefilled in length buckets (no computation on padding) give the state and the
    trajectories of one left-padded batch, with keyed per-sample dropout in the prefill."""
    from latentlit.rng import trajectory_keys
    from latentlit.sampling import MCDropout

    bb = tiny_backbone(num_latents=3)
    questions = [SHORT_Q, "Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", LONG_Q, "4 ."]
    rows = bb.prompt_tokens(questions)
    keys = trajectory_keys(0, list("abcd"), 1)
    sampler = MCDropout(p=0.3, prefill="per_sample")
    sampler.bind(bb)
    states, tokens = {}, {}
    for max_padding in (0.0, 1.0):
        bb.prefill_max_padding = max_padding
        start = bb.forward_tokens
        states[max_padding] = bb.prefill_rows(rows, sampler=sampler, keys=keys, room=4)
        tokens[max_padding] = bb.forward_tokens - start
    bucketed, padded = states[0.0], states[1.0]
    assert tokens[0.0] == sum(len(r) for r in rows) < tokens[1.0] == len(rows) * max(len(r) for r in rows)
    assert torch.equal(bucketed.attention_mask, padded.attention_mask)
    assert torch.equal(bucketed.next_position, padded.next_position)
    assert (bucketed.hidden - padded.hidden).abs().max() < 1e-5
    real = padded.attention_mask.bool()
    for a, b in zip(bucketed.cache.layers, padded.cache.layers):
        assert a.keys.shape == b.keys.shape
        assert (a.keys.transpose(1, 2)[real] - b.keys.transpose(1, 2)[real]).abs().max() < 1e-5
        assert (a.values.transpose(1, 2)[real] - b.values.transpose(1, 2)[real]).abs().max() < 1e-5
        assert a.keys.transpose(1, 2)[~real].eq(0).all()  # padding: zeros (masked)
    # and whole runs: per-sample MC-dropout (padding-dependent positions) gives the same answers
    outs = {}
    for max_padding in (0.0, 1.0):
        bb.prefill_max_padding = max_padding
        outs[max_padding] = bb.generate(questions, n_samples=3, sampler=sampler,
                                        keys=trajectory_keys(0, list("abcd"), 3), max_new_tokens=4)
    bb.prefill_max_padding = 0.1
    assert (outs[0.0].latents - outs[1.0].latents).abs().max() < 1e-5
    assert torch.equal(outs[0.0].answer_ids, outs[1.0].answer_ids)


def _reference_loop(backbone: LatentBackbone, questions: list[str], t: int):
    """Recompute the whole sequence from scratch at every step (no cache, explicit positions)."""
    cfg = backbone.latent_config
    ids, mask = backbone.encode_prompts(questions)
    embeds = backbone.embed(ids)
    latents = []
    base = backbone.lm.base_model
    for _ in range(t + 1):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        hidden = base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
        latent = backbone.latent_head(hidden[:, -1])
        latents.append(latent)
        embeds = torch.cat([embeds, latent[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    latents = torch.stack(latents[:t], 1)
    # drop the (t+1)-th latent again, feed <|end-latent|> instead
    embeds = torch.cat([embeds[:, :-1], backbone.embed(torch.full_like(ids[:, :1], cfg.end_latent_id))], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    hidden = base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    return latents, backbone.logits(hidden[:, -1]).float()


@torch.no_grad()
def test_cached_loop_equals_full_recomputation(backbone):
    questions = [SHORT_Q, "Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", LONG_Q]
    out = backbone.generate(questions, max_new_tokens=2)
    ref_latents, ref_logits = _reference_loop(backbone, questions, 3)
    assert out.latents.shape == ref_latents.shape == (3, 3, backbone.hidden_size)
    assert (out.latents - ref_latents).abs().max() < 1e-5
    assert (out.first_logits - ref_logits).abs().max() < 1e-5
    # the latents are real hidden states, not zeros, and differ between steps
    assert out.latents.abs().min(-1).values.max() > 0
    assert (out.latents[:, 0] - out.latents[:, 1]).abs().max() > 1e-3


def test_save_load_round_trip(backbone, tmp_path):
    path = tmp_path / "bb"
    save_backbone(backbone, path)
    section = json.loads((path / "config.json").read_text())["latentlit"]
    tok = backbone.tokenizer
    assert section["num_latents"] == 3
    assert section["start_latent_id"] == tok.convert_tokens_to_ids(START_LATENT)
    assert section["latent_id"] == tok.convert_tokens_to_ids(LATENT)
    assert section["end_latent_id"] == tok.convert_tokens_to_ids(END_LATENT)
    assert len({section["start_latent_id"], section["latent_id"], section["end_latent_id"]}) == 3

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same T: no warning
        loaded = load_backbone(path)
    assert loaded.latent_config == backbone.latent_config
    questions = [SHORT_Q, LONG_Q]
    a = backbone.generate(questions, n_samples=2, max_new_tokens=4)
    b = loaded.generate(questions, n_samples=2, max_new_tokens=4)
    assert torch.equal(a.latents, b.latents)
    assert torch.equal(a.first_logits, b.first_logits)
    assert torch.equal(a.answer_ids, b.answer_ids)
    assert a.answers_text == b.answers_text


def test_different_num_latents_warns(backbone, tmp_path):
    path = tmp_path / "bb"
    save_backbone(backbone, path)
    with pytest.warns(UserWarning, match=r"num_latents=5.*num_latents=3"):
        loaded = load_backbone(path, num_latents=5)
    assert loaded.latent_config.num_latents == 5
    assert loaded.generate([SHORT_Q], max_new_tokens=1).latents.shape[1] == 5

    other = load_backbone(path)
    with pytest.warns(UserWarning, match=r"num_latents=1.*num_latents=3"):
        other.set_num_latents(1)
    assert other.generate([SHORT_Q], max_new_tokens=1).latents.shape[1] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_backbone(path).set_num_latents(3)


class _Recorder(nn.Module):
    """Identity f that keeps every latent it produced (with retained gradients)."""

    def __init__(self, detach: bool = False):
        super().__init__()
        self.detach = detach
        self.outputs: list[torch.Tensor] = []

    def forward(self, h):
        out = h.detach() if self.detach else h * 1.0
        if out.requires_grad:
            out.retain_grad()
        self.outputs.append(out)
        return out


def _train_batch(backbone):
    from latentlit.data.curriculum import build_stage_batch, tokenize_problem
    from latentlit.data.synthetic import generate_problems

    cfg = backbone.latent_config
    problems = generate_problems(4, 123)
    toks = [tokenize_problem(p, backbone.tokenizer, cfg.prompt_template, cfg.eos_id) for p in problems]
    return toks, build_stage_batch(toks, 2, 1, cfg.end_latent_id, cfg.pad_id)


def _question_embedding_grad(detach: bool):
    bb = tiny_backbone(num_latents=3)
    bb.latent_head = _Recorder(detach)
    toks, batch = _train_batch(bb)
    loss, n = bb.forward_train(batch["prompt_ids"], batch["prompt_mask"], batch["num_latents"], batch["suffix_ids"], batch["suffix_mask"])
    (loss / n).backward()
    return bb, toks, batch, loss, n


def test_forward_train_gradients_through_latent_chain():
    bb, toks, batch, loss, n = _question_embedding_grad(detach=False)
    assert batch["num_latents"] == 2
    assert torch.isfinite(loss) and loss > 0
    # targets: every suffix token after <|end-latent|>
    expected = sum(sum(len(s) for s in t.steps[2:]) + len(t.answer) for t in toks)
    assert int(n) == expected == int(batch["suffix_mask"].sum()) - len(toks)
    # each latent fed into the chain receives a gradient
    assert len(bb.latent_head.outputs) == 2
    for latent in bb.latent_head.outputs:
        assert latent.grad is not None and latent.grad.abs().sum() > 0
    q_ids = torch.unique(batch["prompt_ids"][batch["prompt_mask"].bool()])
    grad = bb.lm.get_input_embeddings().weight.grad
    assert grad[q_ids].abs().sum(-1).gt(0).all()

    # cutting the chain (f detached) changes the question tokens' gradients: part of them flows
    # through the latents
    bb2, _, _, loss2, _ = _question_embedding_grad(detach=True)
    assert torch.allclose(loss, loss2)  # same forward values
    grad2 = bb2.lm.get_input_embeddings().weight.grad
    assert (grad[q_ids] - grad2[q_ids]).abs().max() > 1e-6


def test_forward_train_with_own_lengths_equals_rows_alone_and_trains_the_stop():
    """Per-row latent counts: a batch's loss is the sum of its rows' losses run alone; the stop
    targets add the LM head's cross-entropy at each decision position (hand-built here)."""
    import torch.nn.functional as F

    from latentlit.data.curriculum import build_stage_batch, tokenize_problem
    from latentlit.data.synthetic import generate_problems
    from latentlit.testing.tiny import tiny_llama_backbone

    bb = tiny_llama_backbone()
    cfg = bb.latent_config
    toks = [tokenize_problem(p, bb.tokenizer, cfg.prompt_template, cfg.eos_id) for p in generate_problems(3, seed=11)]
    batch = build_stage_batch(toks, 3, 1, cfg.end_latent_id, cfg.pad_id, dynamic=True)
    lengths = batch["num_latents"]
    assert lengths.tolist() == [min(3, len(t.steps)) for t in toks] and len(set(lengths.tolist())) > 1
    with torch.no_grad():
        loss, count = bb.forward_train(batch["prompt_ids"], batch["prompt_mask"], lengths, batch["suffix_ids"],
                                       batch["suffix_mask"])
        alone = [bb.forward_train(*(build_stage_batch([t], min(3, len(t.steps)), 1, cfg.end_latent_id, cfg.pad_id)[k]
                                    for k in ("prompt_ids", "prompt_mask", "num_latents", "suffix_ids", "suffix_mask")))
                 for t in toks]
        assert loss.item() == pytest.approx(sum(x[0].item() for x in alone), rel=1e-5)
        assert int(count) == sum(int(x[1]) for x in alone)
        stop_loss, stop_count = bb.forward_train(batch["prompt_ids"], batch["prompt_mask"], lengths, batch["suffix_ids"],
                                                 batch["suffix_mask"], stop_targets=True)
        # by hand, row by row: h_0 .. h_{n-1} -> <|latent|>, h_n -> <|end-latent|>
        extra = 0.0
        for i, t in enumerate(toks):
            ids, mask = batch["prompt_ids"][i:i + 1], batch["prompt_mask"][i:i + 1]
            state = bb.prefill(ids, mask)
            hidden = [state.hidden]
            for step in range(1, int(lengths[i]) + 1):
                state, _ = bb.latent_step(state, step, active=torch.tensor([True]))
                hidden.append(state.hidden)
            targets = torch.tensor([cfg.latent_id] * int(lengths[i]) + [cfg.latent_stop_id])
            extra += F.cross_entropy(bb.logits(torch.cat(hidden)).float(), targets, reduction="sum").item()
    assert stop_loss.item() == pytest.approx(loss.item() + extra, rel=1e-5)
    assert int(stop_count) == int(count) + int(lengths.sum()) + len(toks)
