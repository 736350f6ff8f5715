"""latentlit: parallel test-time scaling for latent reasoning models (COCONUT, CODI, CoLaR).

The Python API in a few names (docs/python-api.md)::

    import latentlit

    backbone = latentlit.load_backbone("quickstart")   # a directory, a released checkpoint, a shipped name
    rm = latentlit.load_latent_rm("quickstart")
    [t] = latentlit.sample(backbone, ["..."], n_samples=16, sampler=latentlit.MCDropout(p=0.05), latent_rm=rm)
    t.majority_vote().answer, t.best_of_n(), latentlit.pass_at_k(16, 3, 4)

Everything else lives in the subpackages, lowest layer first: ``rng``, ``runs``, ``data``,
``models``, ``sampling``, ``aggregation``, ``search``, ``scoring``, ``evaluation``, ``lit``, ``cli``
(docs/layout.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module that defines it. Resolved on first use (PEP 562): ``import latentlit`` stays
# light, so the ``latentlit`` command installs its Ctrl-C handler before torch loads, and
# ``import latentlit.data.answers`` does not pay for the models.
_API = {
    "load_backbone": "latentlit.models.checkpoints", "save_backbone": "latentlit.models.checkpoints",
    "LatentBackbone": "latentlit.models.backbone", "LatentRM": "latentlit.models.latent_rm",
    "load_latent_rm": "latentlit.api", "sample": "latentlit.api", "Trajectories": "latentlit.api",
    "Sampler": "latentlit.sampling", "Deterministic": "latentlit.sampling", "MCDropout": "latentlit.sampling",
    "AGN": "latentlit.sampling", "LearnedSampler": "latentlit.sampling",
    "majority_vote": "latentlit.aggregation.vote", "weighted_vote": "latentlit.aggregation.vote",
    "best_of_n": "latentlit.aggregation.select", "rm_vote_weights": "latentlit.aggregation.scores",
    "AGGREGATORS": "latentlit.aggregation.registry",
    "extract_answer": "latentlit.data.answers", "answers_match": "latentlit.data.answers",
    "pass_at_k": "latentlit.evaluation.metrics", "trajectory_diversity": "latentlit.evaluation.metrics",
}
__all__ = ["AGGREGATORS", "AGN", "Deterministic", "LatentBackbone", "LatentRM", "LearnedSampler", "MCDropout", "Sampler",
           "Trajectories", "answers_match", "best_of_n", "extract_answer", "load_backbone", "load_latent_rm", "majority_vote",
           "pass_at_k", "rm_vote_weights", "sample", "save_backbone", "trajectory_diversity", "weighted_vote"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'latentlit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from latentlit.aggregation.registry import AGGREGATORS
    from latentlit.aggregation.scores import rm_vote_weights
    from latentlit.aggregation.select import best_of_n
    from latentlit.aggregation.vote import majority_vote, weighted_vote
    from latentlit.api import Trajectories, load_latent_rm, sample
    from latentlit.data.answers import answers_match, extract_answer
    from latentlit.evaluation.metrics import pass_at_k, trajectory_diversity
    from latentlit.models.backbone import LatentBackbone
    from latentlit.models.checkpoints import load_backbone, save_backbone
    from latentlit.models.latent_rm import LatentRM
    from latentlit.sampling import AGN, Deterministic, LearnedSampler, MCDropout, Sampler
