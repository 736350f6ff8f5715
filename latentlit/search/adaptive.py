"""Adaptive-N sampling: draw a question's trajectories in rounds until a stopping rule settles it.

The questions in flight advance together: a round samples ``round_size`` more trajectories for
every open question, as one N-way batch; a question the rule settles leaves and a waiting one
takes its place (:class:`AdaptivePool`, continuous batching), until each is settled or has
``n_max`` samples. Sample j of a question is keyed by (seed, question id, j)
(``offset`` of :func:`latentlit.search.nway.sample_questions`), so the trajectories an adaptive
run draws are the first ones of the fixed-N run, trajectory for trajectory.

Rules are :class:`latentlit.aggregation.stopping.StoppingRule` (pure functions of the answers so
far, and their LatentRM scores for ``best_score``).

The method owns its record field (each question), one entry per rule and threshold (threshold
strings as in :func:`latentlit.aggregation.stopping.threshold_key`)::

    "adaptive": {"<rule>": {"<threshold>": {"answer": str | None, "correct": bool, "trajectories": int}}}

In a fixed-N run the entries replay the rounds on the question's stored samples (exact, since an
adaptive run would draw the very same samples); in a live adaptive run there is one entry, the
executed rule, and ``trajectories`` is what was actually run for the question.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from latentlit.aggregation.registry import question_view
from latentlit.aggregation.stopping import AdaptiveSpec, StoppingRule, checkpoints, simulate
from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match
from latentlit.models.backbone import LatentBackbone
from latentlit.models.hooks import Sampler
from latentlit.search.nway import QuestionSamples, concat_samples, sample_questions

# (keys of the questions in this round, their new samples) -> one score list per question
ScoreFn = Callable[[list[Hashable], list[QuestionSamples]], list[list[float]]]


@dataclass
class AdaptiveSamples:
    """What an adaptive run drew for one question.

    Attributes:
        samples: the n drawn trajectories (n = len(samples.texts) <= n_max), in sample order.
        answers: n parsed answers. scores: n LatentRM trajectory scores, or None without a scorer.
        rounds: rounds this question took part in.
    """

    samples: QuestionSamples
    answers: list[str | None]
    scores: list[float] | None
    rounds: int


@dataclass
class _Open:
    key: Hashable
    question_id: str
    question: str
    parts: list[QuestionSamples] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rounds: int = 0


class AdaptivePool:
    """Adaptive-N sampling with continuous batching: questions in flight draw their next round
    together; a question the rule settles leaves and a waiting one is admitted in its place, so a
    round runs about ``rows`` trajectories however many questions have settled.

    A question draws ``round_size`` samples a round (the last one up to ``n_max``), sample j keyed
    by (seed, question id, j) whatever the round's other questions, so each question's samples,
    answers, scores and rounds are those of :func:`sample_adaptive` and its trajectory j the
    fixed-N run's trajectory j.

    Args:
        rows: trajectories a round aims at: ``rows // round_size`` questions in flight (at least
            one); also the chunk of :func:`~latentlit.search.nway.sample_questions`.
        parse: answer text -> normalised answer. score: LatentRM trajectory scores of a round's
            new samples, by the keys given to :meth:`admit`; required by rules that need scores.

    Raises:
        ValueError: ``n_max``, ``round_size`` or ``rows`` < 1, or a rule that needs scores without ``score``.
    """

    def __init__(self, backbone: LatentBackbone, sampler: Sampler, *, n_max: int, seed: int, rule: StoppingRule,
                 round_size: int, parse: Callable[[str], str | None], score: ScoreFn | None = None, rows: int = 1024,
                 num_latents: int | None = None, max_new_tokens: int = 16):
        if min(n_max, round_size, rows) < 1:
            raise ValueError(f"n_max ({n_max}), round_size ({round_size}) and rows ({rows}) must be >= 1")
        if rule.needs_scores and score is None:
            raise ValueError(f"adaptive rule {rule.name!r} needs LatentRM scores (a score function)")
        self.backbone, self.sampler, self.rule, self.parse, self.score = backbone, sampler, rule, parse, score
        self.n_max, self.seed, self.round_size, self.rows = n_max, seed, round_size, rows
        self.num_latents, self.max_new_tokens = num_latents, max_new_tokens
        self._waiting: deque[_Open] = deque()
        self._open: list[_Open] = []

    @property
    def capacity(self) -> int:
        """Questions in flight at most."""
        return max(1, self.rows // self.round_size)

    def __len__(self) -> int:
        """Questions admitted and not yet settled (waiting or in flight)."""
        return len(self._waiting) + len(self._open)

    def admit(self, keys: list[Hashable], question_ids: list[str], questions: list[str]) -> None:
        """Queue questions (each under a caller's ``key``, e.g. its index), after those already queued.

        Raises:
            ValueError: lists of different lengths.
        """
        if not len(keys) == len(question_ids) == len(questions):
            raise ValueError(f"{len(keys)} keys, {len(question_ids)} ids, {len(questions)} questions")
        self._waiting.extend(_Open(k, i, q) for k, i, q in zip(keys, question_ids, questions))

    def run(self, drain: bool = True) -> list[tuple[Hashable, AdaptiveSamples]]:
        """Run rounds while the questions admitted fill ``capacity`` (with ``drain``: until every one
        is settled); return the settled questions, in the order they settled."""
        done = []
        while self._open or self._waiting:
            if not drain and len(self) < self.capacity:
                break
            done += self.step()
        return done

    def step(self) -> list[tuple[Hashable, AdaptiveSamples]]:
        """One round: admit waiting questions up to ``capacity``, draw each open question's next
        samples, and return the questions the rule settles (or that reach ``n_max``)."""
        while self._waiting and len(self._open) < self.capacity:
            self._open.append(self._waiting.popleft())
        settled: list[tuple[Hashable, AdaptiveSamples]] = []
        by_size: dict[int, list[_Open]] = {}
        for q in self._open:  # the last round of n_max % round_size != 0 is shorter
            drawn = len(q.answers)
            by_size.setdefault(min(self.round_size, self.n_max - drawn), []).append(q)
        for n, group in by_size.items():
            offsets = [len(q.answers) for q in group]
            new = sample_questions(self.backbone, self.sampler, [q.question_id for q in group],
                                   [q.question for q in group], n, self.seed, max_trajectories=self.rows,
                                   num_latents=self.num_latents, max_new_tokens=self.max_new_tokens,
                                   offset=offsets[0] if len(set(offsets)) == 1 else offsets)
            new_scores = self.score([q.key for q in group], new) if self.score is not None else None
            for j, (q, s) in enumerate(zip(group, new)):
                q.parts.append(s)
                q.answers += [self.parse(t) for t in s.texts]
                if new_scores is not None:
                    q.scores += list(new_scores[j])
                q.rounds += 1
        still = []
        for q in self._open:
            if self.rule.settled(q.answers, self.n_max, q.scores if self.score is not None else None):
                settled.append((q.key, AdaptiveSamples(concat_samples(q.parts), q.answers,
                                                       q.scores if self.score is not None else None, q.rounds)))
            else:
                still.append(q)
        self._open = still
        return settled


def sample_adaptive(backbone: LatentBackbone, sampler: Sampler, question_ids: list[str], questions: list[str], *,
                    n_max: int, seed: int, rule: StoppingRule, round_size: int, parse: Callable[[str], str | None],
                    score: ScoreFn | None = None, max_trajectories: int = 1024, num_latents: int | None = None,
                    max_new_tokens: int = 16) -> list[AdaptiveSamples]:
    """Sample each question in rounds until ``rule`` settles it or ``n_max`` samples are drawn
    (an :class:`AdaptivePool` of ``max_trajectories`` rows over these questions, drained).

    Args:
        parse: answer text -> normalised answer (``latentlit.data.answers.extract_answer``).
        score: LatentRM trajectory scores of a round's new samples, by question index; required
            by rules that need scores.

    Returns:
        one :class:`AdaptiveSamples` per question, in input order.

    Raises:
        ValueError: ``n_max`` or ``round_size`` < 1, ids/questions of different length, or a
            rule that needs scores without ``score``.
    """
    if len(question_ids) != len(questions):
        raise ValueError(f"{len(question_ids)} ids for {len(questions)} questions")
    checkpoints(n_max, round_size)  # its errors name both values
    pool = AdaptivePool(backbone, sampler, n_max=n_max, seed=seed, rule=rule, round_size=round_size, parse=parse,
                        score=score, rows=max_trajectories, num_latents=num_latents, max_new_tokens=max_new_tokens)
    pool.admit(list(range(len(questions))), question_ids, questions)
    found = dict(pool.run())
    return [found[i] for i in range(len(questions))]


def adaptive_settings(spec: AdaptiveSpec | None, n_max: int) -> dict | None:
    """JSON-able description of ``spec`` with the budget ``n_max`` (stored in ``run.json`` and
    ``metrics.json``'s config)."""
    if spec is None:
        return None
    table: dict[str, list] = {}
    for rule in spec.table:
        table.setdefault(rule.name, []).append(rule.threshold)
    return {"n_max": n_max, "round_size": spec.round_size, "live": spec.run is not None,
            "rule": None if spec.run is None else spec.run.name,
            "threshold": None if spec.run is None else spec.run.threshold, "table": table}


def adaptive_field(spec: AdaptiveSpec, n_max: int, answers: Sequence[str | None], gold: str,
                   scores: Sequence[float] | None = None) -> dict:
    """The record's ``adaptive`` field for one question (see the module docstring).

    Args:
        answers: the question's samples in order: all n_max of them in a fixed-N run, the ones
            drawn in a live run. scores: their LatentRM scores (rules that need them).
    """
    field: dict[str, dict] = {}
    for rule in spec.table:
        if spec.run is None:
            out = simulate(rule, answers, n_max, spec.round_size, scores)
            answer, used = out.answer, out.trajectories
        else:
            answer, used = rule.choose(answers, scores), len(answers)
        field.setdefault(rule.name, {})[rule.key] = {"answer": answer, "correct": answers_match(answer, gold),
                                                     "trajectories": used}
    return field


def head_record(record: dict, n: int, aggregators: Sequence, seed: int) -> dict:
    """The record a fixed run with N = ``n`` would have written for this question: the first
    ``n`` samples of a live adaptive run's record (every question has at least the first round,
    and sample j is the fixed run's sample j), with its vote share, distinct answers, compute
    and the fields of ``aggregators`` (``latentlit.aggregation.registry``) recomputed on them.
    ``diversity`` is kept (a live run stores it over the first round already).

    Raises:
        ValueError: the record has fewer than ``n`` samples.
    """
    if len(record["answers"]) < n:
        raise ValueError(f"question {record['id']}: {len(record['answers'])} samples, fewer than the first round's {n}")
    head = dict(record)
    for key in ("answers", "correct", "texts", "rm_scores"):
        if record.get(key) is not None:
            head[key] = list(record[key][:n])
    vote = majority_vote(head["answers"])
    head["vote_share"], head["distinct_answers"] = round(vote.share, 6), vote.distinct
    if "compute" in record:
        head["compute"] = {**record["compute"], "latents": record["compute"]["latents"][:n],
                           "answers": record["compute"]["answers"][:n]}
    view = question_view(head, seed)
    for agg in aggregators:
        if agg.choose is not None:
            head[agg.name] = agg.choose(view)
    return head
