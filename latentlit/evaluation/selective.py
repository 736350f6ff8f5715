"""Selective prediction: answer only the questions the samples are confident about.

A confidence in [0, 1] per question ranks the questions; answering the most confident fraction
c of them gives the risk-coverage curve (El-Yaniv & Wiener, 2010): accuracy of the answered
questions against c. Summaries:

* accuracy at 50% coverage and its gain over answering all;
* AURC, the area under the risk (1 - accuracy) - coverage curve, as the mean risk over the Q
  coverage levels 1/Q .. Q/Q (Geifman et al., 2019), and E-AURC = AURC minus the AURC of a
  ranking that puts every correct answer first;
* ECE (Naeini et al., 2015; Guo et al., 2017) with 10 equal-width bins [0, 0.1), ..., [0.9, 1.0]:
  sum over bins of (bin size / Q) x |accuracy - mean confidence|, and the reliability diagram's
  bins.

Questions with equal confidence are answered in random order: the curve takes the expectation
over that order (within a tie group each question counts with the group's mean correctness), so
no ranking among ties is invented. "Equal" is equal after rounding to
:data:`CONFIDENCE_DECIMALS` (12) decimals: a confidence that is a sum of floats carries noise of
~1e-16 (0.9999999999999998 for 1), which would otherwise split one tie group into several and
invent an order among them. The risk-coverage curve, AURC and the ECE / reliability bins all read
the rounded values (:func:`tie_values`). Genuine differences are far larger: vote shares differ
by multiples of 1/N, and the LatentRM scores a mass is computed from are stored to 5 decimals.

Confidences (each with the answer it is the confidence of):

* ``vote``: the majority vote's answer; its vote share (samples giving it / N), the
  self-consistency agreement of Wang et al. (2023);
* ``rm``: best-of-N's answer; the LatentRM's probability mass on it: softmax of the N trajectory
  scores (the distribution the contrastive LatentRM is trained to output, paper Sec. 3.3) summed
  over the trajectories that give that answer, computed as (exact sum of the group's weights) /
  (that sum + exact sum of the other weights), so an answer that holds all the weight (every
  scored sample gives it) has mass exactly 1.0;
* ``vote+rm``: the RM-weighted vote's answer; the mean of its vote share and its RM mass;
* ``calibrated``: the tempered vote's answer; its confidence from a logistic model fitted on a
  validation run (:mod:`latentlit.aggregation.selector`), present when the run has a selector
  with a calibration.

Every confidence is clipped to [0, 1]; a unanimous question has confidence exactly 1.0 under
each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from latentlit.aggregation.registry import QuestionView
from latentlit.aggregation.scores import group_mass
from latentlit.data.answers import answers_match

ECE_BINS = 10
# confidences equal to this many decimals tie (see the module docstring)
CONFIDENCE_DECIMALS = 12
COVERAGE_GRID = [round(0.05 * i, 2) for i in range(1, 21)]


def _rm_weights(view: QuestionView) -> np.ndarray:
    """(N,) unnormalised softmax weight exp(s_n - max s) of each trajectory; non-finite scores
    get none."""
    s = np.asarray(view.scores, dtype=np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        return np.zeros(len(s))
    return np.where(finite, np.exp(np.where(finite, s, 0.0) - s[finite].max()), 0.0)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _vote_confidence(record: dict, view: QuestionView) -> tuple[float, bool]:
    return _clip(record["vote_share"]), bool(record["majority_vote"]["correct"])


def _rm_confidence(record: dict, view: QuestionView) -> tuple[float, bool]:
    index = record["best_of_n"]["index"]  # None: no finite score, no answer
    if index is None:
        return 0.0, False
    return group_mass(view.labels, int(index), _rm_weights(view)), bool(record["best_of_n"]["correct"])


def _combined_confidence(record: dict, view: QuestionView) -> tuple[float, bool]:
    answer = record["weighted_vote"]["answer"]
    if answer is None:
        return 0.0, False
    # the weighted vote's answer is one of the samples' answers: take its first sample's group
    first = next(i for i, a in enumerate(view.answers) if view.labels[i] >= 0 and answers_match(a, answer))
    share = int((view.labels == view.labels[first]).sum()) / view.n
    # both 1.0 (unanimous) gives exactly 1.0
    return _clip(0.5 * (share + group_mass(view.labels, first, _rm_weights(view)))), bool(record["weighted_vote"]["correct"])


@dataclass(frozen=True)
class Confidence:
    """A per-question confidence: ``fn(record, view) -> (confidence in [0, 1], answer correct)``."""

    name: str
    label: str
    needs: str  # the record field it reads ("field.key": a key of that field)
    fn: Callable[[dict, QuestionView], tuple[float, bool]]


CONFIDENCES = [
    Confidence("vote", "vote share (majority vote)", "majority_vote", _vote_confidence),
    Confidence("rm", "LatentRM mass (best-of-N)", "best_of_n", _rm_confidence),
    Confidence("vote+rm", "mean of both (weighted vote)", "weighted_vote", _combined_confidence),
    Confidence("calibrated", "calibrated on validation (tempered vote)", "tempered_vote.confidence",
               lambda record, view: (_clip(record["tempered_vote"]["confidence"]), bool(record["tempered_vote"]["correct"]))),
]


def _holds(record: dict, needs: str) -> bool:
    field, _, key = needs.partition(".")
    return field in record and (not key or key in (record[field] or {}))


def tie_values(confidence: Sequence[float]) -> np.ndarray:
    """Confidences as every selective figure compares and bins them: rounded to
    :data:`CONFIDENCE_DECIMALS` decimals, so values that differ only by float noise tie.

    Returns:
        (Q,) float64.
    """
    return np.round(np.asarray(confidence, dtype=np.float64), CONFIDENCE_DECIMALS)


def _check(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1 or len(conf) == 0:
        raise ValueError(f"need as many confidences as correctness flags (>= 1), got {conf.shape} and {ok.shape}")
    if not np.isfinite(conf).all():
        raise ValueError("confidences must be finite")
    conf = tie_values(conf)
    if (conf < 0).any() or (conf > 1).any():
        bad = conf[(conf < 0) | (conf > 1)][0]
        raise ValueError(f"confidences must lie in [0, 1], got {bad!r}")
    return conf, ok


def risk_coverage(confidence: Sequence[float], correct: Sequence[bool]) -> np.ndarray:
    """Accuracy of the m most confident questions for m = 1..Q (ties, after :func:`tie_values`,
    in expectation).

    Returns:
        (Q,) float64; entry m-1 is the expected accuracy when answering m questions.

    Raises:
        ValueError: lengths differ, empty input, a non-finite confidence, or one outside [0, 1].
    """
    conf, ok = _check(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    # each question counts with its tie group's mean correctness
    starts = np.flatnonzero(np.r_[True, conf[1:] != conf[:-1]])
    sizes = np.diff(np.r_[starts, len(conf)])
    group_mean = np.add.reduceat(ok, starts) / sizes
    smoothed = np.repeat(group_mean, sizes)
    return np.cumsum(smoothed) / np.arange(1, len(conf) + 1)


def answered_accuracy(confidence: Sequence[float], correct: Sequence[bool], fraction: float) -> float:
    """Accuracy of the ``fraction`` most confident questions (at least one)."""
    curve = risk_coverage(confidence, correct)
    m = min(len(curve), max(1, int(np.floor(fraction * len(curve) + 0.5))))
    return float(curve[m - 1])


def aurc(confidence: Sequence[float], correct: Sequence[bool]) -> float:
    """Area under the risk-coverage curve: mean of 1 - accuracy over m = 1..Q."""
    return float(np.mean(1.0 - risk_coverage(confidence, correct)))


def calibration(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """ECE with ``bins`` equal-width bins on [0, 1] (1.0 falls in the last bin), and the bins;
    confidences are binned and averaged after :func:`tie_values`, as the risk-coverage curve
    ranks them.

    Returns:
        (ece, [{"lower", "upper", "count", "accuracy", "confidence"}]); empty bins have
        accuracy and confidence None.
    """
    conf, ok = _check(confidence, correct)
    which = np.clip(np.floor(conf * bins).astype(np.int64), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        acc = float(ok[sel].mean()) if count else None
        mean_conf = float(conf[sel].mean()) if count else None
        if count:
            ece += count / len(conf) * abs(acc - mean_conf)
        table.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "accuracy": acc, "confidence": mean_conf})
    return float(ece), table


def selective_summary(confidence: Sequence[float], correct: Sequence[bool], indices: np.ndarray | None = None,
                      level: float = 0.95) -> dict:
    """Every selective-prediction figure of one confidence.

    Args:
        indices: optional (B, Q) bootstrap resamples (:func:`latentlit.evaluation.bootstrap.resample_indices`)
            for percentile intervals of the 50%-coverage gain and of AURC.

    Returns:
        ``accuracy_all``, ``accuracy@50%``, ``gain@50%`` (points as fractions), ``aurc``,
        ``eaurc``, ``ece``, ``reliability`` (bins), ``risk_coverage`` ({"coverage", "accuracy"}
        on a 5% grid), and with ``indices`` ``gain@50%_interval`` and ``aurc_interval``.
    """
    conf, ok = _check(confidence, correct)
    curve = risk_coverage(conf, ok)
    q = len(curve)
    at = [float(curve[min(q, max(1, int(np.floor(c * q + 0.5)))) - 1]) for c in COVERAGE_GRID]
    ece, bins = calibration(conf, ok)
    area = float(np.mean(1.0 - curve))
    best = float(np.mean(1.0 - risk_coverage(ok, ok)))
    half = answered_accuracy(conf, ok, 0.5)
    out = {"questions": q, "accuracy_all": float(ok.mean()), "accuracy@50%": half, "gain@50%": half - float(ok.mean()),
           "aurc": area, "eaurc": area - best, "ece": ece, "ece_bins": ECE_BINS, "reliability": bins,
           "risk_coverage": {"coverage": COVERAGE_GRID, "accuracy": at}}
    if indices is not None:
        gains, areas = [], []
        m = min(q, max(1, int(np.floor(0.5 * q + 0.5))))
        for rows in indices:
            c, o = conf[rows], ok[rows]
            curve_b = risk_coverage(c, o)
            gains.append(curve_b[m - 1] - o.mean())
            areas.append(float(np.mean(1.0 - curve_b)))
        tail = 100 * (1 - level) / 2
        out["gain@50%_interval"] = np.percentile(gains, [tail, 100 - tail]).tolist()
        out["aurc_interval"] = np.percentile(areas, [tail, 100 - tail]).tolist()
    return out


def confidences(records: Sequence[dict], views: Sequence[QuestionView]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per available confidence: (Q,) confidences and (Q,) correctness of its answer.

    A confidence is available when every record holds the field it needs (the RM ones need a
    LatentRM run)."""
    out = {}
    for c in CONFIDENCES:
        if not records or not all(_holds(r, c.needs) for r in records):
            continue
        pairs = [c.fn(r, v) for r, v in zip(records, views)]
        out[c.name] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=bool))
    return out
