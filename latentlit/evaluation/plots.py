"""Plots: scaling curves (every method against k), selective prediction (risk-coverage,
reliability), accuracy against compute, and latent trajectories."""

from __future__ import annotations

from pathlib import Path

import torch

from latentlit.aggregation.registry import COVERAGE_STYLE
from latentlit.aggregation.registry import style as registry_style


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend. Imported on first use: it costs
    about 1 s, which every ``latentlit`` start (``--help`` included) would pay otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def close(fig) -> None:
    """Release a figure made here (after it was saved or logged)."""
    _pyplot().close(fig)


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` and close it; returns the path."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    close(fig)
    return Path(path)


def plot_scaling(ks: list[int], curves: dict[str, dict], greedy: dict, title: str = "",
                 points: dict[str, dict] | None = None):
    """Accuracy (%) of every method against k on a log-2 axis, with 95% intervals as bands.

    Args:
        curves: label -> ``{"values": [...], "low": [...], "high": [...]}`` over ``ks`` (fractions;
            ``low``/``high`` optional), e.g. coverage@k, majority vote@k, best-of-N@k; optional
            ``"colour"`` / ``"marker"`` (``latentlit.aggregation.registry.style``).
        greedy: ``{"value", "low", "high"}``: a horizontal line (and band).
        points: label -> ``{"k", "value", "low", "high"}`` (optional ``"colour"`` /
            ``"marker"``): methods reported at one k only (beam search and DVTS at k = N), drawn
            as a point with an error bar. Points at the same k are spread a little sideways
            (by factors of 2 ** +-0.06 on the log axis) so that none hides another.

    Returns:
        a matplotlib Figure (caller saves/closes it).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "os^vDPX*"
    # curves that coincide (best-of-N and the weighted vote at small k) stay apart: each its own line
    # style and marker size, drawn so that later (thinner) lines lie on earlier ones
    styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1))]
    for i, (label, c) in enumerate(curves.items()):
        marker = c.get("marker") or markers[i % len(markers)]
        (line,) = ax.plot(ks, [100 * v for v in c["values"]], marker=marker, ls=styles[i % len(styles)],
                          ms=max(6 - i, 3), lw=max(2.2 - 0.3 * i, 1.0), color=c.get("colour"), label=label)
        if c.get("low") is not None and c.get("high") is not None:
            ax.fill_between(ks, [100 * v for v in c["low"]], [100 * v for v in c["high"]], color=line.get_color(),
                            alpha=0.15, lw=0)
    at_k: dict = {}
    for p in (points or {}).values():
        at_k[p["k"]] = at_k.get(p["k"], 0) + 1
    seen: dict = {}
    for i, (label, p) in enumerate((points or {}).items()):
        err = None
        if p.get("low") is not None:
            err = [[100 * (p["value"] - p["low"])], [100 * (p["high"] - p["value"])]]
        j, m = seen.get(p["k"], 0), at_k[p["k"]]
        seen[p["k"]] = j + 1
        x = p["k"] * 2 ** (0.06 * (j - (m - 1) / 2))
        ax.errorbar([x], [100 * p["value"]], yerr=err, ls="none", marker=p.get("marker") or "*^vDPX"[i % 6], ms=8,
                    color=p.get("colour") or f"C{(len(curves) + i) % 10}", capsize=3, label=label)
    ax.axhline(100 * greedy["value"], color="gray", ls="--", label="greedy")
    if greedy.get("low") is not None:
        ax.axhspan(100 * greedy["low"], 100 * greedy["high"], color="gray", alpha=0.1, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("accuracy (%), 95% bootstrap bands")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_risk_coverage(curves: dict[str, dict], title: str = ""):
    """Selective prediction: accuracy (%) of the answered questions against the fraction answered
    (most confident first), one line per confidence.

    Args:
        curves: label -> ``{"coverage": [...], "accuracy": [...]}`` (fractions).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, c in curves.items():
        ax.plot([100 * x for x in c["coverage"]], [100 * y for y in c["accuracy"]], "o-", ms=3, label=label)
    ax.set_xlabel("questions answered (%), most confident first")
    ax.set_ylabel("accuracy of the answered (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_reliability(diagrams: dict[str, dict], title: str = ""):
    """Reliability diagrams: per confidence bin, accuracy against mean confidence, one panel per
    confidence, the diagonal as perfect calibration.

    Args:
        diagrams: label -> ``{"ece": float, "bins": [{"lower", "upper", "count", "accuracy",
            "confidence"}]}``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(diagrams), figsize=(3.6 * len(diagrams), 3.4), squeeze=False)
    for ax, (label, d) in zip(axes[0], diagrams.items()):
        bins = [b for b in d["bins"] if b["count"]]
        ax.bar([100 * b["lower"] for b in bins], [100 * b["accuracy"] for b in bins],
               width=[100 * (b["upper"] - b["lower"]) for b in bins], align="edge", alpha=0.6, edgecolor="k", lw=0.5)
        ax.plot([100 * b["confidence"] for b in bins], [100 * b["accuracy"] for b in bins], "k.", ms=5)
        ax.plot([0, 100], [0, 100], "r--", lw=1)
        for b in bins:
            ax.annotate(str(b["count"]), (100 * (b["lower"] + b["upper"]) / 2, 2), ha="center", fontsize=6)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("confidence (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{label}\nECE {100 * d['ece']:.1f}%", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_compute(rows: list[dict], title: str = ""):
    """Accuracy (%) against compute per question: trajectories (log 2) and forward FLOPs (log 10).

    Args:
        rows: dicts with ``method``, ``label``, ``accuracy``, ``trajectories`` and ``flops`` (None
            where unknown); rows of one method form a line in order, single rows a point. Rows of
            method ``coverage`` are drawn dashed in coverage's style: the ceiling of the selectors.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    methods: dict[str, list[dict]] = {}
    for r in rows:
        methods.setdefault(r["method"], []).append(r)
    markers = "os^vDPX<>p"
    for i, (method, rs) in enumerate(methods.items()):
        try:  # the aggregator's own colour and marker, as in the scaling figure
            colour, marker = registry_style(method)
        except KeyError:
            colour, marker = (None, markers[i % len(markers)]) if method != "greedy" else ("gray", "o")
        ceiling = method == "coverage"  # what the samples found: dashed, above every selector
        if ceiling:
            colour, marker = COVERAGE_STYLE
        for ax, key in zip(axes, ("trajectories", "flops")):
            pts = [(r[key], 100 * r["accuracy"]) for r in rs if r.get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker,
                        ls=("--" if ceiling else "-") if len(rs) > 1 else "none", ms=5, color=colour,
                        label=rs[0]["label"], alpha=0.7 if ceiling else 1.0)
    axes[0].set_xscale("log", base=2)
    axes[0].xaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axes[0].set_xlabel("trajectories per question")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    axes[1].set_xlabel("forward FLOPs per question (backbone + LatentRM)")
    for ax in axes:
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
    plt = _pyplot()
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


def plot_sweet_spot(rows: list[dict]):
    """The diversity sweep's "sweet spot" figure (paper Sec. 4): for each sampler (one panel),
    coverage@N (solid) and majority vote@N (dashed) in % against the sampler strength, one colour
    per N, greedy accuracy as a grey line, and trajectory diversity (mean pairwise cosine distance
    of the latents, right axis, black dots).

    Args:
        rows: :func:`latentlit.cli.sweep.sweep_rows` rows (``sampler``, ``strength``, ``value``,
            ``n``, ``coverage``, ``majority_vote``, ``diversity``, ``greedy``; rates in [0, 1]).

    Returns:
        a matplotlib Figure (caller saves/closes it).

    Raises:
        ValueError: no rows.
    """
    plt = _pyplot()
    if not rows:
        raise ValueError("plot_sweet_spot needs at least one row")
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    ns = sorted({r["n"] for r in rows})
    colours = plt.cm.viridis([i / max(len(ns) - 1, 1) * 0.85 for i in range(len(ns))])
    fig, axes = plt.subplots(1, len(samplers), figsize=(5.2 * len(samplers), 3.8), squeeze=False)
    for ax, sampler in zip(axes[0], samplers):
        mine = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["value"])
        for n, colour in zip(ns, colours):
            pts = [r for r in mine if r["n"] == n]
            x = [r["value"] for r in pts]
            ax.plot(x, [100 * r["coverage"] for r in pts], "o-", color=colour, label=f"coverage@{n}")
            ax.plot(x, [100 * r["majority_vote"] for r in pts], "s--", color=colour, label=f"majority@{n}")
        first = [r for r in mine if r["n"] == ns[0]]
        ax.plot([r["value"] for r in first], [100 * r["greedy"] for r in first], color="gray", lw=1, label="greedy")
        values = [r["value"] for r in first]
        if min(values) > 0 and max(values) / min(values) >= 8:  # geometric grids read better on a log axis
            ax.set_xscale("log", base=2)
            ax.set_xticks(values)
            ax.set_xticklabels([f"{v:g}" for v in values])
        ax.set_xlabel(f"{sampler} {mine[0]['strength']}")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(sampler)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        diversity = [float("nan") if r["diversity"] is None else r["diversity"] for r in first]  # None: undefined
        twin.plot(values, diversity, "k:", marker="D", ms=4, label="diversity")
        twin.set_ylabel("trajectory diversity (cosine distance)")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(handles) // 7), 1, 1))
    return fig


# one line style per run of a study: runs stay apart where their lines overlap (markers too)
RUN_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P")]


def plot_study(rows: list[dict], runs: list[str], methods: list[str], compute: dict[str, list[dict]],
               colours: dict[str, tuple[str, str]], titles: dict[str, str] | None = None) -> dict:
    """The overlay figures of a study (:mod:`latentlit.evaluation.study`).

    Args:
        rows: the study's rows (``run``, ``method``, ``k``, ``accuracy``, ``low``, ``high``; fractions).
        runs: the run labels, in order (one line style each). methods: one panel each.
        compute: run label -> its ``metrics.json`` compute rows (``method``, ``k``, ``flops``, ``accuracy``).
        colours: method -> (colour, marker) of the registry's style. titles: method -> its label.

    Returns:
        ``{"accuracy_vs_k": Figure, "accuracy_vs_compute": Figure}`` (caller saves/closes them).
    """
    plt = _pyplot()
    titles = titles or {}
    figs = {}
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for i, run in enumerate(runs):
            mine = sorted((r for r in rows if r["run"] == run and r["method"] == method), key=lambda r: r["k"])
            if not mine:
                continue
            ls, marker = RUN_STYLES[i % len(RUN_STYLES)]
            ks = [r["k"] for r in mine]
            (line,) = ax.plot(ks, [100 * r["accuracy"] for r in mine], ls=ls, marker=marker, ms=4, label=run)
            if all(r["low"] is not None for r in mine):
                ax.fill_between(ks, [100 * r["low"] for r in mine], [100 * r["high"] for r in mine], alpha=0.12, lw=0,
                                color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel("k (samples)")
        ax.set_title(titles.get(method, method))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 3), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(runs) - 1) // 3), 1, 1))
    figs["accuracy_vs_k"] = fig

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, run in enumerate(runs):
        ls, _ = RUN_STYLES[i % len(RUN_STYLES)]
        for method in methods:
            points = sorted((r for r in compute.get(run, []) if r["method"] == method and r.get("flops")),
                            key=lambda r: r["flops"])
            if not points:
                continue
            colour, marker = colours[method]
            ax.plot([r["flops"] for r in points], [100 * r["accuracy"] for r in points], ls=ls, marker=marker, ms=4,
                    color=colour, label=f"{run}: {titles.get(method, method)}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.set_xlabel("forward FLOPs per question")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["accuracy_vs_compute"] = fig
    return figs
