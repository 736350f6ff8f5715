"""Prediction writer: ``predictions.jsonl`` written as it goes, resume, DDP merge, and at the
end ``metrics.json``, the scaling plot and the summary table.

Output contract (one directory):
* ``predictions.jsonl``: one JSON object per question, in problem order.
* ``metrics.json``: the run's config, every metric, its intervals, selective prediction and
  compute (``latentlit.reporting.report``).
* ``scaling.png``, ``risk_coverage.png``, ``calibration.png``, ``accuracy_vs_compute.png``.

Under DDP each rank appends to ``predictions.rank<r>.jsonl``; at the end rank 0 merges them into
``predictions.jsonl`` in problem order and deletes them. A re-run into the same directory reads
both kinds of file and skips the questions found there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from latentlit.jsonl import read_lines, read_unique, unique_records

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
PLOT = "scaling.png"


def prediction_files(output_dir: Path) -> list[Path]:
    """The record files of ``output_dir``: the merged file first, then the rank parts."""
    output_dir = Path(output_dir)
    return [output_dir / PREDICTIONS] + sorted(output_dir.glob("predictions.rank*.jsonl"))


def read_records(output_dir: Path) -> list[dict]:
    """Records already written to ``output_dir`` (merged file first, then rank parts), each
    question once (``latentlit.jsonl``).

    A truncated last line (a crash mid-write) is dropped, so that question is redone; an
    identical repeat of a record (an interrupted DDP merge, a copied line) is counted once, with
    a warning.

    Raises:
        ValueError: a corrupt line that is not the last of its file (names file and line), or
            two different records of one question id (names the files, the id and both lines).
    """
    return read_unique(prediction_files(output_dir))


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
        anyway, ``latentlit.jsonl``), so that the file holds each question once."""
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
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from latentlit.run_lock import holds

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
        if trainer.world_size > 1 and trainer.is_global_zero:
            merge_rank_files(self.output_dir)
        summary = pl_module.finish_metrics()
        if trainer.is_global_zero:
            (self.output_dir / METRICS).write_text(json.dumps(summary, indent=2))
            pl_module.report(summary, self.output_dir)
        trainer.strategy.barrier()
        let_go_output_dir(trainer, self.output_dir)


RUN_FILE = "run.json"
# metrics.json "throughput" when the figures were carried over from an earlier run
EARLIER_RUN = "an earlier run into this directory"


def earlier_throughput(output_dir: Path) -> dict | None:
    """The throughput an earlier run into ``output_dir`` measured, from its ``metrics.json``:
    ``{"trajectories_per_second", "trajectories", "seconds", "measured_by"}``, or None when there
    is none (no file, an unreadable one, or one whose run did no work either)."""
    path = Path(output_dir) / METRICS
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    speed = summary.get("trajectories_per_second")
    if not speed:
        return None
    measured = summary.get("throughput") or {}
    trajectories = measured.get("trajectories", (summary.get("counts") or {}).get("trajectories_this_run"))
    seconds = measured.get("seconds", round(trajectories / speed, 3) if trajectories else None)
    return {"trajectories_per_second": speed, "trajectories": trajectories, "seconds": seconds,
            "measured_by": EARLIER_RUN}


