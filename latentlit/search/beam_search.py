"""Latent beam search guided by a LatentRM (paper Sec. 3.2; the reference release has none), and
diverse verifier tree search (DVTS) on the same loop.

Budget N = B * K: at each latent step every one of the B beams is expanded into K sampled
candidates (the sampler's noise or dropout makes them differ, see :func:`latent_beam_search`),
each candidate's cumulative LatentRM score is computed, and the top B candidates per question
become the new beams. After the last step the B beams decode their answers greedily and the
best-scored beam wins.

Dynamic latent length (CoLaR): a candidate whose LM head emits the stop token after its last
forward pass (instead of proposing a latent) is *finished*: its trajectory and score are its
parent's (no latent is added, no RM step is scored) and it competes with the longer candidates
for the B places (of a beam's children that stop at the same step only the lowest slot is a
candidate: they share the trajectory); kept, it is carried as one candidate with the same score
at every later step (its other K - 1 children are not candidates). So a finished beam stays while fewer than B
continuing candidates score above it, and length is neither rewarded nor penalised beyond what
the trajectory score (``sum`` of step scores by default; ``mean`` normalises by length) says.
The search ends when every kept beam is finished or at ``max_latents``. ``latent_steps`` counts
the candidate latents proposed and scored (B * K per step with a fixed T, i.e. N * T, the same
as the sum_n T_n of best-of-N over N trajectories).

DVTS (Beeching et al., "Scaling test-time compute with open models", 2024, token space): the N
candidates per step are split into S = N / W independent subtrees of width W: each subtree keeps
its own best prefix and expands it into its own W candidates, and the S subtree winners are
aggregated (best score, or a vote over their answers). Here that is one loop with ``subtrees``
= S, ``beam_width`` = 1 and ``candidates`` = W: selection happens within each subtree instead of
over all B * K candidates. Degenerate cases (tested): S = 1 is beam search with B = 1, K = N
(identical trajectories); W = 1 gives N independent trajectories (subtree s samples its step-t
latents with the keys of slot s) and picks the best-scored one, i.e. best-of-N over them (their
keys differ from those of plain sampling, so not the same N trajectories).

This is the one aggregator that steers sampling, so it drives the backbone step by step through
the same seams as plain sampling (prefill, propose_latent, feed_latent, decode_answer). Candidate keys depend on
(seed, question id, step, candidate slot), so results do not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from latentlit.aggregation.scores import ranking_scores_tensor
from latentlit.models.backbone import answer_positions
from latentlit.models.hooks import Sampler
from latentlit.rng import derive_keys, question_key

_BEAM_STREAM = 0xBEA


@dataclass
class BeamResult:
    """Per question: the winning beam's answer text, its latents (T_w, d) and score, and every
    final beam's text and score (best first); ``nonfinite``: candidate scores that were NaN/inf
    over all steps (ranked as -inf, :mod:`latentlit.aggregation.scores`; a winner whose score is
    -inf means no candidate had a finite score; a candidate that stopped before its first latent
    has no score, -inf, and is not counted); ``beam_answer_positions``: forward passes that
    decoded each final beam's answer (best first); ``subtree_texts`` / ``subtree_scores``: each
    subtree's winner (subtree order; one subtree for plain beam search); ``latent_steps``:
    candidate latents proposed and scored; ``compute``: what the search ran, for
    :meth:`latentlit.evaluation.compute.CostModel.beam_search` (``prefills``: prompt prefills;
    ``fed``: latents fed at each sampler step 1, 2, ...; ``proposed``: latents proposed at each
    step; ``stop_checks``: LM-head stop decisions (dynamic stop only); ``beam_latents``: each
    final beam's latents, best first)."""

    text: str
    latents: torch.Tensor
    score: float
    beam_texts: list[str]
    beam_scores: list[float]
    nonfinite: int = 0
    beam_answer_positions: list[int] | None = None
    subtree_texts: list[str] = field(default_factory=list)
    subtree_scores: list[float] = field(default_factory=list)
    latent_steps: int = 0
    compute: dict = field(default_factory=dict)


class StepScorer(Protocol):
    """What beam search needs from a scorer: incremental scores of growing prefixes.

    ``reset(owners)`` starts R rows, row i belonging to question ``owners[i]``; each
    ``extend(parents, latents, active)`` appends latent ``latents[i]`` (R', d) to the prefix of
    row ``parents[i]`` of the previous call and returns the (R',) cumulative scores of the new
    rows; a row with ``active[i]`` False (a finished trajectory) appends nothing and keeps its
    parent's score (``active`` is passed only when some row is finished, so a scorer for
    fixed-T backbones may take two arguments). :class:`latentlit.models.latent_rm.LatentRMStepScorer` does this with a KV
    cache.
    """

    def reset(self, owners: torch.Tensor) -> None: ...

    def extend(self, parents: torch.Tensor, latents: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor: ...


class HistoryScorer:
    """A :class:`StepScorer` from a function of whole prefixes, ``fn(owners: list[int],
    latents (R, t, d)) -> (R,)`` (recomputed from scratch at every step; a finished row keeps
    its last score, an empty one scores -inf)."""

    def __init__(self, fn: Callable[[list[int], torch.Tensor], torch.Tensor]):
        self.fn = fn

    def reset(self, owners: torch.Tensor) -> None:
        self._owners, self._history = owners, None
        self._scores = torch.full((len(owners),), float("-inf"))

    def extend(self, parents: torch.Tensor, latents: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        self._owners = self._owners[parents]
        prefix = latents[:, None] if self._history is None else torch.cat([self._history[parents], latents[:, None]], 1)
        self._history = prefix
        new = self.fn(self._owners.tolist(), prefix).float()
        if active is not None:
            new = torch.where(active.to(new.device), new, self._scores.to(new.device)[parents.to(new.device)])
        self._scores = new
        return new


def _select(scores: torch.Tensor, valid: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (G, keep) of the ``keep`` best valid entries of each row of (G, C) ``scores``:
    valid before invalid, then higher score, then lower index (two stable sorts)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    first_valid = torch.sort(valid.gather(1, order).to(torch.uint8), dim=1, descending=True, stable=True).indices
    return order.gather(1, first_valid)[:, :keep]


@torch.no_grad()
def latent_beam_search(backbone, sampler: Sampler, question_ids: list[str], questions: list[str], scorer: StepScorer, *,
                       beam_width: int, candidates: int, seed: int = 0, max_new_tokens: int = 8,
                       subtrees: int = 1) -> list[BeamResult]:
    """Beam search over latent steps for a batch of questions (fixed or dynamic latent length).

    A candidate at step t is a child of a beam that carries that beam's pending latent
    h_{t-1} through the forward pass *with the child's own randomness* (MC-dropout acts in
    forward passes) and then proposes its own h_t = perturb(f(hidden)) (AGN acts here); with
    ``sampler.prefill == "per_sample"`` the step-1 children also prefill the question with their
    own randomness. So siblings differ in the latent the RM scores under either sampler, as N
    plain samples do. (Feeding h_t with the child's randomness after scoring it would give the K
    children of a beam the same h_t under MC-dropout: the RM could not tell them apart.) After
    the last step each kept beam feeds its pending latent and decodes greedily.

    Args:
        scorer: scores candidate prefixes incrementally (:class:`StepScorer`); with a LatentRM,
            ``sum_{s<=t} r_s`` of each prefix.
        beam_width: B beams kept per subtree. candidates: K per beam and step.
        subtrees: S independent subtrees per question (DVTS; 1 = plain beam search). Each
            question proposes S * B * K candidate latents per step.

    Raises:
        ValueError: B, K or S < 1.
    """
    if beam_width < 1 or candidates < 1 or subtrees < 1:
        raise ValueError(f"beam_width ({beam_width}), candidates ({candidates}) and subtrees ({subtrees}) must be >= 1")
    sampler.bind(backbone)
    cfg = backbone.latent_config
    q, b, k, s = len(questions), beam_width, candidates, subtrees
    w = s * b  # beams per question
    last = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
    device = backbone.device
    qkeys = torch.tensor([question_key(seed, i) for i in question_ids], dtype=torch.long, device=device)
    owner = torch.arange(q, device=device).repeat_interleave(w * k)
    slots = torch.arange(w * k, device=device).repeat(q)
    first_child = slots % k == 0
    state = pending = None
    has_pending = torch.ones(q * w, dtype=torch.bool, device=device)  # at the root nothing is finished
    beam_keys = torch.zeros(q * w, dtype=torch.long, device=device)
    history = torch.zeros(q * w, 0, backbone.hidden_size, device=device)
    history_mask = torch.zeros(q * w, 0, dtype=torch.bool, device=device)
    scores = torch.full((q * w,), float("-inf"), device=device)
    spent = torch.zeros(q, dtype=torch.long, device=device)
    nonfinite = torch.zeros(q, dtype=torch.long, device=device)
    fed, proposed = [], []  # (Q,) counts per step, for compute accounting
    dynamic = cfg.latent_stop_id is not None
    scorer.reset(torch.arange(q, device=device).repeat_interleave(w))
    beams = torch.arange(q * w, device=device)  # each beam's row in the scorer's previous call
    ran = 0
    for t in range(1, last + 1):
        if not bool(has_pending.any()):
            break
        keys = derive_keys(derive_keys(qkeys[owner], _BEAM_STREAM, t) ^ slots)
        feeding = has_pending.repeat_interleave(k)
        if t == 1:
            cand = backbone.prefill_samples(questions, w * k, sampler, keys)
        else:
            cand = backbone.feed_latent(state.repeat_interleave(k), pending.repeat_interleave(k, 0), t - 1, sampler=sampler,
                                        keys=keys, active=feeding)
            fed.append(feeding.view(q, w * k).sum(1))
        active = feeding & ~backbone.stops(cand)  # children that propose a latent at step t
        h = torch.where(active[:, None], backbone.propose_latent(cand, t, sampler=sampler, keys=keys), 0.0)
        # a child that stopped now is a finished candidate (its parent's latents and score); of a
        # beam's children that stopped, only the first is one (the others repeat its trajectory),
        # and a beam finished earlier is one candidate (its first child)
        stopped = (feeding & ~active).view(-1, k)
        valid = active | (stopped & (stopped.cumsum(1) == 1)).flatten() | (~feeding & first_child)
        cand_hist = torch.cat([history.repeat_interleave(k, 0), h[:, None].to(history.dtype)], dim=1)
        cand_hmask = torch.cat([history_mask.repeat_interleave(k, 0), active[:, None]], dim=1)
        # ``active`` only when a row is finished: a fixed-T scorer keeps its two-argument extend
        extra = () if bool(active.all()) else (active,)
        cand_scores = scorer.extend(beams.repeat_interleave(k), h, *extra).to(device).float()
        # non-finite scores rank as -inf: a NaN or +inf candidate never displaces a finite one (an
        # empty trajectory's -inf is no score, not a diverged RM: not counted)
        nonfinite += (~torch.isfinite(cand_scores) & valid & cand_hmask.any(1)).view(q, w * k).sum(1)
        cand_scores = ranking_scores_tensor(cand_scores)
        top = _select(cand_scores.view(q * s, b * k), valid.view(q * s, b * k), b)  # ties -> lower slot first
        beams = (top + torch.arange(q * s, device=device)[:, None] * (b * k)).flatten()
        spent += active.view(q, w * k).sum(1)
        proposed.append(active.view(q, w * k).sum(1))
        state, history, history_mask, scores = cand.select(beams), cand_hist[beams], cand_hmask[beams], cand_scores[beams]
        pending, has_pending, beam_keys, ran = h[beams], active[beams], keys[beams], t
    if state is None:  # no latent step at all (T = 0)
        ids, mask = backbone.encode_prompts(questions)
        state = backbone.prefill(ids, mask).repeat_interleave(w)
    elif bool(has_pending.any()):
        state = backbone.feed_latent(state, pending, ran, sampler=sampler, keys=beam_keys, active=has_pending)
        if len(fed) < ran:
            fed.append(torch.zeros_like(spent))
        fed[ran - 1] = fed[ran - 1] + has_pending.view(q, w).sum(1)
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens)
    texts = backbone.decode(answer_ids)
    positions = answer_positions(answer_ids, backbone.latent_config.eos_id, max_new_tokens)
    lengths = history_mask.sum(1).tolist()
    per_sample = sampler.prefill == "per_sample" and w * k > 1
    results = []
    for i in range(q):
        rank = lambda r: (-float(scores[r]), r)  # noqa: E731
        order = sorted(range(i * w, (i + 1) * w), key=rank)
        winners = [min(range(i * w + j * b, i * w + (j + 1) * b), key=rank) for j in range(s)]
        best = order[0]
        compute = {"prefills": w * k if per_sample else 1, "fed": [int(x[i]) for x in fed],
                   "proposed": [int(x[i]) for x in proposed], "stop_checks": w * k * len(proposed) if dynamic else 0,
                   "beam_latents": [int(lengths[r]) for r in order]}
        results.append(BeamResult(texts[best], history[best][history_mask[best]].float().cpu(), float(scores[best]),
                                  [texts[r] for r in order], [float(scores[r]) for r in order], int(nonfinite[i]),
                                  [positions[r] for r in order], [texts[r] for r in winners],
                                  [float(scores[r]) for r in winners], int(spent[i]), compute))
    return results


def dvts(backbone, sampler: Sampler, question_ids: list[str], questions: list[str], scorer: StepScorer, *,
         budget: int, width: int, seed: int = 0, max_new_tokens: int = 8) -> list[BeamResult]:
    """Diverse verifier tree search: ``budget`` N candidates per step split into N / ``width``
    subtrees, each keeping its best prefix and expanding it into ``width`` candidates
    (:func:`latent_beam_search` with ``subtrees = N / W``, ``beam_width = 1``,
    ``candidates = W``). The result's ``text`` is the best-scored subtree winner;
    ``subtree_texts`` / ``subtree_scores`` hold every winner for a vote.

    Raises:
        ValueError: ``width`` < 1 or not dividing ``budget``.
    """
    if width < 1 or budget < 1 or budget % width:
        raise ValueError(f"DVTS width={width} must be >= 1 and divide the budget N={budget}")
    return latent_beam_search(backbone, sampler, question_ids, questions, scorer, beam_width=1, candidates=width,
                              seed=seed, max_new_tokens=max_new_tokens, subtrees=budget // width)
