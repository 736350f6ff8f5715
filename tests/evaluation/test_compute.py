"""Compute accounting: token positions and FLOPs counted from records equal what runs.

The backbone's own ``forward_tokens`` counter and torch's ``FlopCounterMode`` (eager attention, so
QK^T and AV are counted as matmuls) measure a real run of one question; the count from the
record's sizes must equal both exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latentlit.evaluation.compute import Cost, CostModel, ModelShape, backbone_shape, rm_shape
from latentlit.evaluation.report import adaptive_rows
from latentlit.models.backbone import answer_positions
from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer
from latentlit.sampling import AGN, MCDropout
from latentlit.search.beam_search import latent_beam_search
from latentlit.search.nway import sample_questions
from latentlit.testing.tiny import tiny_backbone

QUESTION = "Leo has 4 apples . gives away 2 . how many ?"


@pytest.fixture(scope="module")
def backbone():
    bb = tiny_backbone(num_latents=3)
    bb.lm.set_attn_implementation("eager")
    return bb


def _measure(bb, fn):
    before = bb.forward_tokens
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, bb.forward_tokens - before, counter.get_total_flops()


def _prompt(bb) -> int:
    return int(bb.encode_prompts([QUESTION])[1].sum())


def test_greedy_count_equals_measured(backbone):
    out, tokens, flops = _measure(backbone, lambda: backbone.generate([QUESTION], max_new_tokens=5))
    a = answer_positions(out.answer_ids, backbone.latent_config.eos_id, 5)
    record = {"compute": {"prompt": _prompt(backbone), "latents": [3], "answers": a, "greedy": [3, a[0]]}}
    cost = CostModel(backbone_shape(backbone)).greedy(record)
    assert cost.backbone_tokens == tokens and cost.flops == flops and flops > 0


@pytest.mark.parametrize("sampler,shared", [(MCDropout(p=0.2), False), (AGN(sigma=0.5), True)])
def test_sampling_count_equals_measured(backbone, sampler, shared):
    n = 3
    samples, tokens, flops = _measure(backbone, lambda: sample_questions(
        backbone, sampler, ["q0"], [QUESTION], n, seed=0, max_new_tokens=4))
    s = samples[0]
    # every row decoded all 4 steps (no eos), so no finished row was carried along
    assert s.answer_positions == [4, 4, 4]
    record = {"compute": {"prompt": _prompt(backbone), "latents": s.latent_mask.sum(1).tolist(),
                          "answers": s.answer_positions, "greedy": [3, 4]}}
    model = CostModel(backbone_shape(backbone), shared_prefill=shared)
    cost = model.samples(record, n)
    assert cost.backbone_tokens == tokens and cost.flops == pytest.approx(flops, rel=1e-12)
    # k < N: the prefill once (shared) or per trajectory, plus k trajectories
    one = model.samples(record, 1)
    p = record["compute"]["prompt"]
    assert one.backbone_tokens == (p + 7 if shared else p + 7)
    assert model.samples(record, 2).backbone_tokens == (p + 14 if shared else 2 * (p + 7))
    assert [c.backbone_tokens for c in model.spent("samples", record, [1, 2, 3])] == \
        [model.samples(record, k).backbone_tokens for k in (1, 2, 3)]


def test_rm_scoring_and_beam_search_counts_equal_measured(backbone):
    rm = LatentRM.from_backbone(backbone, seed=0).eval()
    rm.transformer.set_attn_implementation("eager")
    model = CostModel(backbone_shape(backbone), rm_shape(rm), shared_prefill=True)
    p_rm = int(rm.encode_prompts([QUESTION])[1].sum())
    latents = torch.randn(1, 4, 3, backbone.hidden_size)
    with FlopCounterMode(display=False) as counter:
        rm.score_groups([QUESTION], latents)
    record = {"compute": {"prompt": _prompt(backbone), "latents": [3] * 4, "answers": [4] * 4, "greedy": [3, 4],
                          "rm_prompt": p_rm}}
    scoring = model.rm_scoring(record, 4)
    assert scoring.flops == counter.get_total_flops() and scoring.rm_tokens == p_rm + 4 * 3  # the prompt once
    # linear in k from the prompt's cost: what accuracy-against-compute charges best-of-N at k
    assert [c.rm_tokens for c in model.spent("samples+rm", record, [1, 4])] == [p_rm + 3 * k for k in (1, 4)]
    repeated = CostModel(backbone_shape(backbone), rm_shape(rm), shared_prefill=True, rm_prompt_once=False)
    assert repeated.rm_scoring(record, 4).rm_tokens == 4 * (p_rm + 3)

    def beam():
        scorer = LatentRMStepScorer(rm, [QUESTION])
        return latent_beam_search(backbone, AGN(sigma=0.5), ["q0"], [QUESTION], scorer, beam_width=2, candidates=3,
                                  seed=0, max_new_tokens=4)

    results, tokens, flops = _measure(backbone, beam)
    assert results[0].beam_answer_positions == [4, 4]
    record["compute"]["beam_search"] = {"width": 2, "candidates": 3, "answers": results[0].beam_answer_positions,
                                        **results[0].compute}
    cost = model.beam_search(record)
    # prefill once; steps 2 and 3: 2 x 3 candidates feed their parent's latent; the 2 kept beams
    # feed their last one; 2 answers of 4 passes
    assert cost.backbone_tokens == tokens == record["compute"]["prompt"] + 6 * 2 + 2 + 2 * 4
    assert cost.rm_tokens == p_rm + 6 * 3  # one RM position per proposed latent
    assert cost.flops == pytest.approx(flops, rel=1e-12)


@pytest.mark.parametrize("prefill", ["shared", "per_sample"])
def test_dvts_count_equals_measured(backbone, prefill):
    """DVTS under MC-dropout: per-sample prefill prefills every step-1 candidate."""
    from latentlit.search.beam_search import dvts

    model = CostModel(backbone_shape(backbone), shared_prefill=prefill == "shared")
    results, tokens, flops = _measure(backbone, lambda: dvts(
        backbone, MCDropout(p=0.2, prefill=prefill), ["q0"], [QUESTION],
        HistoryScorerForCount(), budget=4, width=2, seed=0, max_new_tokens=4))
    r = results[0]
    record = {"compute": {"prompt": _prompt(backbone), "latents": [3] * 4, "answers": [4] * 4, "greedy": [3, 4],
                          "dvts": {"width": 1, "candidates": 2, "subtrees": 2, "answers": r.beam_answer_positions,
                                   **r.compute}}}
    cost = model.beam_search(record, "dvts")
    prefills = 1 if prefill == "shared" else 4
    assert r.compute["prefills"] == prefills and r.compute["fed"] == [4, 4, 2] and r.compute["proposed"] == [4, 4, 4]
    assert cost.backbone_tokens == tokens == prefills * record["compute"]["prompt"] + 4 + 4 + 2 + sum(r.beam_answer_positions)
    assert cost.flops == pytest.approx(flops, rel=1e-12)


class HistoryScorerForCount:
    """A scorer that runs nothing through a transformer (so the counts are the backbone's alone)."""

    def reset(self, owners):
        self._n = len(owners)

    def extend(self, parents, latents, active=None):
        return latents[:, 0].float()


def test_shapes_and_answer_positions(backbone):
    shape = backbone_shape(backbone)
    # 2 blocks of GPT-2 width 32: c_attn 32x96, c_proj 32x32, c_fc 32x128, mlp c_proj 128x32
    assert shape.matrix_params == 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert (shape.n_layer, shape.d_model, shape.head_params) == (2, 32, 0)
    assert shape.vocab == len(backbone.tokenizer)
    ids = torch.tensor([[5, 7, 2, 0], [5, 5, 5, 5], [2, 0, 0, 0]])
    assert answer_positions(ids, eos_id=2, max_new_tokens=6) == [3, 6, 1]
    s = ModelShape(matrix_params=10, n_layer=1, d_model=2)
    # one pass of 3 positions: 2 x 10 x 3 + 4 x 1 x 2 x 3 x 3; steps at contexts 4 and 5: 2 x 10 x 2 + 4 x 2 x 9
    assert s.pass_flops(3) == 60 + 72 and s.steps_flops(3, 2) == 40 + 72


def test_adaptive_points_use_the_fixed_run_cost_of_their_trajectories():
    model = CostModel(ModelShape(matrix_params=10, n_layer=1, d_model=2), shared_prefill=True)
    records = [{"compute": {"prompt": 5, "latents": [2, 2], "answers": [3, 1], "greedy": [2, 2]}}]
    adaptive = {"leader_safe": {"0": {"accuracy": 0.6, "mean_trajectories": 1.5, "median_trajectories": 1}},
                "bad": {"0.9": {"accuracy": "x"}}}
    with pytest.warns(UserWarning, match="lacks accuracy"):
        rows = adaptive_rows(adaptive, records, model)
    assert len(rows) == 1
    r = rows[0]
    assert r["method"] == "adaptive:leader_safe" and r["trajectories"] == 1.5 and r["estimated"] is True
    # prefill 5 once + 1.5 x mean trajectory (2 + 3 and 2 + 1 -> 4 positions)
    assert r["backbone_tokens"] == pytest.approx(5 + 1.5 * 4)
    assert Cost(1, 2, 3) + Cost(1, 1, 1) == Cost(2, 3, 4) and (Cost(1, 2, 3) * 2).tokens == 6
