import math

import pytest
import torch

from latentlit.aggregation.beam_search import _BEAM_STREAM, HistoryScorer, latent_beam_search
from latentlit.sampling import AGN
from latentlit.sampling.rng import derive_keys, question_key
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
