import math

import pytest
import torch

from latentlit.models.latent_rm import trajectory_score
from latentlit.scoring.losses import step_bce_loss, step_contrastive_loss


def test_contrastive_loss_matches_hand_computation():
    # 1 group, 3 candidates, 2 steps
    r = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]])
    y = torch.tensor([[[0.5, 1.0], [1.0, 0.0], [0.0, 0.25]]])
    mask = torch.ones_like(r, dtype=torch.bool)
    expected = 0.0
    for t in range(2):
        z = sum(math.exp(r[0, n, t]) for n in range(3))
        for n in range(3):
            expected -= float(y[0, n, t]) * (float(r[0, n, t]) - math.log(z))
    assert step_contrastive_loss(r, y, mask).item() == pytest.approx(expected, rel=1e-6)


def test_batch_loss_is_sum_of_group_losses():
    torch.manual_seed(0)
    r, y = torch.randn(4, 5, 3), torch.rand(4, 5, 3)
    mask = torch.ones_like(r, dtype=torch.bool)
    whole = step_contrastive_loss(r, y, mask)
    parts = sum(step_contrastive_loss(r[g:g + 1], y[g:g + 1], mask[g:g + 1]) for g in range(4))
    assert whole.item() == pytest.approx(parts.item(), rel=1e-6)
    bce_whole = step_bce_loss(r, y, mask)
    bce_parts = sum(step_bce_loss(r[g:g + 1], y[g:g + 1], mask[g:g + 1]) for g in range(4))
    assert bce_whole.item() == pytest.approx(bce_parts.item(), rel=1e-6)


def test_padding_does_not_change_the_loss():
    torch.manual_seed(1)
    r, y = torch.randn(1, 3, 2), torch.rand(1, 3, 2)
    mask = torch.ones_like(r, dtype=torch.bool)
    base = step_contrastive_loss(r, y, mask)
    # pad to 5 candidates and 4 steps with garbage scores and labels
    rp, yp = torch.randn(1, 5, 4) * 10, torch.rand(1, 5, 4)
    rp[:, :3, :2], yp[:, :3, :2] = r, y
    mp = torch.zeros(1, 5, 4, dtype=torch.bool)
    mp[:, :3, :2] = True
    assert step_contrastive_loss(rp, yp, mp).item() == pytest.approx(base.item(), rel=1e-6)
    assert step_bce_loss(rp, yp, mp).item() == pytest.approx(step_bce_loss(r, y, mask).item(), rel=1e-6)
    # a fully padded step contributes nothing and produces no NaN
    assert torch.isfinite(step_contrastive_loss(rp, yp, mp))


def test_contrastive_gradient_moves_mass_to_labelled_candidate():
    r = torch.zeros(1, 2, 1, requires_grad=True)
    y = torch.tensor([[[1.0], [0.0]]])
    step_contrastive_loss(r, y, torch.ones_like(y, dtype=torch.bool)).backward()
    assert r.grad[0, 0, 0] < 0 < r.grad[0, 1, 0]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must match"):
        step_contrastive_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), torch.ones(1, 2, 3, dtype=torch.bool))


def test_trajectory_scores():
    s = torch.tensor([[1.0, -2.0, 4.0], [3.0, 5.0, 0.0]])
    m = torch.tensor([[True, True, True], [True, True, False]])
    assert trajectory_score(s, m, "sum").tolist() == [3.0, 8.0]
    assert trajectory_score(s, m, "mean").tolist() == [1.0, 4.0]
    assert trajectory_score(s, m, "min").tolist() == [-2.0, 3.0]
    assert trajectory_score(s, m, "last").tolist() == [4.0, 5.0]
    with pytest.raises(ValueError, match="how="):
        trajectory_score(s, m, "max")


def test_ragged_contrastive_loss_matches_hand_computation():
    """Dynamic latent length: candidates stop at T_n = 3, 1, 2; the softmax at step t runs over the
    candidates still thinking at t only."""
    r = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 9.0, 9.0], [2.0, -1.0, 7.0]]])  # scores past T_n are garbage
    y = torch.tensor([[[1.0, 0.5, 1.0], [0.0, 0.7, 0.7], [0.5, 0.25, 0.3]]])
    lengths = torch.tensor([3, 1, 2])
    mask = torch.arange(3)[None, None, :] < lengths[None, :, None]
    # t=1: all three candidates; t=2: candidates 0 and 2; t=3: candidate 0 alone (log 1 = 0)
    step1 = -(1.0 * (1.0 - math.log(math.e ** 1 + math.e ** 0 + math.e ** 2))
              + 0.0 * (0.0 - math.log(math.e ** 1 + math.e ** 0 + math.e ** 2))
              + 0.5 * (2.0 - math.log(math.e ** 1 + math.e ** 0 + math.e ** 2)))
    step2 = -(0.5 * (2.0 - math.log(math.e ** 2 + math.e ** -1)) + 0.25 * (-1.0 - math.log(math.e ** 2 + math.e ** -1)))
    step3 = 0.0
    assert step_contrastive_loss(r, y, mask).item() == pytest.approx(step1 + step2 + step3, rel=1e-6)
    # numerically: 1.61140895 + 0.78644051
    assert step_contrastive_loss(r, y, mask).item() == pytest.approx(2.39784946, abs=1e-6)
    # no gradient reaches a stopped candidate's steps, nor the lone candidate at t=3
    r = r.clone().requires_grad_(True)
    step_contrastive_loss(r, y, mask).backward()
    assert r.grad[0, 1, 1:].abs().sum() == 0 and r.grad[0, 2, 2] == 0 and r.grad[0, 0, 2] == 0
    assert r.grad[0, 1, 0] != 0 and r.grad[0, 2, 1] != 0


def test_trajectory_scores_over_own_steps_and_empty_is_minus_inf():
    s = torch.tensor([[1.0, -2.0, 4.0], [3.0, 5.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    assert trajectory_score(s, mask, "sum").tolist() == [3.0, 3.0, float("-inf")]
    assert trajectory_score(s, mask, "mean").tolist() == [1.0, 3.0, float("-inf")]
    assert trajectory_score(s, mask, "last").tolist() == [4.0, 3.0, float("-inf")]
    assert trajectory_score(s, mask, "min").tolist() == [-2.0, 3.0, float("-inf")]
    assert trajectory_score(torch.zeros(2, 0), how="sum").tolist() == [float("-inf")] * 2
    with pytest.raises(ValueError, match="how='max'"):
        trajectory_score(s, mask, "max")
