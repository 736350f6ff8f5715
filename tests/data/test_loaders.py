import json

import pytest

from latentlit.data import (
    DataFormatError,
    Problem,
    exclude_questions,
    load_coconut_json,
    load_gsm8k_jsonl,
    load_problems,
    save_problems_jsonl,
)


@pytest.mark.parametrize(
    ("relpath", "count"),
    [
        ("gsm8k/train.jsonl", 7473),
        ("gsm8k/test.jsonl", 1319),
        ("coconut_format/gsm_test.json", 1319),
        ("coconut_format/gsm_valid.json", 500),
        ("coconut_format/gsm_hard.json", 1318),
        ("coconut_format/multiarith.json", 580),
    ],
)
def test_real_file_counts(shared_data, relpath, count):
    problems = load_problems(shared_data / relpath)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    assert all(p.question == p.question.strip() and p.answer for p in problems)


def test_gsm8k_first_example(shared_data):
    first = load_gsm8k_jsonl(shared_data / "gsm8k" / "train.jsonl")[0]
    assert first.id == "train-0"
    assert first.question.startswith("Natalia sold clips to 48 of her friends")
    assert first.steps == ("<<48/2=24>>", "<<48+24=72>>")
    assert first.answer == "72"


def test_gsm8k_comma_gold_is_normalized(shared_data):
    problems = load_problems(shared_data / "gsm8k" / "test.jsonl")
    raw = [json.loads(line)["answer"].split("####")[-1].strip() for line in (shared_data / "gsm8k" / "test.jsonl").open()]
    index = raw.index("2,125")
    assert problems[index].answer == "2125"


def test_coconut_steps_placeholders_and_missing(shared_data):
    test = load_coconut_json(shared_data / "coconut_format" / "gsm_test.json")
    assert test[0].steps == ("<<16-3-4=9>>", "<<9*2=18>>") and test[0].answer == "18"
    hard = load_problems(shared_data / "coconut_format" / "gsm_hard.json")
    assert all(p.steps == () for p in hard)
    assert hard[0].answer == "-9867630"
    multi = load_problems(shared_data / "coconut_format" / "multiarith.json", limit=3)
    assert len(multi) == 3
    assert multi[0].steps == ()
    assert multi[0].question.startswith("There are 64 students") and multi[0].question.endswith("group?")
    assert multi[0].answer == "7"


def test_exclude_valid_from_train(shared_data):
    train = load_problems(shared_data / "gsm8k" / "train.jsonl")
    valid = load_problems(shared_data / "coconut_format" / "gsm_valid.json")
    kept = exclude_questions(train, valid)
    assert len(kept) == 6973
    assert len(exclude_questions(train, [f"  {valid[0].question}  "])) == 7472  # plain strings, extra spaces


def test_save_and_reload_roundtrip(tmp_path):
    problems = [
        Problem("a-0", "Tom has 3 apples . buys 2 . how many ?", ("<< 3 + 2 = 5 >>",), "5"),
        Problem("a-1", "What is 1.5 + 1?", (), "2.5"),
    ]
    path = save_problems_jsonl(problems, tmp_path / "sub" / "fixed.jsonl")
    assert load_problems(path) == problems
    assert load_problems(path, format="latentlit_jsonl", limit=1) == problems[:1]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_broken_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "broken.jsonl", '{"question": "q", "answer": "#### 1"}\n{"question": oops}\n')
    with pytest.raises(DataFormatError) as info:
        load_problems(path)
    assert "broken.jsonl" in str(info.value)
    assert "line 2" in str(info.value)


def test_missing_field_is_named(tmp_path):
    path = _write(tmp_path / "nofield.jsonl", '{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(DataFormatError, match=r"nofield\.jsonl, line 2: missing required field 'answer'"):
        load_gsm8k_jsonl(path)
    path = _write(tmp_path / "nofield.json", json.dumps([{"answer": "3"}]))
    with pytest.raises(DataFormatError, match=r"nofield\.json, row 0.*'question'"):
        load_coconut_json(path)


def test_non_numeric_gold_fail_and_skip(tmp_path):
    rows = [{"question": f"q{i}", "answer": a} for i, a in enumerate(["3", "three", "4", "n/a"])]
    path = _write(tmp_path / "bad.json", json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"2 problem\(s\).*row 1 \(0-based\) \(bad-1\)='three'.*row 3 \(0-based\) \(bad-3\)='n/a'"):
        load_problems(path)
    with pytest.warns(UserWarning, match=r"2 problem\(s\)"):
        kept = load_problems(path, on_bad_answer="skip")
    assert [(p.id, p.answer) for p in kept] == [("bad-0", "3"), ("bad-2", "4")]


def test_gsm8k_without_marker_is_a_bad_gold(tmp_path):
    path = _write(tmp_path / "nomark.jsonl", '{"question": "q", "answer": "just 5"}\n')
    with pytest.raises(DataFormatError, match=r"1 problem.*line 1 \(nomark-0\)=None"):
        load_problems(path)


def test_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_problems(tmp_path / "nowhere.json")
    path = _write(tmp_path / "ok.json", json.dumps([{"question": "q", "answer": "1"}]))
    with pytest.raises(ValueError, match="'ignore'"):
        load_problems(path, on_bad_answer="ignore")
    with pytest.raises(ValueError, match="'csv'"):
        load_problems(path, format="csv")
    with pytest.raises(ValueError, match="suffix"):
        load_problems(_write(tmp_path / "data.txt", "[]"))
