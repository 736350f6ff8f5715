"""Checkpoints: latentlit's own backbone format and the released COCONUT / CODI / CoLaR layouts.

:func:`load_backbone` is the one entry point (a local directory, a hub id, or a shipped name such
as ``"quickstart"``); :func:`save_backbone` writes latentlit's format. Both import the backbone
class; the backbone module knows nothing about files.

latentlit's format is a transformers ``save_pretrained`` directory: ``config.json`` (the LM's
config plus a ``"latentlit"`` section holding the :class:`LatentConfig`: T, latent token ids,
prompt template, answer format, f), the LM weights as safetensors, the tokenizer files, and
``latent_head.safetensors`` when f has parameters.

Three released layouts are read, each mapped onto a :class:`LatentConfig` and a latent head f,
so that the one latent loop of :class:`LatentBackbone` runs all of them:

========  ======================================  ==============================================
layout    checkpoint                              mapping
========  ======================================  ==============================================
coconut   COCONUT (Hao et al., 2024,              ``GPT2LMHeadModel``; config keys ``latent_id``,
          "Training LLMs to Reason in a           ``latent_start_id``, ``latent_end_id``,
          Continuous Latent Space")               ``target_id``; prompt ``question + "\\n" +
                                                  <|start-latent|>``; T = 6; f = identity
                                                  (last hidden state after the final norm);
                                                  answer ``### 18`` (``"coconut"``).
codi      CODI (Shen et al., 2025, "CODI:         as COCONUT plus ``projector`` (bool),
          Compressing Chain-of-Thought into       ``projector_dropout``,
          Continuous Space via Self-              ``projector_hidden_size``; tensors
          Distillation")                          ``projector.{1,3,4}.*`` in the LM's
                                                  safetensors; prompt ``question +
                                                  <|start-latent|>``; T = 6; f = projector;
                                                  answer = last number (``"last_number"``).
colar     CoLaR (Tan et al., 2025, "Think         ``LlamaForCausalLM`` plus
          Silently, Think Fast: Dynamic Latent    ``latent_intermediate_size``,
          Compression of LLM Reasoning Chains")   ``latent_embedding_std``; tensors
                                                  ``lt_head.fc.{0,2,3}.*``, ``lt_head.mean.*``;
                                                  prompt ``Question: {q} Let's think step by
                                                  step:(Thinking speed: 2)###`` without BOS;
                                                  f = lt_head(h) * latent_embedding_std; the
                                                  latent phase ends when the LM head's greedy
                                                  token is ``###`` (at most 64 latents), then
                                                  ``###`` is fed; answer ``Answer: 18``
                                                  (``"colar"``).
========  ======================================  ==============================================

Loading is strict: every LM tensor the model expects must be in the checkpoint (tied output
embeddings excepted), no tensor may be left over except the latent head's, and the latent head
is loaded with ``load_state_dict(strict=True)``; every failure names the path and the keys
(:func:`strict_loading_error`, shared with the LatentRM). A local path never touches the hub;
any other string is handed to transformers as a hub id (with ``HF_HUB_OFFLINE=1`` only the local
cache is read).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT, require_latent_tokens
from latentlit.models.backbone import CONFIG_KEY, LATENT_HEAD_FILE, LatentBackbone, LatentConfig
from latentlit.runs.files import give_umask_mode, save_tensors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"quickstart": ASSETS / "quickstart_backbone", "quickstart_llama": ASSETS / "quickstart_llama_backbone",
           # the quickstart backbone after GRPO on its own AGN rollouts (docs/rl.md)
           "quickstart_grpo": ASSETS / "quickstart_grpo_backbone"}
SHIPPED_RM = {"quickstart": ASSETS / "quickstart_latentrm", "quickstart_llama": ASSETS / "quickstart_llama_latentrm",
              # the pairwise (Bradley-Terry) RM behind the best selector chosen on validation (docs/results.md)
              "quickstart_pairwise": ASSETS / "quickstart_pairwise_latentrm"}
# the learned sampler trained with GRPO on the frozen quickstart backbone (docs/rl.md)
SHIPPED_SAMPLER = {"quickstart": ASSETS / "quickstart_learned_sampler"}


def resolve_path(path: str | Path, kind: str = "backbone") -> str:
    """Map a shipped name (``"quickstart"``: GPT-2; ``"quickstart_llama"``: Llama with a dynamic
    latent stop; ``"quickstart_grpo"``: GPT-2 after GRPO) to its packaged backbone (or, with
    ``kind="latent_rm"``, LatentRM; ``kind="sampler"``, learned sampler) directory;
    ``"quickstart_pairwise"`` names the GPT-2 quickstart's pairwise LatentRM; other paths unchanged."""
    table = {"latent_rm": SHIPPED_RM, "sampler": SHIPPED_SAMPLER}.get(kind, SHIPPED)
    return str(table.get(str(path), path))


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
    # transformers logs missing/unexpected keys as warnings (every key is checked below instead)
    # and draws a progress bar per load (noise in notebooks and logs)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # mis-shaped tensors are then listed in the loading info (and named below) instead of
        # failing with a message that points at a log report
        lm, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True, ignore_mismatched_sizes=True,
                                                        **kwargs)
    except RuntimeError as err:
        raise ValueError(f"{path}: the LM weights do not fit its config.json: {err}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    mismatched = [f"{m[0]}: file {tuple(m[1])}, model {tuple(m[2])}" if isinstance(m, tuple) and len(m) == 3 else str(m)
                  for m in info.get("mismatched_keys", ())]
    error = strict_loading_error(f"{path}", "LM", missing=info.get("missing_keys", ()),
                                 unexpected=set(info.get("unexpected_keys", ())) - set(allowed_unexpected),
                                 mismatched=mismatched, errors=info.get("error_msgs", ()))
    if error is not None:
        raise error
    return lm


