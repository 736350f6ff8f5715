"""Loaders for the GSM8K / COCONUT-format data sets and latentlit's own JSONL.

Every loader returns :class:`~latentlit.data.problem.Problem` records whose
``answer`` is already normalised, so scoring never has to guess at formats.
Files are read from wherever the caller points; nothing is bundled.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any

from latentlit.data.answers import normalize_answer
from latentlit.data.problem import Problem

DATA_FORMATS: tuple[str, ...] = ("auto", "gsm8k_jsonl", "coconut_json", "latentlit_jsonl")
BAD_ANSWER_POLICIES: tuple[str, ...] = ("fail", "skip")

_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")
# GSM-Hard ships "Step 1", "Step 2", ... in place of real steps.
_PLACEHOLDER_STEP_RE = re.compile(r"Step \d+")
_MAX_REPORTED = 5


class DataFormatError(ValueError):
    """A data file is malformed: bad JSON, a missing field or non-numeric golds."""


# A raw row before its gold is validated: (id, question, steps, raw gold text or None).
_Row = tuple[str, str, tuple[str, ...], str | None, str]  # id, question, steps, raw gold, where in the file


def _check_policy(on_bad_answer: str) -> None:
    if on_bad_answer not in BAD_ANSWER_POLICIES:
        raise ValueError(f"unknown on_bad_answer {on_bad_answer!r}; expected one of {BAD_ANSWER_POLICIES}")


def _existing(path: str | PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    return p


def _field(obj: Any, name: str, path: Path, where: str, kind: type = str) -> Any:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}, {where}: expected a JSON object, got {type(obj).__name__}")
    if name not in obj:
        raise DataFormatError(f"{path}, {where}: missing required field {name!r}")
    value = obj[name]
    if not isinstance(value, kind):
        raise DataFormatError(f"{path}, {where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed object) for each non-blank line."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}, line {lineno}: invalid JSON ({e.msg})") from e


def _gold_text(answer: Any) -> str | None:
    # JSON numbers are legitimate golds; anything else is left to the policy.
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return repr(answer)
    return answer if isinstance(answer, str) else None


def _finish(rows: list[_Row], path: Path, on_bad_answer: str) -> list[Problem]:
    # a question without text would be asked anyway (the prompt template alone) and counted in
    # every accuracy: refused by id, whatever on_bad_answer says (it is about golds)
    empty = [(pid, where) for pid, question, _, _, where in rows if not question.strip()]
    if empty:
        shown = ", ".join(f"{where} ({pid})" for pid, where in empty[:_MAX_REPORTED])
        raise DataFormatError(f"{path}: {len(empty)} problem(s) with an empty question (first: {shown}); remove them "
                              "from the file")
    problems, bad = [], []
    for pid, question, steps, raw, where in rows:
        gold = normalize_answer(raw) if raw is not None else None
        if gold is None:
            bad.append((pid, raw, where))
        else:
            problems.append(Problem(id=pid, question=question, steps=steps, answer=gold))
    if bad:
        shown = ", ".join(f"{where} ({pid})={raw.strip() if isinstance(raw, str) else raw!r}"
                          for pid, raw, where in bad[:_MAX_REPORTED])
        msg = f"{path}: {len(bad)} problem(s) with a non-numeric gold answer (first: {shown})"
        if on_bad_answer == "fail":
            raise DataFormatError(msg + "; pass on_bad_answer='skip' to drop them")
        warnings.warn(msg + "; skipped", stacklevel=3)
    return problems


def load_gsm8k_jsonl(path: str | PathLike[str], *, on_bad_answer: str = "fail") -> list[Problem]:
    """Load the original GSM8K release (one ``{question, answer}`` object a line).

    Steps are the ``<<expr=value>>`` calculator annotations of the solution, in
    order and verbatim (e.g. ``"<<48/2=24>>"``); the gold is the text after the
    last ``####``. Ids are ``"<file stem>-<0-based row index>"`` (blank lines
    are not rows).

    Args:
        path: The ``.jsonl`` file.
        on_bad_answer: ``"fail"`` raises on non-numeric (or missing ``####``)
            golds; ``"skip"`` drops those rows with a warning.

    Returns:
        The problems in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: Invalid JSON (names file and 1-based line), a missing
            ``question``/``answer`` field, or bad golds under ``"fail"``.
        ValueError: ``on_bad_answer`` is not ``"fail"`` or ``"skip"``.
    """
    _check_policy(on_bad_answer)
    p = _existing(path)
    rows: list[_Row] = []
    for index, (lineno, obj) in enumerate(_iter_jsonl(p)):
        where = f"line {lineno}"
        question = _field(obj, "question", p, where).strip()
        solution = _field(obj, "answer", p, where)
        raw = solution.rsplit("####", 1)[1] if "####" in solution else None
        rows.append((f"{p.stem}-{index}", question, tuple(_CALCULATOR_RE.findall(solution)), raw, where))
    return _finish(rows, p, on_bad_answer)


def load_coconut_json(path: str | PathLike[str], *, on_bad_answer: str = "fail") -> list[Problem]:
    """Load a COCONUT-format JSON list of ``{question, steps?, answer}``.

    Questions are stripped (MultiArith has stray spaces). A missing ``steps``
    key (MultiArith) or steps that are all ``"Step N"`` placeholders (GSM-Hard)
    give an empty tuple. Ids are ``"<file stem>-<0-based index>"``.

    Args:
        path: The ``.json`` file.
        on_bad_answer: ``"fail"`` or ``"skip"``, as in :func:`load_gsm8k_jsonl`.

    Returns:
        The problems in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: Invalid JSON, not a list, a missing ``question`` or
            ``answer`` field (names file and row), or bad golds under ``"fail"``.
        ValueError: ``on_bad_answer`` is invalid.
    """
    _check_policy(on_bad_answer)
    p = _existing(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{p}, line {e.lineno}: invalid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise DataFormatError(f"{p}: expected a JSON list of problems, got {type(data).__name__}")
    rows: list[_Row] = []
    for index, obj in enumerate(data):
        where = f"row {index} (0-based)"
        question = _field(obj, "question", p, where).strip()
        _field(obj, "answer", p, where, object)
        steps = tuple(_field(obj, "steps", p, where, list)) if "steps" in obj else ()
        if steps and all(isinstance(s, str) and _PLACEHOLDER_STEP_RE.fullmatch(s.strip()) for s in steps):
            steps = ()
        rows.append((f"{p.stem}-{index}", question, tuple(str(s) for s in steps), _gold_text(obj["answer"]), where))
    return _finish(rows, p, on_bad_answer)


def _load_latentlit_jsonl(path: Path, on_bad_answer: str) -> list[Problem]:
    rows: list[_Row] = []
    seen: set[str] = set()
    for lineno, obj in _iter_jsonl(path):
        where = f"line {lineno}"
        pid = _field(obj, "id", path, where)
        if pid in seen:
            raise DataFormatError(f"{path}, {where}: duplicate id {pid!r}")
        seen.add(pid)
        steps = tuple(str(s) for s in _field(obj, "steps", path, where, list)) if "steps" in obj else ()
        _field(obj, "answer", path, where, object)
        rows.append((pid, _field(obj, "question", path, where), steps, _gold_text(obj["answer"]), where))
    return _finish(rows, path, on_bad_answer)


def _detect_format(path: Path) -> str:
    if path.suffix == ".json":
        return "coconut_json"
    if path.suffix == ".jsonl":
        _, first = next(_iter_jsonl(path), (0, None))
        return "latentlit_jsonl" if isinstance(first, dict) and "id" in first else "gsm8k_jsonl"
    raise ValueError(f"cannot detect the format of {path} from its suffix; pass format= one of {DATA_FORMATS[1:]}")


def load_problems(
    path: str | PathLike[str],
    *,
    format: str = "auto",
    on_bad_answer: str = "fail",
    limit: int | None = None,
) -> list[Problem]:
    """Load problems from any supported file.

    Args:
        path: Data file.
        format: ``"gsm8k_jsonl"``, ``"coconut_json"``, ``"latentlit_jsonl"``
            (written by :func:`save_problems_jsonl`) or ``"auto"``: ``.json``
            is COCONUT format; ``.jsonl`` is latentlit's format if its first
            object has an ``id`` field, otherwise GSM8K.
        on_bad_answer: ``"fail"`` or ``"skip"`` (see :func:`load_gsm8k_jsonl`).
        limit: Keep only the first ``limit`` problems (after skipping bad ones).

    Returns:
        The problems in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: The file is malformed (see the specific loaders).
        ValueError: Unknown ``format``/``on_bad_answer``, an undetectable
            suffix under ``"auto"``, or a negative ``limit``.
    """
    if format not in DATA_FORMATS:
        raise ValueError(f"unknown data format {format!r}; expected one of {DATA_FORMATS}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    _check_policy(on_bad_answer)
    p = _existing(path)
    if format == "auto":
        format = _detect_format(p)
    if format == "gsm8k_jsonl":
        problems = load_gsm8k_jsonl(p, on_bad_answer=on_bad_answer)
    elif format == "coconut_json":
        problems = load_coconut_json(p, on_bad_answer=on_bad_answer)
    else:
        problems = _load_latentlit_jsonl(p, on_bad_answer)
    return problems if limit is None else problems[:limit]


def _question_key(text: str) -> str:
    return " ".join(text.split())


def exclude_questions(problems: Iterable[Problem], exclude: Iterable[Problem | str]) -> list[Problem]:
    """Drop problems whose question also occurs in ``exclude``.

    Questions are compared after whitespace normalisation (``" ".join(q.split())``),
    so double spaces or stray padding do not hide an overlap. Used e.g. to keep
    gsm_valid.json questions out of GSM8K training.

    Args:
        problems: Problems to filter.
        exclude: Problems or raw question strings to remove.

    Returns:
        The remaining problems, in their original order.
    """
    banned = {_question_key(e.question if isinstance(e, Problem) else e) for e in exclude}
    return [p for p in problems if _question_key(p.question) not in banned]


def save_problems_jsonl(problems: Iterable[Problem], path: str | PathLike[str]) -> Path:
    """Write problems as latentlit JSONL (``{id, question, steps, answer}`` a line).

    The file reads back with :func:`load_problems` (format auto-detected), so a
    fixed problem set can be handed to a config by path.

    Args:
        problems: Problems to write.
        path: Output file; parent folders are created.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for prob in problems:
            record = {"id": prob.id, "question": prob.question, "steps": list(prob.steps), "answer": prob.answer}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return p
