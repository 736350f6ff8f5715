"""The aggregators latentlit runs and reports, in one list.

Each :class:`Aggregator` says what the rest of latentlit needs to know about a method: its name
(the ``predictions.jsonl`` field holding ``{"answer", "correct", ...}`` and the ``<name>@k``
metric prefix), whether it needs a LatentRM, when a run has it, how its answer is chosen from a
question's samples (post-hoc aggregators) or that the predictor runs it itself (aggregators that
steer sampling, such as beam search), how it is estimated at k < N, and what compute it spends.
The predictor's records, ``metrics.json``, the printed table, ``scaling.png``, the
accuracy-vs-compute figure and ``scripts/compare_runs.py`` all read this list, so a new method is
its own module plus one :func:`register` call (or one entry below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from latentlit.aggregation.at_k import (
    DEFAULT_SUBSETS,
    EXACT_SLOTS,
    EXACT_SUBSETS,
    MAJORITY_EXACT_MAX_N,
    AtK,
    SubsetTable,
    answer_labels,
    best_of_n_at_k,
    majority_vote_at_k,
    random_pick_at_k,
    subset_table,
    vote_at_k,
)
from latentlit.aggregation.scores import rm_vote_weights
from latentlit.aggregation.select import best_of_n, random_pick
from latentlit.aggregation.selector import calibrated_confidence, group_features, tempered_scores, tempered_vote
from latentlit.aggregation.vote import majority_vote, weighted_vote
from latentlit.data.answers import answers_match
from latentlit.rng import question_key


@dataclass
class QuestionView:
    """One question's samples as the aggregators and their estimators see them.

    Attributes:
        answers: N parsed answers (None: no answer). correct: N booleans. gold: the gold answer.
        scores: N LatentRM trajectory scores (NaN where the RM gave a non-finite one), or None
            without a LatentRM.
        key: int64 key of (seed, question id): keys random picks and random subsets.
        selector: the run's fitted selector parameters (:meth:`~latentlit.aggregation.selector.Selector.params`:
            ``temperature``, ``calibration``), or None.
    """

    answers: list
    correct: list[bool]
    gold: str
    scores: list[float] | None
    key: int
    selector: dict | None = None
    _labels: np.ndarray | None = field(default=None, repr=False)
    _group_correct: np.ndarray | None = field(default=None, repr=False)
    _tables: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def labels(self) -> np.ndarray:
        """(N,) answer-group label per sample (-1: no answer), computed once."""
        if self._labels is None:
            self._labels = answer_labels(self.answers)
        return self._labels

    @property
    def group_correct(self) -> np.ndarray:
        """(G,) whether each answer group holds the gold answer, computed once."""
        if self._group_correct is None:
            labels = self.labels
            out = np.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=bool)
            for i, label in enumerate(labels):
                if label >= 0:
                    out[label] = bool(self.correct[i])
            self._group_correct = out
        return self._group_correct


    def subsets(self, ks: Sequence[int]) -> SubsetTable:
        """The random / enumerated k-subsets of this question for ``ks`` (built once, shared by
        every subset estimator: common random numbers)."""
        key = tuple(ks)
        if key not in self._tables:
            self._tables[key] = subset_table(self.n, ks, self.key)
        return self._tables[key]


def question_view(record: dict, seed: int) -> QuestionView:
    """The aggregators' view of a record (its RM scores when it has them; a stored ``null``, a
    non-finite score, becomes NaN)."""
    scores = record.get("rm_scores")
    if scores is not None:
        scores = [float("nan") if x is None else float(x) for x in scores]
    return QuestionView(list(record["answers"]), list(record["correct"]), record["gold"], scores,
                        question_key(seed, record["id"]), record.get("selector"))


@dataclass(frozen=True)
class Aggregator:
    """One aggregation method.

    Attributes:
        name: record field and metric prefix (``<name>@k``).
        label: how plots and tables name it.
        needs_rm: runs only with a LatentRM.
        estimator: how ``<name>@k`` is estimated at k < N (stated in ``metrics.json``).
        choose: post-hoc choice ``QuestionView -> record field`` (``{"answer", "correct", ...}``);
            None for aggregators the predictor runs itself because they steer sampling.
        at_k: ``(QuestionView, ks) -> AtK`` expected correctness at each k; None when only k = N
            is defined (the method's budget decides its sampling, e.g. beam search's B x K = N).
        spends: what one question costs at k (:mod:`latentlit.evaluation.compute`):
            ``"samples"`` (k trajectories), ``"samples+rm"`` (k trajectories scored by the
            LatentRM), or a function ``(CostModel, record, k) -> Cost`` for methods with their
            own sampling (beam search: :meth:`CostModel.beam_search`).
        enabled: ``run settings -> bool`` (settings as ``TTSPredictor.run_settings()``); default:
            always, or whenever a LatentRM is given for ``needs_rm``.
        colour / marker: how figures draw it (matplotlib colour and marker); None: one of its own
            from its place in the registry (:func:`style`).
    """

    name: str
    label: str
    needs_rm: bool
    estimator: str
    choose: Callable[[QuestionView], dict] | None = None
    at_k: Callable[[QuestionView, Sequence[int]], AtK] | None = None
    spends: str | Callable = "samples"
    enabled: Callable[[dict], bool] | None = None
    colour: str | None = None
    marker: str | None = None

    def runs_with(self, settings: dict) -> bool:
        """Whether a run with these settings has this aggregator."""
        if self.enabled is not None:
            return bool(self.enabled(settings))
        return not self.needs_rm or settings.get("latent_rm") is not None


SPENDS = ("samples", "samples+rm")


def _choose_majority(q: QuestionView) -> dict:
    vote = majority_vote(q.answers)
    return {"answer": vote.answer, "correct": answers_match(vote.answer, q.gold)}


def _choose_random(q: QuestionView) -> dict:
    pick = random_pick(q.n, q.key)
    return {"answer": q.answers[pick], "correct": q.correct[pick], "index": pick}


def _choose_best(q: QuestionView) -> dict:
    best = best_of_n(q.scores)  # None when no score is finite: no answer
    if best is None:
        return {"answer": None, "correct": False, "index": None}
    return {"answer": q.answers[best], "correct": q.correct[best], "index": best}


def _choose_weighted(q: QuestionView) -> dict:
    vote = weighted_vote(q.answers, rm_vote_weights(q.scores))
    return {"answer": vote.answer, "correct": answers_match(vote.answer, q.gold)}


def _choose_tempered(q: QuestionView) -> dict:
    tau, calibration = q.selector["temperature"], q.selector.get("calibration")
    vote = tempered_vote(q.answers, q.scores, tau)
    out = {"answer": vote.answer, "correct": answers_match(vote.answer, q.gold)}
    if calibration is not None:
        out["confidence"] = (0.0 if vote.answer is None else
                             round(calibrated_confidence(group_features(q.labels, q.scores, vote.index, tau), calibration), 6))
    return out


AGGREGATORS: list[Aggregator] = [
    Aggregator("majority_vote", "majority vote", False,
               f"exact for N <= {MAJORITY_EXACT_MAX_N}: majority vote over a random k-subset, summed over the answer "
               "groups (hypergeometric counts, ties to the earliest first vote); at k = N the record's vote",
               choose=_choose_majority,
               at_k=lambda q, ks: majority_vote_at_k(q.labels, q.group_correct, ks, q.key)),
    Aggregator("random", "random pick", False,
               "exact: a random pick among k random samples is a random sample (c/N for every k); the record's "
               "'random' field is one keyed draw",
               choose=_choose_random, at_k=lambda q, ks: random_pick_at_k(q.correct, ks)),
    Aggregator("best_of_n", "best-of-N", True,
               "exact: the top-scored sample of a random k-subset is the one ranked r with probability "
               "C(N-1-r,k-1)/C(N,k)",
               choose=_choose_best, at_k=lambda q, ks: best_of_n_at_k(q.scores, q.correct, ks), spends="samples+rm"),
    Aggregator("weighted_vote", "weighted vote", True,
               "RM-weighted vote (softmax over the subset's scores) over a random k-subset: exact over all C(N,k) "
               f"subsets when C(N,k) <= {EXACT_SUBSETS} and C(N,k)*k <= {EXACT_SLOTS}, else the mean over "
               f"{DEFAULT_SUBSETS} random subsets keyed by "
               "(seed, question) (Monte Carlo); at k = N the record's vote",
               choose=_choose_weighted,
               at_k=lambda q, ks: vote_at_k(q.labels, q.group_correct, ks, q.key, scores=q.scores, table=q.subsets(ks)),
               spends="samples+rm"),
    Aggregator("beam_search", "beam search", True,
               "only at k = N: its budget B x K = N steers the sampling, so smaller budgets need their own run",
               spends=lambda model, record, k: model.beam_search(record), enabled=lambda s: bool(s.get("beam_width"))),
    Aggregator("dvts", "DVTS", True,
               "only at k = N: N / W subtrees of width W steer the sampling; the best-scored subtree winner",
               spends=lambda model, record, k: model.beam_search(record, "dvts"), enabled=lambda s: bool(s.get("dvts_width"))),
    Aggregator("dvts_vote", "DVTS vote", True,
               "only at k = N: majority vote over the N / W subtree winners of the same DVTS run",
               spends=lambda model, record, k: model.beam_search(record, "dvts"), enabled=lambda s: bool(s.get("dvts_width"))),
    Aggregator("tempered_vote", "tempered vote", True,
               "the weighted vote's estimator on scores divided by the selector's temperature tau (fitted on "
               "validation): exact over all C(N,k) subsets when small, else keyed Monte Carlo; at k = N the record's vote",
               choose=_choose_tempered,
               at_k=lambda q, ks: vote_at_k(q.labels, q.group_correct, ks, q.key,
                                            scores=tempered_scores(q.scores, q.selector["temperature"]),
                                            table=q.subsets(ks)),
               spends="samples+rm", enabled=lambda s: s.get("selector") is not None),
]


def register(aggregator: Aggregator) -> None:
    """Add an aggregator (after the built-in ones; replaces one of the same name).

    An aggregator without ``choose`` is run by the predictor, which writes its record field
    (beam search); give it a ``spends`` function for its compute.

    Raises:
        ValueError: an unknown ``spends`` string.
    """
    if isinstance(aggregator.spends, str) and aggregator.spends not in SPENDS:
        raise ValueError(f"aggregator {aggregator.name!r}: spends={aggregator.spends!r}; expected one of {SPENDS} or a function")
    for i, existing in enumerate(AGGREGATORS):
        if existing.name == aggregator.name:
            AGGREGATORS[i] = aggregator
            return
    AGGREGATORS.append(aggregator)


def get(name: str) -> Aggregator:
    """The registered aggregator called ``name``.

    Raises:
        KeyError: no such aggregator (names the registered ones).
    """
    for a in AGGREGATORS:
        if a.name == name:
            return a
    raise KeyError(f"no aggregator {name!r}; registered: {[a.name for a in AGGREGATORS]}")


# coverage@k is drawn in C0 with circles; aggregators take C1, C2, ... and these markers in
# registry order. 10 colours and 11 markers: (colour, marker) pairs repeat only after 110 aggregators.
COVERAGE_STYLE = ("C0", "o")
MARKERS = ("s", "^", "v", "D", "P", "X", "*", "<", ">", "p", "h")


def style(name: str) -> tuple[str, str]:
    """(matplotlib colour, marker) of the aggregator called ``name``: its own ``colour`` /
    ``marker`` when set, else by its place in the registry, so every registered aggregator is
    drawn apart from the others and from coverage (``COVERAGE_STYLE``).

    Raises:
        KeyError: no such aggregator.
    """
    for i, a in enumerate(AGGREGATORS):
        if a.name == name:
            return a.colour or f"C{(i + 1) % 10}", a.marker or MARKERS[i % len(MARKERS)]
    raise KeyError(f"no aggregator {name!r}; registered: {[a.name for a in AGGREGATORS]}")


def enabled(settings: dict) -> list[Aggregator]:
    """The aggregators a run with these settings has, in registry order (same on every process)."""
    return [a for a in AGGREGATORS if a.runs_with(settings)]
