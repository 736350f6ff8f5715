"""Samplers: Deterministic, AGN, MC-dropout; keyed randomness and its invariances."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from latentlit.models.backbone import LatentBackbone
from latentlit.rng import hash_ints, keep_threshold, keyed_keep, keyed_normal, keyed_uniform, trajectory_keys
from latentlit.sampling import AGN, Deterministic, MCDropout
from latentlit.search.nway import sample_questions
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = [
    "Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?",
    "3",
    "Tom has 55 books . buys 4 . loses 3 . gives away 2 . how many ?",
]
IDS = ["q-a", "q-b", "q-c"]


@pytest.fixture(scope="module")
def backbone() -> LatentBackbone:
    return tiny_backbone(num_latents=3)


@contextmanager
def capture(backbone, names, sampler=None):
    """Record (phase, step, output) of modules ``names``; register after binding ``sampler`` so
    the recorded output is the one after the sampler's own hook."""
    if sampler is not None:
        sampler.bind(backbone)
    modules = dict(backbone.lm.named_modules())
    records = {n: [] for n in names}
    handles = []

    def make(name):
        def hook(module, inputs, output):
            ctx = getattr(sampler, "_ctx", None)
            records[name].append((ctx.phase if ctx else None, ctx.step if ctx else None, output.detach().clone()))
        return hook

    for n in names:
        handles.append(modules[n].register_forward_hook(make(n)))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def _copy(state):
    return state.select(torch.arange(state.rows))


# ---------------------------------------------------------------------- deterministic
def test_deterministic_n_identical_trajectories(backbone):
    greedy = backbone.generate(QUESTIONS, max_new_tokens=4)
    out = backbone.generate(QUESTIONS, n_samples=4, sampler=Deterministic(), max_new_tokens=4)
    assert out.latents.shape == (12, 3, backbone.hidden_size)
    expected = greedy.latents.repeat_interleave(4, 0)
    assert (out.latents - expected).abs().max() < 1e-6
    assert out.answers_text == [t for t in greedy.answers_text for _ in range(4)]
    assert torch.equal(out.answer_ids, greedy.answer_ids.repeat_interleave(4, 0))
    assert not Deterministic().stochastic


# ---------------------------------------------------------------------- AGN
def _latents(rows=4096, d=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d, generator=g) * 3.0 + 0.5
    assert (x != 0).all()
    return x


def test_agn_absolute_std():
    x = _latents()
    keys = torch.arange(x.shape[0], dtype=torch.int64) * 7919 + 11
    for sigma in (0.5, 2.0):
        diff = AGN(sigma=sigma, relative=False).perturb(x, keys, 1) - x
        assert abs(diff.std().item() / sigma - 1) < 0.02
        assert abs(diff.mean().item()) < 0.02 * sigma


def test_agn_relative_std():
    x = _latents()
    x = x * torch.logspace(-3, 2, x.shape[0])[:, None]  # row scales over five orders of magnitude
    keys = torch.arange(x.shape[0], dtype=torch.int64)
    sigma = 0.3
    diff = AGN(sigma=sigma, relative=True).perturb(x, keys, 2) - x
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    assert abs((diff / rms).std().item() / sigma - 1) < 0.02
    # per-row scale follows the row's RMS (small rows get small noise)
    assert diff[:100].abs().max() < diff[-100:].abs().mean()


def test_agn_keys_and_steps():
    x = _latents(8, 64)
    agn = AGN(sigma=1.0, relative=False)
    keys = torch.arange(8, dtype=torch.int64)
    a = agn.perturb(x, keys, 1)
    assert torch.equal(a, agn.perturb(x.clone(), keys.clone(), 1))  # same keys, same noise
    b = agn.perturb(x, keys + 100, 1)
    assert not torch.isclose(a, b).all(-1).any()  # every row's noise changed
    c = agn.perturb(x, keys, 2)
    assert not torch.isclose(a, c).all(-1).any()  # another step, other noise
    # rows are independent: row i's noise depends only on key i
    assert torch.equal(agn.perturb(x[3:4], keys[3:4], 1), a[3:4])
    # distinct rows get distinct noise
    assert not torch.isclose(a[0] - x[0], a[1] - x[1]).all()


