"""Rollout labelling of latent steps (paper Sec. 3.3, "data collection").

For each question: sample N trajectories with the sampler; drop the question when all N final
answers are correct or all wrong (each filter switchable); for each kept trajectory n and step
t, run M rollouts that continue from the prefix h_1..h_t (remaining latent steps sampled, answer
decoded greedily); the label y_t^(n) is the fraction of rollouts reaching the gold answer.

Dynamic latent length (CoLaR: the latent phase ends when the LM head emits the stop token):
trajectory n has its own length T_n <= ``max_latents`` and labels exist for t = 1..T_n only
(``latent_mask``). Rollouts from h_1..h_t continue with the backbone's own stopping, so each
rollout has its own length too. Groups keep their N candidates aligned by step index.

Cost: rollouts start from a copy of the KV cache of (question, h_1..h_t), so the question is
prefilled once per trajectory, never per rollout. At t = T_n nothing is left to sample (the stop
decision is the LM head's greedy token, a function of the prefix, and the answer is decoded
greedily), so all M rollouts equal the trajectory itself: its own correctness is the label and
no rollout is run. When the sampler also acts on answer decoding (``on_answer``), the answer is
random and the last step is rolled out like the others. The reference implementation
re-prefills the whole prefix for each of the N*T*M rollouts; :func:`reference_forward_tokens`
estimates that count for comparison.
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
        one entry per problem (None when filtered out) and the run's :class:`LabelStats`. A
        group's step dimension is its own longest trajectory (T for a fixed-T backbone).
        Results depend only on (seed, question id, sample index, rollout index), not on which
        problems share the call.

    Raises:
        ValueError: n_samples or n_rollouts < 1.
    """
    if n_samples < 1 or n_rollouts < 1:
        raise ValueError(f"n_samples ({n_samples}) and n_rollouts ({n_rollouts}) must be >= 1")
    cfg = backbone.latent_config
    fmt = answer_format or cfg.answer_format
    sampler.bind(backbone)
    stats = LabelStats(questions=len(problems))
    start_tokens = backbone.forward_tokens
    q, n, m = len(problems), n_samples, n_rollouts
    cap = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
    # a sampler acting on the answer makes the last step's continuation random: roll it out too
    last_rolled = 0 if sampler.on_answer else 1
    keys = trajectory_keys(seed, [p.id for p in problems], n).to(backbone.device)
    state = backbone.prefill_samples([p.question for p in problems], n, sampler, keys)
    # real prompt lengths (rows are question-major), for the reference's re-prefill count
    prompt_lens = state.attention_mask[::n].sum(1).tolist()
    snapshots, latents, masks = [], [], []
    for t in range(1, cap + 1):
        state, h = backbone.latent_step(state, t, sampler=sampler, keys=keys)
        if not bool(state.active.any()):
            break
        latents.append(h.float().cpu())
        masks.append(state.active.cpu())
        snapshots.append(state.select(torch.arange(state.rows)) if t < cap or last_rolled == 0 else None)
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys, first_step=cap + 1)
    golds = [p.answer for p in problems for _ in range(n)]
    final = _correct(backbone, answer_ids, golds, fmt).reshape(q, n)
    answer_steps = answer_ids.shape[1]
    steps = len(latents)
    traj = torch.stack(latents, 1) if steps else torch.zeros(q * n, 0, backbone.hidden_size)
    mask = torch.stack(masks, 1) if steps else torch.zeros(q * n, 0, dtype=torch.bool)
    lengths = mask.sum(1)  # T_n of each row

    keep = torch.ones(q, dtype=torch.bool)
    all_c, all_w = final.all(1), ~final.any(1)
    stats.all_correct, stats.all_wrong = int(all_c.sum()), int(all_w.sum())
    if drop_all_correct:
        keep &= ~all_c
    if drop_all_wrong:
        keep &= ~all_w
    stats.kept = int(keep.sum())
    labels = torch.zeros(q * n, steps)
    if last_rolled:
        has = lengths > 0
        labels[has.nonzero().flatten(), lengths[has] - 1] = final.flatten()[has].float()
    kept = keep.repeat_interleave(n)
    for t in range(1, steps + 1):
        # rows still thinking after step t (t < T_n), or at their last step when it is rolled out
        rows = torch.nonzero(kept & (lengths >= t + last_rolled)).flatten()
        if not len(rows):
            continue
        rows_dev = rows.to(backbone.device)
        prefix = snapshots[t - 1].select(rows_dev).repeat_interleave(m)
        rkeys = derive_keys(keys[rows_dev].repeat_interleave(m), _ROLLOUT_STREAM, t)
        rkeys = derive_keys(rkeys ^ torch.arange(m, device=rkeys.device).repeat(len(rows)), _ROLLOUT_STREAM)
        prefix, _, _ = backbone.run_latents(prefix, cap, sampler=sampler, keys=rkeys, start_step=t + 1)
        out, _ = backbone.decode_answer(prefix, max_new_tokens=max_new_tokens, sampler=sampler, keys=rkeys, first_step=cap + 1)
        rgolds = [golds[i] for i in rows.tolist() for _ in range(m)]
        labels[rows, t - 1] = _correct(backbone, out, rgolds, fmt).float().reshape(len(rows), m).mean(1)
    stats.forward_tokens = backbone.forward_tokens - start_tokens
    groups: list[LabelledGroup | None] = []
    for i, p in enumerate(problems):
        rows = slice(i * n, (i + 1) * n)
        own = lengths[rows].tolist()
        # the reference samples the N trajectories the same way before its rollouts
        stats.reference_forward_tokens += sum(prompt_lens[i] + t_n + answer_steps for t_n in own)
        if not keep[i]:
            groups.append(None)
            continue
        stats.reference_forward_tokens += sum(reference_forward_tokens(prompt_lens[i], 1, t_n, m, answer_steps) for t_n in own)
        width = max(own)  # the group's own longest trajectory: no dependence on its batch
        g_mask = mask[rows, :width]
        stats.labels += labels[rows, :width][g_mask].tolist()
        groups.append(LabelledGroup(p.id, p.question, p.answer, traj[rows, :width], g_mask, labels[rows, :width], final[i]))
    return groups, stats
