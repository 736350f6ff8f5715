"""Verifier-guided latent refinement (sequential test-time scaling on top of sampling).

A sampled trajectory's latents h_1..h_T are moved by a few gradient steps that raise the
LatentRM's trajectory score S(x, h) (its sum of r_t), then the answer is decoded from the refined
latents. This is the RM-rewarded counterpart of test-time latent optimisation with self-rewards
(LatentSeek, arXiv 2505.13308; LTPO): the backbone is frozen and only the latents move.

    h^(0) = sampled latents;  h^(s+1) = h^(s) + Adam step on  S(x, h^(s)) - (lam / 2) |h^(s) - h^(0)|^2

The proximity term keeps h near the backbone's own latents (an unconstrained ascent finds latents
the RM scores high but the backbone has never produced). Decoding feeds the refined h_1..h_T to
the backbone (:meth:`LatentBackbone.feed_latent`, no sampler noise) and reads the answer greedily.
Cost per refinement step: one RM forward and one backward over the prompt and the T latents
(~3 forward passes), counted by :func:`refinement_flops`.
"""

from __future__ import annotations

import torch

from latentlit.models.backbone import LatentBackbone
from latentlit.models.hooks import Deterministic
from latentlit.models.latent_rm import LatentRM, trajectory_score
from latentlit.rng import trajectory_keys


def refine_latents(rm: LatentRM, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor, *,
                   steps: int = 5, lr: float = 0.05, proximity: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise the LatentRM's trajectory score of each trajectory by gradient steps on its latents.

    Args:
        rm: the LatentRM (its weights are not changed; eval mode). questions: B questions.
        latents: (B, T, d) one trajectory per question. latent_mask: (B, T) bool (its steps).
        steps: Adam steps. lr: step size, in units of the latents' scale (scaled by each
            trajectory's RMS latent norm, so one setting fits backbones of any width).
        proximity: lam of the proximity penalty (0: none).

    Returns:
        the refined latents (B, T, d) (masked steps unchanged) and the trajectory scores (B, steps + 1)
        float32 before each step and after the last.

    Raises:
        ValueError: steps < 0 or lr <= 0.
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps={steps} must be >= 0 and lr={lr} > 0")
    mask = latent_mask.to(rm.device).bool()
    start = latents.to(rm.device).float()
    # the offset z is in units of each trajectory's RMS latent size: Adam moves each coordinate by
    # about lr of it per step, whatever the backbone's width or scale
    scale = start.pow(2).mean(-1, keepdim=True).sqrt().mean(1, keepdim=True).clamp_min(1e-6)  # (B, 1, 1)
    z = torch.zeros_like(start, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    ids, pmask = rm.encode_prompts(questions)
    was_training = rm.training
    rm.eval()
    scores = []
    try:
        for s in range(steps + 1):
            x = start + scale * z * mask[..., None]  # masked steps never move
            with torch.autocast(device_type=rm.device.type, enabled=False):
                score = trajectory_score(rm(ids, pmask, x, mask), mask)
            scores.append(score.detach())
            if s == steps:
                break
            penalty = 0.5 * proximity * (z.pow(2) * mask[..., None]).sum((1, 2))
            opt.zero_grad()
            (penalty - score).sum().backward()
            opt.step()
    finally:
        rm.train(was_training)
        rm.zero_grad(set_to_none=True)
    return x.detach(), torch.stack(scores, 1)


def refinement_flops(rm_shape, prompt_tokens: int, latents: int, steps: int) -> float:
    """Matrix FLOPs of :func:`refine_latents` for one trajectory: ``steps`` forward + backward
    passes (backward ~ 2 forwards) over prompt and latents, then the final scoring forward."""
    one = rm_shape.pass_flops(prompt_tokens + latents) + 2.0 * rm_shape.head_params * latents
    return (3 * steps + 1) * one


@torch.no_grad()
def decode_from_latents(backbone: LatentBackbone, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor,
                        *, max_new_tokens: int = 8) -> list[str]:
    """Feed the given latents (B, T, d) after each question's prompt (no sampler noise; a row
    stops feeding where ``latent_mask`` (B, T) ends) and decode the answer greedily.

    Returns:
        B decoded answer texts.
    """
    sampler = Deterministic()
    keys = trajectory_keys(0, [str(i) for i in range(len(questions))], 1).to(backbone.device)
    state = backbone.prefill_samples(questions, 1, sampler, keys)
    mask = latent_mask.to(backbone.device).bool()
    for t in range(latents.shape[1]):
        active = state.active & mask[:, t]
        if not bool(active.any()):
            break
        state = backbone.feed_latent(state, latents[:, t].to(backbone.device), t + 1, sampler=sampler, keys=keys,
                                     active=active)
    cfg = backbone.latent_config
    cap = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys,
                                           first_step=cap + 1)
    return backbone.decode(answer_ids)
