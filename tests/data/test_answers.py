import json
import math
from decimal import Decimal
from fractions import Fraction

import pytest

from latentlit.data import ANSWER_FORMATS, answers_match, extract_answer, normalize_answer, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", "18"),
        ("18.0", "18"),
        ("18.", "18"),
        ("1,234", "1234"),
        ("$5", "5"),
        (" $1,450,000 ", "1450000"),
        ("-9867630", "-9867630"),
        ("-0", "0"),
        (".5", "0.5"),
        ("3.3333333333333335", "3.3333333333333335"),
        ("5.158e-07", "0.0000005158"),
        ("eighteen", None),
        ("18 apples", None),
        ("", None),
        ("nan", None),
        ("1.2.3", None),
        ("1/2", "0.5"),
        ("2/6", "1/3"),
        ("-3/4", "-0.75"),
        ("\\frac{1}{3}", "1/3"),
        ("2 1/2", "2.5"),
        ("2 3/2", None),  # not a mixed number
        ("1/0", None),
        ("50%", "50"),
        ("\\$460", "460"),
        ("9{,}500", "9500"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        ("12,34", None),  # a malformed group is no number, never 12
        ("1 234", None),
        ("1e999999", None),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalize_gsm_hard_decimal_gold(shared_data):
    rows = json.loads((shared_data / "coconut_format" / "gsm_hard.json").read_text())
    decimal_gold = next(r["answer"] for r in rows if "." in r["answer"] and "e" not in r["answer"])
    assert decimal_gold == "3244047.0999999996"
    assert normalize_answer(decimal_gold) == "3244047.0999999996"
    assert answers_match(decimal_gold, "3244047.1")


def test_parse_number():
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("-3") == -3.0
    assert parse_number(None) is None
    assert parse_number("abc") is None
    assert parse_number("1e999999") is None  # overflows a float


def test_answers_match():
    assert answers_match("18", "18.0")
    assert answers_match("1,234", "1234")
    assert not answers_match("18", "19")
    assert not answers_match(None, None)
    assert not answers_match("18", None)
    assert not answers_match("x", "x")
    assert answers_match("100", "100.005", rel_tol=1e-4)  # a looser tolerance on request
    assert not answers_match("100", "100.5", rel_tol=1e-4)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # distinct numbers never match (the old 1e-4 relative tolerance accepted all of these)
        ("10000", "10001", False),
        ("1000000", "1000001", False),
        ("9007199254740991", "9007199254740990", False),  # integers below 2**53: exact
        ("9007199326062756.0", "9007199326062755", True),  # beyond 2**53 a float gold may be off by one ulp
        ("100000.1", "100000.2", False),
        ("5.3333", "5.3333333333", False),
        ("0.1234567", "0.1234568", False),
        ("999999999999999", "999999999999998", False),  # 15 significant digits
        ("0.5", "50%", False),  # a percentage is its number of percent
        # float artefacts of golds computed in floating point still match
        ("3244047.0999999996", "3244047.1", True),
        ("0.30000000000000004", "0.3", True),
        ("9189480.000000002", "9189480", True),
        ("41073052.666666664", "123219158/3", True),
        ("2.0106999999999997e-06", "0.0000020107", True),
        # fractions are one number
        ("0.5", "1/2", True),
        ("1", "1/2", False),
        ("1/3", "0.3333333333333333", True),  # the nearest float
        ("1/3", "0.33333333333333", False),
        ("2.5", "2 1/2", True),
        ("50", "50%", True),
    ],
)
def test_answers_match_rule_both_sides(a, b, expected):
    assert answers_match(a, b) is expected
    assert answers_match(b, a) is expected


def test_tolerance_is_four_ulp():
    x = 3244047.1
    assert answers_match(repr(x), repr(math.nextafter(x, math.inf)))
    assert answers_match(repr(x), repr(x + 4 * math.ulp(x)))
    assert not answers_match(repr(x), repr(x + 16 * math.ulp(x)))