def strict_loading_error(source: str, what: str, *, missing=(), unexpected=(), mismatched=(), errors=()) -> ValueError | None:
    """The one message of a failed strict load, for backbones and LatentRMs alike.

    Args:
        source: the file or directory read. what: what was loaded (``"LM"``, ``"LatentRM"``).
        missing / unexpected: tensor names; mismatched: ``"name: file (shape), model (shape)"``
            strings; errors: other messages of the loader.

    Returns:
        ``ValueError("<source>: strict <what> loading failed: missing tensor(s) [...]; ...")``
        naming every key, or None when there is nothing to report.
    """
    parts = [f"{label} {sorted(keys)}" for label, keys in (("missing tensor(s)", missing), ("unexpected tensor(s)", unexpected),
                                                           ("shape mismatch", mismatched), ("errors", errors)) if keys]
    return ValueError(f"{source}: strict {what} loading failed: " + "; ".join(parts)) if parts else None


def save_backbone(backbone: LatentBackbone, path: str | Path) -> None:
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
    """Load a directory written by :func:`save_backbone` (or a hub id with the same
    layout; with ``HF_HUB_OFFLINE=1`` or a local path nothing is fetched).

    Loading is strict: a missing, unexpected or mis-shaped LM tensor (:func:`load_lm_strict`)
    or latent-head tensor, or a missing ``latent_head.safetensors`` when f has parameters, is
    an error naming the key.

    Raises:
        FileNotFoundError: ``path`` is a local-looking path that does not exist.
        ValueError: no ``"latentlit"`` section in config.json, the tokenizer lacks the latent
            tokens named there, or a tensor is missing, unexpected or mis-shaped.
    """
    path = resolve_path(path)
    if missing_local_path(path):
        raise FileNotFoundError(f"backbone directory not found: {path}")
    config = AutoConfig.from_pretrained(path)
    section = getattr(config, CONFIG_KEY, None)
    if not section:
        raise ValueError(
            f"{path}/config.json has no {CONFIG_KEY!r} section: not a latentlit backbone. For released "
            "COCONUT/CODI/CoLaR checkpoints use latentlit.models.checkpoints.load_backbone(path) (layout detected) or load_released(path, layout=...)"
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


RELEASED_LAYOUTS = ("coconut", "codi", "colar")
LAYOUTS = ("latentlit", *RELEASED_LAYOUTS)

COCONUT_PROMPT = "{question}\n" + START_LATENT
CODI_PROMPT = "{question}" + START_LATENT
COLAR_PROMPT = "Question: {question} Let's think step by step:(Thinking speed: 2)###"
COLAR_MARKER = "###"
RELEASED_NUM_LATENTS = 6
COLAR_MAX_LATENTS = 64

# config.json key that identifies each layout, in the order they are tested (CODI configs also
# carry COCONUT's ``latent_id``; a latentlit checkpoint saved from a released one keeps them all).
DETECT_KEYS: tuple[tuple[str, str], ...] = (
    ("latentlit", CONFIG_KEY),
    ("codi", "projector"),
    ("colar", "latent_embedding_std"),
    ("coconut", "latent_id"),
)
HEAD_PREFIXES = {"coconut": (), "codi": ("projector.",), "colar": ("lt_head.",)}
SINGLE_WEIGHTS = "model.safetensors"
RM_CONFIG_FILE = "latent_rm.json"  # latentlit's LatentRM directories (latentlit.models.latent_rm.RM_CONFIG)
SHARD_INDEX = "model.safetensors.index.json"
# "name" or "owner/name": what the hub accepts. Anything else that does not exist is a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


# ---------------------------------------------------------------------------------------- files
def _locate(path: str | Path) -> tuple[str, bool]:
    """(path, is_local). Raises FileNotFoundError for a missing local-looking path."""
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise NotADirectoryError(f"checkpoint path {text} is a file; expected a save_pretrained directory")
        return str(local), True
    if missing_local_path(text) or not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"checkpoint directory not found: {text}")
    return text, False


