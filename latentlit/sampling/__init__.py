"""Samplers acting on the latent steps: Deterministic, MC-dropout, AGN."""

from latentlit.sampling.agn import AGN
from latentlit.sampling.base import Deterministic, Sampler
from latentlit.sampling.mc_dropout import MCDropout

__all__ = ["AGN", "Deterministic", "MCDropout", "Sampler"]
