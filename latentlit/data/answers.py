"""Answer normalisation, numeric comparison and extraction from generated text.

"No answer" is always ``None``: a model that emits garbage must be scored as wrong, never as
having answered ``0``.

**What counts as one number** (:func:`normalize_answer`, :func:`extract_answer`):

- an optional sign and currency (``$`` or TeX's ``\\$``), in either order: ``-$5``, ``$-5``,
  ``\\$460``; the sign touches the number (``- 5`` is a dash and the number 5, as ``16-3`` is a
  binary minus and the number 3);
- digits with optional thousands groups of exactly three digits, all separated by the same
  separator: ``,``, TeX's ``{,}`` or ``\\,``, or one space-like character (below): ``1,234``,
  ``9{,}500``, ``1\\u202f000``; then optional decimals and exponent (``2.5``, ``.5``,
  ``5.158e-07``);
- or a fraction of two integers, ``1/2``, ``\\frac{1}{2}`` (also ``\\dfrac``, ``\\tfrac``): one
  number, 0.5; a zero denominator is no answer;
- or a mixed number, an integer, one space and a proper fraction: ``2 1/2`` = 2.5 (``2 3/2`` is
  no answer);
- an optional ``%`` (or ``\\%``) after it, which is dropped: ``50%`` is 50, not 0.5, because
  GSM8K-style golds give a percentage as its number of percent ("What percent...?" ``#### 25``);
- a sentence-ending ``.`` after it is not part of it.

A number glued to more digit-like text (``12,34``, ``9{,}50``, ``1.5/3``, ``3.5.6``) is
malformed and gives *no answer*, never its first part: a truncated number would be scored as
if the model had written it.

**Unicode forms** (characters written here as Python escapes). The rule: a number written with
other characters is read whole, with the value an ASCII writing of it has, or not at all; never
a part of it and never another sign. Accepted:

- digits of any script (Unicode ``Nd``: ``\\uff11\\uff18`` full-width, ``\\u0661\\u0668``
  Arabic-Indic) and the full-width forms of every ASCII character (U+FF01..U+FF5E:
  ``\\uff0c`` ``\\uff0e`` ``\\uff0f`` ``\\uff05`` ``\\uff04`` ``\\uff0b`` ``\\uff0d``, and of the
  markers), read as that ASCII character;
- as a minus, every character a minus or a hyphen is written with (:data:`MINUS_SIGNS`):
  U+2212 minus sign, the hyphens and dashes U+2010..U+2015 (hyphen, non-breaking hyphen, figure
  dash, en dash, em dash, horizontal bar), U+FE58, U+FE63, U+FF0D, U+2796, U+02D7, and every
  other hyphen or dash of Unicode category ``Pd`` except the wave dashes U+301C and U+3030
  (they mean "about" or a range, never a minus). Each is read exactly as ASCII ``-`` (a sign
  before a number at the start of a word, a binary minus after a word: ``16\\u20133`` is 3 as
  ``16-3`` is), so ``### \\u20135`` is -5, never 5. As a plus: U+FE62, U+FF0B, U+2795;
- as a group separator, one space-like character of Unicode category ``Zs`` other than the
  ASCII space and U+1680 (:data:`GROUP_SPACES`: U+00A0 no-break space, U+202F narrow
  no-break space, U+2009 thin space, U+2007 figure space, U+2000..U+200A, U+205F, U+3000),
  the French / SI style: ``1\\u202f000`` is 1000 and ``1\\u00a0250`` 1250 in every format;
  groups of exactly three digits, or no answer (``1\\u202f00``).

The ASCII space is never a group separator: ``"1 000"`` is the number 1 followed by the
number 000 (``### 1 000`` reads 1; as one whole answer string it is no number). Every tokenizer
here joins tokens with ASCII spaces and reasoning text writes numbers one after the other
("3 boxes 12 eggs"), so a space between digits is evidence of two numbers as often as of one:
reading ``### 12 345`` of a model that keeps generating after its answer as 12345 would
change answers that are right today (the quickstart models write ASCII integers as separate
tokens).

Refused (no answer, never a part of the number), when between a number and a further digit or
other numeric character: any other separator some convention writes inside a number (``'``
``\\u2019`` ``\\u02bc`` Swiss ``1'000``, ``_``, ``\\u00b7`` ``\\u066b`` ``\\u066c``), invisible
format characters (category ``Cf``: U+200B zero-width space, U+2060, bidi marks, ...),
multiplication and power signs (``*`` ``^`` ``\\u00d7`` ``\\u22c5`` and superscript signs:
``1.5\\u00d710\\u00b3``, ``2^3``), a second or mixed kind of group separator
(``1\\u202f234,567``: French 1234.567 or English 1234567), and any numeric character that is not
a decimal digit right after the digits (superscripts ``5\\u00b2``, vulgar fractions
``2\\u00bd``, CJK numerals ``5\\u4e07``).

**When two answers match** (:func:`answers_match`): both parse, and their exact rational
values x, y satisfy ``x == y`` when both are integers below 2**53 in magnitude, else
``|x - y| <= REL_TOL * max(|x|, |y|)`` with ``REL_TOL = 2**-50`` (four units in the last
place of a float64; above 2**53 a float64 holds only every other integer, so an integral gold
there may be a float artefact too). The tolerance is there only for float artefacts in golds computed in
floating point (GSM-Hard's ``3244047.0999999996`` == ``3244047.1``, ``0.30000000000000004`` ==
``0.3``; every such gold in gsm_hard.json is within 2 units in the last place of its short
decimal or small fraction). Consequences: two different integers below 2**53 (9.0e15) never
match, and two different numbers with at most 15 significant digits never match (their relative difference
is at least 1e-15 > 2**-50). A gold rounded to fewer digits (GSM-Hard's ``5.3333333333`` for
16/3) matches only a prediction with those digits.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

ANSWER_FORMATS: tuple[str, ...] = ("auto", "coconut", "gsm8k", "colar", "last_number")

# Four float64 units in the last place (eps = 2**-52): room for the rounding of a short chain of
# float operations, far below the 1e-15 that separates two numbers of 15 significant digits.
REL_TOL = Fraction(1, 2**50)
# Below this every integer is a float64, so an integral answer is what was meant: compared exactly.
_EXACT_INTEGERS = 2**53
# Beyond this decimal exponent no float (or model) means the value; it also keeps "1e999999"
# from building a million-digit integer.
_MAX_EXPONENT = 1000
# Integral values beyond this many digits keep scientific notation in the canonical string.
_MAX_FIXED_EXPONENT = 40

# Every character a minus is written with (module docstring): the hyphens and dashes of Unicode
# category Pd except the wave dashes U+301C / U+3030 ("about", a range), and the minus signs of
# other categories. tests/data/test_answers.py checks the Pd part against this Python's unicodedata.
MINUS_SIGNS = frozenset(
    "\u002d\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40"
    "\u2e5d\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"  # category Pd
    "\u2212\u2796\u02d7"  # minus sign, heavy minus sign, modifier letter minus sign
)
PLUS_SIGNS = frozenset("+\ufe62\uff0b\u2795")
# Space-like group separators (Zs without the ASCII space, which separates tokens, and U+1680,
# which is drawn as a dash).
GROUP_SPACES = frozenset("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000")
# One character for one: positions (and the look-behinds below) are those of the original text.
_ASCII_FORMS = {**{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}, **{ord(c): "-" for c in MINUS_SIGNS},
                **{ord(c): "+" for c in PLUS_SIGNS}}
# Characters some convention writes inside one number (separators, multiplication and power
# signs): between a number and a digit they mean the number goes on, in a form not read here.
_INNER = frozenset(".,/'_*^\u2019\u02bc\u00b7\u066b\u066c\u00d7\u22c5\u2219\u207a\u207b\u208a\u208b") | GROUP_SPACES

_SEP = rf"(?:,|\{{,\}}|\\,|[{''.join(sorted(GROUP_SPACES))}])"
_SEP_RE = re.compile(_SEP)
_INT = rf"(?:\d{{1,3}}(?:{_SEP}\d{{3}})+|\d+)"
_EXP = r"(?:[eE][-+]?\d+)"
_SIGN = "[-+]"
_CURRENCY = r"\\?\$"
# The look-behind keeps the "-" of "16-3" (a binary minus) and digits glued to words ("x2") out.
_TOKEN = re.compile(
    rf"(?<![\w.])(?P<prefix>{_SIGN}(?:{_CURRENCY} ?)?|{_CURRENCY} ?{_SIGN}?)?"
    rf"(?:(?P<whole>\d+) (?P<mnum>\d+)/(?P<mden>\d+)"
    rf"|(?P<num>{_INT})/(?P<den>{_INT})"
    rf"|\\[dt]?frac\{{(?P<tnum>\d+)\}}\{{(?P<tden>\d+)\}}"
    rf"|(?P<dec>{_INT}(?:\.\d+)?{_EXP}?|\.\d+{_EXP}?))"
    r"(?:\\?%)?"
)
# Multi-character digit-like continuations (the one-character ones are in _glued).
_GLUE = re.compile(rf"{_SEP}\d|[eE][-+]?\d")
# The rest of a malformed run, skipped so that no number starts inside it.
_RUN = re.compile(rf"(?:[\d.,/eE+\-{''.join(sorted(_INNER))}]|{_SEP})*")
# Markers are matched exactly ("###" must not match inside "####" and vice versa).
_MARKERS = {
    "coconut": re.compile(r"(?<!#)###(?!#)\s*"),
    "gsm8k": re.compile(r"(?<!#)####(?!#)\s*"),
    "colar": re.compile(r"\banswer\s*:\s*", re.IGNORECASE),
}
_MALFORMED = object()


def _int(text: str) -> int:
    return int(re.sub(_SEP, "", text))


def _token_value(m: re.Match) -> Fraction | None:
    """Exact value of a :data:`_TOKEN` match, None when it is no number (zero denominator,
    improper mixed fraction, absurd exponent, two kinds of group separator)."""
    if len(set(_SEP_RE.findall(m[0]))) > 1:  # "1\u202f234,567": French 1234.567 or English 1234567
        return None
    if m["whole"] is not None:
        num, den = int(m["mnum"]), int(m["mden"])
        if den == 0 or num >= den:
            return None
        value = int(m["whole"]) + Fraction(num, den)
    elif m["num"] is not None or m["tnum"] is not None:
        num, den = (_int(m["num"]), _int(m["den"])) if m["num"] is not None else (int(m["tnum"]), int(m["tden"]))
        if den == 0:
            return None
        value = Fraction(num, den)
    else:
        dec = Decimal(re.sub(_SEP, "", m["dec"]))
        if abs(dec.adjusted()) > _MAX_EXPONENT:
            return None
        value = Fraction(dec)
    return -value if "-" in (m["prefix"] or "") else value


def _inner(c: str) -> bool:
    return c in _INNER or unicodedata.category(c) == "Cf"


def _glued(text: str, pos: int) -> bool:
    """Whether the text at ``pos``, right after a number, continues it: a numeric character
    (a digit, a superscript, a vulgar fraction, ...), or characters used inside numbers
    (:data:`_INNER`, invisible format characters) followed by one, or a TeX separator or an
    exponent followed by a digit."""
    end = pos
    while end < len(text) and _inner(text[end]):
        end += 1
    return (end < len(text) and text[end].isnumeric()) or _GLUE.match(text, pos) is not None


def _run_end(text: str, pos: int) -> int:
    """End of the malformed run that starts at ``pos`` (digit-like text and what is inside
    numbers), skipped so that no number starts inside it."""
    while True:
        pos = _RUN.match(text, pos).end()
        if pos < len(text) and (text[pos].isnumeric() or _inner(text[pos])):
            pos += 1
        else:
            return pos


def _ascii_forms(text: str) -> str:
    """``text`` with full-width ASCII, minus and plus signs in their ASCII form (same length)."""
    return text.translate(_ASCII_FORMS)


def _number_at(text: str, pos: int):
    """The number starting exactly at ``pos`` of a :func:`_ascii_forms` text: (end, value) with
    value a Fraction, None (not a number) or ``_MALFORMED``; None when no number starts there."""
    m = _TOKEN.match(text, pos)
    if m is None:
        return None
    if _glued(text, m.end()):
        return _run_end(text, m.end()), _MALFORMED
    return m.end(), _token_value(m)


def _canonical(value: Fraction) -> str:
    """``"18"``, ``"-2.5"``, ``"0.0000005158"``, ``"1E+50"``, or ``"p/q"`` when the value has
    no finite decimal expansion (``"1/3"``)."""
    den, rest, twos, fives = value.denominator, value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{den}"
    scale = max(twos, fives)
    dec = Decimal(f"{value.numerator * 10**scale // den}E-{scale}")
    if value.denominator == 1:
        return str(value.numerator) if abs(dec.adjusted()) <= _MAX_FIXED_EXPONENT else str(dec.normalize())
    if abs(dec.adjusted()) > _MAX_FIXED_EXPONENT:
        return str(dec.normalize())
    text = format(dec, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@lru_cache(maxsize=1 << 16)
def _value(text: str) -> Fraction | None:
    """Exact value of an answer string that is one number (module docstring), else None."""
    cleaned = _ascii_forms(text).strip().removesuffix(".")
    found = _number_at(cleaned, 0)
    if found is None or found[0] != len(cleaned) or found[1] is _MALFORMED:
        return None
    return found[1]


def normalize_answer(text: str) -> str | None:
    """Canonicalise a numeric answer string.

    Integral values lose their fraction (``"18.0"`` -> ``"18"``), decimals keep their digits
    (``"3.3333333333333335"`` unchanged), scientific notation is expanded (``"5.158e-07"`` ->
    ``"0.0000005158"``), fractions become decimals when exact (``"1/2"`` -> ``"0.5"``) and
    ``"p/q"`` in lowest terms otherwise (``"2/6"`` -> ``"1/3"``); separators, currency, ``%``
    and a trailing ``.`` go (``"$1,234."`` -> ``"1234"``).

    Args:
        text: Candidate answer, e.g. ``"$1,234."``.

    Returns:
        The canonical string, or ``None`` if ``text`` is not a single number as the module
        docstring defines it (``"18 apples"``, ``""``, ``"nan"``, ``"12,34"``). Never raises.
    """
    if not isinstance(text, str):
        return None
    value = _value(text)
    return None if value is None else _canonical(value)


def parse_number(text: str | None) -> float | None:
    """Parse an answer string into a float.

    Args:
        text: Anything :func:`normalize_answer` accepts; ``None`` is allowed.

    Returns:
        The value as a float (the nearest one), or ``None`` if ``text`` is not a number or the
        value does not fit a finite float.
    """
    if not isinstance(text, str):
        return None
    value = _value(text)
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def answers_match(a: str | None, b: str | None, *, rel_tol: float | Fraction = REL_TOL) -> bool:
    """Compare two answers by value (the rule is in the module docstring).

    Args:
        a, b: Answer strings (any form :func:`normalize_answer` accepts) or ``None`` for "no
            answer".
        rel_tol: Relative tolerance (default :data:`REL_TOL` = 2**-50, float artefacts only);
            two integers below 2**53 are always compared exactly.

    Returns:
        ``True`` only if both parse as numbers and are equal under the rule. ``None`` or an
        unparseable answer never matches anything, not even another ``None``.
    """
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    x, y = _value(a), _value(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    if x.denominator == 1 and y.denominator == 1 and max(abs(x), abs(y)) < _EXACT_INTEGERS:
        return False
    return abs(x - y) <= Fraction(rel_tol) * max(abs(x), abs(y))


def _after_marker(text: str, fmt: str):
    """The value after the first marker of ``fmt`` that a number follows; ``_MALFORMED`` when
    that number is malformed; None when no marker is followed by a number."""
    # The first marker followed by a number wins: models trained without a hard stop often keep
    # generating after the answer.
    for marker in _MARKERS[fmt].finditer(text):
        found = _number_at(text, marker.end())
        if found is not None:
            return found[1] if found[1] is not None else _MALFORMED
    return None


def _last_number(text: str):
    last, pos = None, 0
    while (m := _TOKEN.search(text, pos)) is not None:
        end, value = _number_at(text, m.start())
        last, pos = (value if value is not None else _MALFORMED), max(end, m.start() + 1)
    return last


def extract_answer(text: str, fmt: str = "auto") -> str | None:
    """Extract the final numeric answer from generated text.

    Formats:
        ``"coconut"``: the number after ``###`` (e.g. ``"... ### 18"``).
        ``"gsm8k"``: the number after ``####``.
        ``"colar"``: the number after ``Answer:`` (case-insensitive).
        ``"last_number"``: the last number anywhere in the text.
        ``"auto"``: the marked formats in the order above, then the last number.

    A number is what the module docstring says (``-1,234.``, ``\\$460``, ``9{,}500``, ``1/2``,
    ``2 1/2``, ``50%``, and its Unicode forms: a minus written with a dash such as ``\\u2212``
    or ``\\u2013``, space-like groups such as ``1\\u202f000``, full-width characters); the
    first marker that a number follows wins. A malformed number there (``### 12,34``,
    ``### 1\\u202f00``, ``### 1'000``) gives ``None``, not ``12`` or ``1``.

    Args:
        text: The generated text only (not the prompt, whose numbers would be picked up by the
            fallback).
        fmt: One of :data:`ANSWER_FORMATS`.

    Returns:
        The normalised answer, or ``None`` if there is none. Never raises on garbage input; a
        non-string ``text`` also gives ``None``.

    Raises:
        ValueError: ``fmt`` is not one of :data:`ANSWER_FORMATS`.
    """
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; expected one of {ANSWER_FORMATS}")
    if not isinstance(text, str):
        return None
    text = _ascii_forms(text)
    if fmt == "last_number":
        found = _last_number(text)
    elif fmt != "auto":
        found = _after_marker(text, fmt)
    else:
        for marked in ("coconut", "gsm8k", "colar"):
            found = _after_marker(text, marked)
            if found is not None:
                break
        else:
            found = _last_number(text)
    return None if found is None or found is _MALFORMED else _canonical(found)


def answer_format_warning(requested: str | None, trained: str) -> str | None:
    """The warning for an ``answer_format`` override that differs from the checkpoint's, else None."""
    if requested is None or requested == trained:
        return None
    return (f"answer_format={requested!r} overrides the format the checkpoint was trained with ({trained!r}): answers "
            f"are read as {requested!r}, and outputs written in the {trained!r} format may score as no answer "
            "(see no_answer_* in metrics.json)")
