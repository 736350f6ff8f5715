"""Matmul rate at the shapes of a decode step, against the square-matmul rate the FLOP bounds use.

``bench_sampling.py`` divides a point's FLOPs by the rate of large square matmuls. A latent or
answer step of the GPT-2-small-sized bench model multiplies M rows (the trajectories run at once)
by each layer's weights: 12 layers x (768x2304, 768x768, 768x3072, 3072x768), with bias. At small
M those products run well below the square rate, so a point whose work is almost all decode steps
(AGN with shared prefill: the prompt is read once per question) cannot reach a fraction of its
bound higher than this ratio, whatever the rest of the code does. This script measures it: the 48
products of one step in model order (distinct weights, as the model holds them), median of
several repeats, for each M.

Usage::

    python scripts/bench_gemm_shapes.py [--rows 64,128,512] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from latentlit.cli.scripts import ScriptParser, run

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # GPT-2 small: qkv, attention out, fc, fc out
LAYERS = 12


def square_rate(n: int = 1536, repeats: int = 7) -> float:
    """GFLOP/s of an n x n float32 matmul (median of ``repeats``, 2 products each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        a @ b
        rates.append(2 * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def step_rate(rows: int, weights: list[tuple[torch.Tensor, torch.Tensor]], repeats: int = 9) -> float:
    """GFLOP/s of one decode step's linear layers: ``rows`` x each (bias, weight) in order."""
    inputs = {k: torch.randn(rows, k) for k, _ in SHAPES}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for _, w in weights)

    def step():
        for bias, w in weights:
            torch.addmm(bias, inputs[w.shape[0]], w)

    step()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        rates.append(flops / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="64,128,512", help="comma-separated M (rows per step)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weights = [(torch.randn(n), torch.randn(k, n)) for _ in range(LAYERS) for k, n in SHAPES]
    before = square_rate()
    rows = [int(x) for x in args.rows.split(",")]
    results = [(m, step_rate(m, weights)) for m in rows]
    after = square_rate()
    square = statistics.median([before, after])
    print(f"threads {torch.get_num_threads()}; square 1536 matmul {square:.0f} GFLOP/s (before {before:.0f}, after {after:.0f})")
    for m, rate in results:
        print(f"M = {m:5d} rows: decode-step linear layers {rate:6.0f} GFLOP/s = {100 * rate / square:4.0f}% of the square rate")


if __name__ == "__main__":
    run(main)
