"""A run's output directory: its name, what binds it (``run.json``), resume checks, cleaning up a
failed start, and holding it for one run at a time (:mod:`latentlit.runs.lock`).

The default directory of a job is ``outputs/<config name>-<hash>``, where the hash covers the
settings that decide its records (:func:`run_dir_name`): the same command resumes into the same
directory, other settings get their own. Once results exist, ``run.json`` binds the directory to
its settings (:func:`check_run_settings`) and the records to their problems
(:func:`check_resumed_questions`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from latentlit.runs.fingerprint import same_weights
from latentlit.runs.lock import LOCK_FILE, DirectoryInUse, acquire, release
from latentlit.runs.records import METRICS, PREDICTIONS

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
    """Hold ``output_dir``'s run lock (``latentlit.runs.lock``) for this run; call on every
    process (the decision is rank zero's, broadcast, so that every process stops together).
    Re-entrant: under the latentlit CLI the lock is already held since before the run started.

    Raises:
        latentlit.runs.lock.DirectoryInUse: another run holds the directory (names it).
    """
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
    # weights are compared by what they are, whatever float dtype each run cast them to
    # (latentlit.runs.fingerprint.same_weights): an equal fingerprint at either precision is no difference
    diffs = {k: {"stored": old.get(k), "now": v} for k, v in settings.items()
             if old.get(k) != v and not (k.endswith("_fingerprint") and same_weights(old.get(k), v))}
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


class OutputDirectory:
    """The output directory of a job that names it after its settings (``TTSPredictor``,
    ``RolloutLabeller``). The job provides ``hparams.output_dir``, ``run_name`` (the config's
    name; the CLI sets it), ``run_settings()`` (what decides its results, stored in ``run.json``)
    and ``output_path`` (None until resolved)."""

    output_path: Path | None = None
    run_name = "run"

    def run_settings(self) -> dict:
        raise NotImplementedError

    def run_dir_name(self, datamodule=None) -> str:
        """``<run_name>-<hash>`` of :meth:`run_settings` and the problem source of ``datamodule``:
        the default output directory and TensorBoard run name."""
        return run_dir_name(self.run_name, self.run_settings(), problem_source_of(datamodule))

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

    def open_output_dir(self, read_done, subset_ok: bool = False) -> list[dict]:
        """Hold the output directory for this run (every process; :func:`hold_output_dir`) and
        return the results it holds already (``read_done(path)``: one dict with ``id``,
        ``question`` and ``gold`` per question), after checking that they were made with this run's
        settings (:func:`check_run_settings`, which binds a directory without results to them) and
        for this run's problems (:func:`check_resumed_questions`; with ``subset_ok``, a directory
        that holds every problem of this run and more passes, the caller answering from them).

        Raises:
            DirectoryInUse, ValueError: as those functions.
        """
        trainer, out = self._trainer, self._resolve_output_dir()
        hold_output_dir(trainer, out)
        done = read_done(out)
        check_run_settings(out, self.run_settings(), write=trainer is None or trainer.is_global_zero,
                           has_results=bool(done))
        problems = getattr(getattr(trainer, "datamodule", None), "problems", None)
        if done and problems:
            held = {r["id"] for r in done}
            # a run over questions the directory holds already (a smaller --limit than before) is
            # answered from its records when the job allows it; their questions must still match
            mine = [r for r in done if r["id"] in {p.id for p in problems}] if subset_ok and held >= {
                p.id for p in problems} else done
            check_resumed_questions(out, mine, problems)
        return done
