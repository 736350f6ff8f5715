import json

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
    assert answers_match("100", "100.005", rel_tol=1e-4)
    assert not answers_match("100", "100.5", rel_tol=1e-4)


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
    ],
)
def test_extract_answer(text, fmt, expected):
    assert extract_answer(text, fmt) == expected


def test_extract_answer_unknown_format():
    with pytest.raises(ValueError, match="'boxed'") as info:
        extract_answer("### 1", "boxed")
    assert "coconut" in str(info.value)
    assert set(ANSWER_FORMATS) == {"auto", "coconut", "gsm8k", "colar", "last_number"}
