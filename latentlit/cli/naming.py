"""Run names that say what ran: the config's name, then what the command line changed in it
(``quickstart_predict_dropout-agn-sigma0.5-n64``); predict and labelling add the hash of their
settings, which keeps each directory unique (``latentlit.runs.directory.run_dir_name``)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jsonargparse import Namespace

from latentlit.cli.aliases import SAMPLERS, load_class

# how a changed option is written in a name (others: their own name)
SHORT = {"n_samples": "n", "num_latents": "t", "max_new_tokens": "tokens", "latent_rm": "rm", "beam_width": "beam",
         "dvts_width": "dvts", "n_rollouts": "m", "mask_scope": "masks", "attention_p": "attn", "rm_score": "score"}
# options that change where or how fast, not what runs (and limit: a larger one grows the same run)
LEFT_OUT = {"output_dir", "export_dir", "max_trajectories", "limit", "batch_size", "val_batch_size", "shard_size"}
MAX_LENGTH = 48


def config_run_name(configs, subcommand: str) -> str:
    """``<folder>_<stem>`` of the (last) config file (``quickstart_predict_dropout``), else the subcommand."""
    configs = [Path(str(c)) for c in (configs or []) if c is not None]
    if not configs:
        return subcommand
    return f"{configs[-1].parent.name}_{configs[-1].stem}" if configs[-1].parent.name else configs[-1].stem


def changes(base: Namespace | None, final: Namespace) -> str:
    """What ``final`` (the config as run) changes in ``base`` (its config files alone), as a name
    part: ``agn-sigma0.5-n64`` (a class as its short name, then its options that differ from the
    class's own defaults; an option as its short name and value; a path as its file name), the
    whole words that fit in :data:`MAX_LENGTH` characters; empty when nothing differs."""
    words: list[str] = []
    for part in ("model", "data"):
        _compare(base.get(part) if base is not None else None, final.get(part), words)
    name = ""
    for word in (re.sub(r"[^A-Za-z0-9._-]+", "", w) for w in words):
        if len(name) + bool(name) + len(word) > MAX_LENGTH:  # whole words only: a cut one reads as another option
            break
        name = f"{name}-{word}" if name else word
    return name


def _compare(old, new, words: list[str]) -> None:
    if not isinstance(new, Namespace):
        return
    if new.get("class_path") is not None:
        args = new.get("init_args") or Namespace()
        if not isinstance(old, Namespace) or old.get("class_path") != new.class_path:
            if word := _class_word(new.class_path):
                words.append(word)
            defaults = _defaults(new.class_path)
            for key, value in vars(args).items():
                if key not in LEFT_OUT and not isinstance(value, Namespace) and defaults.get(key, object()) != value:
                    words.append(_word(key, value))
                elif isinstance(value, Namespace):
                    _compare(None, value, words)
            return
        old_args = old.get("init_args") or Namespace()
        for key, value in vars(args).items():
            if key in LEFT_OUT:
                continue
            before = old_args.get(key)
            if isinstance(value, Namespace):
                _compare(before, value, words)
            elif before != value:
                words.append(_word(key, value))


# problem sources are named by what they read (their path or split), not by their class
UNNAMED_CLASSES = {"latentlit.data.sources.ProblemFile", "latentlit.data.sources.SyntheticProblems"}


def _class_word(class_path: str) -> str:
    short = {path: name for name, path in SAMPLERS.items()}
    return "" if class_path in UNNAMED_CLASSES else short.get(class_path, class_path.rsplit(".", 1)[-1].lower())


def _defaults(class_path: str) -> dict:
    cls = load_class(class_path)
    if cls is None:
        return {}
    return {n: p.default for n, p in inspect.signature(cls).parameters.items() if p.default is not inspect.Parameter.empty}


def _word(key: str, value) -> str:
    key = SHORT.get(key, key)
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, float):
        return f"{key}{value:g}"
    if isinstance(value, str) and ("/" in value or "." in value and Path(value).suffix):
        return f"{key}-{Path(value).stem}"
    if isinstance(value, (list, tuple, dict)) or value is None:
        return key
    return f"{key}-{value}" if isinstance(value, str) else f"{key}{value}"
