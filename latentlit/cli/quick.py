"""What ``latentlit`` answers before torch and Lightning load (~0.2 s instead of ~7 s of imports).

``--help`` of the command and of a subcommand is static text (:mod:`latentlit.cli.aliases`). Errors are answered
here only when they need no class's signature and the line is the one the full parser would print
(:mod:`latentlit.cli.errors`): no or an unknown subcommand, a short option without its value or outside its choices,
an option the parser does not have, a ``--config`` file that does not exist, and a value of the wrong type for an
option whose type is listed in :data:`KINDS` (the class that takes it known from the config or the command line).
The options are read in order as the parser reads them; at the first one this module cannot judge (a class-typed
option, a Trainer option's value, an option of a class not listed) it steps aside and the full parser answers.
Both tables are checked against the real parser and signatures by ``tests/cli/test_quick.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from latentlit.cli.aliases import ALIASES, UsageError, command_help, did_you_mean, overview, rewrite
from latentlit.cli.errors import TYPE_WORDS, missing_config, refuse

COMMANDS = ("fit", "validate", "predict")  # the LightningCLI's subcommands (study and rescore are tools)
_COMMON = ("--ckpt_path", "--config", "--data", "--data.help", "--help", "--help_all", "--model", "--model.help",
           "--print_config", "--quiet_transformers", "--seed_everything", "--trainer", "--weights_only", "-c", "-h")
TRAINER = tuple("""
    accelerator accelerator.help accumulate_grad_batches barebones benchmark callbacks callbacks+ callbacks.help
    check_val_every_n_epoch default_root_dir detect_anomaly deterministic devices devices+
    enable_autolog_hparams enable_checkpointing enable_model_summary enable_progress_bar fast_dev_run
    gradient_clip_algorithm gradient_clip_val inference_mode limit_predict_batches limit_test_batches
    limit_train_batches limit_val_batches log_every_n_steps logger logger+ logger.help max_epochs max_steps
    max_time min_epochs min_steps model_registry num_nodes num_sanity_val_steps overfit_batches plugins plugins+
    plugins.help precision profiler profiler.help reload_dataloaders_every_n_epochs strategy strategy.help
    sync_batchnorm use_distributed_sampler val_check_interval
""".split())
"""The Trainer's option names in the parser (Lightning 2.6), ``--trainer.NAME``."""
OPTIONS = {"fit": _COMMON, "validate": (*_COMMON, "--verbose"), "predict": (*_COMMON, "--return_predictions")}
"""The option strings of each subcommand's parser (``--trainer.NAME`` for each of :data:`TRAINER`)."""

# The simple types of init arguments of latentlit's classes, by class path as configs spell it: a value that cannot
# be one is refused here with the full parser's words. A name not listed is left to the full parser.
_INT, _FLOAT, _BOOL, _STR = "int", "float", "bool", "str"
KINDS = {
    "latentlit.lit.TTSPredictor": {"n_samples": _INT, "seed": _INT, "num_latents": _INT, "beam_width": _INT,
                                   "dvts_width": _INT, "max_trajectories": _INT, "max_new_tokens": _INT,
                                   "save_latents": _BOOL, "backbone": _STR, "output_dir": _STR, "latent_rm": _STR},
    "latentlit.lit.RolloutLabeller": {"n_samples": _INT, "n_rollouts": _INT, "seed": _INT, "max_new_tokens": _INT},
    "latentlit.lit.ProblemDataModule": {"batch_size": _INT},
    "latentlit.data.sources.SyntheticProblems": {"limit": _INT}, "latentlit.data.sources.ProblemFile": {"limit": _INT, "path": _STR},
    "latentlit.sampling.MCDropout": {"p": _FLOAT}, "latentlit.sampling.AGN": {"sigma": _FLOAT},
    "latentlit.lit.LatentBackboneModule": {"seed": _INT}, "latentlit.lit.LatentRMModule": {"seed": _INT},
    "trainer": {"max_steps": _INT},
}
_NOT_A_WORD = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "none", "nan", "inf", "infinity"}
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][\w\-]*")


def interrupted_while_starting(signum, frame) -> None:
    """SIGINT handler while imports, parsing or model loading run: one line, exit 130 (a KeyboardInterrupt raised
    inside a C extension's import would surface as an ImportError traceback instead)."""
    os.write(2, b"latentlit: interrupted\n")
    os._exit(130)


