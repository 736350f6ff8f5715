"""Tiny randomly initialised latentlit backbones for tests and smoke runs (seeded, < 1 s)."""

from __future__ import annotations

from pathlib import Path

from latentlit.data.synthetic import generate_problems
from latentlit.data.tokenizer import build_word_tokenizer, problem_corpus


def tiny_backbone(num_latents: int = 3, n_layer: int = 2, n_embd: int = 32, dropout: float = 0.1, seed: int = 0):
    """A random GPT-2 latent backbone (word tokenizer over 300 synthetic problems)."""
    from latentlit.lit.backbone_module import build_gpt2_backbone

    tok = build_word_tokenizer(problem_corpus(generate_problems(300, 123)))
    arch = {"n_layer": n_layer, "n_embd": n_embd, "n_head": 2, "resid_pdrop": dropout, "embd_pdrop": dropout,
            "attn_pdrop": dropout, "n_positions": 256}
    return build_gpt2_backbone(tok, arch, num_latents, "{question} <|start-latent|>", "coconut", seed=seed).eval()


def write_tiny_backbone(path: str | Path, **kwargs) -> Path:
    """Save :func:`tiny_backbone` to ``path`` and return it."""
    tiny_backbone(**kwargs).save_pretrained(path)
    return Path(path)


def write_numeric_backbone(path: str | Path, seed: int = 1, **kwargs) -> Path:
    """:func:`tiny_backbone` whose untied LM head scores number tokens only, saved to ``path``:
    every trajectory answers with numbers (``answer_format: last_number``) and the answers vary
    with the sampler's noise, so votes, coverage and stopping rules take non-trivial values."""
    import torch

    bb = tiny_backbone(**kwargs)
    tok = bb.tokenizer
    numbers = sorted(i for t, i in tok.get_vocab().items() if t.isdigit())
    head = torch.zeros(len(tok), bb.hidden_size)
    head[numbers] = torch.randn(len(numbers), bb.hidden_size, generator=torch.Generator().manual_seed(seed))
    bb.lm.config.tie_word_embeddings = False
    bb.lm.lm_head.weight = torch.nn.Parameter(head)
    bb.save_pretrained(path)
    return Path(path)
