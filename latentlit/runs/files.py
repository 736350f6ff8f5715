"""Writing tensor files with the mode every other written file gets.

safetensors (0.8) writes a file atomically, through a temporary file renamed into place, and a
temporary file is created private (mode 0600): shards, latents and exported weights came out
readable by their owner only while ``run.json``, ``predictions.jsonl`` and the rest follow the
umask (0644 under the usual 022). Every safetensors file latentlit writes goes through
:func:`save_tensors`, which gives it the umask-derived mode ``0666 & ~umask``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
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
