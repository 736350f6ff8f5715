"""Tiny randomly initialised latentlit backbones for tests and smoke runs (seeded, < 1 s)."""

from __future__ import annotations

from pathlib import Path

from latentlit.data.synthetic import generate_problems
from latentlit.data.tokenizer import build_word_tokenizer, problem_corpus
from latentlit.models.checkpoints import save_backbone


def tiny_backbone(num_latents: int = 3, n_layer: int = 2, n_embd: int = 32, dropout: float = 0.1, seed: int = 0):
    """A random GPT-2 latent backbone (word tokenizer over 300 synthetic problems)."""
    from latentlit.lit.backbone_module import build_gpt2_backbone

    tok = build_word_tokenizer(problem_corpus(generate_problems(300, 123)))
    arch = {"n_layer": n_layer, "n_embd": n_embd, "n_head": 2, "resid_pdrop": dropout, "embd_pdrop": dropout,
            "attn_pdrop": dropout, "n_positions": 256}
    return build_gpt2_backbone(tok, arch, num_latents, "{question} <|start-latent|>", "coconut", seed=seed).eval()


def write_tiny_backbone(path: str | Path, **kwargs) -> Path:
    """Save :func:`tiny_backbone` to ``path`` and return it."""
    save_backbone(tiny_backbone(**kwargs), path)
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
    save_backbone(bb, path)
    return Path(path)


def tiny_llama_backbone(max_latents: int = 4, n_embd: int = 32, seed: int = 0, stop_scale: float = 3.0):
    """A random Llama latent backbone with a CoLaR-style dynamic stop (the latent phase ends when
    the LM head's greedy token is ``<|end-latent|>``, at most ``max_latents`` steps), over the
    same word tokenizer as :func:`tiny_backbone`.

    A random LM head almost never picks the stop token, so its row is scaled by ``stop_scale``:
    at the default 3.0, AGN (sigma 1) trajectories stop after 1..4 latents; at 4.0 some stop
    before the first latent (length 0).
    """
    import torch

    from latentlit.lit.backbone_module import build_backbone

    tok = build_word_tokenizer(problem_corpus(generate_problems(300, 123)))
    arch = {"model_type": "llama", "hidden_size": n_embd, "intermediate_size": 2 * n_embd, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
    backbone = build_backbone(tok, arch, max_latents, "{question} <|start-latent|>", "coconut", seed=seed, dynamic_stop=True)
    with torch.no_grad():
        backbone.lm.get_output_embeddings().weight[backbone.latent_config.latent_stop_id] *= stop_scale
    return backbone.eval()


def write_tiny_llama_backbone(path: str | Path, **kwargs) -> Path:
    """Save :func:`tiny_llama_backbone` to ``path`` and return it."""
    save_backbone(tiny_llama_backbone(**kwargs), path)
    return Path(path)
