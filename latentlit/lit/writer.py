"""Prediction writer: ``predictions.jsonl`` written as it goes (one JSON object per question), and a
job told to stop (SIGTERM) stopped after the batch in flight, with everything written.

Under DDP each rank appends to ``predictions.rank<r>.jsonl``; at the end rank 0 merges them into
``predictions.jsonl`` in problem order and deletes them. A re-run into the same directory reads
both kinds of file and skips the questions found there.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from latentlit.runs.directory import RESULT_FILES, let_go_output_dir, release_if_empty
from latentlit.runs.lock import holds
from latentlit.runs.records import PREDICTIONS, merge_rank_files, read_lines, unique_records, write_jsonl


class PredictionWriter(BasePredictionWriter):
    """Writes each batch's records as soon as ``predict_step`` returns them."""

    def __init__(self, output_dir: Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._file = None
        self._told = False

    def _path(self, trainer) -> Path:
        if trainer.world_size == 1:
            return self.output_dir / PREDICTIONS
        return self.output_dir / f"predictions.rank{trainer.global_rank}.jsonl"

    def on_predict_start(self, trainer, pl_module) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(trainer)
        self._repair(path)
        self._file = path.open("a")

    @staticmethod
    def _repair(path: Path) -> None:
        """Before appending (the directory lock is held): drop a half-written last line left by a
        crash, so appends start on a fresh line, and identical repeated records (counted once
        anyway, ``latentlit.runs.records``), so that the file holds each question once."""
        if not path.exists():
            return
        text = path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            path.write_text(text)
        records, repeats = unique_records(read_lines(path))
        if repeats:
            write_jsonl(path, records)
            print(f"[latentlit] {path}: removed {len(repeats)} identical repeated record(s) (first: id "
                  f"{repeats[0][0].record.get('id')!r}, lines {repeats[0][0].number} and {repeats[0][1].number})",
                  flush=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        for record in prediction:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        stop_on_sigterm(trainer, self._file)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # interrupted (SIGTERM, Ctrl-C, a crash): what was written stays; say how to go on
        if self._file is not None:
            self._file.close()
            self._file = None
        # only a run that holds the directory touches it (not one refused because another holds it)
        if not (trainer.is_global_zero and holds(self.output_dir)):
            return
        try:
            # a run that stopped before its first result leaves no directory behind
            if release_if_empty(self.output_dir, RESULT_FILES):
                return
            if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and not self._told:
                self._told = True  # once per run, however often Lightning reports the exception
                # flushed now: an unflushed line is written again by any process forked later
                print(f"[latentlit] stopped ({type(exception).__name__}); results written so far are in "
                      f"{self.output_dir}: run the same command again to resume", flush=True)
        finally:
            let_go_output_dir(trainer, self.output_dir)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        trainer.strategy.barrier()
        if trainer.is_global_zero and (trainer.world_size > 1 or getattr(pl_module, "live", False)):
            merge_rank_files(self.output_dir)  # problem order (a live adaptive run writes questions as they settle)
        # every process waits for the merged file: the module's on_predict_end (Lightning calls
        # it after the callbacks') computes the metrics and report from it
        trainer.strategy.barrier()


def stop_on_sigterm(trainer, handle=None) -> None:
    """End a prediction job after the batch just written when the process got SIGTERM.

    Lightning notes SIGTERM (for SLURM requeueing) but its prediction loop goes on; a job told to
    stop should stop, with everything finished so far on disk, ready to resume."""
    if trainer.received_sigterm:
        if handle is not None:
            handle.close()
        raise SIGTERMException(143)


