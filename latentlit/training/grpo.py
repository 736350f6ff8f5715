"""GRPO for latent reasoning models, as pure functions (docs/rl.md).

Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, Sec. 4.1): per question, G
rollouts; each gets a scalar reward; its advantage is its reward relative to the group's; the
policy maximises a PPO-clipped surrogate (Schulman et al. 2017, Eq. 7) minus beta * KL to a frozen
reference. Here a trajectory's *actions* are its latent steps (continuous, when the sampler is
Gaussian: AGN or the learned sampler) and its answer tokens; every function below works on
per-action log-probabilities ``(R, A)`` with a validity mask, R = B * G rows, question-major.
"""

from __future__ import annotations

import math

import torch

ADVANTAGES = ("mean", "mean_std", "leave_one_out")


def group_advantages(rewards: torch.Tensor, mode: str = "leave_one_out", eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages.

    Args:
        rewards: (B, G) rewards of G rollouts for each of B questions.
        mode: ``mean``: r_i - mean(r) (Dr. GRPO, Liu et al. 2025); ``mean_std``: (r_i - mean(r)) /
            (std(r) + eps), std with 1/G (GRPO, Shao et al. 2024); ``leave_one_out``: r_i - mean of
            the *other* G - 1 rewards (RLOO, Ahmadian et al. 2024), the baseline that does not
            depend on the rollout it scores, so the policy gradient stays unbiased; it equals
            G / (G - 1) times ``mean``.

    Returns:
        (B, G) advantages; exactly 0 for every rollout of a group whose rewards are all equal.

    Raises:
        ValueError: unknown mode, rewards not 2-D, or ``leave_one_out`` with G < 2.
    """
    if mode not in ADVANTAGES:
        raise ValueError(f"advantage={mode!r}; expected one of {ADVANTAGES}")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (questions, group size), got shape {tuple(rewards.shape)}")
    g = rewards.shape[1]
    centred = rewards - rewards.mean(1, keepdim=True)
    # an all-equal group: exactly zero, not float residue from the mean
    same = (rewards == rewards[:, :1]).all(1, keepdim=True)
    if mode == "mean":
        out = centred
    elif mode == "mean_std":
        out = centred / (rewards.std(1, unbiased=False, keepdim=True) + eps)
    else:
        if g < 2:
            raise ValueError("advantage='leave_one_out' needs a group of at least 2 rollouts")
        out = centred * (g / (g - 1))
    return torch.where(same, torch.zeros_like(out), out)


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over the last dimension.

    Args:
        x, mean: (..., d). std: (..., d) or (..., 1) (isotropic), > 0.

    Returns:
        (...,) log-density in nats: -sum_k [(x_k - m_k)^2 / (2 s_k^2) + log s_k] - d/2 log(2 pi).
    """
    d = x.shape[-1]
    std = std.expand_as(x)
    z = (x - mean) / std
    return -(0.5 * z.pow(2) + std.log()).sum(-1) - 0.5 * d * math.log(2 * math.pi)


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, std_p^2 I) || N(mean_q, std_q^2 I)) summed over the last dimension (closed form).

    Args:
        mean_p, mean_q: (..., d). std_p, std_q: (..., d) or (..., 1), > 0.

    Returns:
        (...,) nats: sum_k [log(s_q/s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2].
    """
    std_p, std_q = std_p.expand_as(mean_p), std_q.expand_as(mean_p)
    return (std_q.log() - std_p.log() + (std_p.pow(2) + (mean_p - mean_q).pow(2)) / (2 * std_q.pow(2)) - 0.5).sum(-1)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-action KL estimate of Schulman's k3 (http://joschu.net/blog/kl-approx.html), as in GRPO:
    exp(lr) - lr - 1 with lr = logp_ref - logp, for actions drawn from the policy. Unbiased for
    KL(pi || ref), >= 0, with zero value and zero gradient where logp == logp_ref.

    Args:
        logp, logp_ref: (R, A) log-probabilities of the taken actions.
    """
    lr = logp_ref - logp
    return torch.expm1(lr) - lr


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_low: float = 0.2,
                      clip_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per action (Schulman et al. 2017, Eq. 7), as a loss to minimise.

    loss_a = -min(rho_a A, clip(rho_a, 1 - clip_low, 1 + clip_high) A), rho_a = exp(logp_a - logp_old_a).
    With one update per batch of rollouts (logp_old = logp, detached) rho = 1 and its gradient is
    -A grad logp: REINFORCE with the group baseline.

    Args:
        logp: (R, A) log-probabilities under the policy being trained (with gradient).
        logp_old: (R, A) under the policy that drew the rollouts (no gradient).
        advantages: (R,) one per trajectory, broadcast over its actions.
        clip_high: upper clip (default: ``clip_low``; DAPO, Yu et al. 2025, raises it).

    Returns:
        (loss (R, A), clipped (R, A) bool: the clip bound the objective).
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - logp_old)
    adv = advantages[:, None]
    plain, bounded = ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv
    return -torch.minimum(plain, bounded), bounded < plain


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R, A) -> (R,): the mean of each row over its valid actions (0 for a row without any)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              kl: torch.Tensor | None = None, kl_coef: float = 0.0, clip_low: float = 0.2,
              clip_high: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss per trajectory (Shao et al. 2024, Eq. 3): the mean over the trajectory's valid
    actions of the clipped surrogate plus ``kl_coef`` * the per-action KL to the reference.

    Averaging over a trajectory's own actions (not over all actions of the batch) gives each
    trajectory the same weight whatever its answer's length; the caller sums trajectories and
    divides by their count over the whole optimiser step (``latentlit.lit.step_mean``), so the
    gradient does not depend on how the step's questions are cut into micro-batches or processes.

    Args:
        logp, logp_old: (R, A). advantages: (R,). mask: (R, A) bool, the actions taken.
        kl: (R, A) per-action KL to the reference (:func:`k3_kl`, :func:`gaussian_kl`), or None.

    Returns:
        (loss (R,), stats): stats are (R,) per-trajectory ``policy``, ``kl`` and ``clipped``
        (fraction of actions the clip bound).
    """
    surrogate, clipped = clipped_surrogate(logp, logp_old, advantages, clip_low, clip_high)
    policy = masked_mean(surrogate, mask)
    kl_mean = masked_mean(kl, mask) if kl is not None else torch.zeros_like(policy)
    loss = policy + kl_coef * kl_mean if kl is not None and kl_coef else policy
    return loss, {"policy": policy.detach(), "kl": kl_mean.detach(), "clipped": masked_mean(clipped.float(), mask)}
