"""Problem sources: what a YAML config names to say *which* problems a job runs on.

Each source is a small class chosen by ``class_path`` (``latentlit.data.SyntheticProblems`` or
``latentlit.data.ProblemFile``) with a ``load() -> list[Problem]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from latentlit.data.loaders import exclude_questions, load_problems
from latentlit.data.problem import Problem
from latentlit.data.synthetic import synthetic_split

SPLITS = ("train", "val", "test")


def check_limit(limit: int | None, source: str) -> None:
    """The one rule for ``limit`` of every problem source: None (all problems) or >= 1.

    Raises:
        ValueError: naming the source and the value (``limit=0`` would run nothing).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{source}: limit={limit!r} must be >= 1 (the first K problems; --limit K) or null for all "
                         "of them")


class NoProblemsError(ValueError):
    """A problem source yields no problem to run (raised with the source's description)."""


class ProblemSource:
    """Base class of problem sources (``latentlit.data.SyntheticProblems``, ``latentlit.data.ProblemFile``)."""

    def load(self) -> list[Problem]:
        """Return the problems, in a fixed order."""
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able description recorded in outputs."""
        return {"class": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


@lru_cache(maxsize=8)
def _split(split: str, n_train: int, n_val: int, n_test: int, seed: int, limit: int | None) -> tuple[Problem, ...]:
    return tuple(synthetic_split(split, n_train, n_val, n_test, seed, limit))


class SyntheticProblems(ProblemSource):
    """One split of the seeded synthetic arithmetic task (the embedded default).

    The three splits are generated together and are disjoint by question text, so the same
    ``(n_train, n_val, n_test, seed)`` must be used wherever the splits are meant to match.

    Args:
        split: ``train`` | ``val`` | ``test``. limit: keep the first ``limit`` problems (>= 1;
            None: all).

    Raises:
        ValueError: unknown split, or a limit below 1.
    """

    def __init__(self, split: str = "test", n_train: int = 20000, n_val: int = 500, n_test: int = 500,
                 seed: int = 0, limit: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; expected one of {SPLITS}")
        check_limit(limit, f"SyntheticProblems(split={split!r})")
        self.split, self.n_train, self.n_val, self.n_test, self.seed, self.limit = split, n_train, n_val, n_test, seed, limit

    def load(self) -> list[Problem]:
        return list(_split(self.split, self.n_train, self.n_val, self.n_test, self.seed, self.limit))


class ProblemFile(ProblemSource):
    """Problems read from a data file (GSM8K jsonl, COCONUT-format json, latentlit jsonl).

    Args:
        path: the file. Relative paths are taken from the working directory; ``../shared/data``
            holds the reference copies on our machines (see its README for where to get them).
        format: ``auto`` | ``gsm8k_jsonl`` | ``coconut_json`` | ``latentlit_jsonl``.
        exclude: files whose questions are removed (e.g. keep GSM8K train disjoint from gsm_valid).
        limit: keep the first ``limit`` problems (after exclusion; >= 1, None: all).
        on_bad_answer: ``fail`` | ``skip`` for non-numeric gold answers.

    Raises:
        ValueError: a limit below 1. NoProblemsError: (``load``) nothing left to run.
    """

    def __init__(self, path: str, format: str = "auto", exclude: list[str] | None = None, limit: int | None = None,
                 on_bad_answer: str = "fail"):
        check_limit(limit, f"ProblemFile({path})")
        self.path, self.format, self.exclude, self.limit, self.on_bad_answer = path, format, list(exclude or []), limit, on_bad_answer

    def load(self) -> list[Problem]:
        problems = load_problems(Path(self.path), format=self.format, on_bad_answer=self.on_bad_answer)
        for other in self.exclude:
            problems = exclude_questions(problems, load_problems(Path(other), on_bad_answer="skip"))
        problems = problems[: self.limit] if self.limit is not None else problems
        if not problems:
            raise NoProblemsError(f"{self.path}: no problems to run (the file is empty"
                                  + (", or the exclude files remove every question)" if self.exclude else ")"))
        return problems