def _file(path: str, local: bool, name: str) -> str | None:
    """Local file ``name`` of checkpoint ``path`` (from the hub cache/hub for a hub id), or None."""
    if local:
        candidate = Path(path) / name
        return str(candidate) if candidate.is_file() else None
    return cached_file(path, name, _raise_exceptions_for_missing_entries=False)


def _read_config(path: str, local: bool) -> tuple[dict, str]:
    # For a hub id transformers raises its own OSError (offline, unknown repo, no config.json).
    config_file = _file(path, True, "config.json") if local else cached_file(path, "config.json")
    if config_file is None:
        raise FileNotFoundError(f"{path} has no config.json: not a transformers save_pretrained directory")
    with open(config_file) as fh:
        return json.load(fh), config_file


def _weight_files(path: str, local: bool) -> list[str]:
    """The safetensors file(s) of a checkpoint: the shards named by ``model.safetensors.index.json``
    or the single ``model.safetensors``.

    Raises:
        FileNotFoundError: neither file exists (naming both), or a shard the index names is absent.
    """
    index = _file(path, local, SHARD_INDEX)
    if index is not None:
        with open(index) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        files = []
        for shard in shards:
            found = _file(path, local, shard)
            if found is None:
                raise FileNotFoundError(f"{path}/{SHARD_INDEX} names shard {shard}, which is missing")
            files.append(found)
        return files
    single = _file(path, local, SINGLE_WEIGHTS)
    if single is None:
        raise FileNotFoundError(f"{path} has neither {SINGLE_WEIGHTS} nor {SHARD_INDEX} (only safetensors weights are read)")
    return [single]


