"""The Lightning side of ``latentlit fit | validate | predict``: the LightningCLI, its parser and the input errors.

Imported only once :mod:`latentlit.cli.quick` has not answered the command line (help, and the errors that need no
class): torch and Lightning take seconds to import. Models and data modules are chosen by ``class_path`` (subclass
mode); the everyday options have short forms (``latentlit.cli.aliases``). Runs are named after their config
(``runs/quickstart_predict_dropout-<settings hash>``, ``runs/quickstart_backbone``). ``--ckpt_path`` gives weights,
optimiser and loop state, never options.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from transformers.utils import logging as hf_logging

from latentlit.cli.aliases import UsageError, class_options, command_help, overview, rewrite
from latentlit.cli.errors import check_applied, explain, refuse
from latentlit.cli.naming import changes, config_run_name
from latentlit.cli.preflight import check_input_paths, check_output_paths, check_predict_options
from latentlit.cli.quick import interrupted_while_starting
from latentlit.lit.callbacks import InterruptCheckpoint, LatentLitSaveConfig, StepProgressBar
from latentlit.lit.resume import option_differences
from latentlit.runs.lock import acquire, release_all

DEFAULT_LOG_DIR = "runs"
PACKAGE = Path(__file__).resolve().parents[1]


def quiet_libraries() -> None:
    """transformers' weight-loading progress bars and notices off (errors still show); Lightning's advertising and
    the warnings nobody can act on dropped."""
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Lightning 2.6 trips torch's LeafSpec deprecation on every batch; nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):  # advertising ("Tip: ... litlogger") on every run
        logging.getLogger(name).addFilter(_drop("\N{ELECTRIC LIGHT BULB} Tip"))
    # Lightning's own line for Ctrl-C: the run's resume hint and ours follow
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop("\nDetected KeyboardInterrupt"))


class LatentLitParser(LightningArgumentParser):
    """A parser refusing abbreviations, raising its errors (:meth:`LatentLitCLI.parse_arguments` makes them one line)
    and with a concise ``--help``: the ``overview`` (top level) or the ``command``'s (else jsonargparse's own)."""

    def __init__(self, *args, command: str | None = None, overview: bool = False, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, "exit_on_error": False, **kwargs})
        self.command, self.overview = command, overview
        if command is not None:
            self.add_argument("--help_all", action=_HelpAll, help="every option (Trainer, model, data) and exit")

    def format_help(self, formatter=None) -> str:
        if self.overview:
            return overview()
        return command_help(self.command) if self.command else super().format_help(formatter)


class _HelpAll(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(LightningArgumentParser.format_help(parser) + "\n" + class_options(parser.command, namespace))
        parser.exit(0)


class LatentLitCLI(LightningCLI):
    """LightningCLI with short options, one-line errors, runs named after their config and a run lock."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate, predict (no latentlit module has a test step)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "test"}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--quiet_transformers", type=bool, default=True,
                            help="silence transformers' weight-loading progress bars")

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` rewritten by :func:`latentlit.cli.aliases.rewrite`; a refused command line is one
        ``latentlit: error:`` line (:func:`latentlit.cli.errors.explain`) and a hint, exit status 2."""
        if not (args is None or isinstance(args, (list, tuple))):
            return super().parse_arguments(parser, args)
        given = list(sys.argv[1:] if args is None else args)
        self._argv, groups = given, []
        try:
            self._argv, groups = rewrite(given, self.subcommands())
            plain = [a for a in self._argv if not a.startswith("--print_config")]
            self.config = parser.parse_args(plain, _skip_validation=plain != self._argv)  # printed before validation
            if self.config.get("subcommand"):  # and before --print_config shows a config that dropped an option
                check_applied(self.config.subcommand, self.config[self.config.subcommand], groups)
            if plain != self._argv:
                parser.parse_args(self._argv)  # prints the config and exits
        except (argparse.ArgumentError, UsageError) as err:
            if os.environ.get("LATENTLIT_DEBUG"):
                raise
            try:
                line = str(err) if isinstance(err, UsageError) else explain(parser, self._argv, groups, err)
            except Exception:  # noqa: BLE001 (the report must never hide the error it reports)
                line = " ".join(str(err).split())
            refuse(line, next((a for a in given if a in self.subcommands()), None))
        if self.config.get("subcommand") == "predict":  # a prediction's seed is the model's, printed when it starts
            logging.getLogger("lightning.fabric.utilities.seed").addFilter(_drop("Seed set to"))

    def _parse_ckpt_path(self) -> None:
        """Predict's option checks first (``check_predict_options``, before any file is read); then compare the
        hyperparameters stored in ``--ckpt_path`` with the options (never apply them)."""
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else {}
        if self.config.get("subcommand") == "predict":  # before any file is read (refuses --ckpt_path)
            check_predict_options(config)
        ckpt_path, model = config.get("ckpt_path"), config.get("model")
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        stored = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        diffs = option_differences(stored, model.as_dict() if hasattr(model, "as_dict") else dict(model or {}))
        if diffs:
            listed = "; ".join(f"{k}: checkpoint {v[0]!r}, now {v[1]!r}" for k, v in sorted(diffs.items()))
            warnings.warn(f"--ckpt_path {ckpt_path}: the checkpoint gives weights, optimiser and step only; these "
                          f"options come from the config and command line and differ from the checkpoint's: {listed}",
                          stacklevel=2)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        check_input_paths(config)
        check_output_paths(config)

    def instantiate_trainer(self, **kwargs):
        """The trainer, its TensorBoard run named after the config (and for predict, labelling, their settings hash).
        These write nothing outside their output directory (logs in its ``runs/``) unless ``--trainer.default_root_dir``
        is on the command line (logs in ``<it>/runs/<run name>``) or the logger's ``save_dir`` is not ``runs``."""
        config = self.config[self.subcommand]
        name, moved = self._run_name(config), None
        if hasattr(self.model, "run_dir_name"):
            self.model.run_name = name
            name = self.model.run_dir_name(self.datamodule)
            root = (config.get("trainer") or {}).get("default_root_dir")
            out = self.model.resolve_output_dir(root, self.datamodule)
            if any(a.partition("=")[0] == "--trainer.default_root_dir" for a in getattr(self, "_argv", [])):
                moved = (str(Path(root) / DEFAULT_LOG_DIR), name)
            else:
                kwargs["default_root_dir"], moved = str(out), (str(out), DEFAULT_LOG_DIR)
        if (logger := self._logger_named(name, moved)) is not None:
            kwargs.setdefault("logger", logger)
        trainer = super().instantiate_trainer(**kwargs)
        for i, callback in enumerate(trainer.callbacks):  # Lightning's default bar would print "Epoch 1/-2"
            if type(callback) is RichProgressBar:
                trainer.callbacks[i] = StepProgressBar()
        return trainer

    def _run_name(self, config) -> str:
        """The config's name and what the command line changed in it (``latentlit.cli.naming``)."""
        files = [str(c) for c in (config.get("config") or []) if c is not None]
        base = None
        if files:  # the config files alone, as the command line found them
            parser = self.parser._subcommands_action._name_parser_map[self.subcommand]
            base = parser.parse_args([a for f in files for a in ("--config", f)], _skip_validation=True)
        changed = changes(base, config)
        return config_run_name(files, self.subcommand) + (f"-{changed}" if changed else "")

    def _logger_named(self, name: str, moved: tuple[str, str] | None = None):
        """The configured TensorBoard logger named ``name`` when the config leaves its name unset (else None);
        ``moved``: its (save_dir, name) instead while its ``save_dir`` is the default ``runs``."""
        spec = self.config[self.subcommand].get("trainer", {}).get("logger")
        if not (hasattr(spec, "get") and str(spec.get("class_path", "")).endswith("TensorBoardLogger")):
            return None
        init = spec.get("init_args")
        init = init.as_dict() if hasattr(init, "as_dict") else dict(init or {})
        if init.get("name"):
            return None
        if moved is not None and os.path.normpath(str(init.get("save_dir", DEFAULT_LOG_DIR))) == DEFAULT_LOG_DIR:
            init["save_dir"], name = moved
        return TensorBoardLogger(**{**init, "name": name})

    def _run_starts(self, lock: str | Path | None) -> None:
        """From here Ctrl-C is a KeyboardInterrupt (Lightning stops gracefully; a stopped fit saves a checkpoint);
        hold the run lock of ``lock`` (``latentlit.runs.lock``) on global rank 0, before the other processes start."""
        if signal.getsignal(signal.SIGINT) is interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if lock and self.trainer.global_rank == 0:
            acquire(lock)

    def before_fit(self) -> None:  # two fits exporting to one directory would overwrite each other's weights
        self._run_starts((getattr(self.model, "hparams", None) or {}).get("export_dir"))

    def before_validate(self) -> None:
        self._run_starts(None)

    def before_predict(self) -> None:  # the output directory, before anything is written there
        self._run_starts(getattr(self.model, "output_path", None))


def _drop(prefix: str):
    """A logging filter dropping the records whose message starts with ``prefix``."""
    return lambda record: not str(record.msg).startswith(prefix)


def run(args: list[str] | None) -> None:
    """The Lightning run of ``args`` (default ``sys.argv[1:]``): parse, build, run; the run lock released after."""
    try:
        LatentLitCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=LatentLitParser,
            parser_kwargs={"overview": True, **{name: {"command": name} for name in LatentLitCLI.subcommands()}},
            seed_everything_default=0,  # what Lightning's default (True) did, without its "No seed found" warning
            # logger name None: the run is named after the config (LatentLitCLI.instantiate_trainer)
            trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                         "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": None}},
                              "callbacks": [InterruptCheckpoint(list(sys.argv[1:] if args is None else args))]},
            save_config_callback=LatentLitSaveConfig,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
        )
    finally:
        release_all()  # the output directory's lock, however the run ended


def input_error(err: BaseException) -> tuple[BaseException, str] | None:
    """The exception to report for ``err`` and where (None: show the traceback): raised while jsonargparse built the
    config's objects, the innermost latentlit raised (its message names the value), else the innermost; outside the
    parser, ``err`` when latentlit's own checks raised it (not torch, transformers or Lightning)."""
    def ours(e: BaseException) -> bool:
        frames = [frame for frame, _ in traceback.walk_tb(e.__traceback__)]
        return bool(frames) and Path(frames[-1].f_code.co_filename).resolve().is_relative_to(PACKAGE)

    chain = [err]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    if any("jsonargparse" in frame.f_code.co_filename for frame, _ in traceback.walk_tb(err.__traceback__)):
        return ([e for e in chain if ours(e)] or chain)[-1], "building the objects of the config"
    # a TypeError raised by latentlit outside the parser is a bug, not bad input: its traceback shows
    return (err, "checking the run's input") if ours(err) and not isinstance(err, TypeError) else None
