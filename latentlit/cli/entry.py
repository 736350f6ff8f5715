"""``latentlit``: the LightningCLI entry point (fit, validate, predict).

Models and data modules are chosen by ``class_path`` in YAML (subclass mode), every key can be
overridden on the command line (the everyday ones also by short options, ``latentlit.cli.parser``),
TensorBoard is the default logger. Runs are named after their config: ``configs/quickstart/
predict_dropout.yaml`` logs under ``runs/quickstart_predict_dropout-<hash>`` (predict: the hash of
the settings that decide the records, as the default output directory) and
``runs/quickstart_backbone`` for fit.

Lightning 2.6 lays the hyperparameters stored in a ``--ckpt_path`` checkpoint over the config
and command line without a word. latentlit does not: the checkpoint gives weights, optimiser
and loop state; every option comes from the config and command line, with a warning naming
those that differ from the checkpoint's (``latentlit.lit.resume``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _interrupted_while_starting(signum, frame) -> None:
    # Ctrl-C while imports, parsing or model loading run: nothing to save, one line. A
    # KeyboardInterrupt raised inside a C extension's import would surface as an ImportError
    # traceback instead, so the process ends here.
    os.write(2, b"latentlit: interrupted\n")
    os._exit(130)


def _run_starts() -> None:
    """From here Ctrl-C is a KeyboardInterrupt again: Lightning stops gracefully and a stopped fit
    saves its checkpoint (``InterruptCheckpoint``)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if sys.argv[:1] == ["-m"] or Path(sys.argv[0]).name == "latentlit":  # the command (or -m latentlit.cli), not an import
    signal.signal(signal.SIGINT, _interrupted_while_starting)

try:
    from lightning.pytorch.cli import LightningCLI
except KeyboardInterrupt:  # Ctrl-C while the command is still importing: one line, not a traceback
    sys.stderr.write("latentlit: interrupted\n")
    raise SystemExit(130) from None


