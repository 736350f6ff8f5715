"""GRPO's maths against hand-computed values (latentlit.training.grpo)."""

import math

import pytest
import torch

from latentlit.training.grpo import (
    clipped_surrogate,
    gaussian_kl,
    gaussian_logprob,
    group_advantages,
    grpo_loss,
    k3_kl,
    masked_mean,
)


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # group 2: mean 0.25; leave-one-out baselines: 0 for the correct one, 1/3 for the others
    assert torch.allclose(group_advantages(r, "mean")[1], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert torch.allclose(group_advantages(r, "leave_one_out")[1], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    std = math.sqrt(0.25 * 0.75)  # population std of (1, 0, 0, 0)
    assert torch.allclose(group_advantages(r, "mean_std")[1],
                          torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-6))
    assert torch.allclose(group_advantages(r, "mean_std")[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (0.5 + 1e-6))


@pytest.mark.parametrize("mode", ["mean", "mean_std", "leave_one_out"])
def test_an_all_equal_group_has_exactly_zero_advantage(mode):
    r = torch.tensor([[0.3, 0.3, 0.3], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    a = group_advantages(r, mode)
    assert (a[:2] == 0).all() and (a[2] != 0).all()


def test_group_advantages_refuse_bad_input():
    with pytest.raises(ValueError, match="advantage='max'"):
        group_advantages(torch.zeros(2, 3), "max")
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.zeros(2, 1), "leave_one_out")
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.zeros(6))


def test_gaussian_logprob_and_kl_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, m = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    s = torch.rand(5, 1, generator=g) + 0.5
    ref = torch.distributions.Normal(m, s.expand_as(m)).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_logprob(x, m, s), ref, atol=1e-5)
    # by hand for d = 1: x = 1, m = 0, s = 2: -1/8 - log 2 - log(2 pi)/2
    assert gaussian_logprob(torch.ones(1, 1), torch.zeros(1, 1), torch.full((1, 1), 2.0)).item() == pytest.approx(
        -0.125 - math.log(2) - 0.5 * math.log(2 * math.pi))
    m2, s2 = torch.randn(5, 7, generator=g), torch.rand(5, 7, generator=g) + 0.5
    p, q = torch.distributions.Normal(m, s.expand_as(m)), torch.distributions.Normal(m2, s2)
    assert torch.allclose(gaussian_kl(m, s, m2, s2), torch.distributions.kl_divergence(p, q).sum(-1), atol=1e-5)
    assert torch.allclose(gaussian_kl(m, s, m, s), torch.zeros(5), atol=1e-6)


def test_k3_is_zero_with_zero_gradient_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    k = k3_kl(logp, torch.tensor([[-1.0, -1.0]]))
    # second action: lr = 1: e - 1 - 1
    assert k[0, 0].item() == 0 and k[0, 1].item() == pytest.approx(math.e - 2)
    k[0, 0].backward()
    assert logp.grad[0, 0].item() == 0


def test_clipped_surrogate_by_hand():
    logp_old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]]))
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = clipped_surrogate(logp, logp_old, adv, clip_low=0.2)
    # A > 0: min(1.5, 1.2) = 1.2 (clipped), min(0.5, 0.8) = 0.5; A < 0: min(-1.5, -1.2) = -1.5, min(-0.5, -0.8) = -0.8
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.5], [1.5, 0.8]]))
    assert clipped.tolist() == [[True, False], [False, True]]
    loss, _ = clipped_surrogate(logp, logp_old, adv, clip_low=0.2, clip_high=0.6)
    assert loss[0, 0].item() == pytest.approx(-1.5)


def test_grpo_loss_per_trajectory_mean_over_its_own_actions():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.3, 0.3, 0.3], [0.1, 0.3, 100.0]])
    loss, stats = grpo_loss(logp, logp.detach(), adv, mask, kl, kl_coef=0.5)
    # ratio 1: policy term -A; KL means 0.3 and 0.2 (the masked action left out)
    assert torch.allclose(loss, torch.tensor([-2.0 + 0.15, 1.0 + 0.1]))
    loss.sum().backward()
    # d/dlogp of -A * ratio, averaged over each trajectory's valid actions
    assert torch.allclose(logp.grad, torch.tensor([[-2 / 3, -2 / 3, -2 / 3], [0.5, 0.5, 0.0]]))
    assert stats["clipped"].tolist() == [0.0, 0.0]


def test_zero_advantage_gives_zero_policy_gradient():
    logp = torch.randn(4, 5, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach() - 0.1, torch.zeros(4), torch.ones(4, 5, dtype=torch.bool))
    loss.sum().backward()
    assert (logp.grad == 0).all()


def test_masked_mean_of_an_empty_row_is_zero():
    assert masked_mean(torch.ones(2, 3), torch.tensor([[1, 0, 1], [0, 0, 0]])).tolist() == [1.0, 0.0]