def test_agn_validation_and_zero_sigma():
    x = _latents(4, 8)
    assert torch.equal(AGN(sigma=0.0).perturb(x, torch.arange(4), 1), x)
    assert not AGN(sigma=0.0).stochastic and AGN(sigma=0.1).stochastic
    with pytest.raises(ValueError, match="sigma"):
        AGN(sigma=-0.1)


def test_agn_requires_keys(backbone):
    with pytest.raises(ValueError, match="keys"):
        backbone.generate(QUESTIONS[:1], n_samples=2, sampler=AGN(sigma=1.0))
    with pytest.raises(ValueError, match="shape"):
        backbone.generate(QUESTIONS[:1], n_samples=2, sampler=AGN(sigma=1.0), keys=torch.arange(3))


# ---------------------------------------------------------------------- MC-dropout
TARGET = "transformer.h.0.mlp.dropout"


def test_mc_dropout_zero_fraction_only_in_latent_steps(backbone):
    p = 0.3
    sampler = MCDropout(p=p, prefill="shared")
    keys = trajectory_keys(0, IDS, 32)
    lengths = sorted({len(r) for r in backbone.prompt_tokens(QUESTIONS)}, reverse=True)
    assert len(lengths) == 3  # prefilled by length: one forward pass per distinct prompt length
    with capture(backbone, [TARGET, "transformer.h.1.attn.resid_dropout"], sampler) as rec:
        backbone.generate(QUESTIONS, n_samples=32, sampler=sampler, keys=keys, max_new_tokens=3)
    for name, calls in rec.items():
        phases = [ph for ph, _, _ in calls]
        assert phases.count("latent") == 3
        assert phases.count(None) >= 4  # prefill (shared) and answer tokens run outside the scope
        inside = torch.cat([o.flatten() for ph, _, o in calls if ph == "latent"])
        outputs = [o for ph, _, o in calls if ph is None]
        prefill, answer = outputs[:3], outputs[3:]
        # the shared prefill: one row per question, no padding
        assert [tuple(o.shape[:2]) for o in prefill] == [(1, n) for n in lengths]
        outside = torch.cat([o.flatten() for o in prefill + answer])
        assert inside.numel() == 96 * 3 * backbone.hidden_size
        assert outside.numel() >= (sum(lengths) + 96 * 2) * backbone.hidden_size
        assert outside.eq(0).sum() == 0  # inputs have no exact zeros, and nothing is dropped outside
        frac = inside.eq(0).float().mean().item()
        assert abs(frac - p) < 0.03, (name, frac)


def test_mc_dropout_rescales_kept_units(backbone):
    p = 0.25
    sampler = MCDropout(p=p, prefill="shared", targets=[TARGET])
    ids, mask = backbone.encode_prompts(QUESTIONS)
    keys = trajectory_keys(0, IDS, 1)
    state = backbone.prefill(ids, mask)
    with capture(backbone, [TARGET], sampler) as rec:
        backbone.latent_step(_copy(state), 1, sampler=sampler, keys=keys)
        backbone.latent_step(_copy(state), 1, sampler=Deterministic(), keys=keys)
    (_, step, dropped), (_, _, plain) = rec[TARGET]
    assert step == 1
    keep = dropped != 0
    assert 0.5 < keep.float().mean() < 0.95
    torch.testing.assert_close(dropped[keep], plain[keep] / (1 - p))


