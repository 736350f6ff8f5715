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
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from latentlit.files import give_umask_mode, save_tensors
from latentlit.models.backbone import CONFIG_KEY, LATENT_HEAD_FILE, LatentBackbone, LatentConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"quickstart": ASSETS / "quickstart_backbone", "quickstart_llama": ASSETS / "quickstart_llama_backbone"}
SHIPPED_RM = {"quickstart": ASSETS / "quickstart_latentrm", "quickstart_llama": ASSETS / "quickstart_llama_latentrm"}


def resolve_path(path: str | Path, kind: str = "backbone") -> str:
    """Map a shipped name (``"quickstart"``: GPT-2; ``"quickstart_llama"``: Llama with a dynamic
    latent stop) to its packaged backbone (or, with ``kind="latent_rm"``, LatentRM) directory;
    other paths unchanged."""
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


def load_lm_strict(path: str | Path, allowed_unexpected: set[str] = frozenset(), dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The LM of checkpoint ``path`` via ``AutoModelForCausalLM.from_pretrained``, failing on any
    missing, unexpected or mis-shaped tensor: transformers would otherwise initialise a missing
    tensor at random and drop an unexpected one, with only a log line.

    Args:
        allowed_unexpected: keys in the weights that are not the LM's and are read elsewhere
            (a released layout's latent-head tensors).

    Raises:
        ValueError: naming ``path`` and every missing, unexpected or mis-shaped key (tied output
            embeddings are not missing).
    """
    kwargs = {"dtype": dtype} if dtype is not None else {}
    # transformers logs missing/unexpected keys as warnings; every key is checked below instead
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # mis-shaped tensors are then listed in the loading info (and named below) instead of
        # failing with a message that points at a log report
        lm, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True, ignore_mismatched_sizes=True,
                                                        **kwargs)
    except RuntimeError as err:
        raise ValueError(f"{path}: the LM weights do not fit its config.json: {err}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(set(info.get("unexpected_keys", ())) - set(allowed_unexpected))
    mismatched = sorted(f"{m[0]} (checkpoint {tuple(m[1])}, model {tuple(m[2])})" if isinstance(m, tuple) and len(m) == 3
                        else str(m) for m in info.get("mismatched_keys", ()))
    errors = list(info.get("error_msgs", ()))
    if missing or unexpected or mismatched or errors:
        parts = []
        if missing:
            parts.append(f"missing LM tensor(s) {missing}")
        if unexpected:
            parts.append(f"unexpected tensor(s) {unexpected}")
        if mismatched:
            parts.append(f"shape-mismatched tensor(s) {mismatched}")
        if errors:
            parts.append(f"errors {errors}")
        raise ValueError(f"{path}: strict weight loading failed: " + "; ".join(parts))
    return lm


def save_latentlit_backbone(backbone: LatentBackbone, path: str | Path) -> None:
    """Write ``backbone`` to directory ``path`` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    setattr(backbone.lm.config, CONFIG_KEY, asdict(backbone.latent_config))
    backbone.lm.save_pretrained(path)
    for weights in path.glob("*.safetensors"):  # transformers writes them through safetensors (mode 0600)
        give_umask_mode(weights)
    backbone.tokenizer.save_pretrained(path)
    head = {k: v.detach().contiguous().cpu() for k, v in backbone.latent_head.state_dict().items()}
    if head:
        save_tensors(head, str(path / LATENT_HEAD_FILE))


def load_latentlit_backbone(path: str | Path, *, dtype: torch.dtype | None = None) -> LatentBackbone:
    """Load a directory written by :func:`save_latentlit_backbone` (or a hub id with the same
    layout; with ``HF_HUB_OFFLINE=1`` or a local path nothing is fetched).

    Loading is strict: a missing, unexpected or mis-shaped LM tensor (:func:`load_lm_strict`)
    or latent-head tensor, or a missing ``latent_head.safetensors`` when f has parameters, is
    an error naming the key.

    Raises:
        FileNotFoundError: ``path`` is a local-looking path that does not exist.
        ValueError: no ``"latentlit"`` section in config.json, the tokenizer lacks the latent
            tokens named there, or a tensor is missing, unexpected or mis-shaped.
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
    lm = load_lm_strict(path, dtype=dtype)
    backbone = LatentBackbone(lm, tokenizer, latent_config)
    _load_latent_head(backbone, path)
    if dtype is not None:
        backbone.latent_head.to(dtype)
    return backbone.eval()


def _load_latent_head(backbone: LatentBackbone, path: str) -> None:
    """f's weights from ``latent_head.safetensors`` (local directory or hub id), strictly."""
    expected = set(backbone.latent_head.state_dict())
    local = Path(path).expanduser()
    if local.is_dir():
        head_file = local / LATENT_HEAD_FILE
        head_file = str(head_file) if head_file.is_file() else None
    else:
        from transformers.utils import cached_file

        head_file = cached_file(path, LATENT_HEAD_FILE, _raise_exceptions_for_missing_entries=False)
    tensors = load_file(head_file) if head_file is not None else {}
    if set(tensors) != expected:
        where = f"{path}/{LATENT_HEAD_FILE}" if head_file is not None else f"{path} (no {LATENT_HEAD_FILE})"
        raise ValueError(f"{where}: latent head f={backbone.latent_config.latent_head!r} tensors do not match: missing "
                         f"{sorted(expected - set(tensors))}, unexpected {sorted(set(tensors) - expected)}")
    if tensors:
        try:
            backbone.latent_head.load_state_dict(tensors, strict=True)
        except RuntimeError as err:  # shapes that disagree with latent_head_kwargs
            raise ValueError(f"{path}/{LATENT_HEAD_FILE}: latent head tensors do not fit config.json: {err}") from err