class LatentLitCLI(LightningCLI):
    """LightningCLI whose ``--ckpt_path`` restores state, never options."""

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` (fit, validate, test, predict): the checkpoint provides weights,
        optimiser state and loop state (step, epoch); the config and command line decide every
        option. Lightning 2.6 would lay the hyperparameters stored in the checkpoint over them (a
        resumed ``fit`` then kept the old ``export_dir``, ``loss`` and ``lr``, and overwrote the
        old export); here they are only compared, with one warning naming each option whose
        stored value differs."""
        import torch

        from latentlit.lit.resume import option_differences

        if not self.config.get("subcommand"):
            return
        config = self.config[self.config.subcommand]
        ckpt_path = config.get("ckpt_path")
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        stored = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        model = config.get("model")
        model = model.as_dict() if hasattr(model, "as_dict") else dict(model or {})
        diffs = option_differences(stored, model)
        if diffs:
            listed = "; ".join(f"{k}: checkpoint {v[0]!r}, now {v[1]!r}" for k, v in sorted(diffs.items()))
            warnings.warn(f"--ckpt_path {ckpt_path}: the checkpoint gives weights, optimiser and step only; these "
                          f"options come from the config and command line and differ from the checkpoint's: {listed}",
                          stacklevel=2)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate, predict (no latentlit module has a test step)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "test"}

    def add_arguments_to_parser(self, parser) -> None:
        from latentlit.cli.parser import SHORT_OPTIONS

        parser.add_argument("--quiet_transformers", type=bool, default=True,
                            help="silence transformers' weight-loading progress bars")
        if getattr(parser, "subcommand", None) in SHORT_OPTIONS:
            parser.add_short_options(SHORT_OPTIONS[parser.subcommand])

    def parse_arguments(self, parser, args) -> None:
        """Parse with every ``--config`` file read first (a config never overrides an option given
        before it on the command line)."""
        from latentlit.cli.parser import config_files_first

        if args is None or isinstance(args, (list, tuple)):
            args = config_files_first(sys.argv[1:] if args is None else list(args), self.subcommands())
            self._argv = list(args)
            self.config = parser.parse_args(args)
        else:
            super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "predict":
            # the seed that decides a prediction is the model's (printed when it starts), not Lightning's
            logging.getLogger("lightning.fabric.utilities.seed").addFilter(_DropMessages("Seed set to"))

    def before_fit(self) -> None:
        """Hold the export directory's run lock (``latentlit.runs.lock``) when one is set: two fits
        exporting to one directory would overwrite each other's weights (global rank 0, before
        Lightning starts the other processes)."""
        _run_starts()
        export = (getattr(self.model, "hparams", None) or {}).get("export_dir")
        if export and self.trainer.global_rank == 0:
            from latentlit.runs.lock import acquire

            acquire(export)

    def before_validate(self) -> None:
        _run_starts()

    def before_instantiate_classes(self) -> None:
        """Fail on a missing backbone / LatentRM / groups directory before anything is loaded, with
        the command that makes it (``latentlit.cli.parser.check_input_paths``), and on an output
        directory that cannot be created (``check_output_paths``)."""
        from latentlit.cli.parser import check_input_paths, check_output_paths

        check_input_paths(self.config[self.subcommand])
        check_output_paths(self.config[self.subcommand])

    def instantiate_trainer(self, **kwargs):
        """The trainer, with the TensorBoard run named after the config (and, for predict and
        labelling, the hash of the settings that decide the records, as their output directory).

        Predict and labelling write nothing outside their output directory: Lightning's
        ``default_root_dir`` (where ``config.yaml`` goes without a logger) is the output
        directory, and the TensorBoard run is ``<output_dir>/runs/version_N`` (``config.yaml``
        inside it), unless ``--trainer.default_root_dir`` is given on the command line (then
        logs go to ``<default_root_dir>/runs/<run name>``) or the logger's ``save_dir`` is set
        to something else than the default ``runs``."""
        config = self.config[self.subcommand]
        name = config_run_name(config.get("config"), self.subcommand)
        moved = None
        if hasattr(self.model, "run_dir_name"):
            self.model.run_name = name
            name = self.model.run_dir_name(self.datamodule)
            root = (config.get("trainer") or {}).get("default_root_dir")
            out = self.model.resolve_output_dir(root, self.datamodule)
            if _given(getattr(self, "_argv", []), "--trainer.default_root_dir"):
                moved = (str(Path(root) / DEFAULT_LOG_DIR), name)
            else:
                kwargs["default_root_dir"] = str(out)
                moved = (str(out), DEFAULT_LOG_DIR)
        logger = self._logger_named(name, moved)
        if logger is not None:
            kwargs.setdefault("logger", logger)
        return super().instantiate_trainer(**kwargs)

    def before_predict(self) -> None:
        """Hold the output directory's run lock (``latentlit.runs.lock``) before anything is
        written there: in the process of global rank 0, before Lightning starts the others."""
        _run_starts()
        out = getattr(self.model, "output_path", None)
        if out is not None and self.trainer.global_rank == 0:
            from latentlit.runs.lock import acquire

            acquire(out)

    def _logger_named(self, name: str, moved: tuple[str, str] | None = None):
        """A TensorBoard logger of the configured one's settings named ``name``, when the config
        leaves the name unset (None when it names the run itself, or logs elsewhere). ``moved``:
        the (save_dir, name) to use instead while the configured ``save_dir`` is the default
        ``runs`` (one the user chose is kept, with ``name``)."""
        spec = self.config[self.subcommand].get("trainer", {}).get("logger")
        if not (hasattr(spec, "get") and str(spec.get("class_path", "")).endswith("TensorBoardLogger")):
            return None
        init = spec.get("init_args")
        init = init.as_dict() if hasattr(init, "as_dict") else dict(init or {})
        if init.get("name"):
            return None
        if moved is not None and os.path.normpath(str(init.get("save_dir", DEFAULT_LOG_DIR))) == DEFAULT_LOG_DIR:
            init["save_dir"], name = moved
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(**{**init, "name": name})


DEFAULT_LOG_DIR = "runs"


def _given(argv: list[str], option: str) -> bool:
    """True when ``option`` is on the command line ``argv`` (``--x v`` or ``--x=v``)."""
    return any(a == option or a.startswith(option + "=") for a in argv)


def config_run_name(configs, subcommand: str) -> str:
    """The run name of a config file: ``<folder>_<stem>`` (``quickstart_predict_dropout`` for
    ``configs/quickstart/predict_dropout.yaml``; the last file when several are given), or the
    subcommand without one."""
    configs = [c for c in (configs or []) if c is not None]
    if not configs:
        return subcommand
    path = Path(str(configs[-1]))
    return f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def main(args: list[str] | None = None) -> None:
    """Run the CLI (``args`` defaults to ``sys.argv[1:]``).

    Exit status: 0 done; 1 failed; 2 bad input (one ``latentlit: error:`` line); 130 stopped by
    Ctrl-C (one ``latentlit: interrupted`` line); 143 stopped by SIGTERM. A stopped run keeps its
    work and says how to go on: fit saves a resumable checkpoint and prints the command, predict
    and labelling keep every record written and resume when the same command is run again."""
    try:
        _main(args)
    except KeyboardInterrupt:
        if os.environ.get("LATENTLIT_DEBUG"):
            raise
        sys.stderr.write("latentlit: interrupted\n")
        raise SystemExit(130) from None


def _main(args: list[str] | None) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Lightning 2.6 itself trips torch's LeafSpec deprecation on every batch; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    # Lightning's advertising banners ("Tip: ... litlogger / litmodels") on every run
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):
        logging.getLogger(name).addFilter(_DropMessages("\N{ELECTRIC LIGHT BULB} Tip"))
    # Lightning's own line for Ctrl-C; the run's resume hint and ours follow
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("\nDetected KeyboardInterrupt"))
    try:
        _run_cli(args)
    except SIGTERMException as err:
        # Lightning's fit loop raises it with no exit status (so the shell saw 0)
        raise SystemExit(err.code or 143) from None
    except SystemExit as err:
        # Lightning ends a run stopped by Ctrl-C with sys.exit(1) after its graceful shutdown
        # (callbacks saved and printed the resume hint): report it as an interruption (130)
        if err.code == 1 and _interrupted(err):
            raise KeyboardInterrupt from None
        raise
    except (ValueError, KeyError, FileNotFoundError, OSError, TypeError) as err:
        if os.environ.get("LATENTLIT_DEBUG"):
            raise
        root = _config_error_root(err)
        where = "raised while building the objects of the config"
        if root is None and _raised_by_latentlit(err):
            root, where = err, "raised while checking the run's input"
        if root is None:
            raise
        sys.stderr.write(f"latentlit: error: {type(root).__name__}: {root}\n({where}; LATENTLIT_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None


def _interrupted(err: BaseException) -> bool:
    """True when ``err`` was raised while handling a KeyboardInterrupt (its context chain)."""
    node = err.__context__
    while node is not None:
        if isinstance(node, KeyboardInterrupt):
            return True
        node = node.__context__
    return False


def _config_error_root(err: BaseException) -> BaseException | None:
    """The exception to report when ``err`` arose while jsonargparse was building the objects of
    the config (a bad value, a missing file): the innermost one latentlit raised (its message
    names the value), else the innermost of the chain. None for a failure outside the parser."""
    tb, from_parser = err.__traceback__, False
    while tb is not None:
        from_parser |= "jsonargparse" in tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if not from_parser:
        return None
    chain, node = [], err
    while node is not None:
        chain.append(node)
        node = node.__cause__ or node.__context__
    ours = [e for e in chain if _raised_by_latentlit(e)]
    return ours[-1] if ours else chain[-1]


def _raised_by_latentlit(err: BaseException) -> bool:
    """True when ``err`` was raised by latentlit's own code (its checks of data files, sampler
    targets, output directories...), not inside torch/transformers/Lightning: such messages name
    the bad file or value and need no traceback."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(Path(__file__).resolve().parents[1])


def _run_cli(args: list[str] | None) -> None:
    from latentlit.runs.lock import release_all

    argv = list(sys.argv[1:] if args is None else args)
    try:
        _make_cli(argv, args)
    finally:
        release_all()  # the output directory's lock, however the run ended


def _make_cli(argv: list[str], args: list[str] | None) -> None:
    # imported here, not at module level, so that Ctrl-C while they load ends in one line;
    # latentlit.lit also makes short class names resolve on the command line
    from latentlit.cli.parser import LatentLitParser
    from latentlit.lit.callbacks import InterruptCheckpoint, LatentLitSaveConfig

    LatentLitCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=LatentLitParser,
        parser_kwargs={"overview": True, **{name: {"command": name} for name in LatentLitCLI.subcommands()}},
        # what Lightning's default (True) did, without its "No seed found" warning on every run
        seed_everything_default=0,
        trainer_defaults={
            # name None: the run is named after the config (LatentLitCLI.instantiate_trainer)
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": None}},
            "callbacks": [InterruptCheckpoint(argv)],
        },
        save_config_callback=LatentLitSaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )

