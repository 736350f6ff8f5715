import math

import pytest
import torch

from latentlit.rng import derive_keys, question_key
from latentlit.sampling import AGN, MCDropout
from latentlit.search.beam_search import _BEAM_STREAM, HistoryScorer, latent_beam_search
from latentlit.testing.tiny import tiny_backbone

QUESTION = "Leo has 12 apples . buys 3 . how many ?"


def step_value(latent: torch.Tensor) -> torch.Tensor:
    """A hand-made deterministic per-step score: the first coordinate of the latent."""
    return latent[..., 0]


def _sum_of_steps(owners, hist):
    return step_value(hist).sum(-1)


def scorer():
    return HistoryScorer(_sum_of_steps)


def candidate_keys(qkey: int, t: int, slots: list[int]) -> torch.Tensor:
    base = derive_keys(torch.full((len(slots),), qkey, dtype=torch.long), _BEAM_STREAM, t)
    return derive_keys(base ^ torch.tensor(slots))


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(num_latents=2)


@pytest.mark.parametrize("beam_width,candidates", [(1, 3), (2, 2), (3, 2)])
@torch.no_grad()
def test_beam_search_finds_best_path_of_exhaustive_tree(backbone, beam_width, candidates):
    """Rebuild the whole search tree (T=2) through the public seams and check the winner."""
    sampler = AGN(sigma=2.0)
    sampler.bind(backbone)
    b, k = beam_width, candidates
    qkey = question_key(0, "q0")
    ids, mask = backbone.encode_prompts([QUESTION])
    root = backbone.prefill(ids, mask)
    # step 1: B identical roots, each expanded into K candidates: B*K distinct slots
    s1 = root.repeat_interleave(b * k)
    s1, h1 = backbone.latent_step(s1, 1, sampler=sampler, keys=candidate_keys(qkey, 1, list(range(b * k))))
    v1 = step_value(h1)
    order = sorted(range(b * k), key=lambda s: (-float(v1[s]), s))[:b]
    # step 2: every kept beam (in rank order) expanded into K children
    parents = s1.select(torch.tensor(order)).repeat_interleave(k)
    s2, h2 = backbone.latent_step(parents, 2, sampler=sampler, keys=candidate_keys(qkey, 2, list(range(b * k))))
    total = v1[torch.tensor(order)].repeat_interleave(k) + step_value(h2)
    best = int(torch.argmax(total))
    expected_latents = torch.stack([h1[order[best // k]], h2[best]])

    result = latent_beam_search(backbone, sampler, ["q0"], [QUESTION], scorer(), beam_width=b, candidates=k, seed=0,
                                max_new_tokens=3)[0]
    assert result.score == pytest.approx(float(total.max()), abs=1e-5)
    assert torch.allclose(result.latents, expected_latents, atol=1e-5)
    assert result.beam_scores == sorted(result.beam_scores, reverse=True)
    assert len(result.beam_texts) == b


def test_beam_search_is_batch_invariant(backbone):
    sampler = AGN(sigma=1.0)
    alone = latent_beam_search(backbone, sampler, ["q1"], ["Sam has 9 books . loses 4 . how many ?"], scorer(),
                               beam_width=2, candidates=2, max_new_tokens=3)[0]
    both = latent_beam_search(backbone, sampler, ["q0", "q1"], [QUESTION, "Sam has 9 books . loses 4 . how many ?"],
                              scorer(), beam_width=2, candidates=2, max_new_tokens=3)[1]
    assert torch.allclose(alone.latents, both.latents, atol=1e-5)
    assert alone.text == both.text


def test_beam_search_rejects_bad_sizes(backbone):
    with pytest.raises(ValueError, match="beam_width"):
        latent_beam_search(backbone, AGN(), ["q"], [QUESTION], scorer(), beam_width=0, candidates=2)


@torch.no_grad()
def test_non_finite_scores_never_win_beam_search(backbone):
    """A scorer that gives NaN to the best candidate and +inf to another: both rank as -inf, the
    finite ones win, and the result counts them."""
    sampler = AGN(sigma=2.0)

    def poisoned(owners, hist):
        s = step_value(hist).sum(-1).clone()
        s[0] = float("nan")
        s[1] = float("inf")
        return s

    clean = latent_beam_search(backbone, sampler, ["q0"], [QUESTION], HistoryScorer(_sum_of_steps), beam_width=2,
                               candidates=3, seed=0, max_new_tokens=3)[0]
    result = latent_beam_search(backbone, sampler, ["q0"], [QUESTION], HistoryScorer(poisoned), beam_width=2,
                                candidates=3, seed=0, max_new_tokens=3)[0]
    assert math.isfinite(result.score)
    assert all(math.isfinite(x) for x in result.beam_scores)
    assert result.nonfinite == 2 * backbone.latent_config.num_latents  # rows 0 and 1 at each of T steps
    assert clean.nonfinite == 0

    def all_nan(owners, hist):
        return torch.full((hist.shape[0],), float("nan"))

    none = latent_beam_search(backbone, sampler, ["q0"], [QUESTION], HistoryScorer(all_nan), beam_width=2,
                              candidates=3, seed=0, max_new_tokens=3)[0]
    assert none.score == float("-inf") and none.nonfinite == 6 * backbone.latent_config.num_latents


# ---------------------------------------------------------------- dynamic latent length, DVTS
from latentlit.search.beam_search import _select, dvts  # noqa: E402
from latentlit.testing.tiny import tiny_llama_backbone  # noqa: E402

QUESTIONS = [QUESTION, "Sam has 9 books . loses 4 . how many ?", "Eva has 20 pens . divides by 2 . buys 5 . how many ?"]


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_backbone()


def test_select_puts_valid_first_then_score_then_slot():
    inf = float("inf")
    scores = torch.tensor([[3.0, -inf, 5.0, 1.0, 3.0], [-inf, -inf, 2.0, -inf, 0.0]])
    valid = torch.tensor([[True, True, False, True, True], [True, False, False, True, False]])
    # row 0: 5.0 is invalid (a finished beam's spare child); 3.0 at slots 0 and 4 tie -> slot 0 first
    assert _select(scores, valid, 3).tolist()[0] == [0, 4, 3]
    # row 1: the valid -inf entries (empty trajectories) come before any invalid one, by slot
    assert _select(scores, valid, 2).tolist()[1] == [0, 3]


def _score(latents, value=step_value):
    return float(value(torch.stack(latents)).sum()) if latents else float("-inf")


def penalty(latent: torch.Tensor) -> torch.Tensor:
    """A step score that is never positive: every extra latent costs, so a finished (shorter)
    candidate often beats the longer ones."""
    return -latent[..., 0].abs()


@torch.no_grad()
def reference_search(backbone, sampler, qid, question, b, k, s, seed=0, value=step_value):
    """The documented rule, one candidate at a time. Each subtree keeps its B best candidates
    (ties -> lower slot). A child of a beam feeds the beam's pending latent with its own keys
    (step 1: prefills with them), then either stops (LM head) -- a finished candidate with its
    parent's latents and score, only the first such child of a beam -- or proposes its own
    latent. A finished beam is carried as one candidate (slot of its first child)."""
    sampler.bind(backbone)
    qkey = question_key(seed, qid)
    cfg = backbone.latent_config
    # a beam: (state, pending latent or None, latents, key of the slot it was chosen from)
    trees = [[(None, None, [], None) for _ in range(b)] for _ in range(s)]
    ran = 0
    for t in range(1, (cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents) + 1):
        if t > 1 and all(pend is None for tree in trees for _, pend, _, _ in tree):
            break
        new = []
        for si, tree in enumerate(trees):
            cands = []
            for j, (st, pend, lat, _) in enumerate(tree):
                slot = (si * b + j) * k
                if t > 1 and pend is None:
                    cands.append((_score(lat, value), slot, st, None, lat, None))
                    continue
                stopped_once = False
                for c in range(k):
                    key = candidate_keys(qkey, t, [slot + c])
                    if t == 1:
                        child = backbone.prefill_samples([question], 1, sampler, key)
                    else:
                        child = backbone.feed_latent(st.select(torch.tensor([0])), pend[None], t - 1, sampler=sampler, keys=key)
                    if bool(backbone.stops(child)):
                        if not stopped_once:
                            cands.append((_score(lat, value), slot + c, child, None, lat, key))
                        stopped_once = True
                        continue
                    h = backbone.propose_latent(child, t, sampler=sampler, keys=key)[0]
                    cands.append((_score(lat + [h], value), slot + c, child, h, lat + [h], key))
            cands.sort(key=lambda x: (-x[0], x[1]))
            new.append([c[2:] for c in cands[:b]])
        trees, ran = new, t
    beams = []
    for si, tree in enumerate(trees):
        for j, (st, pend, lat, key) in enumerate(tree):
            if pend is not None:
                st = backbone.feed_latent(st, pend[None], ran, sampler=sampler, keys=key)
            beams.append((_score(lat, value), si, j, st, lat))
    best = min(beams, key=lambda x: (-x[0], x[1], x[2]))
    text = backbone.decode(backbone.decode_answer(best[3], max_new_tokens=3)[0])[0]
    return best[0], best[4], text, [max(x[0] for x in beams if x[1] == si) for si in range(s)]


SAMPLERS = {"agn": lambda: AGN(sigma=1.0),
            "dropout": lambda: MCDropout(p=0.3, targets=["*.mlp.down_proj"], prefill="per_sample")}


@pytest.mark.parametrize("sampler_name", ["agn", "dropout"])
@pytest.mark.parametrize("b,k,s", [(2, 2, 1), (3, 2, 1), (1, 3, 2), (2, 2, 2)])
def test_dynamic_beam_search_and_dvts_follow_the_stopped_candidate_rule(llama, b, k, s, sampler_name):
    sampler = SAMPLERS[sampler_name]()
    results = latent_beam_search(llama, sampler, ["q0", "q1", "q2"], QUESTIONS, HistoryScorer(lambda o, h: penalty(h).sum(-1)),
                                 beam_width=b, candidates=k, subtrees=s, max_new_tokens=3)
    lengths = set()
    for qid, question, got in zip(["q0", "q1", "q2"], QUESTIONS, results):
        score, latents, text, winners = reference_search(llama, sampler, qid, question, b, k, s, value=penalty)
        assert got.score == pytest.approx(score, abs=1e-5)
        assert got.latents.shape[0] == len(latents) and torch.allclose(got.latents, torch.stack(latents), atol=1e-5)
        assert got.text == text
        assert got.subtree_scores == pytest.approx(winners, abs=1e-5)
        lengths.add(len(latents))
    if sampler_name == "agn":  # winners of different lengths: a candidate that stopped early won against longer ones
        assert len(lengths) > 1 and min(lengths) < llama.latent_config.max_latents


@pytest.mark.parametrize("sampler_name", ["agn", "dropout"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_dvts_degenerate_cases(backbone, llama, family, sampler_name):
    """One subtree (W = N) is beam search with B = 1, K = N; width 1 is best-of-N over N
    independently sampled trajectories (subtree s samples with the keys of slot s)."""
    model = backbone if family == "gpt2" else llama
    sampler = AGN(sigma=1.0) if sampler_name == "agn" else MCDropout(p=0.3, prefill="per_sample")
    n = 4
    one = dvts(model, sampler, ["q0", "q1"], QUESTIONS[:2], scorer(), budget=n, width=n, max_new_tokens=3)
    beam = latent_beam_search(model, sampler, ["q0", "q1"], QUESTIONS[:2], scorer(), beam_width=1, candidates=n,
                              max_new_tokens=3)
    for x, y in zip(one, beam):
        assert (x.text, x.score, x.latent_steps) == (y.text, y.score, y.latent_steps)
        assert torch.equal(x.latents, y.latents)
    wide = dvts(model, sampler, ["q0", "q1"], QUESTIONS[:2], scorer(), budget=n, width=1, max_new_tokens=3)
    for qid, question, got in zip(["q0", "q1"], QUESTIONS[:2], wide):
        chains = []
        with torch.no_grad():
            for slot in range(n):
                lat, key = [], lambda t: candidate_keys(question_key(0, qid), t, [slot])  # noqa: B023
                st = model.prefill_samples([question], 1, sampler, key(1))
                for t in range(1, model.latent_config.max_latents + 1 if family == "llama" else 3):
                    if t > 1:  # feed the last latent with this step's keys, then propose the next one
                        st = model.feed_latent(st, lat[-1][None], t - 1, sampler=sampler, keys=key(t))
                    if bool(model.stops(st)):
                        break
                    lat.append(model.propose_latent(st, t, sampler=sampler, keys=key(t))[0])
                else:
                    st = model.feed_latent(st, lat[-1][None], t, sampler=sampler, keys=key(t))
                text = model.decode(model.decode_answer(st, max_new_tokens=3)[0])[0]
                chains.append((_score(lat), text, len(lat)))
        best = max(range(n), key=lambda i: (chains[i][0], -i))
        assert got.subtree_scores == pytest.approx([c[0] for c in chains], abs=1e-5)
        assert got.subtree_texts == [c[1] for c in chains]
        assert got.score == pytest.approx(chains[best][0], abs=1e-5) and got.text == chains[best][1]
        assert got.latent_steps == sum(c[2] for c in chains)  # the budget: latents actually fed
    with pytest.raises(ValueError, match="width=3 must be >= 1 and divide the budget N=4"):
        dvts(model, sampler, ["q0"], QUESTIONS[:1], scorer(), budget=4, width=3)


def test_dynamic_beam_search_is_batch_invariant(llama):
    sampler = AGN(sigma=1.0)
    both = dvts(llama, sampler, ["q0", "q1", "q2"], QUESTIONS, scorer(), budget=4, width=2, max_new_tokens=3)
    alone = dvts(llama, sampler, ["q1"], QUESTIONS[1:2], scorer(), budget=4, width=2, max_new_tokens=3)[0]
    assert alone.text == both[1].text and alone.latent_steps == both[1].latent_steps
    assert torch.allclose(alone.latents, both[1].latents, atol=1e-5)


def test_search_from_a_root_that_stops_at_once():
    """A backbone that stops before the first latent: no latent, no score (-inf), nothing spent."""
    model = tiny_llama_backbone(stop_scale=40.0)
    res = latent_beam_search(model, AGN(sigma=1.0), ["q0"], [QUESTION], scorer(), beam_width=2, candidates=2,
                             max_new_tokens=3)[0]
    assert res.latents.shape == (0, model.hidden_size) and res.score == float("-inf") and res.latent_steps == 0
    assert res.text == model.decode(model.generate([QUESTION], max_new_tokens=3).answer_ids)[0]


class _Recorder(HistoryScorer):
    def __init__(self):
        super().__init__(_sum_of_steps)
        self.calls = []

    def extend(self, parents, latents, active=None):
        self.calls.append(latents.clone())
        return super().extend(parents, latents, active)


@pytest.mark.parametrize("prefill", ["shared", "per_sample"])
def test_mc_dropout_siblings_propose_different_latents(backbone, prefill):
    """Under MC-dropout a child's randomness acts in the forward pass that consumes its parent's
    latent, before it proposes its own: the K siblings the RM ranks differ (with shared prefill,
    not at step 1, exactly as N plain samples with shared prefill share h_1)."""
    rec = _Recorder()
    latent_beam_search(backbone, MCDropout(p=0.3, prefill=prefill), ["q0"], [QUESTION], rec, beam_width=2, candidates=3,
                       max_new_tokens=3)
    step1, step2 = rec.calls[0].view(2, 3, -1), rec.calls[1].view(2, 3, -1)
    assert torch.cdist(step2[0], step2[0]).triu(1).sum() > 0 and (torch.cdist(step2[0], step2[0]) + torch.eye(3)).min() > 0
    if prefill == "shared":
        assert torch.allclose(step1, step1[0, 0].expand_as(step1))
    else:
        assert (torch.cdist(step1.reshape(6, -1), step1.reshape(6, -1)) + torch.eye(6)).min() > 0
