"""Checks of a parsed config before anything loads, each failing in one line: an input directory that does not
exist yet (naming the command that makes it), an output directory that cannot be created."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from latentlit.cli.aliases import did_you_mean
from latentlit.models.checkpoints import SHIPPED, SHIPPED_RM


def _get(node, *keys):
    for key in keys:
        node = node.get(key) if hasattr(node, "get") else None
    return node


def producer_command(path: str) -> str | None:
    """The command of a shipped config (``configs/`` here or next to the package) whose model's ``export_dir`` or
    ``output_dir`` is ``path`` (``latentlit fit --config configs/gsm8k/backbone.yaml``), or None."""
    folders = {p.resolve(): p for p in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs")}
    for config in (c for folder in folders.values() if folder.is_dir() for c in sorted(folder.rglob("*.yaml"))):
        try:
            model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        except (OSError, yaml.YAMLError):
            continue
        if any(os.path.normpath(str(_get(model, "init_args", k))) == os.path.normpath(str(path))
               for k in ("export_dir", "output_dir")):
            command = "predict" if str(model.get("class_path")).endswith(("TTSPredictor", "RolloutLabeller")) else "fit"
            shown = config.relative_to(Path.cwd()) if config.is_relative_to(Path.cwd()) else config
            return f"latentlit {command} --config {shown}"
    return None


def check_input_paths(config) -> None:
    """FileNotFoundError for a backbone, LatentRM or groups directory that does not exist but a shipped config makes,
    or a released checkpoint is expected at (the loaders would first try it as a hub id, with network retries)."""
    for part, key, flag in [("model", "backbone", "--backbone"), ("model", "latent_rm", "--latent_rm"),
                            ("model", "init_from", "--model.init_args.init_from"),
                            ("data", "groups_dir", "--groups_dir")]:
        value = _get(config, part, "init_args", key)
        shipped = SHIPPED_RM if key == "latent_rm" else SHIPPED
        if not isinstance(value, str) or value in shipped or Path(value).expanduser().exists():
            continue
        close = did_you_mean(value, shipped) if "/" not in value else ""
        if close:  # a typo of a shipped name would first be tried as a hub id, with network retries
            raise FileNotFoundError(f"{key} {value} is neither a directory nor a shipped model{close}")
        if (producer := producer_command(value)) is not None:
            verb = "train it first" if producer.startswith("latentlit fit") else "make it first"
            raise FileNotFoundError(f"{key} {value} does not exist yet: {verb} with `{producer}` (or give another one "
                                    f"with {flag})")
        if Path(value).parts[:1] == ("checkpoints",):
            raise FileNotFoundError(f"{key} {value} does not exist: this config expects a released checkpoint there; "
                                    f"download it (docs/released-checkpoints.md) and give its directory with {flag}")


def unwritable_directory(path: Path) -> OSError | None:
    """Why the directory ``path`` cannot be created or written into (an ``OSError`` of the kind the attempt raised,
    naming where creating failed), or None. Tried for real, leaving nothing behind: a temporary directory is made
    in ``path`` or its nearest existing parent (read-only file systems, ``/proc``, permissions, a file in the way)."""
    existing = Path(path).expanduser()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return NotADirectoryError(f"{existing} is a file, not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".latentlit-check-", dir=existing)).rmdir()
    except OSError as err:
        return type(err)(f"creating a directory in {existing} fails: {err.strerror or err}")
    return None


def check_output_paths(config) -> None:
    """OSError (naming the option, the path and why) for a directory the run writes that cannot be created: the
    model's ``output_dir`` (predict without one: ``<default_root_dir>/outputs``) or ``export_dir``, the trainer's
    ``default_root_dir``."""
    model, root = _get(config, "model", "init_args"), _get(config, "trainer", "default_root_dir")
    checks = [("--model.init_args.export_dir", _get(model, "export_dir")), ("--trainer.default_root_dir", root)]
    if hasattr(model, "get") and "output_dir" in model:  # predict and labelling
        out = model.get("output_dir")
        checks.insert(1, ("--output_dir", out) if out else ("the default output directory under",
                                                           str(Path(root or ".") / "outputs")))
    for flag, value in checks:
        if isinstance(value, str) and value and (err := unwritable_directory(Path(value))) is not None:
            raise type(err)(f"{flag} {value} cannot be created or written ({err}); give another directory")


def check_predict_options(config) -> None:
    """ValueError for a ``predict`` option that looks like part of the run but is not in its settings: a Trainer
    ``precision`` other than 32-true (autocast or cast inputs change the numbers under the same ``run.json``;
    the weights' ``dtype`` is the one in the settings), a ``ckpt_path`` (its weights would replace those the settings
    name by fingerprint) and a ``seed_everything`` other than the default (it seeds nothing a prediction draws: every
    random number is keyed by the model's ``seed``)."""
    precision = str(_get(config, "trainer", "precision") or "32-true")
    if precision not in ("32-true", "32"):
        raise ValueError(f"--trainer.precision {precision}: latentlit predict runs in the weights' dtype, part of the "
                         "run's settings; give --dtype bfloat16 (or float16) instead and leave precision at 32-true")
    if _get(config, "trainer", "use_distributed_sampler") is False:
        raise ValueError("--trainer.use_distributed_sampler false: latentlit predict splits its questions across "
                         "processes, and without it every process would run and count every question; leave it true")
    if config.get("ckpt_path"):
        raise ValueError(f"--ckpt_path {config.get('ckpt_path')}: latentlit predict takes its weights from --backbone "
                         "(and --latent_rm), named by their fingerprints in run.json; export the trained model with "
                         "latentlit fit --export_dir and give that directory as --backbone")
    seed = _get(config, "seed_everything")
    if seed not in (0, None):
        raise ValueError(f"--seed_everything {seed} keys nothing a prediction draws: its trajectories are keyed by the "
                         "model's seed; give --seed (--model.init_args.seed) instead")
