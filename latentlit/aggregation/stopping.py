"""Adaptive N: stopping rules that decide when a question's aggregate is settled.

A question's trajectories are drawn in rounds (``round_size`` at a time, at most ``n_max`` in
all); after each round a rule looks at the answers so far (and, for the LatentRM rule, their
trajectory scores) and says whether to stop. Every rule here is a pure function of that prefix,
so it can be run live (:mod:`latentlit.search.adaptive`) or replayed exactly on the first
samples of a fixed-N run (:func:`simulate`): sample j of a question is keyed by (seed, question
id, j), so the k-th trajectory of an adaptive run is the k-th of the fixed-N run.

Rules (``name``: threshold; answer returned; source):

* ``exact`` (no threshold; majority vote of the samples drawn): stop when the current vote
  leader would still win majority@n_max if every remaining sample went to its strongest
  challenger (ties broken as :func:`latentlit.aggregation.vote.majority_vote` breaks them). The
  answer then equals majority@n_max on every question. This is the deterministic bound behind
  every vote count that is called before all ballots are in (the runner-up cannot catch up with
  the ballots left); it needs no model of the answer distribution, and it is the rule that
  Adaptive-Consistency (Aggarwal et al. 2023, below) improves on with a posterior.
* ``beta`` (threshold in (0, 1), e.g. 0.95; majority vote of the samples drawn): Aggarwal et al.
  2023, *Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding
  with LLMs* (EMNLP 2023), Beta stopping criterion: with v1, v2 the vote counts of the two most
  voted answers, stop when P(p1 > p2) under a Beta(v1 + 1, v2 + 1) posterior, i.e. the mass of
  Beta(v1 + 1, v2 + 1) above 1/2, reaches the threshold (their default 0.95).
* ``window`` (threshold: a window size w, an integer; majority vote of the samples drawn): Li
  et al. 2024, *Escape Sky-high Cost: Early-stopping Self-Consistency for Multi-step Reasoning*
  (ICLR 2024): stop when the last w answers all agree (zero answer entropy in the window).
  Checked after each round, so w is best a multiple of ``round_size``.
* Both vote rules (``beta``, ``window``) also stop as soon as the ``exact`` condition holds
  (the leader cannot be overtaken within n_max): their answer is the majority vote of the
  samples drawn, and once the leader cannot be overtaken within n_max it cannot be overtaken
  within any smaller number of samples either, so every later stop would return the same
  answer. Accuracy is therefore that of the published criterion alone, question by question,
  and trajectories can only fall (without it beta @ 0.99 could run past the exact rule's stop).
  :meth:`StoppingRule.criterion` is the published criterion alone.
* ``best_score`` (threshold on the LatentRM trajectory score, in the RM's own units;
  best-of-n of the samples drawn): stop when the best finite trajectory score so far reaches
  the threshold. latentlit's rule (an early-exit best-of-N in the spirit of score-thresholded
  sampling); no published source is claimed for it, and the threshold must be chosen per RM.

Answers are normalised strings or None (no answer); None never votes, as in a plain vote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from latentlit.aggregation.select import best_of_n
from latentlit.aggregation.vote import group_answers, majority_vote

RULES = ("exact", "beta", "window", "best_score")
NEEDS_SCORES = frozenset({"best_score"})
# rules besides ``exact`` whose answer is the majority vote of the samples drawn: they also stop on
# the exact rule's bound
VOTE_RULES = frozenset({"beta", "window"})

# the thresholds reported when a config names none (``best_score`` has no scale-free default)
DEFAULT_GRID: dict[str, list] = {"exact": [None], "beta": [0.9, 0.95, 0.99], "window": [4, 8]}


# ---------------------------------------------------------------------- the maths, one function each
def leader_cannot_be_overtaken(answers: Sequence[str | None], n_max: int) -> bool:
    """True when majority@n_max is already decided by the first ``len(answers)`` samples.

    With c1 the leader's votes (first vote at index f1) and, for each other answer, c its votes
    (first vote at f), the r = n_max - n remaining samples cannot change the winner iff every
    other answer has c + r < c1, or c + r == c1 and f > f1 (ties go to the earlier first vote);
    an answer not seen yet would have at most r votes and a later first vote, so it needs
    r <= c1. Groups of a prefix are a prefix of the groups of the whole sequence, so the
    leader's answer string is the one majority@n_max returns. Since c1 <= n, stopping needs
    n_max - n <= n: no question settles before n_max / 2 samples, so this rule saves at most
    half of the budget (exactly half when every question is unanimous from the start).

    Raises:
        ValueError: more answers than ``n_max``.
    """
    n = len(answers)
    if n > n_max:
        raise ValueError(f"{n} answers exceed the budget n_max={n_max}")
    r = n_max - n
    if r == 0:
        return True
    groups = group_answers(answers)
    if not groups:
        return False
    leader = max(groups, key=lambda g: (len(g), -g[0]))
    c1, f1 = len(leader), leader[0]
    if r > c1:  # an unseen answer could still take it
        return False
    for g in groups:
        if g is leader:
            continue
        if len(g) + r > c1 or (len(g) + r == c1 and g[0] < f1):
            return False
    return True


def top_two_counts(answers: Sequence[str | None]) -> tuple[int, int]:
    """Vote counts (v1, v2) of the two most voted answers (v2 = 0 with fewer than two)."""
    counts = sorted((len(g) for g in group_answers(answers)), reverse=True) + [0, 0]
    return counts[0], counts[1]


def beta_leader_probability(v1: int, v2: int) -> float:
    """P(p1 > p2) for p1 ~ Beta(v1 + 1, v2 + 1): the mass of that Beta above 1/2 (Aggarwal et al.
    2023, Beta criterion).

    For integer parameters the regularised incomplete beta is a binomial tail,
    I_x(a, b) = P(Bin(a + b - 1, x) >= a), so the mass above 1/2 is
    P(Bin(v1 + v2 + 1, 1/2) <= v1), computed exactly.

    Raises:
        ValueError: negative counts.
    """
    if v1 < 0 or v2 < 0:
        raise ValueError(f"vote counts must be >= 0, got {v1}, {v2}")
    m = v1 + v2 + 1
    return math.fsum(math.comb(m, j) for j in range(v1 + 1)) / 2.0 ** m


def window_unanimous(answers: Sequence[str | None], window: int) -> bool:
    """True when the last ``window`` answers exist, are not None and are all numerically equal
    (Li et al. 2024: zero answer entropy in the window)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(answers) < window:
        return False
    tail = answers[len(answers) - window:]
    return tail[0] is not None and len(group_answers(tail)) == 1 and len(group_answers(tail)[0]) == window


