"""Seeded multi-step arithmetic word problems: the embedded default task.

Problems are tiny on purpose (about 22 whitespace tokens, numbers 0..60) so a
small GPT-2 with a word-level tokenizer learns them on CPU in minutes, e.g.::

    question: "Sam has 9 books . buys 6 . loses 4 . how many ?"
    steps:    ("<< 9 + 6 = 15 >>", "<< 15 - 4 = 11 >>")
    answer:   "11"

Every token is separated by spaces so each number is a single word-level token.
"""

from __future__ import annotations

import random

from latentlit.data.problem import Problem

NAMES: tuple[str, ...] = ("Tom", "Ann", "Bob", "Eva", "Sam", "Mia", "Leo", "Zoe")
ITEMS: tuple[str, ...] = ("apples", "coins", "books", "pens", "cards", "eggs", "stones", "shells")
# Operator symbol -> (phrasings, operand range).
_OPS: dict[str, tuple[tuple[str, ...], range]] = {
    "+": (("buys",), range(2, 7)),
    "-": (("loses", "gives away"), range(2, 7)),
    "*": (("multiplies by",), range(2, 4)),
    "/": (("divides by",), range(2, 4)),
}


def _apply(op: str, value: int, k: int) -> int:
    if op == "+":
        return value + k
    if op == "-":
        return value - k
    if op == "*":
        return value * k
    return value // k


def _legal(op: str, value: int, k: int, max_value: int) -> bool:
    if op == "/":
        return value % k == 0  # exact division only
    return 0 <= _apply(op, value, k) <= max_value


def _one_problem(rng: random.Random, n_ops: int, max_value: int) -> tuple[str, tuple[str, ...], int]:
    value = rng.randint(1, max_value)
    clauses = [f"{rng.choice(NAMES)} has {value} {rng.choice(ITEMS)} ."]
    steps = []
    for _ in range(n_ops):
        # Choosing the operator first (among feasible ones) keeps * and / as
        # frequent as + and -, which plain rejection sampling would not.
        feasible = {op: [k for k in ks if _legal(op, value, k, max_value)] for op, (_, ks) in _OPS.items()}
        op = rng.choice([o for o, ks in feasible.items() if ks])
        k = rng.choice(feasible[op])
        new = _apply(op, value, k)
        clauses.append(f"{rng.choice(_OPS[op][0])} {k} .")
        steps.append(f"<< {value} {op} {k} = {new} >>")
        value = new
    clauses.append("how many ?")
    return " ".join(clauses), tuple(steps), value


def generate_problems(
    n: int,
    seed: int,
    *,
    min_ops: int = 2,
    max_ops: int = 4,
    max_value: int = 60,
    id_prefix: str = "syn",
) -> list[Problem]:
    """Generate ``n`` distinct arithmetic word problems.

    Each problem starts from a value in ``1..max_value`` and applies
    ``min_ops..max_ops`` operations: ``+k``/``-k`` with k in 2..6, ``*k`` and
    exact ``/k`` with k in 2..3; every intermediate value stays in
    ``0..max_value``. Steps look like ``"<< 10 + 9 = 19 >>"``; the answer is
    the final value as a string.

    Deterministic for a given seed (a private ``random.Random``), and a prefix
    of the output does not depend on ``n``: ``generate_problems(5, s)`` equals
    the first five of ``generate_problems(50, s)``.

    Args:
        n: Number of problems (>= 0).
        seed: Random seed.
        min_ops, max_ops: Inclusive range of the number of operations.
        max_value: Largest allowed value at any step (>= 8).
        id_prefix: Ids are ``"<id_prefix>-<5-digit index>"``.

    Returns:
        ``n`` problems with pairwise distinct questions.

    Raises:
        ValueError: Invalid arguments, or ``n`` larger than the generator can
            produce distinct questions for within a generous attempt budget.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
    if max_value < 8:
        # Below this some start values have no legal operation at all.
        raise ValueError(f"max_value must be >= 8, got {max_value}")
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise ValueError(f"could not generate {n} distinct problems (got {len(problems)}); lower n")
        question, steps, answer = _one_problem(rng, rng.randint(min_ops, max_ops), max_value)
        if question in seen:
            continue
        seen.add(question)
        problems.append(Problem(id=f"{id_prefix}-{len(problems):05d}", question=question, steps=steps, answer=str(answer)))
    return problems


SPLIT_ORDER = ("test", "val", "train")  # the order the splits are cut from one stream


def synthetic_split(split: str, n_train: int, n_val: int, n_test: int, seed: int = 0,
                    limit: int | None = None) -> list[Problem]:
    """One split of :func:`synthetic_splits` (its first ``limit`` problems), generating only the
    stream prefix it needs: the test split (cut first) costs ``n_test`` problems, not the
    ``n_train + n_val + n_test`` of all three splits (the start-up of every quickstart predict).

    Returns:
        exactly ``synthetic_splits(n_train, n_val, n_test, seed)[split][:limit]``.

    Raises:
        ValueError: unknown split, a negative size or a negative limit.
    """
    sizes = {"test": n_test, "val": n_val, "train": n_train}
    if split not in sizes:
        raise ValueError(f"split={split!r}; expected one of {SPLIT_ORDER}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"n_{name} must be >= 0, got {size}")
    start = sum(sizes[name] for name in SPLIT_ORDER[: SPLIT_ORDER.index(split)])
    count = sizes[split] if limit is None else min(limit, sizes[split])
    stream = generate_problems(start + count, seed)  # a prefix of the full stream (generate_problems)
    return [Problem(f"syn-{split}-{i:05d}", p.question, p.steps, p.answer) for i, p in enumerate(stream[start:])]


def synthetic_splits(n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict[str, list[Problem]]:
    """Deterministic train/val/test splits of synthetic problems.

    The splits are pairwise disjoint by question text. They are cut from one
    stream in the order test, val, train, so the test (and val) set for a seed
    stays the same when only ``n_train`` changes.

    Args:
        n_train, n_val, n_test: Split sizes (>= 0).
        seed: Random seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` with ids like
        ``"syn-train-00012"`` (index within the split).

    Raises:
        ValueError: A negative size (or one too large; see :func:`generate_problems`).
    """
    sizes = {"test": n_test, "val": n_val, "train": n_train}
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"n_{name} must be >= 0, got {size}")
    stream = generate_problems(sum(sizes.values()), seed)
    splits: dict[str, list[Problem]] = {}
    start = 0
    for name, size in sizes.items():
        chunk = stream[start : start + size]
        splits[name] = [Problem(f"syn-{name}-{i:05d}", p.question, p.steps, p.answer) for i, p in enumerate(chunk)]
        start += size
    return {name: splits[name] for name in ("train", "val", "test")}
