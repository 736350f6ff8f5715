"""A latent reasoning model as a policy: rollouts and their exact log-probabilities (docs/rl.md).

A trajectory's actions are its latent steps and its answer tokens. Per sampler:

* Gaussian samplers (AGN, the learned sampler): h*_t ~ N(mean_t, std_t^2 I) with mean_t, std_t
  from the sampler's :meth:`~latentlit.models.hooks.Sampler.latent_distribution` of
  h_t = f(hidden state after the prompt and h*_1..h*_{t-1}); the rollout's h*_t are fed back as
  they were drawn, so log pi = sum_t log N(h*_t; mean_t, std_t^2 I) + sum_j log p(y_j | ...).
* MC-dropout: the rollout's keyed mask is fixed and is the draw; given it, the latents are a
  deterministic function of the masked network, recomputed here with gradients, and
  log pi = sum_j log p(y_j | question, latents; mask) over the answer tokens only.

Answer tokens are decoded greedily (paper Sec. 3), so their softmax log-probabilities are the
policy of a sampled decoder evaluated on the greedy answer: the answer term raises (lowers) the
probability of answers with positive (negative) advantage, and its gradient also reaches the
latents' computation; it is the only route for MC-dropout, and it is a surrogate, not the
gradient of the greedy decoder's expected reward (docs/rl.md, "What MC-dropout GRPO optimises").
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.models.backbone import LatentBackbone
from latentlit.models.hooks import Sampler
from latentlit.rng import derive_keys, trajectory_keys
from latentlit.training.grpo import gaussian_logprob


@dataclass
class Rollouts:
    """G rollouts for each of B questions, R = B * G rows, question-major.

    Attributes:
        keys: (R,) int64 row keys. latents: (R, T, d) the latents fed. latent_mask: (R, T) bool.
        answer_ids: (R, L) long. answers: R parsed answers (None: none). texts: R decoded answers.
        correct: (R,) bool by the answer rule. rewards: (R,) float32, 1.0 / 0.0 from ``correct``
        (plus a LatentRM term when the trainer adds one).
    """

    question_ids: list[str]
    questions: list[str]
    group_size: int
    keys: torch.Tensor
    latents: torch.Tensor
    latent_mask: torch.Tensor
    answer_ids: torch.Tensor
    answers: list[str | None]
    texts: list[str]
    correct: torch.Tensor
    rewards: torch.Tensor


@dataclass
class PolicyLogprobs:
    """Per-action log-probabilities of R trajectories under one (backbone, sampler).

    Attributes:
        latent_logp: (R, T) log N(h*_t; mean_t, std_t^2) in nats, or None (MC-dropout).
        latent_mean / latent_std: (R, T, d) and (R, T, d or 1), or None.
        token_logp: (R, L) log p(y_j), or None when answer tokens are left out.
        token_entropy: (R, L) entropy (nats) of each answer token's distribution (no gradient).
        latent_mask: (R, T) bool. token_mask: (R, L) bool: up to and including eos.
    """

    latent_logp: torch.Tensor | None
    latent_mean: torch.Tensor | None
    latent_std: torch.Tensor | None
    token_logp: torch.Tensor | None
    token_entropy: torch.Tensor | None
    latent_mask: torch.Tensor
    token_mask: torch.Tensor

    def actions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp (R, A), mask (R, A)): latent steps then answer tokens, as one action sequence."""
        parts = [(lp, m) for lp, m in ((self.latent_logp, self.latent_mask), (self.token_logp, self.token_mask))
                 if lp is not None]
        if not parts:
            raise ValueError("this policy has no action with a log-probability: MC-dropout needs the answer tokens")
        return torch.cat([lp for lp, _ in parts], 1), torch.cat([m for _, m in parts], 1)


def rollout_keys(seed: int, question_ids: list[str], group_size: int, round_index: int) -> torch.Tensor:
    """(B * G,) row keys of round ``round_index``: (seed, question id, sample index) as in predict,
    then the round, so a question drawn again later gets new rollouts, and a resumed run the same."""
    return derive_keys(trajectory_keys(seed, question_ids, group_size), 0x6790, round_index)


