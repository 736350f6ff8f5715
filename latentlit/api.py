"""What a notebook needs in a few calls: load a backbone and a LatentRM, sample trajectories for
questions, aggregate their answers (docs/python-api.md).

``sample`` runs the same engine as ``latentlit predict`` (N-way chunked sampling with keyed
randomness, :mod:`latentlit.search.nway`; the LatentRM's trajectory scores as records store them),
so a question asked with the same id, seed and sampler gets the same trajectories here as there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlit.aggregation.scores import rm_vote_weights
from latentlit.aggregation.select import best_of_n
from latentlit.aggregation.vote import VoteResult, majority_vote, weighted_vote
from latentlit.data.answers import extract_answer
from latentlit.data.tokenizer import check_questions
from latentlit.models.backbone import LatentBackbone
from latentlit.models.ensemble import LatentRMEnsemble
from latentlit.models.ensemble import load_latent_rm as load_rm
from latentlit.models.hooks import Deterministic, Sampler
from latentlit.models.latent_rm import LatentRM
from latentlit.search.nway import sample_questions


def load_latent_rm(path: str | Path = "quickstart") -> LatentRM | LatentRMEnsemble:
    """A LatentRM in eval mode from a directory (latentlit's, or the released COCONUT RM), a
    shipped name (``"quickstart"``, ``"quickstart_llama"``; :meth:`LatentRM.from_pretrained`), or an
    ensemble directory (:mod:`latentlit.models.ensemble`)."""
    return load_rm(path)


@dataclass
class Trajectories:
    """The N trajectories of one question.

    Attributes:
        id / question: the question and the id that keyed its randomness.
        texts: N decoded answer texts. answers: N parsed answers (None: no answer found).
        latents: (N, T, d) float32 latent vectors h_1..h_T fed at each step; latent_mask: (N, T)
            bool, False after a dynamic stop.
        scores: N LatentRM trajectory scores (5 decimals, NaN where not finite), or None.
    """

    id: str
    question: str
    texts: list[str]
    answers: list[str | None]
    latents: torch.Tensor
    latent_mask: torch.Tensor
    scores: list[float] | None = None

    def majority_vote(self) -> VoteResult:
        """The most frequent answer (ties to the earliest; :func:`latentlit.aggregation.majority_vote`)."""
        return majority_vote(self.answers)

    def best_of_n(self) -> str | None:
        """The answer of the best-scored trajectory (paper Sec. 3.2); needs ``scores``.

        Raises:
            ValueError: no LatentRM scores (``sample(..., latent_rm=...)``).
        """
        index = best_of_n(self._scores())
        return None if index is None else self.answers[index]

    def weighted_vote(self) -> VoteResult:
        """Votes weighted by the softmax of the trajectory scores; needs ``scores``."""
        return weighted_vote(self.answers, rm_vote_weights(self._scores()))

    def _scores(self) -> list[float]:
        if self.scores is None:
            raise ValueError(f"question {self.id!r} has no LatentRM scores: sample with latent_rm=...")
        return self.scores


def sample(backbone: LatentBackbone, questions: Sequence[str], *, n_samples: int = 16, sampler: Sampler | None = None,
           seed: int = 0, ids: Sequence[str] | None = None, latent_rm: LatentRM | None = None, rm_score: str = "sum",
           max_new_tokens: int = 8, answer_format: str | None = None,
           max_trajectories: int = 1024) -> list[Trajectories]:
    """N latent trajectories for each question, with their parsed answers (and LatentRM scores).

    Args:
        backbone: from :func:`latentlit.load_backbone`. questions: B question texts.
        n_samples: N. sampler: MCDropout / AGN / Deterministic (default: Deterministic, N equal
            trajectories). seed, ids: key every random number with (seed, id, sample index);
            ``ids`` default to the question texts, so a question samples the same trajectories
            wherever it stands in the list (``latentlit predict`` keys by the data file's ids).
        latent_rm: score each trajectory (``rm_score``: ``sum`` of r_t as in the paper, ``mean``,
            ``last``, ``min``). answer_format: default the backbone's.
        max_trajectories: rows run at once (memory); does not change any trajectory.

    Returns:
        one :class:`Trajectories` per question, in order.

    Raises:
        ValueError: ids and questions of different lengths, a question the tokenizer cannot read
            (unknown words) or too long for the model, a LatentRM for other latents.
    """
    questions = list(questions)
    ids = list(questions if ids is None else ids)
    if len(ids) != len(questions):
        raise ValueError(f"{len(ids)} ids for {len(questions)} questions")
    if latent_rm is not None and latent_rm.latent_size != backbone.hidden_size:
        raise ValueError(f"the LatentRM reads {latent_rm.latent_size}-dim latents, the backbone writes "
                         f"{backbone.hidden_size}-dim ones: use the RM trained on this backbone")
    check_questions(backbone.tokenizer, questions, ids)
    backbone.check_lengths(ids, questions, max_new_tokens)
    sampler = sampler or Deterministic()
    fmt = answer_format or backbone.latent_config.answer_format
    with torch.no_grad():
        samples = sample_questions(backbone.eval(), sampler, ids, questions, n_samples, seed,
                                   max_trajectories=max_trajectories, max_new_tokens=max_new_tokens)
    out = []
    for qid, question, s in zip(ids, questions, samples):
        scores = None
        if latent_rm is not None:
            values = latent_rm.score_trajectories([question], s.latents[None], s.latent_mask[None], [s.texts],
                                                  rm_score)[0].cpu().tolist()
            scores = [round(x, 5) if math.isfinite(x) else math.nan for x in values]
        out.append(Trajectories(qid, question, s.texts, [extract_answer(t, fmt) for t in s.texts], s.latents,
                                s.latent_mask, scores))
    return out


__all__ = ["Trajectories", "load_latent_rm", "sample"]
