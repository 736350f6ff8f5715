"""Search: what spends a question's compute, as one table of methods with one signature.

``latentlit predict`` draws each question's N samples, then runs every search method the run
enables, in table order, and merges what each returns into the question's record:

===============  ==========================================  =====================================
method           enabled by (``TTSPredictor`` option)        record fields it owns
===============  ==========================================  =====================================
``beam_search``  ``beam_width`` B (or ``searches``)          ``beam_search``
``dvts``         ``dvts_width`` W (or ``searches``)          ``dvts``, ``dvts_vote``
===============  ==========================================  =====================================

A method is a :class:`Search`: ``run(batch)`` gets a :class:`SearchBatch` (one batch of questions,
the backbone, sampler and LatentRM, the run's options) and returns one :class:`Found` per
question: its record fields, the latent steps it proposed (``latent_steps.<name>``) and what it
ran (``compute.<name>``, :mod:`latentlit.evaluation.compute`). ``settings()`` is what it adds to
the run's identity (``run.json``, the settings hash, ``metrics.json``). Adding a method is its
module plus one entry in :data:`SEARCHES`; a run enables it with the predictor's ``searches``
option (``--model.init_args.searches+=<Class>``), without an edit to the predictor. A method whose
field is an answer to report (accuracy, intervals, plots) also lists it in
:mod:`latentlit.aggregation.registry` with ``choose=None``.

How the N samples themselves are drawn is :func:`draw`: all N at once (:mod:`.nway`); a live
adaptive run draws in rounds that stop when a rule settles the question (:class:`.adaptive.AdaptivePool`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match
from latentlit.models.backbone import LatentBackbone
from latentlit.models.hooks import Sampler
from latentlit.search.beam_search import BeamResult, StepScorer, dvts, latent_beam_search
from latentlit.search.nway import QuestionSamples, sample_questions

# (questions, their samples) -> each question's LatentRM trajectory scores, rounded as records store them
ScoreSamples = Callable[[list[str], list[QuestionSamples]], list[list[float]]]


@dataclass
class SearchBatch:
    """One batch of questions as every search method sees it.

    Attributes:
        backbone / sampler: the model and the sampler of the run.
        ids / questions / golds: the B questions (ids key every random number).
        n_samples: N, the budget of a question. seed: the run's seed.
        max_trajectories: rows run at once. max_new_tokens: answer tokens per trajectory.
        parse: answer text -> parsed answer (the run's answer format).
        score_samples: the run's LatentRM trajectory scores of N samples (None without a LatentRM).
        step_scorer: ``questions -> StepScorer``, the run's LatentRM as an incremental prefix
            scorer (None without a LatentRM).
    """

    backbone: LatentBackbone
    sampler: Sampler
    ids: list[str]
    questions: list[str]
    golds: list[str]
    n_samples: int
    seed: int
    max_trajectories: int
    max_new_tokens: int
    parse: Callable[[str], str | None]
    score_samples: ScoreSamples | None = None
    step_scorer: Callable[[list[str]], StepScorer] | None = None


@dataclass
class Found:
    """What a search method found for one question: ``fields`` merged into its record,
    ``latent_steps`` the candidate latents it proposed, ``compute`` the sizes its cost is
    counted from (stored under the method's name in the record's ``latent_steps`` and ``compute``)."""

    fields: dict
    latent_steps: int
    compute: dict = field(default_factory=dict)


class Search:
    """A search method: ``run`` spends a question's budget its own way (it may steer sampling).

    Subclasses set :attr:`name` (the record field and key under ``latent_steps`` / ``compute``),
    take their options as init arguments, and implement :meth:`run`.
    """

    name = "search"

    def settings(self) -> dict:
        """What the method adds to the run's settings (``run.json``, the hash, ``metrics.json``)."""
        return {}

    def check(self, n_samples: int, has_latent_rm: bool) -> None:
        """Raise ``ValueError`` (naming the option) when the run cannot have this method."""

    def run(self, batch: SearchBatch) -> list[Found]:
        """One :class:`Found` per question of ``batch``, in order."""
        raise NotImplementedError


def _scored_answer(text: str, score: float, parse: Callable[[str], str | None]) -> tuple[str | None, float | None]:
    """(parsed answer, score rounded as records store it); neither when the score is not finite
    (no candidate had a finite score: :mod:`latentlit.aggregation.scores`)."""
    finite = math.isfinite(score)
    return (parse(text) if finite else None), (round(score, 5) if finite else None)


class _RMGuided(Search):
    """A search that keeps the candidates a LatentRM scores best (beam search, DVTS)."""

    option = "width"
    split = ""

    def __init__(self, width: int):
        self.width = width

    def check(self, n_samples: int, has_latent_rm: bool) -> None:
        # each condition its own message: the user must learn which one failed
        if self.width < 1:
            raise ValueError(f"{self.option}={self.width} must be >= 1")
        if not has_latent_rm:
            raise ValueError(f"{self.option}={self.width} needs a LatentRM: {self.label} keeps the candidates it scores "
                             "best (give latent_rm / --latent_rm)")
        if n_samples % self.width:
            raise ValueError(f"{self.option}={self.width} must divide n_samples={n_samples} ({self.split})")

    def settings(self) -> dict:
        return {self.option: self.width}

    def _results(self, batch: SearchBatch) -> list[BeamResult]:
        raise NotImplementedError

    def run(self, batch: SearchBatch) -> list[Found]:
        found = []
        for result, gold in zip(self._results(batch), batch.golds):
            answer, score = _scored_answer(result.text, result.score, batch.parse)
            fields = {self.name: {"answer": answer, "correct": answers_match(answer, gold), "text": result.text,
                                  "score": score, "nonfinite_scores": result.nonfinite}}
            fields.update(self._more_fields(result, batch, gold, fields[self.name]))
            compute = {**self._compute(batch), "answers": list(result.beam_answer_positions), **result.compute}
            found.append(Found(fields, result.latent_steps, compute))
        return found

    def _more_fields(self, result: BeamResult, batch: SearchBatch, gold: str, own: dict) -> dict:
        return {}

    def _compute(self, batch: SearchBatch) -> dict:
        raise NotImplementedError


class BeamSearch(_RMGuided):
    """Latent beam search guided by the LatentRM (paper Sec. 3.2): B beams x K = N / B candidates
    a step (:func:`latentlit.search.beam_search.latent_beam_search`).

    Args:
        width: B, beams kept per question; must divide N.
    """

    name, label, option, split = "beam_search", "beam search", "beam_width", "B beams x N / B candidates each"

    def _results(self, batch: SearchBatch) -> list[BeamResult]:
        return latent_beam_search(batch.backbone, batch.sampler, batch.ids, batch.questions,
                                  batch.step_scorer(batch.questions), beam_width=self.width,
                                  candidates=batch.n_samples // self.width, seed=batch.seed,
                                  max_new_tokens=batch.max_new_tokens)

    def _compute(self, batch: SearchBatch) -> dict:
        return {"width": self.width, "candidates": batch.n_samples // self.width}


class DVTS(_RMGuided):
    """Diverse verifier tree search (Beeching et al. 2024): N / W subtrees of width W, each keeping
    its best prefix (:func:`latentlit.search.beam_search.dvts`). ``dvts`` is the best-scored subtree
    winner, ``dvts_vote`` the majority vote of the N / W winners' answers.

    Args:
        width: W, candidates per subtree and step; must divide N.
    """

    name, label, option, split = "dvts", "DVTS", "dvts_width", "N / W subtrees of width W"

    def _results(self, batch: SearchBatch) -> list[BeamResult]:
        return dvts(batch.backbone, batch.sampler, batch.ids, batch.questions, batch.step_scorer(batch.questions),
                    budget=batch.n_samples, width=self.width, seed=batch.seed, max_new_tokens=batch.max_new_tokens)

    def _more_fields(self, result: BeamResult, batch: SearchBatch, gold: str, own: dict) -> dict:
        winners = [_scored_answer(text, score, batch.parse) for text, score in zip(result.subtree_texts, result.subtree_scores)]
        own["subtree_answers"] = [a for a, _ in winners]
        own["subtree_scores"] = [s for _, s in winners]
        vote = majority_vote(own["subtree_answers"])
        return {"dvts_vote": {"answer": vote.answer, "correct": answers_match(vote.answer, gold)}}

    def _compute(self, batch: SearchBatch) -> dict:
        # width: the DVTS width W as set (candidates per subtree per step); each subtree is a beam
        # search with beam_width 1 and W candidates
        return {"width": self.width, "beam_width": 1, "candidates": self.width, "subtrees": batch.n_samples // self.width}


# name -> method class; a run's methods run in this order. The predictor's beam_width / dvts_width
# options are shorthands for the first two.
SEARCHES: dict[str, type[Search]] = {"beam_search": BeamSearch, "dvts": DVTS}
SHORTHANDS = {"beam_width": "beam_search", "dvts_width": "dvts"}


def enabled_searches(options: dict, searches: Sequence[Search] = (), n_samples: int = 1,
                     has_latent_rm: bool = False) -> list[Search]:
    """The search methods a run has, in :data:`SEARCHES` order, each checked.

    Args:
        options: the predictor's options; ``beam_width`` / ``dvts_width`` (when set) add the
            built-in methods. searches: further methods given as objects.

    Raises:
        ValueError: a method given twice, an unknown method, or a method's own check.
    """
    chosen = [SEARCHES[name](options[key]) for key, name in SHORTHANDS.items() if options.get(key) is not None]
    chosen += list(searches)
    names = [s.name for s in chosen]
    for s in chosen:
        if s.name not in SEARCHES or not isinstance(s, SEARCHES[s.name]):
            raise ValueError(f"search method {type(s).__name__} ({s.name!r}) is not in latentlit.search.SEARCHES "
                             f"({', '.join(SEARCHES)}): add it there")
        if names.count(s.name) > 1:
            raise ValueError(f"search method {s.name!r} is given twice (e.g. {[k for k, v in SHORTHANDS.items() if v == s.name]} "
                             "and searches): give it once")
        s.check(n_samples, has_latent_rm)
    order = list(SEARCHES)
    return sorted(chosen, key=lambda s: order.index(s.name))


@dataclass
class Drawn:
    """The samples of each question of a batch: ``samples`` (N trajectories each) and their
    LatentRM ``scores`` (None without a LatentRM)."""

    samples: list[QuestionSamples]
    scores: list[list[float]] | None


def draw(batch: SearchBatch) -> Drawn:
    """Each question's N samples, drawn at once (:func:`.nway.sample_questions`), and their LatentRM
    scores when the batch has a scorer. (A live adaptive run draws through
    :class:`.adaptive.AdaptivePool` instead; sample j is this run's sample j either way.)"""
    samples = sample_questions(batch.backbone, batch.sampler, batch.ids, batch.questions, batch.n_samples,
                               batch.seed, max_trajectories=batch.max_trajectories, max_new_tokens=batch.max_new_tokens)
    return Drawn(samples, None if batch.score_samples is None else batch.score_samples(batch.questions, samples))


__all__ = ["DVTS", "SEARCHES", "BeamSearch", "Drawn", "Found", "Search", "SearchBatch", "draw", "enabled_searches"]
