"""``latentlit``: the LightningCLI entry point (fit, validate, test, predict).

Models and data modules are chosen by ``class_path`` in YAML (subclass mode), every key can be
overridden on the command line, TensorBoard is the default logger.

Lightning 2.6 lays the hyperparameters stored in a ``--ckpt_path`` checkpoint over the config
and command line without a word. Inference-time options (N, sampler, sigma, p, aggregation,
budget, seed, output directory) must always come from the config the user ran, so they are
removed from the checkpoint's hyperparameters before that merge, with a note of what was dropped.
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

INFERENCE_TIME_KEYS = frozenset({
    "n_samples", "sampler", "aggregators", "max_trajectories", "seed", "output_dir", "num_latents",
    "max_new_tokens", "greedy_baseline", "save_latents", "latent_rm", "beam_width", "beam_candidates",
    "rm_score", "backbone", "answer_format", "dtype", "n_rollouts", "drop_all_correct", "drop_all_wrong",
})


class LatentLitCLI(LightningCLI):
    """LightningCLI whose ``--ckpt_path`` never overrides inference-time options."""

    def _parse_ckpt_path(self) -> None:
        """Lightning's merge of checkpoint hyperparameters into the config, minus the
        inference-time keys (which are reported when dropped)."""
        import torch
        from pathlib import Path

        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        dropped = sorted(k for k in hparams if k in INFERENCE_TIME_KEYS)
        if dropped:
            warnings.warn(f"--ckpt_path {ckpt_path}: ignoring the checkpoint's inference-time options {dropped}; "
                          "the config and command line decide them", stacklevel=2)
        hparams = {k: v for k, v in hparams.items() if k not in INFERENCE_TIME_KEYS}
        if not hparams or set(hparams) == {"_class_path"}:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing of the hyperparameters stored in {ckpt_path} failed\n")
            raise

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
