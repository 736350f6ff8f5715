"""Checks of a prediction run that catch a silently wrong number: an answer format the checkpoint
was not trained with, outputs with no parsable answer, non-finite LatentRM scores.

Pure functions of the settings and of the per-question records, so that the counts in
``metrics.json`` are recomputable from ``predictions.jsonl``.
"""

from __future__ import annotations

# Above this fraction of outputs without a parsable answer the run warns: the answer format, the
# answer budget (max_new_tokens) or the checkpoint is probably not what the user thinks.
NO_ANSWER_WARN_FRACTION = 0.1
# what record_counts returns, summed over questions in metrics.json
COUNTS = ("no_answer_greedy", "no_answer_samples", "nonfinite_rm_scores", "nonfinite_beam_scores")


def answer_format_warning(requested: str | None, trained: str) -> str | None:
    """The warning for an ``answer_format`` override that differs from the checkpoint's, else None."""
    if requested is None or requested == trained:
        return None
    return (f"answer_format={requested!r} overrides the format the checkpoint was trained with ({trained!r}): answers "
            f"are read as {requested!r}, and outputs written in the {trained!r} format may score as no answer "
            "(see no_answer_* in metrics.json)")


def record_counts(record: dict) -> dict[str, int]:
    """Per-question counts that ``metrics.json`` sums: outputs without a parsable answer (greedy:
    0 or 1; samples: 0..N) and non-finite LatentRM scores (best-of-N / weighted vote, and the
    candidate scores of beam search and DVTS). A trajectory that stopped before its first latent
    (dynamic stop) has no score (``null``) without a non-finite one: it is not counted."""
    beam, tree = record.get("beam_search") or {}, record.get("dvts") or {}
    latents = (record.get("compute") or {}).get("latents")
    scores = record.get("rm_scores") or []
    return {
        "no_answer_greedy": int(record["greedy"]["answer"] is None),
        "no_answer_samples": sum(a is None for a in record["answers"]),
        "nonfinite_rm_scores": sum(s is None and (latents is None or latents[i] > 0) for i, s in enumerate(scores)),
        "nonfinite_beam_scores": int(beam.get("nonfinite_scores", 0)) + int(tree.get("nonfinite_scores", 0)),
    }


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
