"""A question's ``predictions.jsonl`` record from what the prediction ran for it: its greedy pass,
its N samples (and their LatentRM scores), and the sizes its compute is counted from. Search
methods add their own fields (:mod:`latentlit.search`). The fields are described in
docs/outputs.md#predictionsjsonl.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from latentlit.aggregation.registry import Aggregator, question_view
from latentlit.aggregation.stopping import AdaptiveSpec
from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match
from latentlit.data.problem import Problem
from latentlit.evaluation.metrics import diversity_record
from latentlit.models.backbone import LatentOutput, answer_positions
from latentlit.search.adaptive import adaptive_field
from latentlit.search.nway import QuestionSamples


def question_record(index: int, problem: Problem, greedy_text: str, samples: QuestionSamples,
                    parse: Callable[[str], str | None], aggregators: Sequence[Aggregator], seed: int, *,
                    scores: Sequence[float] | None = None, adaptive: AdaptiveSpec | None = None, n_max: int = 0,
                    n_metrics: int | None = None, live: bool = False, selector: dict | None = None) -> dict:
    """The record of one question.

    Args:
        index: the question's place in the problem list (orders merged multi-process output).
        samples: its trajectories (N, or in a live adaptive run what was drawn). parse: text -> answer.
        aggregators: whose fields the record holds (their ``choose``); seed: the run's.
        scores: the N LatentRM trajectory scores (NaN where non-finite), or None.
        adaptive: the run's adaptive-N table (replayed, or the live rule), with ``n_max`` = N_max.
        n_metrics: the samples ``diversity`` is over (a live run's first round); default all.
        live: a live adaptive run: no N-sample aggregator fields (its record holds fewer samples).
        selector: the run's fitted selector parameters, kept in the record (its tempered vote is
            recomputed from the record alone).
    """
    answers = [parse(t) for t in samples.texts]
    vote = majority_vote(answers)
    greedy = parse(greedy_text)
    n = len(answers) if n_metrics is None else n_metrics
    record = {
        "index": index, "id": problem.id, "question": problem.question, "gold": problem.answer,
        "greedy": {"answer": greedy, "correct": answers_match(greedy, problem.answer), "text": greedy_text},
        "answers": answers, "correct": [answers_match(a, problem.answer) for a in answers], "texts": samples.texts,
        "vote_share": round(vote.share, 6), "distinct_answers": vote.distinct,
        "diversity": diversity_record(samples.latents[:n], samples.latent_mask[:n]),
        "latent_steps": {"samples": int(samples.latent_mask.sum())},
    }
    if scores is not None:
        # non-finite scores are stored as null, never win and carry no weight
        # (latentlit.aggregation.scores); the aggregators choose on the stored (rounded) scores, so
        # that every choice can be recomputed from predictions.jsonl alone
        record["rm_scores"] = [round(x, 5) if math.isfinite(x) else None for x in scores]
    if selector is not None:
        record["selector"] = selector
    view = question_view(record, seed)
    if adaptive is not None:
        record["adaptive"] = adaptive_field(adaptive, n_max, view.answers, problem.answer, view.scores)
    if not live:
        for agg in aggregators:
            if agg.choose is not None:
                record[agg.name] = agg.choose(view)
    return record


def compute_sizes(prompt_tokens: Sequence[int], greedy: LatentOutput, samples: Sequence[QuestionSamples], eos_id: int,
                  max_new_tokens: int, rm_prompt_tokens: Sequence[int] | None = None) -> list[dict]:
    """Each question's ``compute`` record field: the sizes its cost is counted from
    (:mod:`latentlit.evaluation.compute`), from its own sizes, not the batch's: ``prompt``
    tokens, ``latents`` and ``answers`` (decoding passes) of each sample, ``greedy`` [T, A], and with
    a LatentRM ``rm_prompt``."""
    rm = [None] * len(samples) if rm_prompt_tokens is None else rm_prompt_tokens
    return [sample_sizes(p, g, s, r) for p, g, s, r in zip(prompt_tokens, greedy_sizes(greedy, eos_id, max_new_tokens),
                                                           samples, rm)]


def greedy_sizes(greedy: LatentOutput, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """[T, A] of each row of a greedy pass: latent steps and answer decoding passes."""
    steps = zip(greedy.latent_mask.sum(1).tolist(), answer_positions(greedy.answer_ids, eos_id, max_new_tokens))
    return [[int(t), int(a)] for t, a in steps]


def sample_sizes(prompt_tokens: int, greedy: list[int], samples: QuestionSamples, rm_prompt_tokens: int | None) -> dict:
    """One question's ``compute`` field (:func:`compute_sizes`) from its prompt length, greedy [T, A] and samples."""
    c = {"prompt": int(prompt_tokens), "latents": [int(x) for x in samples.latent_mask.sum(1).tolist()],
         "answers": list(samples.answer_positions), "greedy": list(greedy)}
    if rm_prompt_tokens is not None:
        c["rm_prompt"] = int(rm_prompt_tokens)
    return c