# ---------------------------------------------------------------------- rules
@dataclass(frozen=True)
class StoppingRule:
    """One rule at one threshold (see the module docstring for each rule and its source).

    Raises:
        ValueError: unknown rule, or a threshold the rule cannot take (named with its value).
    """

    name: str
    threshold: float | None = None

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"adaptive rule {self.name!r}; expected one of {RULES}")
        t = self.threshold
        if self.name == "exact":
            if t is not None:
                raise ValueError(f"adaptive rule 'exact' takes no threshold, got {t!r}")
        elif t is None or isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(f"adaptive rule {self.name!r} needs a finite numeric threshold, got {t!r}")
        elif self.name == "beta" and not 0 < t < 1:
            raise ValueError(f"adaptive rule 'beta' needs a threshold in (0, 1), got {t!r}")
        elif self.name == "window" and (t < 1 or t != int(t)):
            raise ValueError(f"adaptive rule 'window' needs an integer window size >= 1, got {t!r}")

    @property
    def needs_scores(self) -> bool:
        return self.name in NEEDS_SCORES

    @property
    def key(self) -> str:
        """The threshold as the string used in ``metrics.json`` and records (``"-"`` for none)."""
        return threshold_key(self.threshold)

    def settled(self, answers: Sequence[str | None], n_max: int, scores: Sequence[float] | None = None) -> bool:
        """Whether to stop after the samples drawn so far (``answers``, and their ``scores``): the
        budget is spent, the rule's :meth:`criterion` holds, or (a vote rule) the vote leader
        cannot be overtaken within ``n_max`` (:func:`leader_cannot_be_overtaken`), which leaves
        the answer as it would be at any later stop."""
        if len(answers) >= n_max:
            return True
        if self.name in VOTE_RULES and leader_cannot_be_overtaken(answers, n_max):
            return True
        return self.criterion(answers, n_max, scores)

    def criterion(self, answers: Sequence[str | None], n_max: int, scores: Sequence[float] | None = None) -> bool:
        """The rule's own (published) stopping criterion alone, without the exact bound that
        :meth:`settled` adds for vote rules."""
        if self.name == "exact":
            return leader_cannot_be_overtaken(answers, n_max)
        if self.name == "beta":
            return beta_leader_probability(*top_two_counts(answers)) >= self.threshold
        if self.name == "window":
            return window_unanimous(answers, int(self.threshold))
        _check_scores(answers, scores)
        # a NaN/inf score never settles a question (as it never wins best-of-N)
        return any(math.isfinite(x) and x >= self.threshold for x in scores)

    def choose(self, answers: Sequence[str | None], scores: Sequence[float] | None = None) -> str | None:
        """The answer this rule returns from the samples drawn (majority vote, or best-of-n for
        ``best_score``)."""
        if self.needs_scores:
            _check_scores(answers, scores)
            best = best_of_n(scores)
            return None if best is None else answers[best]
        return majority_vote(answers).answer