@torch.no_grad()
def draw_rollouts(backbone: LatentBackbone, sampler: Sampler, question_ids: list[str], questions: list[str],
                  golds: list[str], group_size: int, keys: torch.Tensor, max_new_tokens: int) -> Rollouts:
    """G rollouts per question through latentlit's sampling engine (shared prefill, keyed
    randomness), rewarded 1.0 when the parsed answer matches the gold answer
    (:func:`latentlit.data.answers.answers_match`), else 0.0."""
    out = backbone.generate(questions, n_samples=group_size, sampler=sampler, keys=keys, max_new_tokens=max_new_tokens)
    fmt = backbone.latent_config.answer_format
    answers = [extract_answer(text, fmt) for text in out.answers_text]
    correct = torch.tensor([answers_match(a, golds[i // group_size]) for i, a in enumerate(answers)])
    return Rollouts(list(question_ids), list(questions), group_size, keys, out.latents, out.latent_mask, out.answer_ids,
                    answers, list(out.answers_text), correct, correct.float())


def is_gaussian(sampler: Sampler) -> bool:
    """Whether ``sampler`` draws each latent from a Gaussian it can name (AGN with sigma > 0, the
    learned sampler): then the latent steps are actions with a log-density."""
    return sampler.stochastic and type(sampler).latent_distribution is not Sampler.latent_distribution


def answer_token_mask(answer_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(R, L) bool: the answer tokens that were decoded, up to and including the first eos."""
    eos = (answer_ids == eos_id).long()
    return (eos.cumsum(1) - eos) == 0


def policy_logprobs(backbone: LatentBackbone, sampler: Sampler, rollouts: Rollouts, *, answer_tokens: bool = True,
                    backbone_grad: bool = True) -> PolicyLogprobs:
    """Teacher-forced log-probabilities of ``rollouts`` under (``backbone``, ``sampler``).

    The prompt and latent steps go through the backbone's own seams (:meth:`prefill_samples`,
    :meth:`feed_latent` inside the sampler's scope, so MC-dropout applies the rollout's keyed
    masks), then :meth:`answer_logits` teacher-forces the answer. Gradients flow to the backbone
    when ``backbone_grad`` (and grad mode) and to a learned sampler's network.

    Raises:
        ValueError: a sampler without a Gaussian latent distribution and ``answer_tokens=False``
            (no action would have a log-probability).
    """
    keys, g = rollouts.keys.to(backbone.device), rollouts.group_size
    gaussian = is_gaussian(sampler)
    sampler.bind(backbone)
    if not gaussian and not answer_tokens:
        raise ValueError(f"{type(sampler).__name__} has no latent distribution: its policy log-probability is the "
                         "answer tokens' (answer_logprob must be true)")
    grad = nullcontext() if backbone_grad else torch.no_grad()
    latents = rollouts.latents.to(backbone.device)
    latent_mask = rollouts.latent_mask.to(backbone.device)
    logps, means, stds = [], [], []
    with grad:
        state = backbone.prefill_samples(rollouts.questions, g, sampler, keys)
    for t in range(1, latents.shape[1] + 1):
        with grad:
            h = backbone.latent_head(state.hidden)
        if gaussian:
            mean, std = sampler.latent_distribution(h, t)
            fed = latents[:, t - 1]
            logps.append(gaussian_logprob(fed.float(), mean.float(), std.float()))
            means.append(mean)
            stds.append(std)
        else:
            fed = sampler.perturb(h, keys, t)
        with grad:
            state = backbone.feed_latent(state, fed, t, sampler=sampler, keys=keys, active=latent_mask[:, t - 1])
    token_logp = token_entropy = None
    token_mask = answer_token_mask(rollouts.answer_ids, backbone.latent_config.eos_id).to(backbone.device)
    if answer_tokens:
        with grad:
            logits = backbone.answer_logits(state, rollouts.answer_ids.to(backbone.device), sampler=sampler, keys=keys,
                                            first_step=latents.shape[1] + 1)
        log_probs = torch.log_softmax(logits, -1)
        token_logp = log_probs.gather(-1, rollouts.answer_ids.to(backbone.device)[..., None])[..., 0]
        token_entropy = -(log_probs.exp() * log_probs).sum(-1).detach()
    return PolicyLogprobs(
        latent_logp=torch.stack(logps, 1) if gaussian else None,
        latent_mean=torch.stack(means, 1) if gaussian else None,
        latent_std=torch.stack(stds, 1) if gaussian else None,
        token_logp=token_logp, token_entropy=token_entropy,
        latent_mask=latent_mask, token_mask=token_mask)
