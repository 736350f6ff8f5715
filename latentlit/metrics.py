"""Test-time-scaling metrics: pure functions plus torchmetrics wrappers (DDP-safe: every state
is a sum, reduced across processes by torchmetrics on ``compute()``).

* coverage@k: the unbiased pass@k estimator of Chen et al. (2021), Eq. 1:
  ``1 - C(n - c, k) / C(n, k)`` for n samples of which c are correct.
* trajectory diversity: mean pairwise cosine distance of the N latent vectors at each step
  (paper Sec. 4, "diversity").
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples with c correct.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which equals ``1 - C(n-c,k)/C(n,k)``
    without huge binomials.

    Raises:
        ValueError: unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def coverage_ks(n: int) -> list[int]:
    """The k reported for N = n samples: every power of two <= n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def trajectory_diversity(latents: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pairwise cosine distance between N trajectories at each latent step.

    Args:
        latents: (N, T, d). mask: optional (N, T) bool, False where a trajectory has no latent
            at that step (dynamic stop); such pairs are left out.

    Returns:
        (T,) float32; 0 for N < 2 or steps with fewer than two trajectories.
    """
    n, t, _ = latents.shape
    if n < 2 or t == 0:
        return torch.zeros(t)
    x = torch.nn.functional.normalize(latents.float(), dim=-1).transpose(0, 1)  # (T, N, d)
    dist = 1.0 - x @ x.transpose(1, 2)  # (T, N, N)
    m = torch.ones(t, n, n, dtype=torch.bool) if mask is None else (mask.T[:, :, None] & mask.T[:, None, :]).cpu()
    m = m & ~torch.eye(n, dtype=torch.bool)
    pairs = m.sum((1, 2))
    return torch.where(pairs > 0, (dist.cpu() * m).sum((1, 2)) / pairs.clamp_min(1), torch.zeros(t))


class CoverageAtK(Metric):
    """coverage@k for each k in ``ks``, averaged over questions.

    ``update(n_correct (B,), n)``; ``compute() -> (len(ks),)`` in [0, 1].
    """

    full_state_update = False

    def __init__(self, ks: list[int], **kwargs):
        super().__init__(**kwargs)
        self.ks = list(ks)
        self.add_state("total", default=torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, n_correct: torch.Tensor, n: int) -> None:
        for c in n_correct.tolist():
            self.total += torch.tensor([pass_at_k(n, int(c), k) for k in self.ks], dtype=torch.float64, device=self.total.device)
        self.count += n_correct.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class MeanVector(Metric):
    """Mean over questions of a fixed-length vector (coverage@k per k, majority@k per k,
    diversity per step): ``update(x (B, size))`` -> ``compute() -> (size,)``. Rows shorter
    than ``size`` (fewer latent steps) count only where they have values."""

    full_state_update = False

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.add_state("total", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor) -> None:
        x = x.to(self.total).reshape(-1, x.shape[-1])
        width = min(x.shape[-1], self.size)
        self.total[:width] += x[:, :width].sum(0)
        self.count[:width] += x.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


def majority_at_k(answers: list, gold: str, ks: list[int]) -> list[float]:
    """Majority-vote correctness (0/1) using the first k of the N samples, for each k."""
    from latentlit.aggregation.vote import majority_vote
    from latentlit.data.answers import answers_match

    return [float(answers_match(majority_vote(answers[:k]).answer, gold)) for k in ks]