def threshold_key(threshold: float | None) -> str:
    """``None`` -> ``"-"``; integral values -> ``"8"``; others -> the shortest repr (``"0.95"``)."""
    if threshold is None:
        return "-"
    if float(threshold) == int(threshold):
        return str(int(threshold))
    return repr(float(threshold))


def _check_scores(answers, scores) -> None:
    if scores is None or len(scores) != len(answers) or len(answers) == 0:
        raise ValueError("the best_score rule needs one LatentRM score per sample (set latent_rm)")


# ---------------------------------------------------------------------- rounds
def checkpoints(n_max: int, round_size: int) -> list[int]:
    """Numbers of samples after which a rule is asked: round_size, 2 round_size, ..., n_max.

    Raises:
        ValueError: ``n_max`` or ``round_size`` < 1.
    """
    if n_max < 1 or round_size < 1:
        raise ValueError(f"n_max ({n_max}) and round_size ({round_size}) must be >= 1")
    return list(range(round_size, n_max, round_size)) + [n_max]


@dataclass(frozen=True)
class AdaptiveOutcome:
    """Result of one rule on one question: the answer and the trajectories it used."""

    answer: str | None
    trajectories: int


def simulate(rule: StoppingRule, answers: Sequence[str | None], n_max: int, round_size: int,
             scores: Sequence[float] | None = None) -> AdaptiveOutcome:
    """Replay the rounds of an adaptive run on the first samples of a fixed-N run.

    Exact for any question whose ``answers`` (and ``scores``) are its first n_max samples, since
    an adaptive run draws those very samples.

    Raises:
        ValueError: fewer than ``n_max`` answers, or scores missing for ``best_score``.
    """
    if len(answers) < n_max:
        raise ValueError(f"simulate needs the first n_max={n_max} answers, got {len(answers)}")
    for n in checkpoints(n_max, round_size):
        part_scores = None if scores is None else scores[:n]
        if rule.settled(answers[:n], n_max, part_scores):
            return AdaptiveOutcome(rule.choose(answers[:n], part_scores), n)
    raise AssertionError("unreachable: every rule settles at n_max")


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AdaptiveSpec:
    """What a run does adaptively.

    Attributes:
        round_size: samples per question per round.
        run: the rule executed live (sampling stops by it), or None (every question gets n_max
            samples and the rules are only replayed on them).
        table: the rules x thresholds replayed on the stored samples (fixed-N run) and reported.
    """

    round_size: int
    run: StoppingRule | None
    table: tuple[StoppingRule, ...]


