"""Adaptive-N sampling: draw a question's trajectories in rounds until a stopping rule settles it.

All questions of a batch advance together: round r samples ``round_size`` more trajectories for
every question still open, as one N-way batch (chunked by ``max_trajectories`` like fixed-N
sampling); a question the rule settles leaves the batch, the others continue, until each is
settled or has ``n_max`` samples. Sample j of a question is keyed by (seed, question id, j)
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from latentlit.aggregation.registry import question_view
from latentlit.aggregation.stopping import AdaptiveSpec, StoppingRule, checkpoints, simulate
from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match
from latentlit.models.backbone import LatentBackbone
from latentlit.models.hooks import Sampler
from latentlit.search.nway import QuestionSamples, concat_samples, sample_questions

# (indices of the questions in this round, their new samples) -> one score list per question
ScoreFn = Callable[[list[int], list[QuestionSamples]], list[list[float]]]


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


def sample_adaptive(backbone: LatentBackbone, sampler: Sampler, question_ids: list[str], questions: list[str], *,
                    n_max: int, seed: int, rule: StoppingRule, round_size: int, parse: Callable[[str], str | None],
                    score: ScoreFn | None = None, max_trajectories: int = 1024, num_latents: int | None = None,
                    max_new_tokens: int = 16) -> list[AdaptiveSamples]:
    """Sample each question in rounds until ``rule`` settles it or ``n_max`` samples are drawn.

    Args:
        parse: answer text -> normalised answer (``latentlit.data.answers.extract_answer``).
        score: LatentRM trajectory scores of a round's new samples; required by rules that
            need scores.

    Returns:
        one :class:`AdaptiveSamples` per question, in input order.

    Raises:
        ValueError: ``n_max`` or ``round_size`` < 1, ids/questions of different length, or a
            rule that needs scores without ``score``.
    """
    if len(question_ids) != len(questions):
        raise ValueError(f"{len(question_ids)} ids for {len(questions)} questions")
    if rule.needs_scores and score is None:
        raise ValueError(f"adaptive rule {rule.name!r} needs LatentRM scores (a score function)")
    parts: list[list[QuestionSamples]] = [[] for _ in questions]
    answers: list[list[str | None]] = [[] for _ in questions]
    scores: list[list[float]] = [[] for _ in questions]
    rounds = [0] * len(questions)
    active = list(range(len(questions)))
    drawn = 0  # every open question has exactly this many samples
    for n in checkpoints(n_max, round_size):
        new = sample_questions(backbone, sampler, [question_ids[i] for i in active], [questions[i] for i in active],
                               n - drawn, seed, max_trajectories=max_trajectories, num_latents=num_latents,
                               max_new_tokens=max_new_tokens, offset=drawn)
        new_scores = score(active, new) if score is not None else None
        for j, (i, s) in enumerate(zip(active, new)):
            parts[i].append(s)
            answers[i] += [parse(t) for t in s.texts]
            if new_scores is not None:
                scores[i] += list(new_scores[j])
            rounds[i] += 1
        drawn = n
        active = [i for i in active if not rule.settled(answers[i], n_max, scores[i] if score is not None else None)]
        if not active:
            break
    return [AdaptiveSamples(concat_samples(parts[i]), answers[i], scores[i] if score is not None else None, rounds[i])
            for i in range(len(questions))]


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
