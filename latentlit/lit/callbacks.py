"""Callbacks the ``latentlit`` command adds to every run: a resumable checkpoint when ``fit`` is
stopped (SIGTERM, Ctrl-C), no log folder left behind by a run that failed before any work, and a
progress bar that says where a step-limited fit stands; and the closing lines of a run printed
after the progress bar has gone."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

class ClosingLines:
    """LightningModule mixin: the lines a run ends with (its results table, where they were written)
    are printed in ``teardown``, which Lightning calls after the progress bar's, so the bar's last
    frame never comes after them."""

    def say_at_end(self, line: str) -> None:
        self.__dict__.setdefault("_closing_lines", []).append(line)

    def teardown(self, stage: str) -> None:
        for line in self.__dict__.pop("_closing_lines", []):
            print(line, flush=True)
        super().teardown(stage)


SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


def resume_command(argv: list[str], checkpoint: Path) -> str:
    """The command line that resumes ``latentlit <argv>`` from ``checkpoint`` (its ``--ckpt_path``
    replaced or added)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--ckpt_path":
            skip = True
            continue
        if a.startswith("--ckpt_path="):
            continue
        out.append(a)
    return shlex.join(["latentlit", *out, "--ckpt_path", str(checkpoint)])


class InterruptCheckpoint(Callback):
    """When ``fit`` is stopped by SIGTERM (Lightning's signal connector raises ``SIGTERMException``
    after the step in flight) or Ctrl-C: save a full checkpoint (weights, optimiser, step, loop
    state) to ``last.ckpt`` in the run's checkpoint folder (the ``ModelCheckpoint`` one, else
    ``<log dir>/checkpoints``), and print where it is and the command that resumes from it. The
    CLI then exits with status 143; nothing is exported, since training did not finish.

    Args:
        argv: the command line of this run (without the program name), for the resume command.
    """

    def __init__(self, argv: list[str]):
        self.argv = list(argv)
        self.saved: Path | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        if not folder:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        path = Path(folder) / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = path
        if trainer.is_global_zero:
            why = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
            print(f"[latentlit] fit stopped by {why} at step {trainer.global_step}; nothing exported. Resumable checkpoint: "
                  f"{path}\n[latentlit] resume with: {resume_command(self.argv, path)}", flush=True)


class LatentLitSaveConfig(SaveConfigCallback):
    """Lightning's config saving (``config.yaml`` in the log folder), minus the folder when the run
    fails before any work: Lightning creates ``version_N`` (TensorBoard's writer, the config) while
    setting up, so every start that fails on its input would leave one behind and push the next
    run's number. On an exception before the loop started, the files this run wrote there
    (config, hparams, event files) are deleted and the folder too once empty; files older than
    this run are never touched."""

    _LOG_FILES = ("hparams.yaml", "events.out.tfevents.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._since = time.time()
        self._started = False

    def _start(self, *args) -> None:
        self._started = True

    on_sanity_check_start = on_train_start = on_validation_start = on_predict_start = _start

    def setup(self, trainer, pl_module, stage: str) -> None:
        # without a logger the config goes to default_root_dir (a predict or labelling run's
        # output directory): one already there is an earlier run's, never removed
        self._had_config = trainer.logger is None and (Path(trainer.log_dir) / self.config_filename).exists()
        super().setup(trainer, pl_module, stage)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        logger = trainer.logger
        if logger is None:
            # no log folder of its own: remove only the config this run wrote (the output
            # directory itself is its writer's to remove, latentlit.lit.writer.release_if_empty)
            path = Path(trainer.log_dir) / self.config_filename
            if not self._started and trainer.is_global_zero and not getattr(self, "_had_config", True):
                path.unlink(missing_ok=True)
            return
        folder = getattr(logger, "log_dir", None)
        if self._started or not trainer.is_global_zero or not folder or not Path(folder).is_dir():
            return
        folder = Path(folder)
        for path in folder.iterdir():
            ours = path.name == self.config_filename or path.name.startswith(self._LOG_FILES)
            if ours and path.is_file() and path.stat().st_mtime >= self._since - 1:
                path.unlink()
        for empty in (folder, folder.parent):  # the run name's folder too, when this was its only version
            try:
                empty.rmdir()
            except OSError:
                break


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, naming the step limit of a fit bounded by ``max_steps`` (Lightning
    sets ``max_epochs = -1`` there and would print "Epoch 1/-2")."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs < 0:
            limit = f" (until step {trainer.max_steps})" if trainer.max_steps > 0 else ""
            return f"Epoch {current_epoch}{limit}"
        return super()._get_train_description(current_epoch)
