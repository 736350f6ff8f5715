"""A selector fitted on validation: the RM-tempered vote and a calibrated confidence.

Best-of-N trusts the LatentRM's top trajectory alone; majority vote ignores the RM. The tempered
vote sits between them with one parameter, the temperature tau > 0: answer group a scores

    W_a = sum_{n in a} exp(S_n / tau)        (S_n: the trajectory's LatentRM score)

and the group with the largest W_a wins (:func:`latentlit.aggregation.vote.weighted_vote` on the
softmax weights of S / tau). tau -> 0 is best-of-N (the top score's group), tau -> infinity is
majority vote (every weight equal), tau = 1 is the paper's RM-weighted vote. tau is chosen on a
validation run (:func:`fit_temperature`), never on the questions it is reported on.

The contrastive LatentRM's scores are comparable only within a question (its softmax is invariant
to a per-question shift), so neither the vote share nor the RM's mass is a probability of being
right. The calibrated confidence of the tempered vote's answer is a logistic model (Platt, 1999)
of three features of the chosen group, fitted on the validation run's questions
(:func:`fit_calibration`):

    p = sigmoid(w1 logit(share) + w2 logit(mass) + w3 top + b)

share: the group's samples / N; mass: its share of the tempered softmax weight; top: the group's
highest raw trajectory score (the only feature that can differ between two unanimous questions).
share and mass are clipped to [1 / (2N), 1 - 1 / (2N)] so that logit stays finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from latentlit.aggregation.at_k import answer_labels
from latentlit.aggregation.scores import group_mass, group_members, rm_vote_weights
from latentlit.aggregation.vote import VoteResult, weighted_vote
from latentlit.data.answers import answers_match

# tau candidates fitted over: log-spaced from near best-of-N to near majority vote
TEMPERATURES = tuple(float(f"{x:.4g}") for x in np.geomspace(0.02, 50.0, 25))


@dataclass(frozen=True)
class Selector:
    """Fitted parameters (:mod:`latentlit.aggregation.selector`).

    Attributes:
        temperature: tau > 0 of the tempered vote.
        calibration: (w1, w2, w3, b) of the confidence, or None (no calibrated confidence).
        fitted_on: where they were fitted (run directory, split, questions, LatentRM fingerprint,
            validation accuracy per temperature); not part of the selection.
    """

    temperature: float
    calibration: tuple[float, float, float, float] | None = None
    fitted_on: dict | None = None

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"selector temperature={self.temperature!r} must be a finite number > 0")
        if self.calibration is not None and (len(self.calibration) != 4
                                             or not all(math.isfinite(float(x)) for x in self.calibration)):
            raise ValueError(f"selector calibration={self.calibration!r} must be 4 finite numbers (w1, w2, w3, b)")

    def params(self) -> dict:
        """What decides the selection (in a run's settings and each record): temperature and calibration."""
        return {"temperature": self.temperature,
                "calibration": None if self.calibration is None else [float(x) for x in self.calibration]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Selector:
        """Read a selector file written by :meth:`save` (``scripts/fit_selector.py``).

        Raises:
            FileNotFoundError: no such file. ValueError: not JSON, a missing ``temperature``, or a
            bad value (each naming the file).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"selector file {path} does not exist (write one with scripts/fit_selector.py)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"selector file {path} is not JSON: {e}") from None
        if not isinstance(data, dict) or "temperature" not in data:
            raise ValueError(f"selector file {path} has no 'temperature' field")
        try:
            cal = data.get("calibration")
            return cls(data["temperature"], None if cal is None else tuple(float(x) for x in cal), data.get("fitted_on"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"selector file {path}: {e}") from None


def tempered_scores(scores: Sequence[float], temperature: float) -> list[float]:
    """S_n / tau (a non-finite score stays non-finite: it carries no weight)."""
    return [float(s) / temperature for s in scores]


def tempered_vote(answers: Sequence[str | None], scores: Sequence[float], temperature: float) -> VoteResult:
    """The tempered vote's answer: the group with the largest sum of exp(S_n / tau)."""
    return weighted_vote(answers, rm_vote_weights(tempered_scores(scores, temperature)))


def _logit(x: float, n: int) -> float:
    eps = 1.0 / (2 * n)
    x = min(1.0 - eps, max(eps, x))
    return math.log(x / (1.0 - x))


def group_features(labels: np.ndarray, scores: Sequence[float], index: int, temperature: float) -> list[float]:
    """The three calibration features of the answer group of sample ``index``: logit of its vote
    share, logit of its share of the tempered softmax weight, its highest raw trajectory score.

    Args:
        labels: (N,) answer-group label per sample (-1: no answer; such a sample is its own group).
        scores: N trajectory scores. index: a sample giving the chosen answer.
    """
    n = len(labels)
    inside = np.asarray(group_members(labels, index))
    mass = group_mass(labels, index, rm_vote_weights(tempered_scores(scores, temperature)))
    s = np.asarray(scores, dtype=np.float64)[inside]
    top = float(s[np.isfinite(s)].max()) if np.isfinite(s).any() else 0.0
    return [_logit(int(inside.sum()) / n, n), _logit(mass, n), top]


def calibrated_confidence(features: Sequence[float], calibration: Sequence[float]) -> float:
    """sigmoid(w . features + b) in [0, 1]."""
    z = math.fsum(w * x for w, x in zip(calibration[:3], features)) + calibration[3]
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def fit_temperature(questions: Sequence[tuple[Sequence, Sequence[bool], Sequence[float], str]],
                    temperatures: Sequence[float] = TEMPERATURES) -> tuple[float, dict[float, float]]:
    """The temperature with the highest accuracy of the tempered vote at N on ``questions``
    (validation), ties to the temperature closest to 1 (the paper's weighted vote).

    Args:
        questions: (answers, correct, scores, gold) per question.

    Returns:
        (tau, {tau: accuracy}).
    """
    if not questions:
        raise ValueError("no questions to fit the temperature on")
    accuracy = {}
    for tau in temperatures:
        hits = [answers_match(tempered_vote(a, s, tau).answer, g) for a, _, s, g in questions]
        accuracy[tau] = sum(hits) / len(hits)
    best = max(accuracy.values())
    tau = min((t for t, a in accuracy.items() if a == best), key=lambda t: abs(math.log(t)))
    return tau, accuracy


def fit_calibration(features: Sequence[Sequence[float]], correct: Sequence[bool], l2: float = 1e-3) -> tuple[float, ...]:
    """Logistic regression of ``correct`` on ``features`` (Q, 3): (w1, w2, w3, b) minimising the mean
    log-loss + ``l2`` |w|^2 (L-BFGS, float64; deterministic).

    Raises:
        ValueError: fewer than 2 questions, or every question right (or every one wrong).
    """
    x = torch.tensor(features, dtype=torch.float64)
    y = torch.tensor([float(c) for c in correct], dtype=torch.float64)
    if x.shape[0] < 2 or y.min() == y.max():
        raise ValueError(f"calibration needs right and wrong answers among >= 2 questions; got {int(y.sum())} right "
                         f"of {x.shape[0]}")
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = x @ w[:-1] + w[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return tuple(round(float(v), 6) for v in w.detach())


def run_split(config: dict) -> str | None:
    """The split a predict run's problems came from, from its ``config.yaml`` (the ``split`` of its
    problem source, or ``test`` / ``valid`` / ``train`` read from a data file's name); None when
    it cannot be told."""
    problems = (((config.get("data") or {}).get("init_args") or {}).get("problems") or {})
    args = problems.get("init_args") or {}
    if isinstance(args.get("split"), str):
        return args["split"]
    name = Path(str(args.get("path") or args.get("file") or "")).name.lower()
    for split, words in (("test", ("test",)), ("val", ("valid", "val.", "dev")), ("train", ("train",))):
        if any(w in name for w in words):
            return split
    return None


def fit_selector(records: Sequence[dict], calibrate: bool = True, temperatures: Sequence[float] = TEMPERATURES,
                 source: dict | None = None) -> Selector:
    """Fit the tempered vote's temperature, then the calibration of its confidence, on the records
    of a validation run with LatentRM scores (``predictions.jsonl``).

    Raises:
        ValueError: no records, or a record without ``rm_scores`` (a run without a LatentRM).
    """
    if not records:
        raise ValueError("no records to fit the selector on")
    missing = [r["id"] for r in records if r.get("rm_scores") is None]
    if missing:
        raise ValueError(f"{len(missing)} records have no rm_scores (first: id {missing[0]!r}): fit on a run with a LatentRM")
    scores = [[float("nan") if x is None else float(x) for x in r["rm_scores"]] for r in records]
    questions = [(r["answers"], r["correct"], s, r["gold"]) for r, s in zip(records, scores)]
    tau, accuracy = fit_temperature(questions, temperatures)
    calibration = None
    if calibrate:
        features, correct = [], []
        for (answers, _, s, gold), r in zip(questions, records):
            vote = tempered_vote(answers, s, tau)
            if vote.answer is None:
                continue
            features.append(group_features(answer_labels(answers), s, vote.index, tau))
            correct.append(bool(r["correct"][vote.index]))
        calibration = fit_calibration(features, correct)
    fitted = {**(source or {}), "questions": len(records), "accuracy_by_temperature": accuracy}
    return Selector(tau, calibration, fitted)