@dataclass
class AdaptiveOptions:
    """The ``adaptive`` option of ``latentlit predict`` (typed, so that the command line parses
    ``--model.init_args.adaptive.threshold 0.9``).

    Attributes:
        round_size: samples drawn per question per round.
        rule, threshold: a rule to run live (sampling stops by it); None: a fixed-N run whose
            samples the ``table`` rules are replayed on.
        table: rule -> thresholds to replay (default :data:`DEFAULT_GRID`); ignored in a live run,
            which reports its own rule only (other rules would need samples never drawn).
    """

    round_size: int = 4
    rule: str | None = None
    threshold: float | None = None
    table: dict[str, list[float | None]] | None = None

    def to_dict(self) -> dict:
        """Plain values (a checkpoint's hyperparameters must load with ``weights_only=True``)."""
        table = None if self.table is None else {k: list(v) for k, v in self.table.items()}
        return {"round_size": self.round_size, "rule": self.rule, "threshold": self.threshold, "table": table}


def parse_adaptive(config: AdaptiveOptions | dict | None, *, has_scores: bool, n_max: int) -> AdaptiveSpec | None:
    """Check the ``adaptive`` option of the predictor.

    ``config``: :class:`AdaptiveOptions` or a mapping of its fields: ``round_size`` (default 4),
    ``rule`` and ``threshold`` (the live rule; omitted: replay only), ``table`` (rule -> list of
    thresholds; default :data:`DEFAULT_GRID`). In a live run only the live rule is reported.

    Raises:
        ValueError: an unknown key, rule or threshold, a round size < 1, or a LatentRM rule
            without a LatentRM, each named with the offending value.
    """
    if config is None:
        return None
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if isinstance(config, AdaptiveOptions):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise ValueError(f"adaptive must be a mapping (round_size, rule, threshold, table), got {config!r}")
    unknown = set(config) - {"round_size", "rule", "threshold", "table"}
    if unknown:
        raise ValueError(f"adaptive: unknown key(s) {sorted(unknown)}; expected round_size, rule, threshold, table")
    round_size = config.get("round_size", 4)
    if isinstance(round_size, bool) or not isinstance(round_size, int) or round_size < 1:
        raise ValueError(f"adaptive.round_size must be an integer >= 1, got {round_size!r}")
    run = None
    if config.get("rule") is not None:
        run = StoppingRule(config["rule"], config.get("threshold"))
    elif config.get("threshold") is not None:
        raise ValueError(f"adaptive.threshold={config['threshold']!r} given without adaptive.rule")
    grid = config.get("table")
    grid = DEFAULT_GRID if grid is None else grid
    if not isinstance(grid, dict):
        raise ValueError(f"adaptive.table must map rule names to lists of thresholds, got {grid!r}")
    table = []
    for name, thresholds in grid.items():
        if not isinstance(thresholds, list):
            thresholds = [thresholds]
        table += [StoppingRule(name, t) for t in thresholds]
    if run is not None:
        table = [run]
    elif not table:
        raise ValueError("adaptive: neither a rule to run nor a table of rules to report")
    table = list(dict.fromkeys(table))
    for rule in table:
        if rule.needs_scores and not has_scores:
            raise ValueError(f"adaptive rule {rule.name!r} scores trajectories with a LatentRM: set latent_rm")
    return AdaptiveSpec(round_size, run, tuple(table))
