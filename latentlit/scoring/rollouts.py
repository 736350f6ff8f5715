"""Rollout labelling of latent steps (paper Sec. 3.3, "data collection").

For each question: sample N trajectories with the sampler; drop the question when all N final
answers are correct or all wrong (each filter switchable); for each kept trajectory n and step
t, run M rollouts that continue from the prefix h_1..h_t (remaining latent steps sampled, answer
decoded greedily); the label y_t^(n) is the fraction of rollouts reaching the gold answer.

Cost: rollouts start from a copy of the KV cache of (question, h_1..h_t), so the question is
prefilled once per trajectory, never per rollout. At t = T nothing is left to sample and the
answer is decoded greedily, so all M rollouts equal the trajectory itself: its own correctness is
the label and no rollout is run. The reference implementation re-prefills the whole prefix for
each of the N*T*M rollouts; :func:`reference_forward_tokens` estimates that count for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.problem import Problem
from latentlit.models.backbone import LatentBackbone
from latentlit.sampling.base import Sampler
from latentlit.sampling.rng import derive_keys, trajectory_keys

_ROLLOUT_STREAM = 0x2011


@dataclass
class LabelledGroup:
    """One question's labelled step group.

    Attributes:
        latents: (N, T, d) float32. latent_mask: (N, T) bool. labels: (N, T) float32 in [0, 1].
        final_correct: (N,) bool, correctness of each trajectory's own answer.
    """

    id: str
    question: str
    gold: str
    latents: torch.Tensor
    latent_mask: torch.Tensor
    labels: torch.Tensor
    final_correct: torch.Tensor


@dataclass
class LabelStats:
    """Counts from a labelling run."""

    questions: int = 0
    kept: int = 0
    all_correct: int = 0
    all_wrong: int = 0
    forward_tokens: int = 0
    reference_forward_tokens: int = 0
    labels: list[float] = field(default_factory=list)

    def merge(self, other: "LabelStats") -> None:
        self.questions += other.questions
        self.kept += other.kept
        self.all_correct += other.all_correct
        self.all_wrong += other.all_wrong
        self.forward_tokens += other.forward_tokens
        self.reference_forward_tokens += other.reference_forward_tokens
        self.labels += other.labels

    def summary(self) -> dict:
        lab = torch.tensor(self.labels) if self.labels else torch.zeros(1)
        return {
            "questions": self.questions, "kept": self.kept, "kept_fraction": self.kept / max(self.questions, 1),
            "dropped_all_correct": self.all_correct, "dropped_all_wrong": self.all_wrong,
            "label_mean": float(lab.mean()), "label_std": float(lab.std()) if lab.numel() > 1 else 0.0,
            "label_fraction_0": float((lab == 0).float().mean()), "label_fraction_1": float((lab == 1).float().mean()),
            "forward_tokens": self.forward_tokens, "reference_forward_tokens": self.reference_forward_tokens,
            "saving_vs_reference": self.reference_forward_tokens / max(self.forward_tokens, 1),
        }


def reference_forward_tokens(prompt_len: int, n: int, t: int, m: int, answer_steps: int) -> int:
    """Token positions the reference implementation runs to label one question: each of the
    N*T*M rollouts re-runs prompt, T latents and the answer from scratch (no cache reuse)."""
    return n * t * m * (prompt_len + t + answer_steps)


def _correct(backbone: LatentBackbone, answer_ids: torch.Tensor, golds: list[str], fmt: str) -> torch.Tensor:
    texts = backbone.decode(answer_ids)
    return torch.tensor([answers_match(extract_answer(x, fmt), g) for x, g in zip(texts, golds)])


@torch.no_grad()
def label_problems(backbone: LatentBackbone, sampler: Sampler, problems: list[Problem], *, n_samples: int = 8,
                   n_rollouts: int = 8, seed: int = 0, drop_all_correct: bool = True, drop_all_wrong: bool = True,
                   max_new_tokens: int = 8, answer_format: str | None = None) -> tuple[list[LabelledGroup | None], LabelStats]:
    """Label the latent steps of ``problems`` (processed together; callers chunk them).

    Returns:
        one entry per problem (None when filtered out) and the run's :class:`LabelStats`.
        Results depend only on (seed, question id, sample index, rollout index), not on which
        problems share the call.

    Raises:
        ValueError: n_samples or n_rollouts < 1; a backbone with a dynamic latent stop (the
            rollout prefix of a stopped trajectory is not defined yet).
    """
    if n_samples < 1 or n_rollouts < 1:
        raise ValueError(f"n_samples ({n_samples}) and n_rollouts ({n_rollouts}) must be >= 1")
    cfg = backbone.latent_config
    if cfg.latent_stop_id is not None:
        raise ValueError("rollout labelling needs a fixed number of latent steps (latent_stop_id is set)")
    fmt = answer_format or cfg.answer_format
    sampler.bind(backbone)
    stats = LabelStats(questions=len(problems))
    start_tokens = backbone.forward_tokens
    q, n, m, T = len(problems), n_samples, n_rollouts, cfg.num_latents
    keys = trajectory_keys(seed, [p.id for p in problems], n).to(backbone.device)
    state = backbone.prefill_samples([p.question for p in problems], n, sampler, keys)
    # real prompt lengths (rows are question-major), for the reference's re-prefill count
    prompt_lens = state.attention_mask[::n].sum(1).tolist()
    snapshots, latents = [], []
    for t in range(1, T + 1):
        state, h = backbone.latent_step(state, t, sampler=sampler, keys=keys)
        latents.append(h.float().cpu())
        if t < T:
            snapshots.append(state.select(torch.arange(state.rows)))
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys, first_step=T + 1)
    golds = [p.answer for p in problems for _ in range(n)]
    final = _correct(backbone, answer_ids, golds, fmt).reshape(q, n)
    answer_steps = answer_ids.shape[1]
    traj = torch.stack(latents, 1).reshape(q, n, T, -1) if T else torch.zeros(q, n, 0, backbone.hidden_size)

    keep = torch.ones(q, dtype=torch.bool)
    all_c, all_w = final.all(1), ~final.any(1)
    stats.all_correct, stats.all_wrong = int(all_c.sum()), int(all_w.sum())
    if drop_all_correct:
        keep &= ~all_c
    if drop_all_wrong:
        keep &= ~all_w
    stats.kept = int(keep.sum())
    labels = torch.zeros(q, n, T)
    if T:
        labels[:, :, T - 1] = final.float()
    kept_rows = torch.nonzero(keep.repeat_interleave(n)).flatten()
    if len(kept_rows):
        kept_golds = [golds[i] for i in kept_rows.tolist() for _ in range(m)]
        for t in range(1, T):
            prefix = snapshots[t - 1].select(kept_rows.to(backbone.device)).repeat_interleave(m)
            rkeys = derive_keys(keys[kept_rows.to(keys.device)].repeat_interleave(m), _ROLLOUT_STREAM, t)
            rkeys = derive_keys(rkeys ^ torch.arange(m, device=rkeys.device).repeat(len(kept_rows)), _ROLLOUT_STREAM)
            prefix, _, _ = backbone.run_latents(prefix, T, sampler=sampler, keys=rkeys, start_step=t + 1)
            out, _ = backbone.decode_answer(prefix, max_new_tokens=max_new_tokens, sampler=sampler, keys=rkeys, first_step=T + 1)
            frac = _correct(backbone, out, kept_golds, fmt).float().reshape(len(kept_rows), m).mean(1)
            labels.view(q * n, T)[kept_rows, t - 1] = frac
    stats.forward_tokens = backbone.forward_tokens - start_tokens
    groups: list[LabelledGroup | None] = []
    for i, p in enumerate(problems):
        # the reference samples the N trajectories the same way before its rollouts
        stats.reference_forward_tokens += n * (prompt_lens[i] + T + answer_steps)
        if not keep[i]:
            groups.append(None)
            continue
        stats.reference_forward_tokens += reference_forward_tokens(prompt_lens[i], n, T, m, answer_steps)
        stats.labels += labels[i].flatten().tolist()
        groups.append(LabelledGroup(p.id, p.question, p.answer, traj[i], torch.ones(n, T, dtype=torch.bool), labels[i], final[i]))
    return groups, stats
