"""Reading back the JSONL files a run appends to as it goes (``predictions.jsonl`` and its rank
parts, the labelling ``index.r*.jsonl``), so that no question is ever counted twice.

Rules (docs/outputs.md#resume-and-one-run-per-directory):

* a truncated last line (a crash mid-write) is dropped: that question is redone on resume;
* a corrupt line anywhere else is an error naming the file and line;
* a question (``id``) found on two lines is an error naming the file(s), the id and both line
  numbers, unless both lines hold the *same record* (equal JSON objects). Records are
  deterministic (same settings, same question: byte-identical record), so an identical repeat
  is the trace of an interrupted merge or of a copied line, never new information: it is kept
  once, with a warning. Two different records for one question (two runs writing one directory,
  hand-edited files) cannot be reconciled and stop the reader.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Line:
    """One parsed JSONL line: the object, its file and its 1-based line number."""

    record: dict
    path: Path
    number: int


def read_lines(path: str | Path) -> list[Line]:
    """The JSON objects of ``path``, one per non-empty line (none when the file does not exist).

    Raises:
        ValueError: a line that is not JSON and is not the file's last line (``<path>:<line>``).
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, text in enumerate(lines):
        if not text.strip():
            continue
        try:
            out.append(Line(json.loads(text), path, i + 1))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # half-written by a crash: redone on resume
                continue
            raise ValueError(f"{path}:{i + 1}: corrupt record ({err.msg})") from err
    return out


class DuplicateRecords(ValueError):
    """Two different records for one question id (message names files, id and lines)."""


def unique_records(lines: list[Line], key: str = "id") -> tuple[list[dict], list[tuple[Line, Line]]]:
    """The records of ``lines`` with each ``key`` once (first occurrence kept, input order).

    Returns:
        (records, repeats): ``repeats`` are the (first, repeated) line pairs of identical
        records that were dropped.

    Raises:
        DuplicateRecords: two lines with the same ``key`` but different records.
    """
    first: dict = {}
    records, repeats = [], []
    for line in lines:
        value = line.record.get(key)
        seen = first.get(value)
        if seen is None:
            first[value] = line
            records.append(line.record)
        elif seen.record == line.record:
            repeats.append((seen, line))
        else:
            where = (f"{seen.path}, lines {seen.number} and {line.number}" if seen.path == line.path
                     else f"{seen.path}:{seen.number} and {line.path}:{line.number}")
            raise DuplicateRecords(f"{key} {value!r} has two different records ({where}): two runs wrote this "
                                   "directory, or a file was edited; keep one of the lines (or use another output "
                                   "directory), never both")
    return records, repeats


def repeat_warning(repeats: list[tuple[Line, Line]], key: str = "id") -> str:
    """One line describing identical repeated records (for a warning)."""
    a, b = repeats[0]
    return (f"{len(repeats)} record(s) repeat an identical earlier one and are counted once (first: {key} "
            f"{a.record.get(key)!r} at {a.path}:{a.number} and {b.path}:{b.number})")


def read_unique(paths: list[Path], key: str = "id") -> list[dict]:
    """Every record of ``paths`` (in order), each ``key`` once: :func:`read_lines` then
    :func:`unique_records`, warning about identical repeats.

    Raises:
        ValueError: a corrupt line; :class:`DuplicateRecords` for two different records of one key.
    """
    lines = [line for path in paths for line in read_lines(path)]
    records, repeats = unique_records(lines, key)
    if repeats:
        warnings.warn(repeat_warning(repeats, key), stacklevel=2)
    return records


PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"


def prediction_files(output_dir: Path) -> list[Path]:
    """The record files of ``output_dir``: the merged file first, then the rank parts."""
    output_dir = Path(output_dir)
    return [output_dir / PREDICTIONS] + sorted(output_dir.glob("predictions.rank*.jsonl"))


def read_records(output_dir: Path) -> list[dict]:
    """Records already written to ``output_dir`` (merged file first, then rank parts), each
    question once (``latentlit.runs.records``).

    A truncated last line (a crash mid-write) is dropped, so that question is redone; an
    identical repeat of a record (an interrupted DDP merge, a copied line) is counted once, with
    a warning.

    Raises:
        ValueError: a corrupt line that is not the last of its file (names file and line), or
            two different records of one question id (names the files, the id and both lines).
    """
    return read_unique(prediction_files(output_dir))


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Replace ``path`` by ``records``, one JSON object a line, atomically (a crash leaves the
    old file or the new one, never half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def merge_rank_files(output_dir: Path) -> None:
    """Add the rank part files' records to ``predictions.jsonl`` and put it in problem order, then
    delete the parts. The merged file is replaced atomically and holds each question once: a merge
    interrupted before the parts were deleted leaves only identical repeats, which the next read
    counts once and the next merge drops.

    Raises:
        ValueError: two different records of one question (``latentlit.runs.records``).
    """
    merged = read_lines(output_dir / PREDICTIONS)
    parts = sorted(output_dir.glob("predictions.rank*.jsonl"))
    new = [line for part in parts for line in read_lines(part)]
    # a live adaptive run writes a question when it settles, not in problem order
    records, _ = unique_records(sorted(merged + new, key=lambda line: line.record.get("index", -1)))
    write_jsonl(output_dir / PREDICTIONS, records)
    for part in parts:
        part.unlink()