def test_every_gsm_hard_float_artefact_matches_its_short_form(shared_data):
    """Each gold with >= 16 significant digits is a float rendering of a short decimal or a small
    fraction; the rule must accept that intended value and reject its neighbours."""
    rows = json.loads((shared_data / "coconut_format" / "gsm_hard.json").read_text())
    artefacts = [r["answer"] for r in rows if len(Decimal(r["answer"]).normalize().as_tuple().digits) >= 16]
    assert len(artefacts) == 100
    for gold in artefacts:
        exact = Fraction(Decimal(gold))
        candidates = [Fraction(Decimal(format(Decimal(gold), f".{k}g"))) for k in range(1, 13)]
        candidates.append(exact.limit_denominator(1000))
        intended = min(candidates, key=lambda c: abs(c - exact))
        text = f"{intended.numerator}/{intended.denominator}"
        assert answers_match(gold, text), (gold, text)
        assert not answers_match(gold, f"{intended.numerator + intended.denominator}/{intended.denominator}")


def test_gsm_hard_golds_at_or_above_1e4_reject_gold_plus_one(shared_data):
    rows = json.loads((shared_data / "coconut_format" / "gsm_hard.json").read_text())
    big = [normalize_answer(r["answer"]) for r in rows if abs(float(r["answer"])) >= 1e4]
    assert len(big) == 895
    assert not any(answers_match(g, str(Fraction(g) + 1)) for g in big)


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("<< 9 + 6 = 15 >> ### 15", "coconut", "15"),
        ("### -1,234.", "coconut", "-1234"),
        ("### $2.50", "coconut", "2.5"),
        ("#### 72", "coconut", None),  # "####" is not the coconut marker
        ("She sold 72 clips.\n#### 72", "gsm8k", "72"),
        ("### 72", "gsm8k", None),
        ("Answer: 3.5.", "colar", "3.5"),
        ("the answer: -7", "colar", "-7"),
        ("16-3-4=9 then 9*2=18.", "last_number", "18"),
        ("costs 1,234 dollars", "last_number", "1234"),
        ("### 18 ### 99", "coconut", "18"),  # first marker wins; trailing generation is ignored
        ("<< 2 + 3 = 5 >> ### 5", "auto", "5"),
        ("#### 6", "auto", "6"),
        ("Answer: 7", "auto", "7"),
        ("### nothing here, but 4 apples", "auto", "4"),  # marker without a number -> last number
        ("no digits at all", "auto", None),
        ("### ### ###", "coconut", None),
        ("\x00\ufffd<<>>", "auto", None),
        ("", "auto", None),
        ("", "last_number", None),
        # fractions, TeX, percentages, mixed numbers
        ("### 1/2", "coconut", "0.5"),
        ("<<48/2=24>> #### 24", "gsm8k", "24"),
        ("<<48/2=24>>", "last_number", "24"),
        ("### \\$460", "coconut", "460"),
        ("### 9{,}500", "coconut", "9500"),
        ("Answer: \\frac{3}{4}", "colar", "0.75"),
        ("### 2 1/2 cups", "coconut", "2.5"),
        ("### 40%", "coconut", "40"),
        # a malformed number gives no answer, never its first part
        ("### 9{,}50", "coconut", None),
        ("### 12,34", "coconut", None),
        ("### 12,34", "auto", None),
        ("### 1.5/3", "coconut", None),
        ("### 3.5.6", "coconut", None),
        ("### 1/0", "coconut", None),
        ("so 7 and then 12,34", "last_number", None),
    ],
)
def test_extract_answer(text, fmt, expected):
    assert extract_answer(text, fmt) == expected


def test_extract_answer_unknown_format():
    with pytest.raises(ValueError, match="'boxed'") as info:
        extract_answer("### 1", "boxed")
    assert "coconut" in str(info.value)
    assert set(ANSWER_FORMATS) == {"auto", "coconut", "gsm8k", "colar", "last_number"}