def test_mc_dropout_shared_prefill_and_answer_untouched(backbone):
    sampler = MCDropout(p=0.3, prefill="shared")
    sampler.bind(backbone)
    ids, mask = backbone.encode_prompts(QUESTIONS)
    keys = trajectory_keys(0, IDS, 1)
    det = backbone.prefill(ids, mask)
    mc = backbone.prefill(ids, mask, sampler=sampler, keys=keys)
    assert torch.equal(mc.hidden, det.hidden)
    for a, b in zip(mc.cache.layers, det.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    # per_sample prefill is inside the scope: the prompt's hidden states change
    per_sample_sampler = MCDropout(p=0.3, prefill="per_sample")
    per_sample_sampler.bind(backbone)
    per_sample = backbone.prefill(ids, mask, sampler=per_sample_sampler, keys=keys)
    assert not torch.allclose(per_sample.hidden, det.hidden)

    # latent steps change the trajectory...
    state, latents, _ = backbone.run_latents(mc, sampler=sampler, keys=keys)
    _, det_latents, _ = backbone.run_latents(_copy(det), keys=keys)
    assert torch.equal(latents[:, 0], det_latents[:, 0])  # step 1 is fed from the shared prefill
    assert not torch.allclose(latents[:, 1:], det_latents[:, 1:])
    # ...but answer decoding from the same state is the deterministic one (on_answer=False)
    ids_mc, logits_mc = backbone.decode_answer(_copy(state), max_new_tokens=3, sampler=sampler, keys=keys, first_step=4)
    ids_det, logits_det = backbone.decode_answer(_copy(state), max_new_tokens=3, keys=keys, first_step=4)
    assert torch.equal(ids_mc, ids_det) and torch.equal(logits_mc, logits_det)
    on_answer = MCDropout(p=0.3, prefill="shared", on_answer=True)
    on_answer.bind(backbone)
    _, logits_on = backbone.decode_answer(_copy(state), max_new_tokens=3, sampler=on_answer, keys=keys, first_step=4)
    assert not torch.allclose(logits_on, logits_det)


def test_mc_dropout_only_targeted_modules(backbone):
    targeted = "transformer.h.0.attn.resid_dropout"
    untouched = ["transformer.drop", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.dropout",
                 "transformer.h.0.ln_2"]
    sampler = MCDropout(p=0.3, prefill="shared", targets=["*.h.0.attn.resid_dropout"])
    sampler.bind(backbone)
    assert sampler.target_names == [targeted]
    ids, mask = backbone.encode_prompts(QUESTIONS)
    keys = trajectory_keys(0, IDS, 1)
    state = backbone.prefill(ids, mask)
    for step in (1, 2, 3):
        with capture(backbone, [targeted, *untouched], sampler) as rec:
            mc_state, mc_latent = backbone.latent_step(_copy(state), step, sampler=sampler, keys=keys)
            det_state, det_latent = backbone.latent_step(_copy(state), step, keys=keys)
        assert torch.equal(mc_latent, det_latent)  # the same step input
        (_, _, dropped), (_, _, plain) = rec[targeted]
        assert not torch.equal(dropped, plain) and dropped.eq(0).any()
        # modules before the target see the same input and are not perturbed
        for name in ["transformer.drop", "transformer.h.0.attn.c_proj"]:
            (_, _, a), (_, _, b) = rec[name]
            assert torch.equal(a, b), name
        # modules after it see the perturbed residual stream but are not dropped themselves
        (_, _, a), (_, _, b) = rec["transformer.h.0.mlp.dropout"]
        assert not torch.equal(a, b) and a.eq(0).sum() == 0
        state = det_state


def test_mc_dropout_trajectory_mask_scope(backbone):
    p = 0.4
    keys = trajectory_keys(0, IDS, 4)
    for scope, same in (("trajectory", True), ("step", False)):
        sampler = MCDropout(p=p, mask_scope=scope, prefill="per_sample", targets=[TARGET])
        with capture(backbone, [TARGET], sampler) as rec:
            backbone.generate(QUESTIONS, n_samples=4, sampler=sampler, keys=keys, max_new_tokens=2)
        masks = [o[:, -1].eq(0) for ph, _, o in rec[TARGET] if ph == "latent"]  # (R, d) per step
        assert len(masks) == 3 and masks[0].any()
        assert all(torch.equal(m, masks[0]) for m in masks) == same, scope
        # rows of the same question have different masks
        assert not torch.equal(masks[0][0], masks[0][1])
        if scope == "trajectory":
            # one mask per trajectory: also every prompt position of the per-sample prefill
            # prefilled by length (one group per question here): the 4 rows of question 0
            length = len(backbone.prompt_tokens(QUESTIONS[:1])[0])
            (_, _, pre), = [r for r in rec[TARGET] if r[0] == "prefill" and r[2].shape[1] == length]
            assert pre.shape[0] == 4
            row = pre[0].eq(0)  # (L, d)
            assert all(torch.equal(row[i], masks[0][0]) for i in range(row.shape[0]))


def test_mc_dropout_validation(backbone):
    with pytest.raises(ValueError, match="match no module"):
        MCDropout(targets=["*.does_not_exist"]).bind(backbone)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MCDropout(p=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MCDropout(p=-0.1)
    with pytest.raises(ValueError, match="mask_scope"):
        MCDropout(mask_scope="token")
    with pytest.raises(ValueError, match="prefill"):
        MCDropout(prefill="sometimes")
    assert not MCDropout(p=0.0).stochastic
    sampler = MCDropout()
    sampler.bind(backbone)
    assert len(sampler.target_names) == 4  # 2 layers x (attn.resid_dropout, mlp.dropout)
    assert sampler.describe()["target_modules"] == 4


# ---------------------------------------------------------------------- keyed randomness
SAMPLERS = {
    "mc_per_sample": lambda: MCDropout(p=0.2, prefill="per_sample"),
    "mc_shared": lambda: MCDropout(p=0.2, prefill="shared"),
    "agn": lambda: AGN(sigma=1.0),
}


def _assert_same(a, b, atol=1e-5):
    assert a.latents.shape == b.latents.shape
    assert (a.latents - b.latents).abs().max() < atol
    assert torch.equal(a.latent_mask, b.latent_mask)
    assert a.texts == b.texts


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_same_seed_same_trajectories(backbone, kind):
    run = lambda seed: sample_questions(backbone, SAMPLERS[kind](), IDS, QUESTIONS, 4, seed, max_new_tokens=3)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x.latents, y.latents) and x.texts == y.texts
        assert not torch.allclose(x.latents, z.latents)
        # the N samples of a question differ from each other
        assert not torch.allclose(x.latents[0], x.latents[1])


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_independent_of_batch_and_chunking(backbone, kind):
    n = 4
    ref = sample_questions(backbone, SAMPLERS[kind](), IDS, QUESTIONS, n, 7, max_trajectories=1024, max_new_tokens=3)
    assert len(ref) == 3 and ref[0].latents.shape == (n, 3, backbone.hidden_size)
    # each question alone
    for i in range(3):
        alone = sample_questions(backbone, SAMPLERS[kind](), IDS[i:i + 1], QUESTIONS[i:i + 1], n, 7, max_new_tokens=3)
        _assert_same(alone[0], ref[i])
    # another batch composition / order
    other = sample_questions(backbone, SAMPLERS[kind](), [IDS[2], "q-x", IDS[0]],
                             [QUESTIONS[2], "Mia has 1 shells . buys 2 . how many ?", QUESTIONS[0]], n, 7, max_new_tokens=3)
    _assert_same(other[0], ref[2])
    _assert_same(other[2], ref[0])
    # chunking: whole questions per chunk (8 -> 2 questions), and sample chunks of one question (3, 1)
    for budget in (8, 3, 1):
        chunked = sample_questions(backbone, SAMPLERS[kind](), IDS, QUESTIONS, n, 7, max_trajectories=budget, max_new_tokens=3)
        for x, y in zip(chunked, ref):
            _assert_same(x, y)


def test_sample_questions_validation(backbone):
    with pytest.raises(ValueError):
        sample_questions(backbone, AGN(), IDS, QUESTIONS, 0, 0)
    with pytest.raises(ValueError):
        sample_questions(backbone, AGN(), IDS, QUESTIONS, 2, 0, max_trajectories=0)
    with pytest.raises(ValueError):
        sample_questions(backbone, AGN(), IDS[:2], QUESTIONS, 2, 0)


def test_trajectory_keys_layout():
    keys = trajectory_keys(3, ["a", "b"], 3)
    assert keys.shape == (6,) and keys.dtype == torch.int64
    assert len(set(keys.tolist())) == 6
    assert torch.equal(trajectory_keys(3, ["b"], 3), keys[3:])
    assert torch.equal(trajectory_keys(3, ["a"], 2, offset=1), keys[1:3])
    assert not torch.equal(trajectory_keys(4, ["a", "b"], 3), keys)


def test_keyed_uniform_and_normal():
    keys = torch.arange(64, dtype=torch.int64) - 32  # negative keys too
    u = keyed_uniform(keys, 5, 4096)
    assert u.shape == (64, 4096) and u.dtype == torch.float32
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005
    assert abs(u.var().item() - 1 / 12) < 0.002
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    assert torch.equal(u, keyed_uniform(keys, 5, 4096))
    assert not torch.equal(u, keyed_uniform(keys, 6, 4096))
    # explicit element indices equal to arange give the same numbers, others select them
    idx = torch.arange(4096).expand(64, -1)
    assert torch.equal(keyed_uniform(keys, 5, 4096, idx), u)
    assert torch.equal(keyed_uniform(keys, 5, 3, idx[:, 10:13]), u[:, 10:13])
    # rows are not correlated with each other
    assert not torch.equal(u[0], u[1])

    z = keyed_normal(keys, 9, 4096)
    assert torch.isfinite(z).all()
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1).float().mean().item() - 0.6827) < 0.005
    assert torch.equal(z, keyed_normal(keys, 9, 4096))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.2, 1 / 3, 0.5, 0.9, 1e-9, 3 / (1 << 24), 3.5 / (1 << 24), 0.9999999])
