"""Plots: scaling curves (coverage@k and majority vote vs k)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_scaling(ks: list[int], coverage: list[float], majority: list[float], greedy: float, title: str = ""):
    """Coverage@k and majority vote@k (in %) against k on a log-2 axis, greedy as a reference.

    Returns:
        a matplotlib Figure (caller saves/closes it).
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, [100 * c for c in coverage], "o-", label="coverage@k")
    ax.plot(ks, [100 * m for m in majority], "s-", label="majority vote@k")
    ax.axhline(100 * greedy, color="gray", ls="--", label="greedy")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
