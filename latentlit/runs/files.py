"""Writing tensor files with the mode every other written file gets.

safetensors (0.8) writes a file atomically, through a temporary file renamed into place, and a
temporary file is created private (mode 0600): shards, latents and exported weights came out
readable by their owner only while ``run.json``, ``predictions.jsonl`` and the rest follow the
umask (0644 under the usual 022). Every safetensors file latentlit writes goes through
:func:`save_tensors`, which gives it the umask-derived mode ``0666 & ~umask``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def umask_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` gives a new file in this process."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def give_umask_mode(path: str | Path) -> None:
    """Set ``path``'s mode to :func:`umask_mode` (a file written through a private temporary one)."""
    os.chmod(path, umask_mode())


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with the umask-derived file mode (see the module docstring)."""
    save_file(tensors, str(path), metadata=metadata)
    give_umask_mode(path)


LATENT_IDS = "question_ids"  # safetensors metadata key of a latents file: its question ids, in order


def save_latents(latents: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write questions' latent trajectories (id -> (N, T, d) tensor) to one safetensors file.

    Tensors are keyed by position (``"0"``, ``"1"``...) and the question ids stored, in that
    order, as a JSON list in the file's metadata: ids are user data and never become a key of the
    file format (an id ``"__metadata__"`` would otherwise overwrite the header and make the file
    unreadable). :func:`read_latents` reads it back.
    """
    ids = list(latents)
    save_tensors({str(i): latents[qid].contiguous() for i, qid in enumerate(ids)}, path,
                 metadata={LATENT_IDS: json.dumps(ids)})


def read_latents(path: str | Path) -> dict[str, torch.Tensor]:
    """Question id -> latents of a file written by :func:`save_latents` (or, from earlier versions,
    a file keyed by question id directly).

    Raises:
        ValueError: the metadata names another number of questions than the file holds.
    """
    with safe_open(str(path), framework="pt") as f:
        ids = json.loads((f.metadata() or {}).get(LATENT_IDS, "null"))
        if ids is None:
            return {key: f.get_tensor(key) for key in f.keys()}
        if sorted(f.keys(), key=int) != [str(i) for i in range(len(ids))]:
            raise ValueError(f"{path}: its metadata names {len(ids)} questions but it holds tensors {sorted(f.keys())}")
        return {qid: f.get_tensor(str(i)) for i, qid in enumerate(ids)}