def answer(argv: list[str]) -> None:
    """Print the help ``argv`` asks for (exit 0), or refuse it in one line (exit 2), when no class is needed;
    return otherwise. With ``LATENTLIT_DEBUG`` set only help is answered (the full parser shows its message)."""
    words = [a.partition("=")[0] for a in argv]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if argv[:1] in (["-h"], ["--help"]) or (command and {"-h", "--help"} & set(words)
                                             and not {"--help_all", "--print_config"} & set(words)):
        print(command_help(command) if command else overview(), end="")
        raise SystemExit(0)
    if os.environ.get("LATENTLIT_DEBUG"):
        return
    if not argv:
        refuse(f"a subcommand is needed: one of {', '.join(COMMANDS)}")
    if command is None:
        if not argv[0].startswith("-"):
            refuse(f"{argv[0]!r} is not a subcommand of latentlit" + did_you_mean(argv[0], COMMANDS))
        return
    try:
        _, groups = rewrite(argv, COMMANDS)
    except UsageError as err:
        refuse(str(err), command)
    if (line := _first_error(command, groups)) is not None:
        refuse(line, command)


def _first_error(command: str, groups: list[tuple[str, list[str]]]) -> str | None:
    """The error line of the first option of ``groups`` (:func:`latentlit.cli.aliases.rewrite`) that is wrong, when
    every option before it is judged right; None at the first option this module cannot judge."""
    known = {*OPTIONS[command], *(f"--trainer.{name}" for name in TRAINER)}
    classes: dict[str, str | None] = {"trainer": "trainer"}
    for shown, tokens in groups:
        option, eq, inline = tokens[0].partition("=")
        option = option.removesuffix("+")
        value = inline if eq else (tokens[1] if len(tokens) > 1 else None)
        if option in ("-c", "--config"):
            path = Path(value or "")
            if (line := missing_config(path)) is not None:
                return line
            if not _read_classes(path, classes):
                return None
            continue
        if not option.startswith("--"):
            return None
        key = option[2:]
        if option in ("--model", "--data") or key in classes or value in KINDS:  # a class chosen on the command line
            if value not in KINDS:
                return None
            classes[key] = value
            continue
        owner, _, name = key.rpartition(".init_args.") if ".init_args." in key else key.rpartition(".")
        kind = KINDS.get(classes.get(owner) or "", {}).get(name)
        if kind is not None and value is not None:
            verdict = _judge(kind, value)
            if verdict is None:
                return None
            if verdict:
                continue
            return f"{shown}: expects {TYPE_WORDS[kind]}, got {value!r}"
        parts = option.split(".")
        if option not in known and not any(".".join(parts[:i]) in known for i in range(2, len(parts))) and \
                (len(parts) == 1 or parts[0] not in known or parts[0] == "--trainer"):
            return f"{shown}: not an option of latentlit {command}" + did_you_mean(option, [*known, *ALIASES[command]])
        return None
    return None


def _judge(kind: str, value: str) -> bool | None:
    """True: ``value`` is a ``kind``; False: it cannot be one (a plain word); None: undecided here."""
    if kind == _STR:
        return True if value.lower() not in _NOT_A_WORD else None
    if kind == _BOOL:
        return True if value.lower() in ("true", "false") else _wrong_word(value)
    if (_INTEGER if kind == _INT else _NUMBER).fullmatch(value):
        return True
    return _wrong_word(value)


def _wrong_word(value: str) -> bool | None:
    return False if _WORD.fullmatch(value) and value.lower() not in _NOT_A_WORD else None


def _read_classes(path: Path, classes: dict[str, str | None]) -> bool:
    """Record the classes a config file chooses (``model``, ``data``, their nested classes) into ``classes``;
    False when the file is not a YAML mapping (the full parser words that error)."""
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    if not isinstance(config, dict):
        return False

    def walk(node, key: str) -> None:
        if isinstance(node, str) and key in ("model", "data"):
            classes[key] = node
        elif isinstance(node, dict) and "class_path" in node:
            classes[key] = str(node["class_path"])
            for name, sub in (node.get("init_args") or {}).items():
                walk(sub, f"{key}.init_args.{name}")

    for key in ("model", "data"):
        walk(config.get(key), key)
    return True

