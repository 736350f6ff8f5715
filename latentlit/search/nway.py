"""N-way batched sampling: B questions x N samples advance together, in chunks of at most
``max_trajectories`` rows to bound memory. Row keys come from (seed, question id, sample index),
so chunking and batch composition do not change any trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentlit.models.backbone import LatentBackbone, answer_positions
from latentlit.models.hooks import Sampler
from latentlit.rng import trajectory_keys


@dataclass
class QuestionSamples:
    """N trajectories of one question.

    Attributes:
        latents: (N, T, d) float32 on CPU. latent_mask: (N, T) bool.
        texts: N decoded answer texts.
        answer_positions: N forward passes that decoded each answer (up to its eos), for
            compute accounting (``latentlit.evaluation.compute``).
    """

    latents: torch.Tensor
    latent_mask: torch.Tensor
    texts: list[str]
    answer_positions: list[int] | None = None


def sample_questions(backbone: LatentBackbone, sampler: Sampler, question_ids: list[str], questions: list[str],
                     n_samples: int, seed: int, *, max_trajectories: int = 1024, num_latents: int | None = None,
                     max_new_tokens: int = 16, offset: int | list[int] = 0) -> list[QuestionSamples]:
    """Sample N trajectories for each question: samples ``offset .. offset + N - 1`` of each
    (``offset`` > 0 continues a question's samples, as adaptive rounds do, one per question when a
    list; sample j is the same whatever the offset it is drawn at).

    Work is cut into chunks of whole questions (``max_trajectories // N`` per chunk) or, when
    N alone exceeds the budget, into chunks of samples of one question.

    Raises:
        ValueError: ``n_samples`` or ``max_trajectories`` < 1, or ids/questions of different length.
    """
    offsets = [offset] * len(questions) if isinstance(offset, int) else list(offset)
    if n_samples < 1 or max_trajectories < 1 or min(offsets, default=0) < 0:
        raise ValueError(f"n_samples ({n_samples}) and max_trajectories ({max_trajectories}) must be >= 1, "
                         f"offset ({offset}) >= 0")
    if not len(question_ids) == len(questions) == len(offsets):
        raise ValueError(f"{len(question_ids)} ids for {len(questions)} questions ({len(offsets)} offsets)")
    per_chunk = max(1, max_trajectories // n_samples)
    sample_chunk = min(n_samples, max_trajectories)
    results: list[QuestionSamples] = []
    for start in range(0, len(questions), per_chunk):
        ids, qs = question_ids[start:start + per_chunk], questions[start:start + per_chunk]
        offs = offsets[start:start + per_chunk]
        if sample_chunk == n_samples:
            keys = trajectory_keys(seed, ids, n_samples, offset=offs)
            out = backbone.generate(qs, n_samples=n_samples, sampler=sampler, keys=keys, num_latents=num_latents,
                                    max_new_tokens=max_new_tokens)
            positions = answer_positions(out.answer_ids, backbone.latent_config.eos_id, max_new_tokens)
            for q in range(len(qs)):
                rows = slice(q * n_samples, (q + 1) * n_samples)
                results.append(QuestionSamples(out.latents[rows].float().cpu(), out.latent_mask[rows].cpu(),
                                               out.answers_text[rows], positions[rows]))
            continue
        for qid, q, off in zip(ids, qs, offs):
            parts = []
            for start_j in range(0, n_samples, sample_chunk):
                n = min(sample_chunk, n_samples - start_j)
                keys = trajectory_keys(seed, [qid], n, offset=off + start_j)
                parts.append(backbone.generate([q], n_samples=n, sampler=sampler, keys=keys, num_latents=num_latents,
                                               max_new_tokens=max_new_tokens))
            results.append(concat_samples([
                QuestionSamples(p.latents.float().cpu(), p.latent_mask.cpu(), p.answers_text,
                                answer_positions(p.answer_ids, backbone.latent_config.eos_id, max_new_tokens))
                for p in parts]))
    return results


def concat_samples(parts: list[QuestionSamples]) -> QuestionSamples:
    """One question's samples drawn in parts, in order; latents are zero-padded (mask False) to
    the longest part's number of steps (a dynamic latent stop gives parts of different widths)."""
    width = max(p.latents.shape[1] for p in parts)
    pad = torch.nn.functional.pad
    latents = torch.cat([pad(p.latents, (0, 0, 0, width - p.latents.shape[1])) for p in parts])
    mask = torch.cat([pad(p.latent_mask, (0, width - p.latent_mask.shape[1])) for p in parts])
    positions = None
    if all(p.answer_positions is not None for p in parts):
        positions = [a for p in parts for a in p.answer_positions]
    return QuestionSamples(latents, mask, [t for p in parts for t in p.texts], positions)
