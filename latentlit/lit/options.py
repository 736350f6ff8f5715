"""Checks of the options a Lightning module is built with, before anything is loaded or written."""

from __future__ import annotations


def check_at_least(owner: str, **values: tuple[int | None, int]) -> None:
    """Raise ``ValueError`` naming ``owner`` and the option for each given integer option below
    its minimum; ``values`` maps ``name`` to ``(value, minimum)``. ``None`` values are skipped."""
    for name, (value, minimum) in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{owner}: {name} ({value!r}) must be an integer")
        if value is not None and value < minimum:
            raise ValueError(f"{owner}: {name} ({value!r}) must be >= {minimum}")
