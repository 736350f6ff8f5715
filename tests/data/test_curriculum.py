"""COCONUT curriculum batches on hand-made token ids."""

from __future__ import annotations

import pytest

from latentlit.data.curriculum import TokenizedProblem, build_stage_batch, stage_rows

END, PAD = 5, 0
A = TokenizedProblem(prompt=(10, 11, 3), steps=((20, 21), (22, 23), (24,)), answer=(30, 31, 1))
B = TokenizedProblem(prompt=(12, 3), steps=((40,),), answer=(32, 1))


@pytest.mark.parametrize(
    "stage, c, latents, suffix",
    [
        (0, 1, 0, [END, 20, 21, 22, 23, 24, 30, 31, 1]),
        (1, 1, 1, [END, 22, 23, 24, 30, 31, 1]),
        (2, 1, 2, [END, 24, 30, 31, 1]),
        (3, 1, 3, [END, 30, 31, 1]),
        (3, 2, 6, [END, 30, 31, 1]),
        (1, 2, 2, [END, 22, 23, 24, 30, 31, 1]),
        (5, 1, 5, [END, 30, 31, 1]),  # past the last step: all steps gone, still k*c latents
    ],
)
def test_stage_rows(stage, c, latents, suffix):
    prompt, n, suf = stage_rows(A, stage, c, END)
    assert prompt == [10, 11, 3]
    assert n == latents
    assert suf == suffix


def test_stage0_batch():
    b = build_stage_batch([A, B], 0, 1, END, PAD)
    assert b["num_latents"] == 0
    assert b["prompt_ids"].tolist() == [[10, 11, 3], [PAD, 12, 3]]
    assert b["prompt_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert b["suffix_ids"].tolist() == [[END, 20, 21, 22, 23, 24, 30, 31, 1], [END, 40, 32, 1, PAD, PAD, PAD, PAD, PAD]]
    assert b["suffix_mask"].tolist() == [[1] * 9, [1, 1, 1, 1, 0, 0, 0, 0, 0]]


def test_stage1_batch():
    b = build_stage_batch([A, B], 1, 1, END, PAD)
    assert b["num_latents"] == 1
    assert b["prompt_ids"].tolist() == [[10, 11, 3], [PAD, 12, 3]]
    assert b["prompt_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert b["suffix_ids"].tolist() == [[END, 22, 23, 24, 30, 31, 1], [END, 32, 1, PAD, PAD, PAD, PAD]]
    assert b["suffix_mask"].tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("c", [1, 2])
def test_last_stage_batch(c):
    b = build_stage_batch([B, A], 3, c, END, PAD)
    assert b["num_latents"] == 3 * c
    assert b["prompt_ids"].tolist() == [[PAD, 12, 3], [10, 11, 3]]
    assert b["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert b["suffix_ids"].tolist() == [[END, 32, 1, PAD], [END, 30, 31, 1]]
    assert b["suffix_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert b["prompt_ids"].dtype == b["suffix_ids"].dtype == b["prompt_mask"].dtype


def test_negative_stage_rejected():
    with pytest.raises(ValueError, match="stage"):
        build_stage_batch([A], -1, 1, END, PAD)
    with pytest.raises(ValueError, match="thoughts_per_step"):
        build_stage_batch([A], 1, -1, END, PAD)


def test_dynamic_batch_gives_each_problem_its_own_number_of_latents():
    # stage 2: A (3 steps) gets 2*c latents, B (1 step) only 1*c, and both lose the steps replaced
    b = build_stage_batch([A, B], 2, 2, END, PAD, dynamic=True)
    assert b["num_latents"].tolist() == [4, 2]
    assert b["suffix_ids"].tolist() == [[END, 24, 30, 31, 1], [END, 32, 1, PAD, PAD]]
    assert stage_rows(B, 5, 1, END, dynamic=True)[1] == 1 and stage_rows(B, 0, 1, END, dynamic=True)[1] == 0
