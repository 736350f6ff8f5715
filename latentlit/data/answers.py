"""Answer normalisation, numeric comparison and extraction from generated text.

"No answer" is always ``None``: a model that emits garbage must be scored as
wrong, never as having answered ``0``.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

ANSWER_FORMATS: tuple[str, ...] = ("auto", "coconut", "gsm8k", "colar", "last_number")

# A number as it appears in prose: optional sign, digits with optional
# thousands separators, optional decimals and exponent. The look-behind keeps
# the "-" of "16-3" (a binary minus) and digits glued to words ("x2") out.
_NUMBER = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])-?\.\d+(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
# What normalize_answer accepts once separators and currency are stripped.
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Markers are matched exactly ("###" must not match inside "####" and vice versa);
# the number may be preceded by "$" and spaces.
_MARKERS = {
    "coconut": re.compile(r"(?<!#)###(?!#)\s*\$?\s*"),
    "gsm8k": re.compile(r"(?<!#)####(?!#)\s*\$?\s*"),
    "colar": re.compile(r"\banswer\s*:\s*\$?\s*", re.IGNORECASE),
}
# Beyond this many digits a fixed-point rendering is pointless (and "1e999999"
# would build a megabyte string), so keep scientific notation.
_MAX_FIXED_EXPONENT = 40


def _canonical(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value)) if abs(value.adjusted()) <= _MAX_FIXED_EXPONENT else str(value.normalize())
    if abs(value.adjusted()) > _MAX_FIXED_EXPONENT:
        return str(value.normalize())
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def normalize_answer(text: str) -> str | None:
    """Canonicalise a numeric answer string.

    Strips surrounding whitespace, all ``,`` and ``$`` characters and a trailing
    ``.``; integral values lose their fraction (``"18.0"`` -> ``"18"``), other
    decimals keep their digits (``"3.3333333333333335"`` unchanged) and
    scientific notation is expanded (``"5.158e-07"`` -> ``"0.0000005158"``).

    Args:
        text: Candidate answer, e.g. ``"$1,234."``.

    Returns:
        The canonical string (``"1234"``), or ``None`` if ``text`` is not a
        single number (``"18 apples"``, ``""``, ``"nan"``). Never raises.
    """
    if not isinstance(text, str):
        return None
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    if cleaned.endswith("."):
        cleaned = cleaned[:-1]
    if not _PLAIN_NUMBER_RE.fullmatch(cleaned):
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return _canonical(value + 0)  # "+ 0" turns "-0" into "0"


def parse_number(text: str | None) -> float | None:
    """Parse an answer string into a float.

    Args:
        text: Anything :func:`normalize_answer` accepts; ``None`` is allowed.

    Returns:
        The value as a float, or ``None`` if ``text`` is not a number or the
        value does not fit a finite float.
    """
    if text is None:
        return None
    canonical = normalize_answer(text)
    if canonical is None:
        return None
    value = float(canonical)
    return value if math.isfinite(value) else None


def answers_match(a: str | None, b: str | None, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Compare two answers numerically.

    Uses :func:`math.isclose` so GSM-Hard golds such as ``"3244047.0999999996"``
    match ``"3244047.1"``.

    Args:
        a, b: Answer strings (any form :func:`normalize_answer` accepts) or
            ``None`` for "no answer".
        rel_tol: Relative tolerance (fraction of the larger magnitude).
        abs_tol: Absolute tolerance.

    Returns:
        ``True`` only if both parse as numbers and are close. ``None`` or an
        unparseable answer never matches anything, not even another ``None``.
    """
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return False
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol)


def _after_marker(text: str, fmt: str) -> str | None:
    # The first marker followed by a number wins: models trained without a
    # hard stop often keep generating after the answer.
    for marker in _MARKERS[fmt].finditer(text):
        number = _NUMBER_RE.match(text, marker.end())
        if number:
            return normalize_answer(number.group())
    return None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER_RE.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def extract_answer(text: str, fmt: str = "auto") -> str | None:
    """Extract the final numeric answer from generated text.

    Formats:
        ``"coconut"``: the number after ``###`` (e.g. ``"... ### 18"``).
        ``"gsm8k"``: the number after ``####``.
        ``"colar"``: the number after ``Answer:`` (case-insensitive).
        ``"last_number"``: the last number anywhere in the text.
        ``"auto"``: the marked formats in the order above, then the last number.

    Numbers may be negative, decimal, use thousands separators (``"1,234"``),
    be preceded by ``$`` or followed by a sentence-ending period.

    Args:
        text: The generated text only (not the prompt, whose numbers would be
            picked up by the fallback).
        fmt: One of :data:`ANSWER_FORMATS`.

    Returns:
        The normalised answer, or ``None`` if there is none. Never raises on
        garbage input; a non-string ``text`` also gives ``None``.

    Raises:
        ValueError: ``fmt`` is not one of :data:`ANSWER_FORMATS`.
    """
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; expected one of {ANSWER_FORMATS}")
    if not isinstance(text, str):
        return None
    if fmt == "last_number":
        return _last_number(text)
    if fmt != "auto":
        return _after_marker(text, fmt)
    for marked in ("coconut", "gsm8k", "colar"):
        found = _after_marker(text, marked)
        if found is not None:
            return found
    return _last_number(text)