def settings_hash(settings: dict) -> str:
    """A short stable hash (8 hex digits of SHA-256 over canonical JSON) of JSON-able ``settings``:
    equal settings give the same hash on any machine and in any key order."""
    import hashlib

    text = json.dumps(json.loads(json.dumps(settings)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def problem_source_of(datamodule) -> dict | None:
    """Which problems a data module serves, for naming output directories: its problem source's
    description without ``limit`` (a run on the first K problems and one on all of them share a
    directory: resuming grows it). None when the data module has no problem source."""
    source = getattr(datamodule, "source", None)
    if source is None or not hasattr(source, "describe"):
        return None
    return {k: v for k, v in source.describe().items() if k != "limit"}


def run_dir_name(name: str, settings: dict, problems: dict | None = None) -> str:
    """``<name>-<hash>``: the default output directory (and TensorBoard run) name of a job.

    Args:
        name: the config's name (``quickstart_predict_dropout`` for
            ``configs/quickstart/predict_dropout.yaml``).
        settings: what the job stores in ``run.json`` (everything that decides its records).
        problems: the problem source (:func:`problem_source_of`): another data file or split is
            another directory.
    """
    return f"{name}-{settings_hash({'settings': settings, 'problems': problems})}"


def default_output_dir(root: str | Path | None, name: str) -> Path:
    """``<root>/outputs/<name>``, ``root`` being the trainer's ``default_root_dir`` (None: the
    working directory; relative when the root is the working directory)."""
    import os

    root = Path(root) if root is not None else Path.cwd()
    if root.resolve() == Path.cwd().resolve():
        root = Path(".")
    return Path(os.path.normpath(root / "outputs" / name))


# what a prediction directory holds once a question is done (globs)
RESULT_FILES = (PREDICTIONS, "predictions.rank*.jsonl", METRICS, "latents/*.safetensors")


def release_if_empty(output_dir: Path, results: tuple[str, ...]) -> bool:
    """After a failed start: when ``output_dir`` holds no result (no non-empty file matching the
    ``results`` globs), remove its ``run.json``, the empty result files, and the folders of the
    globs and the directory itself when they are left empty, so that nothing of the failed run
    remains (nothing else is touched).

    Returns:
        True when the directory held no result (and was cleaned), False otherwise.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return False
    files = [p for pattern in results for p in folder.glob(pattern) if p.is_file()]
    if any(p.stat().st_size > 0 for p in files):
        return False
    from latentlit.run_lock import LOCK_FILE

    for p in [*files, folder / RUN_FILE, folder / f"{RUN_FILE}.tmp", folder / LOCK_FILE]:
        p.unlink(missing_ok=True)
    subfolders = {folder / Path(pattern).parent for pattern in results if Path(pattern).parent != Path(".")}
    for sub in [*subfolders, folder]:
        try:
            sub.rmdir()  # only when empty
        except OSError:
            pass
    return True


def hold_output_dir(trainer, output_dir: Path) -> None:
    """Hold ``output_dir``'s run lock (``latentlit.run_lock``) for this run; call on every
    process (the decision is rank zero's, broadcast, so that every process stops together).
    Re-entrant: under the latentlit CLI the lock is already held since before the run started.

    Raises:
        latentlit.run_lock.DirectoryInUse: another run holds the directory (names it).
    """
    from latentlit.run_lock import DirectoryInUse, acquire

    error = None
    if trainer is None or trainer.is_global_zero:
        try:
            acquire(output_dir)
        except DirectoryInUse as err:
            error = str(err)
    if trainer is not None and trainer.world_size > 1:
        error = trainer.strategy.broadcast(error, src=0)
    if error:
        raise DirectoryInUse(error)


def let_go_output_dir(trainer, output_dir: Path) -> None:
    """Undo :func:`hold_output_dir` (rank zero; the end of a run, or its failure)."""
    from latentlit.run_lock import release

    if trainer is None or trainer.is_global_zero:
        release(output_dir)


def check_run_settings(output_dir: Path, settings: dict, write: bool, has_results: bool) -> None:
    """Refuse to resume into ``output_dir`` if it was produced with other settings.

    ``settings`` (JSON-able: backbone, sampler, N, seed, ...) is stored in ``run.json`` by the
    process that writes (rank zero) while the directory holds no result yet, so a run that failed
    before writing anything binds nothing. Once results exist, every later run must match it,
    or its new work would be mixed with results of another configuration.

    Args:
        write: this process stores ``run.json`` (rank zero). has_results: the directory already
            holds results (predictions, labelled groups).

    Raises:
        ValueError: naming every setting that differs, with both values; weights whose
        fingerprint (a ``*_fingerprint`` setting) differs are named first, with their path.
    """
    path = Path(output_dir) / RUN_FILE
    settings = json.loads(json.dumps(settings))
    if not has_results or not path.exists():  # nothing to protect yet (or results from before run.json)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(settings, indent=2))
            tmp.replace(path)  # atomic: another rank never reads a half-written file
        return
    old = json.loads(path.read_text())
    diffs = {k: {"stored": old.get(k), "now": v} for k, v in settings.items() if old.get(k) != v}
    if not diffs:
        return
    # weights changed under a path that did not (a checkpoint retrained into the same directory):
    # said first and in words, with both fingerprints, since the path alone looks unchanged
    weights = [f"the {k[:-len('_fingerprint')]} loaded from {settings.get(k[:-len('_fingerprint')])} has weights "
               f"fingerprint {d['now']} but the stored results were made with weights fingerprint "
               f"{d['stored'] or 'none recorded (run.json of an older version)'}"
               for k, d in diffs.items() if k.endswith("_fingerprint")]
    others = {k: d for k, d in diffs.items() if not k.endswith("_fingerprint")}
    if weights:
        raise ValueError(f"{output_dir} holds results of other weights: {'; '.join(weights)} (retrained or replaced "
                         "in place?)" + (f"; other settings differ too: {json.dumps(others)}" if others else "")
                         + "; use another output directory for these weights")
    raise ValueError(f"{output_dir} holds results made with other settings: {json.dumps(diffs)}; "
                         "use another output directory to run this configuration")


def check_resumed_questions(output_dir: Path, records: list[dict], problems: list) -> None:
    """Refuse to resume into ``output_dir`` if its records are not for this run's problems
    (predict and labelling alike).

    Resume skips questions by id, and ids such as ``<file stem>-<index>`` repeat across data
    files, so a directory filled from one problem set must not be continued with another; and a
    run on fewer problems than the directory holds would report on questions it did not ask.

    Args:
        records: the records already in the directory (``id``, ``question``, ``gold``).
            problems: this run's problems.

    Raises:
        ValueError: records of ids not among ``problems`` (a smaller ``limit`` than the earlier
            run's, or another data set: the message says what to do for each), or of an id
            whose question or gold differs from this run's problem with that id.
    """
    wanted = {p.id: p for p in problems}
    foreign = [r["id"] for r in records if r["id"] not in wanted]
    if foreign:
        raise ValueError(f"{output_dir} holds {len(records)} questions, {len(foreign)} of them not among this run's "
                         f"{len(problems)} problems (first: {foreign[:3]}). A smaller --limit than the earlier run's is "
                         "the usual cause (the directory name does not depend on --limit): run with the same --limit "
                         "as before, a larger one or none, to resume it; for a subset, or another problem set, use "
                         "another output_dir")
    changed = [r for r in records if (r["question"], r["gold"]) != (wanted[r["id"]].question, wanted[r["id"]].answer)]
    if changed:
        stored, now = changed[0], wanted[changed[0]["id"]]
        raise ValueError(f"{output_dir}: {len(changed)} question id(s) hold another question or gold than this run's "
                         f"problem with that id (first: {stored['id']}: stored {stored['question'][:60]!r} / "
                         f"{stored['gold']!r}, now {now.question[:60]!r} / {now.answer!r}); use another output_dir")


def stop_on_sigterm(trainer, handle=None) -> None:
    """End a prediction job after the batch just written when the process got SIGTERM.

    Lightning notes SIGTERM (for SLURM requeueing) but its prediction loop goes on; a job told to
    stop should stop, with everything finished so far on disk, ready to resume."""
    if trainer.received_sigterm:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if handle is not None:
            handle.close()
        raise SIGTERMException(143)


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Replace ``path`` by ``records``, one JSON object a line, atomically (a crash leaves the
    old file or the new one, never half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def merge_rank_files(output_dir: Path) -> None:
    """Add the rank part files' records to ``predictions.jsonl`` in problem order, then delete
    the parts. The merged file is replaced atomically and holds each question once: a merge
    interrupted before the parts were deleted leaves only identical repeats, which the next read
    counts once and the next merge drops.

    Raises:
        ValueError: two different records of one question (``latentlit.jsonl``).
    """
    merged = read_lines(output_dir / PREDICTIONS)
    parts = sorted(output_dir.glob("predictions.rank*.jsonl"))
    new = sorted((line for part in parts for line in read_lines(part)), key=lambda line: line.record["index"])
    records, _ = unique_records(merged + new)
    write_jsonl(output_dir / PREDICTIONS, records)
    for part in parts:
        part.unlink()


class OutputDirectory:
    """The output directory of a job that names it after its settings (``TTSPredictor``,
    ``RolloutLabeller``): the class provides ``hparams.output_dir``, ``output_path`` (None until
    resolved) and ``run_dir_name(datamodule)``."""

    output_path: Path | None

    def resolve_output_dir(self, root: str | Path | None = None, datamodule=None) -> Path:
        """The output directory (fixed by the first call): ``output_dir`` when given, else
        ``<root>/outputs/<run_dir_name>`` (``root``: the trainer's ``default_root_dir``, None for
        the working directory; ``datamodule``: the problem source named in the hash)."""
        if self.output_path is None:
            if self.hparams.output_dir:
                self.output_path = Path(self.hparams.output_dir)
            else:
                self.output_path = default_output_dir(root, self.run_dir_name(datamodule))
        return self.output_path

    def _resolve_output_dir(self) -> Path:
        trainer = self._trainer
        return self.resolve_output_dir(getattr(trainer, "default_root_dir", None), getattr(trainer, "datamodule", None))
