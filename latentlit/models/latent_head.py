"""Latent projections f: last-layer hidden state -> next latent input embedding.

A latent reasoning model feeds ``h_t = f(hidden_{t-1})`` back as the input embedding of latent step t.
The three published families differ only in f:

* COCONUT (Hao et al., 2024): f is the identity.
* CODI (Shen et al., 2025): a projector ``Dropout, Linear(d,h), GELU, Linear(h,d), LayerNorm(d)``.
* CoLaR (Tan et al., 2025): a latent head ``fc = Linear(d,i), GELU, Linear(i,i), LayerNorm(i)``,
  ``mean = Linear(i,d)``, scaled by ``latent_embedding_std``.

Parameter names match the released checkpoints (``projector.1.*``, ``lt_head.fc.0.*`` ...), so their
state dicts load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_HEADS = ("identity", "projector", "scaled_head")


class IdentityLatent(nn.Module):
    """COCONUT: the latent is the last-layer hidden state itself. (B, d) -> (B, d)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class ProjectorLatent(nn.Module):
    """CODI projector. (..., d) -> (..., d).

    Args:
        d: model width. hidden: projector width ``projector_hidden_size``. dropout: ``projector_dropout``.
    """

    def __init__(self, d: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d), nn.LayerNorm(d)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projector(hidden)


class _CoLaRHead(nn.Module):
    def __init__(self, d: int, inter: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(d, inter), nn.GELU(), nn.Linear(inter, inter), nn.LayerNorm(inter))
        self.mean = nn.Linear(inter, d)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mean(self.fc(hidden))


class ScaledLatentHead(nn.Module):
    """CoLaR latent head: ``lt_head(hidden) * latent_embedding_std``. (..., d) -> (..., d).

    The scale brings the head's unit-variance output to the token-embedding scale of the LM
    (0.018 for Llama-3.2-1B).
    """

    def __init__(self, d: int, inter: int, std: float):
        super().__init__()
        self.lt_head = _CoLaRHead(d, inter)
        self.std = float(std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lt_head(hidden) * self.std


def build_latent_head(kind: str, d: int, **kwargs) -> nn.Module:
    """Build f from its name (one of ``LATENT_HEADS``).

    Raises:
        ValueError: unknown ``kind`` or a missing size argument.
    """
    if kind == "identity":
        return IdentityLatent()
    if kind == "projector":
        return ProjectorLatent(d, int(kwargs["projector_hidden_size"]), float(kwargs.get("projector_dropout", 0.0)))
    if kind == "scaled_head":
        return ScaledLatentHead(d, int(kwargs["latent_intermediate_size"]), float(kwargs["latent_embedding_std"]))
    raise ValueError(f"unknown latent head {kind!r}; expected one of {LATENT_HEADS}")
