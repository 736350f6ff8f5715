"""``latentlit``: the LightningCLI entry point (fit, validate, test, predict).

Models and data modules are chosen by ``class_path`` in YAML (subclass mode), every key can be
overridden on the command line, TensorBoard is the default logger.

Lightning 2.6 lays the hyperparameters stored in a ``--ckpt_path`` checkpoint over the config
and command line without a word. latentlit does not: the checkpoint gives weights, optimiser
and loop state; every option comes from the config and command line, with a warning naming
those that differ from the checkpoint's (``latentlit.lit.resume``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lightning.pytorch.cli import LightningCLI  # noqa: E402

# imported so that short class names resolve on the command line
import latentlit.lit  # noqa: E402,F401


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

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--quiet_transformers", type=bool, default=True,
                            help="silence transformers' weight-loading progress bars")


def main(args: list[str] | None = None) -> None:
    """Run the CLI (``args`` defaults to ``sys.argv[1:]``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Lightning 2.6 itself trips torch's LeafSpec deprecation on every batch; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    try:
        _run_cli(args)
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
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(Path(__file__).resolve().parent)


def _run_cli(args: list[str] | None) -> None:
    LatentLitCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": "latentlit"}},
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
