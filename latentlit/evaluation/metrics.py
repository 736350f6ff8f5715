"""Test-time-scaling metrics: pure functions plus torchmetrics wrappers (DDP-safe: every state
is a sum, reduced across processes by torchmetrics on ``compute()``).

* coverage@k: the unbiased pass@k estimator of Chen et al. (2021), Eq. 1:
  ``1 - C(n - c, k) / C(n, k)`` for n samples of which c are correct.
* trajectory diversity: mean pairwise cosine distance of the N latent vectors at each step
  (paper Sec. 4, "diversity").
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from latentlit.aggregation.stopping import AdaptiveSpec
from latentlit.aggregation.vote import majority_vote
from latentlit.data.answers import answers_match


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
    """Mean pairwise cosine distance between N trajectories at each latent step (paper Sec. 4,
    "diversity").

    Args:
        latents: (N, T, d). mask: optional (N, T) bool, False where a trajectory has no latent
            at that step (dynamic stop); such pairs are left out.

    Returns:
        (T,) float32; NaN where fewer than two trajectories have a latent (N < 2, or a step that
        at most one trajectory reached): the diversity of one point is undefined, not 0, and
        must not be averaged as a value (:class:`MeanVector` skips it).
    """
    n, t, _ = latents.shape
    if n < 2 or t == 0:
        return torch.full((t,), float("nan"))
    x = torch.nn.functional.normalize(latents.float(), dim=-1).transpose(0, 1)  # (T, N, d)
    dist = 1.0 - x @ x.transpose(1, 2)  # (T, N, N)
    m = torch.ones(t, n, n, dtype=torch.bool) if mask is None else (mask.T[:, :, None] & mask.T[:, None, :]).cpu()
    m = m & ~torch.eye(n, dtype=torch.bool)
    pairs = m.sum((1, 2))
    return torch.where(pairs > 0, (dist.cpu() * m).sum((1, 2)) / pairs.clamp_min(1), torch.full((t,), float("nan")))


def diversity_record(latents: torch.Tensor, mask: torch.Tensor) -> list[float | None]:
    """A question's ``diversity`` record field: :func:`trajectory_diversity` of its (N, T, d)
    latents at steps 1..T_max, T_max the last step any of its trajectories reached (so the list
    does not depend on how many steps other questions of the batch ran), 4 decimals (latents agree
    only to ~1e-7 across batch shapes), ``None`` where undefined (fewer than two trajectories)."""
    reached = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 0
    values = trajectory_diversity(latents[:, :reached], mask[:, :reached]).tolist()
    return [None if math.isnan(x) else round(x, 4) for x in values]


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
    """Per-position means over questions of vectors with missing entries (diversity per step):
    ``update(x (B, size))`` with NaN (or a row shorter than ``size``) where a question has no
    value -> ``compute()`` -> ``{"mean": (size,), "count": (size,)}``: the mean over the questions
    that have a value (NaN where none has) and how many they are (summed across processes)."""

    full_state_update = False

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.add_state("total", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor) -> None:
        x = x.to(self.total).reshape(-1, x.shape[-1])[:, :self.size]
        present = ~torch.isnan(x)
        width = x.shape[-1]
        self.total[:width] += torch.where(present, x, torch.zeros_like(x)).sum(0)
        self.count[:width] += present.sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        mean = torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.full_like(self.total, float("nan")))
        return {"mean": mean, "count": self.count.clone()}


class KeyedMean(Metric):
    """Means over questions of a fixed list of named per-question values (every accuracy of
    ``metrics.json``): ``update({key: value})`` for one question -> ``compute() -> (K,)`` float64
    in ``keys`` order. States are float64 sums and a count, summed across processes, so the
    result is exact under DDP.

    Raises:
        KeyError: an update lacking one of ``keys``.
    """

    full_state_update = False

    def __init__(self, keys: list[str], **kwargs):
        super().__init__(**kwargs)
        self.keys = list(keys)
        self.add_state("total", default=torch.zeros(len(self.keys), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: dict[str, float]) -> None:
        row = torch.tensor([float(values[k]) for k in self.keys], dtype=torch.float64, device=self.total.device)
        self.total += row
        self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)

    def as_dict(self) -> dict[str, float]:
        """``compute()`` keyed by name."""
        return dict(zip(self.keys, self.compute().tolist()))


def majority_at_k(answers: list, gold: str, ks: list[int]) -> list[float]:
    """Majority-vote correctness (0/1) using the first k of the N samples, for each k."""
    return [float(answers_match(majority_vote(answers[:k]).answer, gold)) for k in ks]


def distinct_mean(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over distinct items: rows sharing an ``index`` count once (the first).

    Under DDP, Lightning's DistributedSampler pads validation data by repeating items so that
    every process gets as many; a plain mean then counts the repeats twice (3 items on 2
    processes become 4). Keyed by each item's dataset index, the repeats drop out.

    Args:
        index: (M,) integer item keys. values: (M,) or (M, K) per-item values.

    Returns:
        () or (K,) float64 mean over the distinct keys; NaN where there is no item.

    Raises:
        ValueError: index and values disagree on M.
    """
    if index.shape[0] != values.shape[0]:
        raise ValueError(f"index has {index.shape[0]} rows but values {values.shape[0]}")
    if index.numel() == 0:
        return torch.full(values.shape[1:], float("nan"), dtype=torch.float64)
    order = torch.argsort(index, stable=True)
    key = index[order]
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    return values[order][first].to(torch.float64).mean(0)


