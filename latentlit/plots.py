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


PROJECTIONS = ("pca", "tsne")


def project_2d(points: torch.Tensor, projection: str = "pca", seed: int = 0) -> torch.Tensor:
    """(P, d) latent vectors -> (P, 2) coordinates.

    ``pca``: the first two principal components (exact SVD of the centred points). ``tsne``:
    scikit-learn's t-SNE (PCA initialisation, perplexity min(30, (P - 1) / 3), seeded), which keeps
    neighbourhoods rather than distances, so separate clusters of samples stand out.

    Raises:
        ValueError: unknown projection, or fewer than 3 points for t-SNE.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection={projection!r}; expected one of {PROJECTIONS}")
    flat = points.float()
    if projection == "pca":
        centred = flat - flat.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ vh[:2].T
        return torch.cat([xy, xy.new_zeros(xy.shape[0], 2 - xy.shape[1])], dim=1) if xy.shape[1] < 2 else xy
    if flat.shape[0] < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {flat.shape[0]}")
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (flat.shape[0] - 1) / 3), init="pca", random_state=seed)
    return torch.from_numpy(tsne.fit_transform(flat.double().numpy())).float()


def plot_trajectories(latents: list[torch.Tensor], correct: list[list[bool]], titles: list[str],
                      projection: str = "pca"):
    """The N latent trajectories of a few questions in 2-D (one shared projection per question).

    Args:
        latents: per question an (N, T, d) tensor. correct: per question N booleans (colour:
            green = reaches the gold answer, red = not). titles: per question a short title.
        projection: ``pca`` or ``tsne`` (:func:`project_2d`).

    Returns:
        a matplotlib Figure, one panel per question; each trajectory is a line h_1 -> h_T.
    """
    fig, axes = plt.subplots(1, len(latents), figsize=(4 * len(latents), 3.6), squeeze=False)
    label = {"pca": "PC", "tsne": "t-SNE"}.get(projection, projection)
    for ax, lat, ok, title in zip(axes[0], latents, correct, titles):
        n, t, d = lat.shape
        xy = project_2d(lat.reshape(n * t, d), projection).reshape(n, t, 2)
        for i in range(n):
            ax.plot(xy[i, :, 0], xy[i, :, 1], "-o", ms=3, lw=0.8, alpha=0.6, color="tab:green" if ok[i] else "tab:red")
            ax.annotate("1", xy[i, 0].tolist(), fontsize=6, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{label} 1")
        ax.set_ylabel(f"{label} 2")
    fig.tight_layout()
    return fig
