import math

import pytest
import torch

from latentlit.models.latent_rm import trajectory_score
from latentlit.scoring.losses import (
    answer_group_loss,
    listwise_outcome_loss,
    pairwise_loss,
    step_bce_loss,
    step_contrastive_loss,
)


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


# ---------------------------------------------------------------- pairwise, listwise and answer-group losses
# Ragged batch: question 0 has 3 candidates of 3, 1 and 2 steps; question 1 has 2 candidates (of 2 and 3
# steps) and one padding candidate. P marks padding, filled with large garbage.
P = 1e4


def _ragged():
    r = torch.tensor([[[0.5, -0.2, 0.3], [1.0, P, P], [-0.4, 0.7, P]],
                      [[0.2, 0.1, P], [-0.3, 0.6, 0.4], [P, P, P]]])
    y = torch.tensor([[[1.0, 0.5, 1.0], [0.25, P, P], [0.5, 0.5, P]],
                      [[0.0, 1.0, P], [0.75, 0.75, 0.0], [P, P, P]]])
    lengths = torch.tensor([[3, 1, 2], [2, 3, 0]])
    mask = torch.arange(3)[None, None, :] < lengths[:, :, None]
    cand = torch.tensor([[True, True, True], [True, True, False]])
    final = torch.tensor([[True, False, True], [False, True, True]])  # the padding candidate's True is garbage
    groups = torch.tensor([[3, 7, 3], [0, 1, -1]])  # question 0: candidates 0 and 2 give one (correct) answer
    return r, y, mask, cand, final, groups


def _nll(d: float) -> float:
    """-log sigmoid(d)."""
    return -math.log(1 / (1 + math.exp(-d)))


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_pairwise_loss_matches_hand_computation_on_ragged_groups():
    r, y, mask, *_ = _ragged()
    # q0, t=1: (c0 > c1) gap .75, (c0 > c2) gap .5, (c2 > c1) gap .25; t=2: c0, c2 equal labels; t=3: c0 alone
    q0 = 0.75 * _nll(0.5 - 1.0) + 0.5 * _nll(0.5 - (-0.4)) + 0.25 * _nll(-0.4 - 1.0)
    # q1, t=1: (c1 > c0) gap .75; t=2: (c0 > c1) gap .25; t=3: c1 alone
    q1 = 0.75 * _nll(-0.3 - 0.2) + 0.25 * _nll(0.1 - 0.6)
    assert pairwise_loss(r, y, mask).item() == pytest.approx(q0 + q1, rel=1e-6)


def test_pairwise_loss_is_zero_for_equal_labels():
    torch.manual_seed(0)
    r = torch.randn(2, 4, 3)
    assert pairwise_loss(r, torch.full((2, 4, 3), 0.5), torch.ones(2, 4, 3, dtype=torch.bool)).item() == 0.0


def test_listwise_outcome_loss_matches_hand_computation_on_ragged_groups():
    r, _, mask, cand, final, _ = _ragged()
    # S over real steps: q0 (0.6, 1.0, 0.3), correct c0, c2 (q = 1/2 each); q1 (0.3, 0.7), correct c1
    z0 = _lse(0.6, 1.0, 0.3)
    q0 = -(0.5 * (0.6 - z0) + 0.5 * (0.3 - z0))
    q1 = -(0.7 - _lse(0.3, 0.7))
    assert listwise_outcome_loss(r, mask, final, cand).item() == pytest.approx(q0 + q1, rel=1e-6)


def test_answer_group_loss_matches_hand_computation_on_ragged_groups():
    r, _, mask, cand, final, groups = _ragged()
    # q0: answer 3 = {c0, c2} (correct), A = lse(0.6, 0.3); answer 7 = {c1}, A = 1.0
    a3 = _lse(0.6, 0.3)
    q0 = -(a3 - _lse(a3, 1.0))
    # q1: each candidate its own answer, c1 correct
    q1 = -(0.7 - _lse(0.3, 0.7))
    assert answer_group_loss(r, mask, final, groups, cand).item() == pytest.approx(q0 + q1, rel=1e-6)
    # two correct answer groups (q = 1/2 each) and one wrong one
    s = torch.tensor([[[0.1], [0.4], [-0.2], [0.9]]])
    m = torch.ones(1, 4, 1, dtype=torch.bool)
    ids, ok, c = torch.tensor([[0, 1, 1, 2]]), torch.tensor([[True, True, True, False]]), torch.ones(1, 4, dtype=torch.bool)
    z = _lse(0.1, _lse(0.4, -0.2), 0.9)
    expected = -(0.5 * (0.1 - z) + 0.5 * (_lse(0.4, -0.2) - z))
    assert answer_group_loss(s, m, ok, ids, c).item() == pytest.approx(expected, rel=1e-6)


