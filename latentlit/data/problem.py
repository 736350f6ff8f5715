"""The one record type every loader and generator produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One reasoning problem with its gold answer.

    Attributes:
        id: Stable identifier, unique within a data set (e.g. ``"train-12"``).
        question: The question text, without the answer.
        steps: Intermediate reasoning steps (e.g. ``"<<48/2=24>>"``); an empty
            tuple when the source has none.
        answer: The gold answer as a canonical numeric string (see
            :func:`latentlit.data.answers.normalize_answer`), e.g. ``"72"``.
    """

    id: str
    question: str
    steps: tuple[str, ...]
    answer: str
