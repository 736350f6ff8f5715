"""Learned sampler: a small network sets each latent step's Gaussian noise from h_t (docs/rl.md).

    h*_t = h_t + RMS(h_t) * (shift(z_t) + exp(log_sigma + log_scale(z_t)) * eps),  z_t = h_t / RMS(h_t),

eps ~ N(0, I) keyed by (row key, step) as in AGN, so the determinism contract is AGN's. With the
output layer at zero (how a new sampler starts) it *is* relative AGN with ``sigma``. The backbone
stays frozen; the network is trained with GRPO (``latentlit.lit.GRPOModule(train="sampler")``),
for which the policy log-probability is exact: sum_t log N(h*_t; mean_t, std_t^2 I).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from latentlit.models.checkpoints import resolve_path
from latentlit.models.hooks import Sampler
from latentlit.rng import hash_ints, keyed_normal
from latentlit.runs.files import save_tensors

_STREAM = 0x1EA5  # not AGN's: a learned sampler's noise is its own stream
CONFIG_FILE, WEIGHTS_FILE = "sampler.json", "sampler.safetensors"
LOG_SCALE_BOUND = 3.0  # exp(+-3): the learned scale stays within 20x of sigma either way


class LearnedSampler(Sampler):
    """Gaussian noise on each latent vector, its mean shift and scale set by a network of h_t.

    Args:
        path: a directory saved by :meth:`save` (``sampler.json``, ``sampler.safetensors``), or
            ``quickstart`` (the one shipped for the quickstart backbone); None
            builds a new network (its output layer zero: relative AGN with ``sigma``) when bound.
        hidden_size: width of the network's hidden layer (new network: default 64).
        sigma: the starting noise scale, x RMS(h_t) (new network: default 1.0).
        shift: learn a mean shift, else only the scale (new network: default True). With a
            ``path`` these three come from the directory; a different value is refused.

    Raises:
        FileNotFoundError / ValueError: ``path`` is not a sampler directory, a size or scale
            given that differs from the trained one, or (when bound) a backbone of another width.
    """

    def __init__(self, path: str | None = None, hidden_size: int | None = None, sigma: float | None = None,
                 shift: bool | None = None, prefill: str = "shared"):
        super().__init__(prefill=prefill, on_answer=False)
        self.path = str(path) if path else None
        given = {"hidden_size": hidden_size, "sigma": sigma, "shift": shift}
        if self.path:
            directory = Path(resolve_path(self.path, "sampler"))
            config_file = directory / CONFIG_FILE
            if not config_file.is_file():
                raise FileNotFoundError(f"LearnedSampler path={self.path!r}: no {CONFIG_FILE} there (a directory "
                                        "written by LearnedSampler.save, e.g. the export of a GRPO fit with train: sampler)")
            config = json.loads(config_file.read_text())
            # a trained sampler's sizes and scale are its weights': a different value asked for is refused, not ignored
            for name, value in given.items():
                if value is not None and value != config[name]:
                    raise ValueError(f"LearnedSampler {name}={value!r}, but the sampler in {self.path} was trained with "
                                     f"{name}={config[name]!r}; leave {name} unset with a path")
            hidden_size, sigma, shift = config["hidden_size"], config["sigma"], config["shift"]
            self.width = int(config["width"])
        else:
            hidden_size = 64 if hidden_size is None else hidden_size
            sigma = 1.0 if sigma is None else sigma
            shift = True if shift is None else shift
            self.width = None
        if sigma <= 0:
            raise ValueError(f"LearnedSampler sigma={sigma} must be > 0")
        self.hidden_size, self.sigma, self.shift = int(hidden_size), float(sigma), bool(shift)
        self.net: nn.Sequential | None = None
        if self.width is not None:
            self._build(self.width)
            self.net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)

    def _build(self, width: int) -> None:
        self.width = width
        out = nn.Linear(self.hidden_size, width + 1 if self.shift else 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # a new sampler's first layer is the same on every process and run
            self.net = nn.Sequential(nn.Linear(width, self.hidden_size), nn.GELU(), out)

    @property
    def stochastic(self) -> bool:
        return True

    def _attach(self, backbone: nn.Module) -> None:
        width = backbone.hidden_size
        if self.net is None:
            self._build(width)
        elif width != self.width:
            raise ValueError(f"LearnedSampler {self.path or ''} was trained for latents of width {self.width}; "
                             f"this backbone's are {width}")
        self.net.to(backbone.device)

    def latent_distribution(self, latent: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (R, d), std (R, 1)) of h*_t given h_t (R, d); see the module docstring."""
        x = latent.float()
        rms = x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
        out = self.net(x / rms)
        log_scale = LOG_SCALE_BOUND * torch.tanh(out[:, :1] / LOG_SCALE_BOUND)
        std = rms * torch.exp(math.log(self.sigma) + log_scale)
        mean = x + rms * out[:, 1:] if self.shift else x
        return mean.to(latent.dtype), std.to(latent.dtype)

    def perturb(self, latent: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """(R, d) -> (R, d): mean + std * eps, eps keyed by (row key, step)."""
        mean, std = self.latent_distribution(latent, step)
        eps = keyed_normal(keys.to(latent.device), hash_ints(_STREAM, step), latent.shape[-1]).to(latent.dtype)
        return mean + std * eps

    def save(self, path: str | Path) -> None:
        """Write ``sampler.json`` and ``sampler.safetensors`` to the directory ``path``."""
        if self.net is None:
            raise ValueError("LearnedSampler.save: the network is not built yet (bind it to a backbone first)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"kind": "learned", "width": self.width, "hidden_size": self.hidden_size, "sigma": self.sigma,
                  "shift": self.shift}
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_tensors({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, path / WEIGHTS_FILE)

    def fingerprint(self) -> str | None:
        """sha256 (16 hex) of the network's weights: which sampler ran, for a run's identity."""
        if self.net is None:
            return None
        digest = hashlib.sha256()
        for name, value in sorted(self.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().float().numpy().tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        return {**super().describe(), "path": self.path, "hidden_size": self.hidden_size, "sigma": self.sigma,
                "shift": self.shift, "weights": self.fingerprint()}
