"""Counts of a prediction run that catch a silently wrong number: outputs with no parsable answer,
non-finite LatentRM scores, best-of-N choices on a near tie.

Pure functions of the per-question records, so that the counts in ``metrics.json`` are
recomputable from ``predictions.jsonl``.
"""

from __future__ import annotations

import math

# Above this fraction of outputs without a parsable answer the run warns: the answer format, the
# answer budget (max_new_tokens) or the checkpoint is probably not what the user thinks.
NO_ANSWER_WARN_FRACTION = 0.1
# what record_counts returns, summed over questions in metrics.json
COUNTS = ("no_answer_greedy", "no_answer_samples", "nonfinite_rm_scores", "nonfinite_beam_scores", "rm_near_ties")
# Best-of-N choices whose runner-up scores within this of the winner are counted (rm_near_ties):
# latents, hence LatentRM scores, move with the batch composition (float summation order, ~1e-6:
# docs/determinism.md#what-moves-with-the-batch-shape), and the stored scores are rounded to 5 decimals, so only such a choice
# can differ between batch sizes, chunkings or process counts.
RM_TIE_TOLERANCE = 1e-4


def record_counts(record: dict) -> dict[str, int]:
    """Per-question counts that ``metrics.json`` sums: outputs without a parsable answer (greedy:
    0 or 1; samples: 0..N) and non-finite LatentRM scores (best-of-N / weighted vote, and the
    candidate scores of beam search and DVTS). A trajectory that stopped before its first latent
    (dynamic stop) has no score (``null``) without a non-finite one: it is not counted.
    ``rm_near_ties`` is 1 when the two best finite stored scores are within
    :data:`RM_TIE_TOLERANCE` (a best-of-N choice that the batch composition could change)."""
    beam, tree = record.get("beam_search") or {}, record.get("dvts") or {}
    latents = (record.get("compute") or {}).get("latents")
    scores = record.get("rm_scores") or []
    return {
        "no_answer_greedy": int(record["greedy"]["answer"] is None),
        "no_answer_samples": sum(a is None for a in record["answers"]),
        "nonfinite_rm_scores": sum(s is None and (latents is None or latents[i] > 0) for i, s in enumerate(scores)),
        "nonfinite_beam_scores": int(beam.get("nonfinite_scores", 0)) + int(tree.get("nonfinite_scores", 0)),
        "rm_near_ties": near_tie(scores),
    }


def near_tie(scores: list[float | None], tolerance: float = RM_TIE_TOLERANCE) -> int:
    """1 when the best two finite scores of ``scores`` differ by at most ``tolerance``, else 0."""
    finite = sorted((s for s in scores if s is not None and math.isfinite(s)), reverse=True)
    return int(len(finite) >= 2 and finite[0] - finite[1] <= tolerance)


def summary_warnings(metrics: dict, counts: dict, threshold: float = NO_ANSWER_WARN_FRACTION) -> list[str]:
    """Warnings for a finished run from its ``metrics.json`` ``metrics`` and ``counts``."""
    out = []
    for key, what in (("no_answer_greedy", "greedy answers"), ("no_answer_samples", "sampled answers")):
        value = metrics.get(key)
        if value is not None and value > threshold:
            out.append(f"{100 * value:.1f}% of the {what} have no parsable answer (threshold {100 * threshold:.0f}%): "
                       "check answer_format and max_new_tokens against the checkpoint")
    for key, what in (("nonfinite_rm_scores", "trajectory scores"), ("nonfinite_beam_scores", "beam-search candidate scores")):
        if counts.get(key):
            out.append(f"{counts[key]} LatentRM {what} were NaN/inf: ranked as -inf and given no vote weight "
                       "(a question with no finite score gets no answer); the LatentRM may have diverged or overflowed")
    return out
