"""Vote-style aggregation: majority vote and its RM-weighted variant (paper Sec. 3.2).

Answers are normalised strings (or None for "no answer"). Answers equal under numeric comparison
vote together, None never votes, ties go to the answer whose first vote came earliest.

The rule is :func:`vote_choice`, the one function that decides every vote: the record's
``majority_vote`` / ``weighted_vote`` fields and the k-subset estimators of
:mod:`latentlit.aggregation.at_k` (which call it for every subset whose winner their vectorised
float arithmetic cannot prove), so a vote is the same wherever it is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from latentlit.data.answers import answers_match


@dataclass(frozen=True)
class VoteResult:
    """Outcome of a vote over N answers.

    Attributes:
        answer: the winning answer, None when no sample produced one.
        index: index of the winning answer's first sample (-1 when none).
        share: winning weight / total weight of all N samples (None-answers count in the total
            with weight 1 for a plain vote), in [0, 1].
        distinct: number of distinct (numerically different) answers.
    """

    answer: str | None
    index: int
    share: float
    distinct: int


def group_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Sample indices grouped by numerically equal answer, groups ordered by first occurrence;
    None answers are left out."""
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if answers_match(answers[g[0]], a):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def vote_choice(groups: Sequence[Sequence[int]], weights: Sequence[float]) -> int | None:
    """The one vote rule: the position in ``groups`` of the winning group, None when none wins.

    A group's weight is ``math.fsum`` of its members' weights: the exactly rounded value of their
    exact sum, so it does not depend on the order of the members and two groups holding the same
    multiset of weights tie exactly (a left-to-right or matrix-product sum can split such a tie by
    rounding). The heaviest group wins; among groups of equal weight, the one whose first member
    (the smallest sample index) comes earliest; a group of weight 0 never wins.

    Args:
        groups: sample indices per group (e.g. :func:`group_answers`), each sorted ascending.
        weights: one finite weight >= 0 per sample index.
    """
    best, best_key = None, None
    for pos, members in enumerate(groups):
        key = (math.fsum(weights[i] for i in members), -members[0])
        if best_key is None or key > best_key:
            best, best_key = pos, key
    return best if best_key is not None and best_key[0] > 0 else None


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> VoteResult:
    """Vote where sample i carries ``weights[i]`` (>= 0), decided by :func:`vote_choice`.

    A non-finite weight (NaN, inf: from a non-finite RM score) counts as 0, as the one policy of
    :mod:`latentlit.aggregation.scores` says; a group whose weight is 0 cannot win, so with no
    positive weight there is no answer (``VoteResult(None, -1, 0.0, distinct)``).

    Raises:
        ValueError: lengths differ or a negative weight.
    """
    if len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    weights = [float(w) if math.isfinite(float(w)) else 0.0 for w in weights]
    if any(w < 0 for w in weights):
        raise ValueError("vote weights must be >= 0 (turn RM scores into weights first, e.g. with a softmax)")
    groups = group_answers(answers)
    if not groups:
        return VoteResult(None, -1, 0.0, 0)
    pos = vote_choice(groups, weights)
    if pos is None:
        return VoteResult(None, -1, 0.0, len(groups))
    best = groups[pos]
    return VoteResult(answers[best[0]], best[0], math.fsum(weights[i] for i in best) / math.fsum(weights), len(groups))


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """Plain majority vote (every sample one vote)."""
    return weighted_vote(answers, [1.0] * len(answers))
