import torch

from latentlit.plots import plot_scaling, plot_trajectories


def test_scaling_plot_has_both_curves_and_greedy_line():
    fig = plot_scaling([1, 2, 4], [0.5, 0.6, 0.7], [0.5, 0.5, 0.55], 0.52)
    ax = fig.axes[0]
    ys = [[round(float(y), 6) for y in line.get_ydata()] for line in ax.lines]
    assert ys == [[50.0, 60.0, 70.0], [50.0, 50.0, 55.0], [52.0, 52.0]]
    assert ax.get_xscale() == "log"


def test_trajectory_plot_draws_every_trajectory_coloured_by_correctness():
    torch.manual_seed(0)
    latents = [torch.randn(5, 4, 8), torch.randn(3, 4, 8)]
    fig = plot_trajectories(latents, [[True, False, True, True, False], [False, False, True]], ["a", "b"])
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 5 and len(fig.axes[1].lines) == 3
    assert all(len(line.get_xdata()) == 4 for line in fig.axes[0].lines)  # T points per trajectory
    colours = [line.get_color() for line in fig.axes[0].lines]
    assert colours.count("tab:green") == 3 and colours.count("tab:red") == 2