def test_answer_group_loss_with_singleton_groups_is_listwise():
    # with one candidate per answer group, A_a = logsumexp of a single S_n = S_n and q_a = q_n: the
    # group softmax is the candidate softmax, so the two objectives coincide
    r, _, mask, cand, final, _ = _ragged()
    singletons = torch.where(cand, torch.arange(3).expand(2, 3), -1)
    assert answer_group_loss(r, mask, final, singletons, cand).item() == pytest.approx(
        listwise_outcome_loss(r, mask, final, cand).item(), rel=1e-6)


def test_outcome_losses_are_zero_without_a_correct_candidate():
    r, _, mask, cand, final, groups = _ragged()
    final[1] = False  # question 1: nothing correct
    r = r.clone().requires_grad_(True)
    lw = listwise_outcome_loss(r, mask, final, cand)
    only_q0 = listwise_outcome_loss(r[:1], mask[:1], final[:1], cand[:1])
    assert torch.isfinite(lw) and lw.item() == pytest.approx(only_q0.item(), rel=1e-6)
    ag = answer_group_loss(r, mask, final, groups, cand)
    assert torch.isfinite(ag)
    assert ag.item() == pytest.approx(answer_group_loss(r[:1], mask[:1], final[:1], groups[:1], cand[:1]).item(), rel=1e-6)
    (lw + ag).backward()
    assert torch.isfinite(r.grad).all() and r.grad[1].abs().sum() == 0
    # a question with no scored candidate at all: 0, finite gradient
    r0 = torch.zeros(1, 2, 2, requires_grad=True)
    none = torch.zeros(1, 2, 2, dtype=torch.bool)
    no = torch.zeros(1, 2, dtype=torch.bool)
    loss = listwise_outcome_loss(r0, none, no, no) + answer_group_loss(r0, none, no, torch.full((1, 2), -1), no)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(r0.grad).all()


def _all_three(r, y, mask, cand, final, groups):
    return (pairwise_loss(r, y, mask), listwise_outcome_loss(r, mask, final, cand),
            answer_group_loss(r, mask, final, groups, cand))


def test_new_losses_ignore_padding_values_and_send_it_no_gradient():
    r, y, mask, cand, final, groups = _ragged()
    base = _all_three(r, y, mask, cand, final, groups)
    pad = ~mask
    r2, y2 = r.masked_fill(pad, -3e4), y.masked_fill(pad, 0.9)
    final2 = final.clone()
    final2[1, 2] = False
    for a, b in zip(base, _all_three(r2, y2, mask, cand, final2, groups)):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
    for i in range(3):
        rg = r.clone().requires_grad_(True)
        _all_three(rg, y, mask, cand, final, groups)[i].backward()
        assert torch.isfinite(rg.grad).all()
        assert rg.grad[pad].abs().sum() == 0
        assert (rg.grad[mask] != 0).any()


def test_a_real_candidate_without_steps_takes_no_part():
    # trajectory_score gives it -inf: it has no score, so it is left out like padding
    r, y, mask, cand, final, groups = _ragged()
    r3, y3 = torch.cat([r, torch.full((2, 1, 3), 5.0)], 1), torch.cat([y, torch.ones(2, 1, 3)], 1)
    m3 = torch.cat([mask, torch.zeros(2, 1, 3, dtype=torch.bool)], 1)
    c3, f3 = torch.cat([cand, torch.ones(2, 1, dtype=torch.bool)], 1), torch.cat([final, torch.ones(2, 1, dtype=torch.bool)], 1)
    g3 = torch.cat([groups, torch.tensor([[3], [9]])], 1)  # joins question 0's correct answer; its own in question 1
    for a, b in zip(_all_three(r, y, mask, cand, final, groups), _all_three(r3, y3, m3, c3, f3, g3)):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_new_losses_batch_is_sum_of_single_group_losses():
    r, y, mask, cand, final, groups = _ragged()
    whole = _all_three(r, y, mask, cand, final, groups)
    parts = [_all_three(r[g:g + 1], y[g:g + 1], mask[g:g + 1], cand[g:g + 1], final[g:g + 1], groups[g:g + 1])
             for g in range(2)]
    for i in range(3):
        assert whole[i].item() == pytest.approx(parts[0][i].item() + parts[1][i].item(), rel=1e-6)


def test_answer_group_loss_raises_on_inconsistent_outcomes_and_shapes():
    r, y, mask, cand, final, groups = _ragged()
    groups[1] = torch.tensor([5, 5, -1])  # question 1: one answer, one correct and one wrong member
    with pytest.raises(ValueError, match="question 1, answer group 5"):
        answer_group_loss(r, mask, final, groups, cand)
    with pytest.raises(ValueError, match="answer-group id -1"):
        answer_group_loss(r, mask, final, torch.full((2, 3), -1), cand)
    with pytest.raises(ValueError, match="must match"):
        answer_group_loss(r, mask, final, groups[:, :2], cand)
    with pytest.raises(ValueError, match="must match"):
        listwise_outcome_loss(r, mask[:, :, :2], final, cand)
    with pytest.raises(ValueError, match="must match"):
        pairwise_loss(r, y[:, :, :2], mask)