def _read_tensors(files: list[str], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of ``files`` whose key starts with one of ``prefixes`` (only those are read)."""
    tensors = {}
    for name in files:
        with safe_open(name, framework="pt") as fh:
            for key in fh.keys():
                if prefixes and key.startswith(prefixes):
                    tensors[key] = fh.get_tensor(key)
    return tensors


# ---------------------------------------------------------------------------------------- detect
def latent_rm_evidence(path: str, local: bool) -> str | None:
    """Why checkpoint ``path`` is a LatentRM (a step scorer, not a backbone), or None.

    A LatentRM directory carries ``latent_rm.json`` (latentlit's) or, in the released layout,
    weights ``transformer.*`` plus a scalar ``classifier.*`` head and no LM head; its config.json
    may still be the backbone's (with a ``latentlit`` section or COCONUT's ``latent_id``).
    """
    if _file(path, local, RM_CONFIG_FILE) is not None:
        return f"it holds {RM_CONFIG_FILE}"
    try:
        files = _weight_files(path, local)
    except (FileNotFoundError, OSError):
        return None
    keys: set[str] = set()
    for name in files:
        with safe_open(name, framework="pt") as fh:
            keys.update(fh.keys())
    if "classifier.weight" in keys and any(k.startswith("transformer.") for k in keys) and "lm_head.weight" not in keys:
        return "its weights are transformer.* plus a classifier.* scoring head, with no LM head"
    return None


def detect_layout(path: str | Path) -> str:
    """The layout of checkpoint ``path`` from the keys of its config.json.

    Returns:
        ``"latentlit"`` (a ``"latentlit"`` section), ``"codi"`` (``projector``), ``"colar"``
        (``latent_embedding_std``) or ``"coconut"`` (``latent_id``), tested in that order.

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or no config.json.
        ValueError: ``path`` is a LatentRM (:func:`latent_rm_evidence`; the message says so and
            where a LatentRM goes), or none of those keys is present (naming the file and the
            keys looked for).
    """
    path, local = _locate(resolve_path(path))
    raw, config_file = _read_config(path, local)
    refuse_latent_rm(path, local)
    for layout, key in DETECT_KEYS:
        if key in raw:
            return layout
    looked = ", ".join(f"{key!r} ({layout})" for layout, key in DETECT_KEYS)
    raise ValueError(f"cannot tell the checkpoint layout of {config_file}: it has none of the keys {looked}")


def refuse_latent_rm(path: str, local: bool) -> None:
    """Raise ValueError when checkpoint ``path`` is a LatentRM given where a backbone belongs."""
    why = latent_rm_evidence(path, local)
    if why is not None:
        raise ValueError(f"{path} is a LatentRM ({why}), not a latent reasoning backbone: pass it as the LatentRM "
                         "(--model.init_args.latent_rm), and the backbone it was trained on as the backbone")


# ---------------------------------------------------------------------------------------- load
def _config_id(raw: dict, config_file: str, key: str) -> int:
    if key not in raw:
        raise ValueError(f"{config_file} lacks the key {key!r}")
    return int(raw[key])


def _eos_pad(tokenizer, raw: dict, path: str) -> tuple[int, int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = raw.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise ValueError(f"{path}: neither the tokenizer nor config.json names an eos token")
    pad = tokenizer.pad_token_id
    return int(eos), int(eos if pad is None else pad)


def _latent_config(layout: str, raw: dict, config_file: str, tokenizer, path: str) -> LatentConfig:
    eos, pad = _eos_pad(tokenizer, raw, path)
    if layout in ("coconut", "codi"):
        ids = require_latent_tokens(tokenizer, path)
        named = {"latent_start_id": START_LATENT, "latent_id": LATENT, "latent_end_id": END_LATENT}
        for key, token in named.items():
            value = _config_id(raw, config_file, key)
            if value != ids[token]:
                raise ValueError(
                    f"{config_file} says {key}={value} but the tokenizer at {path} encodes {token} as {ids[token]}"
                )
        head, head_kwargs = "identity", {}
        if layout == "codi" and raw.get("projector"):
            if "projector_hidden_size" not in raw:
                raise ValueError(f"{config_file} has projector=true but lacks 'projector_hidden_size'")
            head = "projector"
            head_kwargs = {
                "projector_hidden_size": int(raw["projector_hidden_size"]),
                "projector_dropout": float(raw.get("projector_dropout", 0.0)),
            }
        return LatentConfig(
            num_latents=RELEASED_NUM_LATENTS,
            start_latent_id=ids[START_LATENT],
            latent_id=ids[LATENT],
            end_latent_id=ids[END_LATENT],
            eos_id=eos,
            pad_id=pad,
            prompt_template=COCONUT_PROMPT if layout == "coconut" else CODI_PROMPT,
            add_bos=False,
            answer_format="coconut" if layout == "coconut" else "last_number",
            latent_head=head,
            latent_head_kwargs=head_kwargs,
        )
    # colar
    for key in ("latent_intermediate_size", "latent_embedding_std"):
        if key not in raw:
            raise ValueError(f"{config_file} lacks the key {key!r}")
    marker = tokenizer.encode(COLAR_MARKER, add_special_tokens=False)
    if len(marker) != 1 or (tokenizer.unk_token_id is not None and marker[0] == tokenizer.unk_token_id):
        raise ValueError(
            f"tokenizer from {path} encodes {COLAR_MARKER!r} as {marker}; CoLaR needs it as one token "
            "(it opens and closes the latent phase)"
        )
    return LatentConfig(
        num_latents=COLAR_MAX_LATENTS,
        start_latent_id=None,
        latent_id=None,
        end_latent_id=marker[0],
        eos_id=eos,
        pad_id=pad,
        prompt_template=COLAR_PROMPT,
        add_bos=False,
        answer_format="colar",
        latent_head="scaled_head",
        latent_head_kwargs={
            "latent_intermediate_size": int(raw["latent_intermediate_size"]),
            "latent_embedding_std": float(raw["latent_embedding_std"]),
        },
        latent_stop_id=marker[0],
        max_latents=COLAR_MAX_LATENTS,
    )


def load_released(path: str | Path, layout: str = "auto", *, num_latents: int | None = None,
                  dtype: torch.dtype | None = None) -> LatentBackbone:
    """Load a released COCONUT / CODI / CoLaR checkpoint as a :class:`LatentBackbone` (eval mode).

    Args:
        path: a local ``save_pretrained`` directory, or a hub id (``"owner/name"``) passed to
            transformers as is.
        layout: ``"coconut"``, ``"codi"``, ``"colar"`` or ``"auto"`` (:func:`detect_layout`).
        num_latents: COCONUT/CODI: T to run at (trained T = 6; a different value warns).
            CoLaR: the cap on latent steps of the dynamic stop (default 64).
        dtype: LM and latent-head dtype (default: the checkpoint's).

    Returns:
        The backbone: ``lm`` a ``GPT2LMHeadModel`` / ``LlamaForCausalLM``, ``latent_head`` f with
        the released weights, ``latent_config`` the mapped loop settings. f maps (..., d) -> (..., d).

    Raises:
        FileNotFoundError: a missing local directory, config.json or safetensors file.
        ValueError: an unknown or ``"latentlit"`` layout (use :func:`load_backbone`); a config
            key the layout needs is absent; the tokenizer lacks the latent tokens (COCONUT/CODI)
            or does not encode ``###`` as one token (CoLaR); config ids disagree with the
            tokenizer; an LM tensor is missing (tied output embeddings excepted), unexpected or
            mis-shaped; the latent-head tensors do not match f exactly. Messages name the path
            and the offending keys.
    """
    path, local = _locate(resolve_path(path))
    raw, config_file = _read_config(path, local)
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in RELEASED_LAYOUTS:
        hint = " (use latentlit.models.checkpoints.load_backbone)" if layout == "latentlit" else ""
        raise ValueError(f"layout={layout!r}; load_released reads one of {RELEASED_LAYOUTS}{hint}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    latent_config = _latent_config(layout, raw, config_file, tokenizer, path)

    prefixes = HEAD_PREFIXES[layout]
    head_tensors = _read_tensors(_weight_files(path, local), prefixes)
    lm = load_lm_strict(path, set(head_tensors), dtype)

    vocab = lm.get_input_embeddings().num_embeddings
    used = {"eos_id": latent_config.eos_id, "pad_id": latent_config.pad_id, "end_latent_id": latent_config.end_latent_id,
            "start_latent_id": latent_config.start_latent_id, "latent_id": latent_config.latent_id}
    out_of_range = {k: v for k, v in used.items() if v is not None and not 0 <= v < vocab}
    if out_of_range:
        raise ValueError(f"{path}: token ids {out_of_range} are outside the LM's {vocab}-row embedding")

    backbone = LatentBackbone(lm, tokenizer, latent_config)
    expected = set(backbone.latent_head.state_dict())
    got = set(head_tensors)
    if expected != got:
        raise ValueError(
            f"{path}: latent head ({layout}, f={latent_config.latent_head}) tensors do not match: "
            f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
        )
    if expected:
        try:
            backbone.latent_head.load_state_dict(head_tensors, strict=True)
        except RuntimeError as err:  # shapes that disagree with the config's sizes
            raise ValueError(f"{path}: latent head ({layout}) tensors do not fit config.json: {err}") from err
    backbone.latent_head.to(dtype=lm.dtype)
    if num_latents is not None:
        if latent_config.latent_stop_id is not None:
            latent_config.max_latents = latent_config.num_latents = int(num_latents)
        else:
            backbone.set_num_latents(num_latents)
    return backbone.eval()


def load_backbone(path: str | Path, layout: str = "auto", *, num_latents: int | None = None,
                  dtype: torch.dtype | None = None) -> LatentBackbone:
    """Load any latent backbone: the one entry point the rest of latentlit calls.

    Args:
        path: a local directory, a hub id, or a shipped name (``"quickstart"``).
        layout: ``"auto"`` (:func:`detect_layout`), ``"latentlit"`` (a directory written by
            :func:`save_backbone`) or one of :data:`RELEASED_LAYOUTS`.
        num_latents, dtype: as :func:`load_released` (latentlit format: T to run at).

    Returns:
        The :class:`LatentBackbone`, in eval mode.

    Raises:
        ValueError: an unknown layout, or any error of :func:`load_released` /
            :func:`latentlit.models.checkpoints.load_latentlit_backbone`.
        FileNotFoundError: a missing local directory or file.
    """
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"layout={layout!r}; expected 'auto' or one of {LAYOUTS}")
    path = resolve_path(path)
    if layout == "auto":
        try:
            layout = detect_layout(path)
        except OSError as err:
            if Path(path).exists() or isinstance(err, FileNotFoundError):
                raise
            # a relative path that is not there was taken for a hub id: say both
            raise FileNotFoundError(
                f"backbone {path!r} is not a local directory (looked for {Path(path).resolve()}) and could not be "
                f"loaded as a hub id: {str(err).splitlines()[0]}"
            ) from err
    else:
        refuse_latent_rm(*_locate(path))
    if layout == "latentlit":
        backbone = load_latentlit_backbone(path, dtype=dtype)
        if num_latents is not None:
            backbone.set_num_latents(num_latents)
        return backbone
    return load_released(path, layout, num_latents=num_latents, dtype=dtype)
