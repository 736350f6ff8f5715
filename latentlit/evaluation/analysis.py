"""Where a majority vote gains or loses against greedy decoding.

The vote over the first k samples beats greedy on a question when greedy is wrong and the vote
right, and loses in the opposite case. How often that happens depends on how the samples' wrong
answers spread: when a question's wrong samples share one wrong answer, the vote is right
exactly when at least half the samples are. :func:`vote_breakdown` measures both, from the
records of ``predictions.jsonl`` (docs/results.md#why-majority-vote-barely-beats-greedy).
"""

from __future__ import annotations

from latentlit.aggregation.vote import group_answers, majority_vote
from latentlit.data.answers import answers_match


def vote_breakdown(records: list[dict], k: int) -> dict:
    """Flips between greedy and majority vote@k, and the shape of the wrong answers.

    Args:
        records: ``predictions.jsonl`` records (``answers``, ``correct``, ``gold``,
            ``greedy.correct``), each with at least ``k`` samples.
        k: votes use the first k samples.

    Returns:
        ``questions``; ``greedy`` and ``majority`` accuracy (fractions); ``wrong_to_right`` and
        ``right_to_wrong`` (questions the vote fixes / breaks); ``vote_right_iff_half_right``
        (questions where the vote is right exactly when >= half the k samples are);
        ``mixed`` (questions with both right and wrong samples) and, over them,
        ``distinct_wrong`` (mean number of distinct wrong answers) and ``top_wrong_share``
        (mean share of the commonest wrong answer among the wrong samples).

    Raises:
        ValueError: no records, k < 1, or a record with fewer than k samples (named by id).
    """
    if not records or k < 1:
        raise ValueError(f"vote_breakdown needs records and k >= 1 (got {len(records)} records, k={k})")
    greedy = majority = fixes = breaks = half_rule = 0
    distinct, top_share = [], []
    for r in records:
        answers, correct = r["answers"][:k], r["correct"][:k]
        if len(answers) < k:
            raise ValueError(f"record {r.get('id')!r} has {len(answers)} samples, fewer than k={k}")
        g = bool(r["greedy"]["correct"])
        m = answers_match(majority_vote(answers).answer, r["gold"])
        greedy, majority = greedy + g, majority + m
        fixes += (not g) and m
        breaks += g and not m
        half_rule += m == (2 * sum(correct) >= k)
        wrong = [a for a, c in zip(answers, correct) if not c]
        if wrong and sum(correct):
            # numerically equal answers are one answer, as in the vote; "no answer" is one more
            sizes = [len(g) for g in group_answers(wrong)] + [n for n in [wrong.count(None)] if n]
            distinct.append(len(sizes))
            top_share.append(max(sizes) / len(wrong))
    n = len(records)
    return {"questions": n, "k": k, "greedy": greedy / n, "majority": majority / n, "wrong_to_right": fixes,
            "right_to_wrong": breaks, "vote_right_iff_half_right": half_rule, "mixed": len(distinct),
            "distinct_wrong": sum(distinct) / len(distinct) if distinct else 0.0,
            "top_wrong_share": sum(top_share) / len(top_share) if top_share else 0.0}