class DistinctMean(Metric):
    """Mean over distinct items of a per-item value, exact under DDP (see :func:`distinct_mean`).

    ``update(index (B,), values (B,))`` with integer item keys (< 2**53: states are float64, so
    that a process left without items gathers an empty state of the same dtype); ``compute()``
    gathers every process's items (torchmetrics ``cat`` reduction) and returns the float64 mean
    over distinct indices (NaN with no item).
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        index = torch.as_tensor(index, device=self.device).reshape(-1)
        values = torch.as_tensor(values, device=self.device).reshape(-1)
        if index.shape != values.shape:
            raise ValueError(f"DistinctMean.update: {index.numel()} indices but {values.numel()} values")
        self.index.append(index.to(torch.float64))
        self.values.append(values.to(torch.float64))

    def compute(self) -> torch.Tensor:
        if isinstance(self.index, list) and not self.index:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return distinct_mean(dim_zero_cat(self.index), dim_zero_cat(self.values))


class AdaptiveTable(Metric):
    """Accuracy and mean / median trajectories used per rule and threshold over questions.

    ``update(record_field)`` with a record's ``adaptive`` field; ``compute()`` ->
    ``{rule: {threshold: {"accuracy", "mean_trajectories", "median_trajectories"}}}``. DDP-safe:
    sums are reduced, the per-question counts (for the median) are gathered.
    """

    full_state_update = False

    def __init__(self, spec: AdaptiveSpec, **kwargs):
        super().__init__(**kwargs)
        self.entries = [(rule.name, rule.key) for rule in spec.table]
        size = len(self.entries)
        self.add_state("correct", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("used_sum", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("used", default=[], dist_reduce_fx="cat")

    def update(self, field: dict) -> None:
        try:
            rows = [field[name][key] for name, key in self.entries]
        except KeyError as err:
            raise ValueError(f"a prediction record's adaptive field lacks {err.args[0]!r}: it was written with "
                             "another adaptive table; use another output_dir") from None
        used = torch.tensor([float(r["trajectories"]) for r in rows], dtype=torch.float64, device=self.correct.device)
        self.correct += torch.tensor([float(r["correct"]) for r in rows], dtype=torch.float64, device=self.correct.device)
        self.used_sum += used
        self.count += 1
        self.used.append(used[None])

    def compute(self) -> dict:
        n = int(self.count)
        if n == 0:
            return {}
        used = self.used if isinstance(self.used, torch.Tensor) else torch.cat(self.used)
        used = used.reshape(-1, len(self.entries))
        table: dict[str, dict] = {}
        for j, (name, key) in enumerate(self.entries):
            table.setdefault(name, {})[key] = {
                "accuracy": round(float(self.correct[j]) / n, 6),
                "mean_trajectories": round(float(self.used_sum[j]) / n, 6),
                # median of an even count: the mean of the middle two (as statistics.median)
                "median_trajectories": round(float(used[:, j].double().quantile(0.5)), 6),
            }
        return table
