"""What a resumed run (``--ckpt_path``) takes from its checkpoint and what from its config.

The rule (every subcommand): the config and command line decide every option; the checkpoint
provides weights, optimiser state and loop state (step, epoch) and training state the modules
store themselves (the best LatentRM so far, the validation history). ``latentlit.cli`` warns
about options whose stored value differs; the functions here keep the optimiser state from
bringing the stored options back.
"""

from __future__ import annotations

import json
from typing import Any

from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn


def override_optimizer_options(checkpoint: dict, **options: Any) -> list[str]:
    """Set ``options`` (``lr``, ``weight_decay``...) in every parameter group of the optimiser
    states of a Lightning ``checkpoint`` dict, in place, before Lightning restores them.

    torch's ``Optimizer.load_state_dict`` restores each group's hyperparameters along with its
    moments, so without this a resumed run would train with the checkpoint's learning rate
    whatever the command line says.

    Returns:
        ``"name: stored -> now"`` for each option whose stored value differed (once per name).
    """
    changed: dict[str, str] = {}
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            for name, value in options.items():
                if name in group and group[name] != value:
                    changed.setdefault(name, f"{name}: {group[name]} -> {value}")
                if name in group:
                    group[name] = value
    return list(changed.values())


def option_differences(stored: dict, config: dict) -> dict[str, tuple[Any, Any]]:
    """Options of a checkpoint's stored hyperparameters whose value differs from the config's.

    Args:
        stored: ``checkpoint["hyper_parameters"]`` (Lightning's bookkeeping keys, those starting
            with ``_``, are skipped, except ``_class_path``, compared as ``class_path``).
        config: the model's options as parsed now: ``{"class_path": ..., "init_args": {...}}``
            (subclass mode) or the options themselves.

    Returns:
        {name: (stored value, value now)}; an option stored but absent from the config has
        value now ``None``; options the checkpoint does not store (the sampler object) are not
        compared. Values are compared in their JSON form (a path and its string are equal).
    """
    def plain(value):
        return json.loads(json.dumps(value, default=str))

    now = dict(config.get("init_args") or {}) if "init_args" in config or "class_path" in config else dict(config)
    diffs: dict[str, tuple[Any, Any]] = {}
    if "_class_path" in stored and "class_path" in config and stored["_class_path"] != config["class_path"]:
        diffs["class_path"] = (stored["_class_path"], config["class_path"])
    for name, value in stored.items():
        if name.startswith("_"):
            continue
        if plain(value) != plain(now.get(name)):
            diffs[name] = (value, now.get(name))
    return diffs


def warn_untrained(module, weights_loaded: bool, what: str, how: str) -> None:
    """Warn when ``latentlit validate`` runs a module whose weights no checkpoint restored (a
    module built from scratch scores like the random model it is).

    Args:
        module: the LightningModule (its trainer says whether this is a validate run; fit's own
            validation passes are not concerned). weights_loaded: a checkpoint was restored.
        what: what is untrained. how: the options that give trained weights.
    """
    trainer = module._trainer
    if weights_loaded or trainer is None or trainer.state.fn not in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        return
    rank_zero_warn(f"no trained weights were loaded: {what}, so these metrics are those of an untrained model; give "
                   f"{how}")
