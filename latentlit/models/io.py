"""Saving and loading latentlit backbones as transformers ``save_pretrained`` directories.

Layout: ``config.json`` (the LM's config plus a ``"latentlit"`` section holding the
:class:`LatentConfig`: T, latent token ids, prompt template, answer format, f), the LM weights
as safetensors, the tokenizer files, and ``latent_head.safetensors`` when f has parameters.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from latentlit.models.backbone import CONFIG_KEY, LATENT_HEAD_FILE, LatentBackbone, LatentConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"quickstart": ASSETS / "quickstart_backbone"}
SHIPPED_RM = {"quickstart": ASSETS / "quickstart_latentrm"}


def resolve_path(path: str | Path, kind: str = "backbone") -> str:
    """Map a shipped name (``"quickstart"``) to its packaged backbone (or, with
    ``kind="latent_rm"``, LatentRM) directory; other paths unchanged."""
    return str((SHIPPED_RM if kind == "latent_rm" else SHIPPED).get(str(path), path))


def missing_local_path(path: str | Path) -> bool:
    """True when ``path`` does not exist and cannot be a hub id either: absolute, ``./``, ``~``,
    or under a folder that exists here (``outputs/model`` with an ``outputs`` folder), which
    would otherwise cost a round of network retries before failing."""
    local = Path(path).expanduser()
    if local.exists():
        return False
    text = str(path)
    return local.is_absolute() or text.startswith((".", "~")) or (len(local.parts) > 1 and Path(local.parts[0]).is_dir())


def save_latentlit_backbone(backbone: LatentBackbone, path: str | Path) -> None:
    """Write ``backbone`` to directory ``path`` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    setattr(backbone.lm.config, CONFIG_KEY, asdict(backbone.latent_config))
    backbone.lm.save_pretrained(path)
    backbone.tokenizer.save_pretrained(path)
    head = {k: v.detach().contiguous().cpu() for k, v in backbone.latent_head.state_dict().items()}
    if head:
        save_file(head, str(path / LATENT_HEAD_FILE))


def load_latentlit_backbone(path: str | Path, *, dtype: torch.dtype | None = None) -> LatentBackbone:
    """Load a directory written by :func:`save_latentlit_backbone` (or a hub id with the same
    layout; with ``HF_HUB_OFFLINE=1`` or a local path nothing is fetched).

    Raises:
        FileNotFoundError: ``path`` is a local-looking path that does not exist.
        ValueError: no ``"latentlit"`` section in config.json, or the tokenizer lacks the latent
            tokens named there.
    """
    from latentlit.data.tokenizer import require_latent_tokens

    path = resolve_path(path)
    if missing_local_path(path):
        raise FileNotFoundError(f"backbone directory not found: {path}")
    config = AutoConfig.from_pretrained(path)
    section = getattr(config, CONFIG_KEY, None)
    if not section:
        raise ValueError(
            f"{path}/config.json has no {CONFIG_KEY!r} section: not a latentlit backbone. For released "
            "COCONUT/CODI/CoLaR checkpoints use latentlit.models.released.load_released(path, layout=...)"
        )
    latent_config = LatentConfig.from_dict(section)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = require_latent_tokens(tokenizer, path) if latent_config.start_latent_id is not None else {}
    if ids and ids.get("<|start-latent|>") != latent_config.start_latent_id:
        raise ValueError(
            f"{path}: tokenizer id of <|start-latent|> is {ids.get('<|start-latent|>')} but config.json says "
            f"{latent_config.start_latent_id}"
        )
    kwargs = {"dtype": dtype} if dtype is not None else {}
    lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    backbone = LatentBackbone(lm, tokenizer, latent_config)
    head_file = Path(path) / LATENT_HEAD_FILE
    if head_file.exists():
        backbone.latent_head.load_state_dict(load_file(str(head_file)), strict=True)
    if dtype is not None:
        backbone.latent_head.to(dtype)
    return backbone.eval()
