"""LatentRM scoring: full-prefix forward and the incremental (KV-cached) step scorer agree."""

import pytest
import torch

from latentlit.aggregation.beam_search import HistoryScorer, latent_beam_search
from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer
from latentlit.sampling import AGN
from latentlit.scoring.losses import trajectory_score
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = ["Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", "Sam has 9 books . loses 4 . how many ?"]


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(num_latents=3)


@pytest.fixture(scope="module")
def rm(backbone):
    return LatentRM.from_backbone(backbone, seed=3).eval()


@pytest.mark.parametrize("how", ["sum", "min"])
def test_step_scorer_equals_full_forward(rm, how):
    torch.manual_seed(0)
    d = rm.transformer.config.n_embd
    owners = torch.tensor([0, 0, 1])
    parents1, parents2 = torch.tensor([2, 0, 0, 1]), torch.tensor([3, 3, 1])
    h1, h2 = torch.randn(4, d), torch.randn(3, d)
    scorer = LatentRMStepScorer(rm, QUESTIONS, how=how)
    scorer.reset(owners)
    s1 = scorer.extend(parents1, h1)
    s2 = scorer.extend(parents2, h2)
    # rebuild each row's question and prefix by hand and score it in one full pass
    ids, mask = rm.encode_prompts(QUESTIONS)
    own1 = owners[parents1]
    with torch.no_grad():
        full1 = trajectory_score(rm(ids[own1], mask[own1], h1[:, None]), how=how)
        own2, prefix2 = own1[parents2], torch.stack([h1[parents2], h2], dim=1)
        full2 = trajectory_score(rm(ids[own2], mask[own2], prefix2), how=how)
    torch.testing.assert_close(s1, full1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s2, full2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(s2[0], s2[2])


def test_beam_search_with_cached_rm_matches_full_recompute(backbone, rm):
    ids, mask = rm.encode_prompts(QUESTIONS)

    def full(owners, prefix):
        with torch.no_grad():
            return rm(ids[owners], mask[owners], prefix).sum(-1)

    run = lambda scorer: latent_beam_search(backbone, AGN(sigma=1.0), ["a", "b"], QUESTIONS, scorer,  # noqa: E731
                                            beam_width=2, candidates=3, seed=1, max_new_tokens=3)
    cached, recomputed = run(LatentRMStepScorer(rm, QUESTIONS)), run(HistoryScorer(full))
    for x, y in zip(cached, recomputed):
        torch.testing.assert_close(x.latents, y.latents)
        assert x.score == pytest.approx(y.score, abs=1e-5) and x.text == y.text
