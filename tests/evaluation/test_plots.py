import torch

from latentlit.evaluation.plots import (
    plot_accuracy_vs_compute,
    plot_reliability,
    plot_risk_coverage,
    plot_scaling,
    plot_trajectories,
)


def test_scaling_plot_has_every_curve_its_bands_a_point_and_greedy():
    curves = {"coverage@k": {"values": [0.5, 0.6, 0.7], "low": [0.4, 0.5, 0.6], "high": [0.6, 0.7, 0.8]},
              "majority vote": {"values": [0.5, 0.5, 0.55], "low": None, "high": None},
              "best-of-N": {"values": [0.5, 0.52, 0.56], "low": [0.45, 0.47, 0.5], "high": [0.55, 0.57, 0.6]}}
    fig = plot_scaling([1, 2, 4], curves, {"value": 0.52, "low": 0.5, "high": 0.54},
                       points={"beam search": {"k": 4, "value": 0.53, "low": 0.5, "high": 0.56}})
    ax = fig.axes[0]
    ys = [[round(float(y), 6) for y in line.get_ydata()] for line in ax.lines]
    assert ys[:3] == [[50.0, 60.0, 70.0], [50.0, 50.0, 55.0], [50.0, 52.0, 56.0]]
    assert [52.0, 52.0] in ys and [53.0] in ys  # greedy line, beam search point
    assert len(ax.collections) >= 3  # two bands (the vote has none) and the greedy band / error bar
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["coverage@k", "majority vote", "best-of-N",
                                                                    "greedy", "beam search"]


def test_selective_and_compute_plots():
    fig = plot_risk_coverage({"vote": {"coverage": [0.5, 1.0], "accuracy": [0.7, 0.5]}})
    assert [list(line.get_ydata()) for line in fig.axes[0].lines] == [[70.0, 50.0]]
    bins = [{"lower": b / 10, "upper": (b + 1) / 10, "count": 0, "accuracy": None, "confidence": None} for b in range(10)]
    bins[9] = {"lower": 0.9, "upper": 1.0, "count": 4, "accuracy": 0.75, "confidence": 1.0}
    fig = plot_reliability({"vote": {"ece": 0.25, "bins": bins}, "rm": {"ece": 0.1, "bins": bins}})
    assert len(fig.axes) == 2 and "ECE 25.0%" in fig.axes[0].get_title()
    assert [p.get_height() for p in fig.axes[0].patches] == [75.0]
    rows = [{"method": "majority_vote", "label": "majority vote", "accuracy": a, "trajectories": k, "flops": 10.0 * k}
            for k, a in ((1, 0.5), (2, 0.55))]
    rows.append({"method": "adaptive:x", "label": "adaptive", "accuracy": 0.56, "trajectories": 1.5, "flops": None})
    fig = plot_accuracy_vs_compute(rows)
    traj, flops = fig.axes
    assert [list(line.get_xdata()) for line in traj.lines] == [[1, 2], [1.5]]
    assert [list(line.get_xdata()) for line in flops.lines] == [[10.0, 20.0]]  # no FLOPs known for the adaptive point


def test_trajectory_plot_draws_every_trajectory_coloured_by_correctness():
    torch.manual_seed(0)
    latents = [torch.randn(5, 4, 8), torch.randn(3, 4, 8)]
    fig = plot_trajectories(latents, [[True, False, True, True, False], [False, False, True]], ["a", "b"])
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 5 and len(fig.axes[1].lines) == 3
    assert all(len(line.get_xdata()) == 4 for line in fig.axes[0].lines)  # T points per trajectory
    colours = [line.get_color() for line in fig.axes[0].lines]
    assert colours.count("tab:green") == 3 and colours.count("tab:red") == 2


def test_pca_projection_keeps_the_two_largest_directions():
    import pytest

    from latentlit.evaluation.plots import project_2d

    torch.manual_seed(0)
    coords = torch.randn(40, 2) * torch.tensor([5.0, 2.0])
    basis, _ = torch.linalg.qr(torch.randn(6, 6))
    points = torch.cat([coords, 0.01 * torch.randn(40, 4)], dim=1) @ basis.T + 3.0
    xy = project_2d(points, "pca")
    # same pairwise distances as the planted 2-D coordinates, up to the small extra noise
    torch.testing.assert_close(torch.cdist(xy, xy), torch.cdist(coords, coords), atol=0.1, rtol=0)
    with pytest.raises(ValueError, match="projection='umap'"):
        project_2d(points, "umap")


def test_tsne_projection_separates_clusters_and_is_seeded():
    from latentlit.evaluation.plots import project_2d

    torch.manual_seed(0)
    points = torch.cat([torch.randn(12, 16), torch.randn(12, 16) + 20.0])
    a, b = project_2d(points, "tsne"), project_2d(points, "tsne")
    torch.testing.assert_close(a, b)
    centre0, centre1 = a[:12].mean(0), a[12:].mean(0)
    spread = max(a[:12].std(0).max(), a[12:].std(0).max())
    assert (centre0 - centre1).norm() > 3 * spread
    fig = plot_trajectories([points.reshape(6, 4, 16)], [[True] * 3 + [False] * 3], ["t"], projection="tsne")
    assert fig.axes[0].get_xlabel() == "t-SNE 1" and len(fig.axes[0].lines) == 6
