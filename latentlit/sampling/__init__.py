"""Samplers: how the N trajectories of a question differ (paper Sec. 3.1). MC-dropout (epistemic),
AGN (aleatoric) and the learned sampler (GRPO-trained noise) act through the sampler seam of :mod:`latentlit.models.hooks`; the seam's own
``Deterministic`` (no randomness) is re-exported here so that configs name every sampler from
one place."""

from latentlit.models.hooks import Deterministic, Sampler
from latentlit.sampling.agn import AGN
from latentlit.sampling.learned import LearnedSampler
from latentlit.sampling.mc_dropout import MCDropout

__all__ = ["AGN", "Deterministic", "LearnedSampler", "MCDropout", "Sampler"]
