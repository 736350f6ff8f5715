"""An ensemble of LatentRMs: the mean of K RMs' trajectory scores.

Members trained with different seeds or objectives make different mistakes; the mean of their
scores ranks by what they agree on. A contrastive RM's scores are defined up to a per-question
shift, which a mean keeps (each member's shift adds a constant to every trajectory of the
question), so the ensemble ranks a question's trajectories like any RM. Each member scores with
its own trajectory score (an answer-reading member adds its answer step). Beam search and DVTS
steer with the mean of the members' step-wise trajectory scores.

Directory layout: ``latent_rm_ensemble.json`` = ``{"members": [path, ...]}`` (relative paths are
relative to the ensemble directory) and nothing else: the members stay where they are
(:func:`save_ensemble`). :func:`load_latent_rm` loads a LatentRM or an ensemble directory.
Compute accounting counts every member (:func:`latentlit.evaluation.compute.rm_shape`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer

ENSEMBLE_FILE = "latent_rm_ensemble.json"


class LatentRMEnsemble(nn.Module):
    """K LatentRMs scoring as one (the interface of :class:`LatentRM` the predictor uses).

    Raises:
        ValueError: fewer than two members, or members that read latents of different widths.
    """

    def __init__(self, members: list[LatentRM]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 LatentRMs, got {len(members)}")
        widths = {m.latent_size for m in members}
        if len(widths) > 1:
            raise ValueError(f"ensemble members read latents of different widths {sorted(widths)}: use RMs of one backbone")
        self.members = nn.ModuleList(members)
        self.latent_size = members[0].latent_size
        self.read_answer = any(m.read_answer for m in members)
        # the backbone the members were trained on (the first member's; predict checks it)
        self.provenance = members[0].provenance

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def prompt_once(self) -> bool:
        """Every member encodes a question's prompt once for its trajectories."""
        return all(m.prompt_once for m in self.members)

    def encode_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The first member's prompts (their lengths are what the records' ``rm_prompt`` counts);
        every member checks the questions when it scores."""
        return self.members[0].encode_prompts(questions)

    def score_trajectories(self, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor,
                           texts: list[list[str]] | None = None, how: str = "sum") -> torch.Tensor:
        """(B, N) float32: the mean of the members' :meth:`LatentRM.score_trajectories`."""
        return torch.stack([m.score_trajectories(questions, latents, latent_mask, texts, how)
                            for m in self.members]).mean(0)

    def step_scorer(self, questions: list[str], how: str = "sum") -> EnsembleStepScorer:
        return EnsembleStepScorer([m.step_scorer(questions, how) for m in self.members])


class EnsembleStepScorer:
    """Incremental scoring for beam search: each member's :class:`LatentRMStepScorer`, their
    trajectory scores averaged."""

    def __init__(self, scorers: list[LatentRMStepScorer]):
        self.scorers = scorers

    def reset(self, owners: torch.Tensor) -> None:
        for s in self.scorers:
            s.reset(owners)

    def extend(self, parents: torch.Tensor, latents: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([s.extend(parents, latents, active) for s in self.scorers]).mean(0)


def save_ensemble(path: str | Path, members: list[str | Path]) -> Path:
    """Write an ensemble directory naming ``members`` (LatentRM directories or shipped names; each
    is loaded once to check it). A relative path is read relative to ``path`` when it exists there
    (stored as given), else to the working directory (stored absolute).

    Raises:
        ValueError: fewer than two members, or members of different latent widths.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)  # before resolving: "../x" needs the directory to exist
    LatentRMEnsemble([LatentRM.from_pretrained(_resolve(path, m)) for m in members])
    # a directory found from the working directory is stored absolute: the ensemble loads from anywhere
    stored = [str(m) if Path(m).is_absolute() or (path / m).exists() or not Path(m).exists() else str(Path(m).resolve())
              for m in members]
    (path / ENSEMBLE_FILE).write_text(json.dumps({"members": stored}, indent=2) + "\n")
    return path


def _resolve(root: Path, member: str | Path) -> Path:
    member = Path(member)
    return member if member.is_absolute() or not (root / member).exists() else root / member


def load_latent_rm(path: str | Path) -> LatentRM | LatentRMEnsemble:
    """A LatentRM directory (or shipped name) or an ensemble directory (``latent_rm_ensemble.json``), in eval mode.

    Raises:
        FileNotFoundError, ValueError: as :meth:`LatentRM.from_pretrained`, for the directory or a
        member (named); a malformed ensemble file (named).
    """
    file = Path(path) / ENSEMBLE_FILE
    if not file.is_file():
        return LatentRM.from_pretrained(path).eval()
    try:
        members = json.loads(file.read_text())["members"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file}: expected {{\"members\": [LatentRM directories]}} ({e})") from None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValueError(f"{file}: 'members' must be a list of LatentRM directories")
    return LatentRMEnsemble([LatentRM.from_pretrained(_resolve(Path(path), m)) for m in members]).eval()
