import json
import math
import unicodedata
from decimal import Decimal
from fractions import Fraction

import pytest

from latentlit.data import ANSWER_FORMATS, answers_match, extract_answer, normalize_answer, parse_number
from latentlit.data.answers import GROUP_SPACES, MINUS_SIGNS


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


# ---------------------------------------------------------------- Unicode number forms (issue 18, item 2)
FORMAT_TEMPLATES = {"coconut": "### {}", "gsm8k": "#### {}", "colar": "Answer: {}", "last_number": "so it is {}",
                    "auto": "### {}"}


def test_minus_signs_are_every_unicode_dash_but_the_wave_dashes():
    dashes = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Pd"}
    assert dashes - MINUS_SIGNS == {"\u301c", "\u3030"}
    assert {"\u2212", "\u2796", "\u02d7", "\u2013", "\u2010", "\ufe63", "\uff0d"} <= MINUS_SIGNS


@pytest.mark.parametrize("minus", sorted(MINUS_SIGNS))
def test_every_minus_sign_is_a_minus_in_every_format(minus):
    # "### \u20135" and "### \u20105" were +5 in the auto and last-number formats
    for fmt, template in FORMAT_TEMPLATES.items():
        assert extract_answer(template.format(f"{minus}5"), fmt) == "-5", fmt
        assert extract_answer(template.format(f"{minus}$1,234.5"), fmt) == "-1234.5", fmt
    assert normalize_answer(f"{minus}5") == "-5"
    assert answers_match(f"{minus}5", "-5") and not answers_match(f"{minus}5", "5")
    assert normalize_answer(f"2.5e{minus}3") == "0.0025"  # "5e\u22127" was 5, the exponent dropped
    # after a word it is a binary minus, exactly as ASCII "-" ("16-3" -> 3)
    assert extract_answer(f"16{minus}3", "last_number") == extract_answer("16-3", "last_number") == "3"


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("### \u20135", "auto", "-5"),  # was 5
        ("### \u20135", "last_number", "-5"),  # was 5
        ("### \u20105", "auto", "-5"),  # was 5
        ("### \u20105", "last_number", "-5"),  # was 5
        ("### \u20135", "coconut", "-5"),  # was None
        ("### \u20145", "coconut", "-5"),
        ("### \ufe625", "coconut", "5"),
        ("### \u301c5", "coconut", None),  # a wave dash ("about") is no sign, and no number follows the marker
        ("### \u301c5", "last_number", "5"),
    ],
)
def test_dash_examples(text, fmt, expected):
    assert extract_answer(text, fmt) == expected


@pytest.mark.parametrize("space", sorted(GROUP_SPACES))
def test_space_group_separators_are_read_whole_in_every_format(space):
    for fmt, template in FORMAT_TEMPLATES.items():
        assert extract_answer(template.format(f"1{space}000"), fmt) == "1000", fmt
        assert extract_answer(template.format(f"1{space}250"), fmt) == "1250", fmt
        assert extract_answer(template.format(f"-1{space}234{space}567.25 cents"), fmt) == "-1234567.25", fmt
        # a group that is not three digits: no answer, never 1 nor 25 / 0
        assert extract_answer(template.format(f"1{space}25"), fmt) is None, fmt
        assert extract_answer(template.format(f"12{space}3456"), fmt) is None, fmt
        assert extract_answer(template.format(f"1{space}{space}000"), fmt) is None, fmt
    assert normalize_answer(f"1{space}000") == "1000" and answers_match(f"1{space}000", "1000")


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("### 1\u202f000", "coconut", "1000"),  # was 1
        ("### 1\u202f000", "last_number", "1000"),  # was 0
        ("### 1\u00a0000", "auto", "1000"),  # was 1
        ("1\u00a0000", "last_number", "1000"),  # was 0
        ("### 1\u2009000", "coconut", "1000"),  # was 1
        ("1\u202f250", "last_number", "1250"),  # CODI's last number: was 250
        ("costs 1\u202f250", "auto", "1250"),  # was 250
        # the ASCII space separates tokens, never groups (module docstring)
        ("### 1 000", "coconut", "1"),
        ("### 12 345", "coconut", "12"),
        # separators of two kinds: French 1234.567 or English 1234567? neither
        ("### 1\u202f234,567", "coconut", None),
        ("### 1,234\u00a0567", "coconut", None),
        ("### 1\u00a0234\u202f567", "coconut", None),
        # full-width forms are their ASCII characters
        ("### \uff11\uff12", "coconut", "12"),
        ("### \uff11\uff0c\uff12\uff13\uff14", "coconut", "1234"),  # was 1
        ("### \uff11\uff0e\uff15", "coconut", "1.5"),  # was 1
        ("\uff03\uff03\uff03 \uff0d\uff17", "coconut", "-7"),
        ("Answer\uff1a 7", "colar", "7"),
        # other forms written inside a number: refused, never their first part
        ("### 1'000", "coconut", None),  # was 1
        ("### 1\u2019000", "coconut", None),
        ("### 1_000", "coconut", None),  # was 1
        ("### 1\u200b000", "coconut", None),  # zero-width space; was 1
        ("### 1\u066c000", "coconut", None),  # Arabic thousands separator; was 1
        ("### 1\u00b75", "coconut", None),  # was 1
        ("### 1.5\u00d710\u00b3", "coconut", None),  # was 1.5
        ("### 2^3", "coconut", None),  # was 2
        ("### 10\u207b\u00b3", "coconut", None),  # was 10
        ("### 5\u00b2", "coconut", None),  # was 5
        ("### 2\u00bd", "coconut", None),  # was 2
        ("### 5\u4e07", "coconut", None),  # 50 000; was 5
        ("### 5\u00a0apples", "coconut", "5"),  # a space-like character before a word ends the number
        ("<<9*2=18>> ### 18", "coconut", "18"),
        ("<<9*2=18>>", "last_number", "18"),
    ],
)
def test_unicode_number_examples(text, fmt, expected):
    assert extract_answer(text, fmt) == expected


@pytest.mark.parametrize(
    ("text", "coconut", "auto"),
    [("### 12", "12", "12"), ("### 7 <|endoftext|>", "7", "7"),
     ("<< 9 + 6 = 15 >> << 15 - 3 = 12 >> ### 12", "12", "12"),
     ("### - 12", None, "12"), ("### 12 ### 3", "12", "12"), ("### 12 345", "12", "12"),
     ("Tom has 12 apples . ### 4 / 2", "4", "4"), ("<< 12 * 3 = 36 >>", None, "36")],
)
def test_quickstart_outputs_read_as_before(text, coconut, auto):
    """The quickstart models write ASCII tokens joined by ASCII spaces; these read as before the
    Unicode forms (200 000 random texts over the quickstart vocabularies gave no difference in any
    format when this was written)."""
    assert extract_answer(text, "coconut") == coconut
    assert extract_answer(text, "auto") == auto
