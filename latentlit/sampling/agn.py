"""Additive Gaussian noise sampler (paper Sec. 3.1, "aleatoric" sampling).

At every latent step ``h_t <- h_t + eps``, ``eps ~ N(0, s^2 I)``, where ``s = sigma`` (absolute)
or ``s = sigma * RMS(h_t)`` (relative: latent scales differ by orders of magnitude between
models, e.g. GPT-2 hidden states vs CoLaR's 0.018-scaled latents).
"""

from __future__ import annotations

import torch

from latentlit.models.hooks import Sampler
from latentlit.rng import hash_ints, keyed_normal

_AGN_STREAM = 0xA6


class AGN(Sampler):
    """Gaussian noise on each latent vector.

    Args:
        sigma: noise scale (>= 0). relative: scale by each latent vector's RMS.
        prefill: ``shared`` (default; exact for AGN, which never touches the prompt).

    Raises:
        ValueError: negative sigma.
    """

    def __init__(self, sigma: float = 1.0, relative: bool = True, prefill: str = "shared", on_answer: bool = False):
        super().__init__(prefill=prefill, on_answer=on_answer)
        if sigma < 0:
            raise ValueError(f"AGN sigma={sigma} must be >= 0")
        self.sigma, self.relative = float(sigma), bool(relative)

    @property
    def stochastic(self) -> bool:
        """True unless sigma is 0."""
        return self.sigma > 0

    def perturb(self, latent: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """(R, d) -> (R, d) with N(0, s^2) noise keyed by (row key, step)."""
        if self.sigma == 0:
            return latent
        eps = keyed_normal(keys.to(latent.device), hash_ints(_AGN_STREAM, step), latent.shape[-1]).to(latent.dtype)
        return latent + eps * self._scale(latent)

    def _scale(self, latent: torch.Tensor):
        if self.relative:
            return self.sigma * latent.float().pow(2).mean(-1, keepdim=True).sqrt().to(latent.dtype)
        return self.sigma

    def latent_distribution(self, latent: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean = latent (R, d), std (R, 1)): s = sigma, or sigma * RMS(latent) when relative
        (then the std depends on the latent, and so on the model). None when sigma is 0."""
        if self.sigma == 0:
            return None
        scale = self._scale(latent)
        std = scale if torch.is_tensor(scale) else latent.new_full((latent.shape[0], 1), scale)
        return latent, std

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma, "relative": self.relative}
