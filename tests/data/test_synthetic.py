import re

from latentlit.data import generate_problems, synthetic_splits
from latentlit.data.synthetic import synthetic_split

_STEP_RE = re.compile(r"<< (\d+) ([-+*/]) (\d+) = (\d+) >>")
_PHRASE_OP = {"buys": "+", "loses": "-", "gives away": "-", "multiplies by": "*", "divides by": "/"}


def _apply(a: int, op: str, k: int) -> int:
    if op == "/":
        assert a % k == 0, f"inexact division {a} / {k}"
        return a // k
    return {"+": a + k, "-": a - k, "*": a * k}[op]


def test_deterministic_and_seed_dependent():
    assert generate_problems(50, seed=3) == generate_problems(50, seed=3)
    assert generate_problems(50, seed=3) != generate_problems(50, seed=4)
    assert generate_problems(5, seed=3) == generate_problems(50, seed=3)[:5]


def test_constraints_hold():
    problems = generate_problems(500, seed=0)
    assert len({p.question for p in problems}) == 500
    assert problems[12].id == "syn-00012"
    for p in problems:
        words = p.question.split()
        start = int(words[2])
        clauses = [c.strip() for c in p.question.split(" . ")[1:-1]]
        assert 2 <= len(p.steps) == len(clauses) <= 4
        assert p.question.endswith(" . how many ?")
        value = start
        for clause, step in zip(clauses, p.steps):
            a, op, k, result = _STEP_RE.fullmatch(step).groups()
            a, k, result = int(a), int(k), int(result)
            phrase, number = clause.rsplit(" ", 1)
            assert _PHRASE_OP[phrase] == op and int(number) == k
            assert k in (range(2, 7) if op in "+-" else range(2, 4))
            assert a == value
            assert _apply(a, op, k) == result
            assert 0 <= result <= 60
            value = result
        assert p.answer == str(value)
    mean_words = sum(len(p.question.split()) for p in problems) / len(problems)
    assert 15 <= mean_words <= 25
    ops = {_STEP_RE.fullmatch(s).group(2) for p in problems for s in p.steps}
    assert ops == {"+", "-", "*", "/"}


def test_splits_disjoint_and_deterministic():
    splits = synthetic_splits(300, 50, 60, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "val": 50, "test": 60}
    questions = {k: {p.question for p in v} for k, v in splits.items()}
    assert not questions["train"] & questions["val"]
    assert not questions["train"] & questions["test"]
    assert not questions["val"] & questions["test"]
    assert splits["train"][12].id == "syn-train-00012"
    assert splits == synthetic_splits(300, 50, 60, seed=1)
    # The test set does not move when only the training size changes.
    assert synthetic_splits(10, 50, 60, seed=1)["test"] == splits["test"]


def test_one_split_equals_its_part_of_all_splits():
    # synthetic_split generates only the stream prefix a split needs; the problems must not change
    splits = synthetic_splits(120, 30, 40, seed=2)
    for split, problems in splits.items():
        for limit in (None, 0, 7, len(problems), len(problems) + 5):
            want = problems if limit is None else problems[:limit]
            assert synthetic_split(split, 120, 30, 40, seed=2, limit=limit) == want, (split, limit)
    assert synthetic_split("val", 120, 30, 40, seed=3) != splits["val"]
