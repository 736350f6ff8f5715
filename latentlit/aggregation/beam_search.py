"""Latent beam search guided by a LatentRM (paper Sec. 3.2; the reference release has none).

Budget N = B * K: at each latent step every one of the B beams is expanded into K sampled
candidates (the sampler's noise or dropout makes them differ), each candidate's cumulative
LatentRM score is computed, and the top B candidates per question become the new beams. After T
steps the B beams decode their answers greedily and the best-scored beam wins.

This is the one aggregator that steers sampling, so it drives the backbone step by step through
the same seams as plain sampling (prefill, latent_step, decode_answer). Candidate keys depend on
(seed, question id, step, candidate slot), so results do not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from latentlit.aggregation.scores import ranking_scores_tensor
from latentlit.reporting.compute import answer_positions
from latentlit.sampling.base import Sampler
from latentlit.sampling.rng import derive_keys, question_key

_BEAM_STREAM = 0xBEA


@dataclass
class BeamResult:
    """Per question: the winning beam's answer text, its latents (T, d) and score, and every
    final beam's text and score (best first); ``nonfinite``: candidate scores that were NaN/inf
    over all steps (ranked as -inf, :mod:`latentlit.aggregation.scores`; a winner whose score is
    -inf means no candidate had a finite score); ``beam_answer_positions``: forward passes that
    decoded each final beam's answer (best first; for compute accounting)."""

    text: str
    latents: torch.Tensor
    score: float
    beam_texts: list[str]
    beam_scores: list[float]
    nonfinite: int = 0
    beam_answer_positions: list[int] | None = None


class StepScorer(Protocol):
    """What beam search needs from a scorer: incremental scores of growing prefixes.

    ``reset(owners)`` starts R rows, row i belonging to question ``owners[i]``; each
    ``extend(parents, latents)`` appends latent ``latents[i]`` (R', d) to the prefix of row
    ``parents[i]`` of the previous call and returns the (R',) cumulative scores of the new rows.
    :class:`latentlit.models.latent_rm.LatentRMStepScorer` does this with a KV cache.
    """

    def reset(self, owners: torch.Tensor) -> None: ...

    def extend(self, parents: torch.Tensor, latents: torch.Tensor) -> torch.Tensor: ...


class HistoryScorer:
    """A :class:`StepScorer` from a function of whole prefixes, ``fn(owners: list[int],
    latents (R, t, d)) -> (R,)`` (recomputed from scratch at every step)."""

    def __init__(self, fn: Callable[[list[int], torch.Tensor], torch.Tensor]):
        self.fn = fn

    def reset(self, owners: torch.Tensor) -> None:
        self._owners, self._history = owners, None

    def extend(self, parents: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        self._owners = self._owners[parents]
        prefix = latents[:, None] if self._history is None else torch.cat([self._history[parents], latents[:, None]], 1)
        self._history = prefix
        return self.fn(self._owners.tolist(), prefix)


@torch.no_grad()
def latent_beam_search(backbone, sampler: Sampler, question_ids: list[str], questions: list[str], scorer: StepScorer, *,
                       beam_width: int, candidates: int, seed: int = 0, max_new_tokens: int = 8) -> list[BeamResult]:
    """Beam search over latent steps for a batch of questions.

    Args:
        scorer: scores candidate prefixes incrementally (:class:`StepScorer`); with a LatentRM,
            ``sum_{s<=t} r_s`` of each prefix.
        beam_width: B. candidates: K per beam.

    Raises:
        ValueError: B or K < 1, or a backbone with a dynamic latent stop.
    """
    if beam_width < 1 or candidates < 1:
        raise ValueError(f"beam_width ({beam_width}) and candidates ({candidates}) must be >= 1")
    if backbone.latent_config.latent_stop_id is not None:
        raise ValueError("latent beam search needs a fixed number of latent steps (latent_stop_id is set)")
    sampler.bind(backbone)
    q, b, k, T = len(questions), beam_width, candidates, backbone.latent_config.num_latents
    device = backbone.device
    qkeys = torch.tensor([question_key(seed, i) for i in question_ids], dtype=torch.long, device=device)
    ids, mask = backbone.encode_prompts(questions)
    state = backbone.prefill(ids, mask).repeat_interleave(b)  # (Q*B) beams, identical at the root
    history = torch.zeros(q * b, 0, backbone.hidden_size, device=device)
    owner = torch.arange(q, device=device).repeat_interleave(b * k)
    slots = torch.arange(b * k, device=device).repeat(q)
    scores = torch.zeros(q * b, device=device)
    scorer.reset(torch.arange(q, device=device).repeat_interleave(b))
    beams = torch.arange(q * b, device=device)  # each beam's row in the scorer's previous call
    nonfinite = torch.zeros(q, dtype=torch.long, device=device)
    for t in range(1, T + 1):
        cand = state.repeat_interleave(k)
        keys = derive_keys(derive_keys(qkeys[owner], _BEAM_STREAM, t) ^ slots)
        cand, h = backbone.latent_step(cand, t, sampler=sampler, keys=keys)
        cand_hist = torch.cat([history.repeat_interleave(k, 0), h[:, None].to(history.dtype)], dim=1)
        cand_scores = scorer.extend(beams.repeat_interleave(k), h).to(device).float()
        # non-finite scores rank as -inf: a NaN or +inf candidate never displaces a finite one
        nonfinite += (~torch.isfinite(cand_scores)).view(q, b * k).sum(1)
        cand_scores = ranking_scores_tensor(cand_scores)
        top = cand_scores.view(q, b * k).topk(b, dim=1, sorted=True).indices  # ties -> lower slot first
        beams = (top + torch.arange(q, device=device)[:, None] * (b * k)).flatten()
        state, history, scores = cand.select(beams), cand_hist[beams], cand_scores[beams]
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens)
    texts = backbone.decode(answer_ids)
    positions = answer_positions(answer_ids, backbone.latent_config.eos_id, max_new_tokens)
    results = []
    for i in range(q):
        rows = range(i * b, (i + 1) * b)
        order = sorted(rows, key=lambda r: (-float(scores[r]), r))
        best = order[0]
        results.append(BeamResult(texts[best], history[best].float().cpu(), float(scores[best]),
                                  [texts[r] for r in order], [float(scores[r]) for r in order], int(nonfinite[i]),
                                  [positions[r] for r in order]))
    return results
