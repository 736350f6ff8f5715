"""COCONUT curriculum batches (Hao et al. 2024, Sec. 3, "Training procedure").

Stage 0 is explicit chain of thought. At stage k the first k reasoning steps are replaced by
k*c latent positions (c = thoughts per step); a problem with fewer than k steps loses all of
them but still gets k*c latents, so every row of a batch has the same number of latents and,
with left-padded prompts, the latent positions line up across rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentlit.data.padding import left_pad, right_pad
from latentlit.data.problem import Problem

ANSWER_MARKER = "###"


@dataclass(frozen=True)
class TokenizedProblem:
    """Token ids of one problem: ``prompt`` (ends with ``<|start-latent|>``), one list per
    reasoning step, and ``answer`` (``### <answer>`` followed by eos)."""

    prompt: tuple[int, ...]
    steps: tuple[tuple[int, ...], ...]
    answer: tuple[int, ...]


def tokenize_problem(problem: Problem, tokenizer, prompt_template: str, eos_id: int, add_bos: bool = False) -> TokenizedProblem:
    """Tokenize ``problem`` for curriculum training (steps and answer get a leading space so
    byte-level BPE tokenizers see word starts; word-level ones ignore it)."""
    enc = lambda text: tuple(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompt = tuple(tokenizer(prompt_template.format(question=problem.question), add_special_tokens=add_bos)["input_ids"])
    steps = tuple(enc(" " + s) for s in problem.steps)
    return TokenizedProblem(prompt, steps, enc(f" {ANSWER_MARKER} {problem.answer}") + (eos_id,))


def stage_rows(example: TokenizedProblem, stage: int, thoughts_per_step: int, end_latent_id: int,
               dynamic: bool = False) -> tuple[list[int], int, list[int]]:
    """(prompt ids, number of latents, suffix ids) of one example at ``stage``.

    The suffix is ``end_latent_id``, the steps not replaced, then the answer. The number of
    latents is k*c, or with ``dynamic`` min(k, number of steps)*c: a problem thinks only for the
    steps it has (what a dynamic latent stop learns to do).
    """
    replaced = min(stage, len(example.steps))
    kept = example.steps[replaced:]
    suffix = [end_latent_id] + [t for step in kept for t in step] + list(example.answer)
    return list(example.prompt), (replaced if dynamic else stage) * thoughts_per_step, suffix


def build_stage_batch(examples: list[TokenizedProblem], stage: int, thoughts_per_step: int, end_latent_id: int,
                      pad_id: int, device: torch.device | str = "cpu", dynamic: bool = False) -> dict:
    """Batch for :meth:`LatentBackbone.forward_train` at curriculum ``stage``.

    Args:
        dynamic: each row gets min(k, its number of steps)*c latents (see :func:`stage_rows`).

    Returns:
        dict with ``prompt_ids``/``prompt_mask`` (B, L) left-padded, ``num_latents`` (int k*c,
        or with ``dynamic`` a (B,) long tensor), ``suffix_ids``/``suffix_mask`` (B, S) right-padded.

    Raises:
        ValueError: negative stage or thoughts per step.
    """
    if stage < 0 or thoughts_per_step < 0:
        raise ValueError(f"stage ({stage}) and thoughts_per_step ({thoughts_per_step}) must be >= 0")
    rows = [stage_rows(e, stage, thoughts_per_step, end_latent_id, dynamic) for e in examples]
    prompt_ids, prompt_mask = left_pad([r[0] for r in rows], pad_id, device)
    suffix_ids, suffix_mask = right_pad([r[2] for r in rows], pad_id, device)
    num_latents = torch.tensor([r[1] for r in rows], dtype=torch.long, device=device) if dynamic else stage * thoughts_per_step
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "num_latents": num_latents,
            "suffix_ids": suffix_ids, "suffix_mask": suffix_mask}
