"""How accuracies, differences and intervals are written in printed tables (``latentlit
predict``'s summary, ``scripts/compare_runs.py``, ``scripts/vote_breakdown.py``).

Fractions are written as percent (or percentage points) with one decimal. A value that rounds
to zero is written ``0.0``, never ``-0.0`` or ``+0.0`` (a bootstrap bound of -1e-17 is not a
loss); an interval whose two bounds are equal says so instead of looking like a real range.
"""

from __future__ import annotations


def pct(x: float) -> str:
    """A fraction as percent, one decimal (``0.5216`` -> ``52.2``; ``-0.00001`` -> ``0.0``)."""
    text = f"{100 * x:.1f}"
    return "0.0" if text in ("-0.0", "0.0") else text


def points(x: float) -> str:
    """A difference of fractions as signed percentage points (``+1.2``, ``-0.4``), ``0.0`` when
    it rounds to zero."""
    text = f"{100 * x:+.1f}"
    return "0.0" if text in ("-0.0", "+0.0") else text


def interval(low: float, high: float, signed: bool = False) -> str:
    """``[low, high]`` in percent (``signed``: percentage points); ``[x, x] (zero width)`` when
    the bounds are equal, e.g. a selective-prediction gain that is the same in every bootstrap
    resample because every question has the same confidence."""
    fmt = points if signed else pct
    text = f"[{fmt(low)}, {fmt(high)}]"
    return text + " (zero width)" if low == high else text
