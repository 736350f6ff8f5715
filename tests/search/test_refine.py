"""Verifier-guided latent refinement: the RM's score rises, masked steps never move, zero steps is
the identity, and decoding given latents reproduces the backbone's own greedy answer."""

from __future__ import annotations

import pytest
import torch

from latentlit.evaluation.compute import rm_shape
from latentlit.models.checkpoints import load_backbone
from latentlit.models.latent_rm import LatentRM
from latentlit.search.refine import decode_from_latents, refine_latents, refinement_flops
from latentlit.testing.tiny import tiny_backbone, tiny_llama_backbone, write_numeric_backbone

QUESTIONS = ["Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", "Sam has 9 books . loses 4 . how many ?"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoding_the_backbones_own_latents_gives_its_greedy_answer(family, tmp_path):
    if family == "gpt2":  # a head that writes numbers: answers that depend on the latents
        bb = load_backbone(write_numeric_backbone(tmp_path / "bb", num_latents=3)).eval()
    else:
        bb = tiny_llama_backbone().eval()
    out = bb.generate(QUESTIONS, max_new_tokens=4)
    assert all(out.answers_text) or family == "llama"
    assert decode_from_latents(bb, QUESTIONS, out.latents, out.latent_mask, max_new_tokens=4) == out.answers_text


def test_refinement_raises_the_score_and_keeps_masked_steps():
    bb = tiny_backbone(num_latents=3)
    rm = LatentRM.from_backbone(bb, seed=1, head_dropout=0.3)
    torch.manual_seed(0)
    latents = torch.randn(2, 3, bb.hidden_size)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    same, scores0 = refine_latents(rm, QUESTIONS, latents, mask, steps=0)
    torch.testing.assert_close(same, latents)
    refined, scores = refine_latents(rm, QUESTIONS, latents, mask, steps=5, lr=0.1)
    assert scores.shape == (2, 6)
    torch.testing.assert_close(scores[:, 0], scores0[:, 0])
    assert (scores[:, -1] > scores[:, 0] + 0.05).all()  # gradient ascent on the RM's score
    assert torch.equal(refined[1, 2], latents[1, 2])  # a step the trajectory never took does not move
    assert not torch.allclose(refined[0], latents[0])
    assert rm.training  # the RM's mode is restored (eval only while refining)
    assert all(p.grad is None for p in rm.parameters())
    # the proximity pull keeps the latents closer to where they were
    near, _ = refine_latents(rm, QUESTIONS, latents, mask, steps=5, lr=0.1, proximity=50.0)
    assert (near - latents).norm() < (refined - latents).norm()
    with pytest.raises(ValueError, match="lr=0"):
        refine_latents(rm, QUESTIONS, latents, mask, lr=0)
    shape = rm_shape(rm)
    assert refinement_flops(shape, 10, 3, 2) == pytest.approx(7 * (shape.pass_flops(13) + 2.0 * shape.head_params * 3))
