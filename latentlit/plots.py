"""Plots: scaling curves (coverage@k and majority vote vs k) and latent trajectories."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


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


def plot_trajectories(latents: list[torch.Tensor], correct: list[list[bool]], titles: list[str]):
    """The N latent trajectories of a few questions, projected on the first two principal
    components of all their latent vectors (one shared projection per question).

    Args:
        latents: per question an (N, T, d) tensor. correct: per question N booleans (colour:
            green = reaches the gold answer, red = not). titles: per question a short title.

    Returns:
        a matplotlib Figure, one panel per question; each trajectory is a line h_1 -> h_T.
    """
    fig, axes = plt.subplots(1, len(latents), figsize=(4 * len(latents), 3.6), squeeze=False)
    for ax, lat, ok, title in zip(axes[0], latents, correct, titles):
        n, t, d = lat.shape
        flat = lat.reshape(n * t, d).float()
        centred = flat - flat.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=min(2, min(centred.shape)), center=False)
        xy = (centred @ v[:, :2]).reshape(n, t, -1)
        for i in range(n):
            ax.plot(xy[i, :, 0], xy[i, :, 1], "-o", ms=3, lw=0.8, alpha=0.6, color="tab:green" if ok[i] else "tab:red")
            ax.annotate("1", xy[i, 0].tolist(), fontsize=6, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    return fig