def test_keyed_keep_is_bit_identical_to_uniform_threshold(p):
    """The fast mask keeps exactly the elements ``keyed_uniform(...) >= p`` keeps (the published
    MC-dropout figures depend on which elements are dropped)."""
    g = torch.Generator().manual_seed(1)
    keys = torch.randint(-(1 << 62), 1 << 62, (9,), generator=g)
    width, counter = 40, hash_ints(3, 12, 5)
    pos = torch.randint(0, 300, (9, 7), generator=g)
    dims = torch.arange(width)
    index = pos[..., None] * width + dims  # (R, S, d): per position and unit (mask_scope "step")
    expected = keyed_uniform(keys, counter, 7 * width, index.reshape(9, -1)).reshape(9, 7, width) >= p
    for block in (None, 1, 100):
        assert torch.equal(keyed_keep(keys, counter, p, pos[..., None] * width, dims, block=block), expected)
    # one term only, with a broadcast row dimension (mask_scope "trajectory": per unit)
    expected = keyed_uniform(keys, counter, width, dims.expand(9, width)) >= p
    assert torch.equal(keyed_keep(keys, counter, p, dims.view(1, 1, width))[:, 0], expected)
    # the threshold is the first 24-bit draw that keyed_uniform maps to a value >= p
    k = keep_threshold(p)
    below = torch.tensor([max(k - 1, 0), k], dtype=torch.float32) * (1.0 / (1 << 24))
    assert bool(below[1] >= p) and (k == 0 or not bool(below[0] >= p))


def test_keyed_keep_rate_and_extremes():
    keys = torch.arange(256, dtype=torch.int64)
    keep = keyed_keep(keys, 7, 0.3, torch.arange(4096)[None])
    assert keep.shape == (256, 4096) and keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - 0.7) < 0.005
    assert keyed_keep(keys, 7, 0.0, torch.arange(8)[None]).all()
    with pytest.raises(ValueError, match="row dimension"):
        keyed_keep(keys, 7, 0.3, torch.arange(4096))
    assert keep_threshold(0.0) == 0 and keep_threshold(1.0) == 1 << 24
