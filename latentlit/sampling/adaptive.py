"""Adaptive-N sampling: draw a question's trajectories in rounds until a stopping rule settles it.

All questions of a batch advance together: round r samples ``round_size`` more trajectories for
every question still open, as one N-way batch (chunked by ``max_trajectories`` like fixed-N
sampling); a question the rule settles leaves the batch, the others continue, until each is
settled or has ``n_max`` samples. Sample j of a question is keyed by (seed, question id, j)
(``offset`` of :func:`latentlit.sampling.nway.sample_questions`), so the trajectories an adaptive
run draws are the first ones of the fixed-N run, trajectory for trajectory.

Rules are :class:`latentlit.aggregation.adaptive.StoppingRule` (pure functions of the answers so
far, and their LatentRM scores for ``best_score``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from latentlit.aggregation.adaptive import StoppingRule, checkpoints
from latentlit.models.backbone import LatentBackbone
from latentlit.sampling.base import Sampler
from latentlit.sampling.nway import QuestionSamples, concat_samples, sample_questions

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
