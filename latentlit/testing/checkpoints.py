"""Tiny, randomly initialised checkpoints in the layouts of the released latent reasoning models.

The released COCONUT / CODI / CoLaR checkpoints are transformers ``save_pretrained``
directories; these writers produce the same files (``config.json`` with the extra keys,
``model.safetensors`` holding the LM *and* the latent-head tensors under their released names,
tokenizer files) at toy size (2 layers, width 32, a byte-level BPE vocabulary of ~260 tokens),
so loaders and end-to-end runs can be tested offline. Each writer takes well under a second
and is deterministic: the same ``seed`` gives the same bytes of weights.

Layouts (see :mod:`latentlit.models.checkpoints` for how they are read):

* COCONUT (Hao et al., 2024): ``GPT2LMHeadModel``; config keys ``latent_id``,
  ``latent_start_id``, ``latent_end_id``, ``target_id``; ``<|start-latent|>``,
  ``<|end-latent|>``, ``<|latent|>`` added (as ordinary added tokens, like COCONUT's
  ``tokenizer.add_tokens``) after ``<|endoftext|>``.
* CODI (Shen et al., 2025): as COCONUT plus config keys ``projector``, ``projector_dropout``,
  ``projector_hidden_size`` and tensors ``projector.1.*`` (Linear d->h), ``projector.3.*``
  (Linear h->d), ``projector.4.*`` (LayerNorm d).
* CoLaR (Tan et al., 2025): ``LlamaForCausalLM`` (tied embeddings, like Llama-3.2-1B) plus
  config keys ``latent_intermediate_size``, ``latent_embedding_std`` and tensors
  ``lt_head.fc.0.*`` (Linear d->i), ``lt_head.fc.2.*`` (Linear i->i), ``lt_head.fc.3.*``
  (LayerNorm i), ``lt_head.mean.*`` (Linear i->d). The tokenizer adds a BOS through its
  post-processor (as Llama-3's does), has no latent tokens, and encodes ``###`` as one token.
  The random model does not predict ``###`` on its own, so its latent phase runs to the cap.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT

WIDTH = 32
LAYERS = 2
HEADS = 4
POSITIONS = 512
PROJECTOR_HIDDEN = 48
COLAR_INTERMEDIATE = 48
COLAR_STD = 0.018
GPT2_EOS = "<|endoftext|>"
LLAMA_BOS = "<|begin_of_text|>"
LLAMA_EOS = "<|end_of_text|>"
# Merges so that "###" (the COCONUT answer marker and the CoLaR latent delimiter) is one token.
_MERGES = [("#", "#"), ("##", "#")]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _byte_bpe(specials: list[str], *, bos: str | None = None) -> Tokenizer:
    """A byte-level BPE (ids 0..255 = bytes in order, then ``##``, ``###``, then ``specials``)."""
    alphabet = _bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    for a, b in _MERGES:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(_MERGES)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    return backend


def _gpt2_tokenizer() -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe([GPT2_EOS]), bos_token=GPT2_EOS, eos_token=GPT2_EOS, clean_up_tokenization_spaces=False
    )
    # COCONUT's order: start, end, latent; ordinary added tokens, not special ones.
    tok.add_tokens([START_LATENT, END_LATENT, LATENT])
    return tok


def _llama_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe([LLAMA_BOS, LLAMA_EOS], bos=LLAMA_BOS),
        bos_token=LLAMA_BOS,
        eos_token=LLAMA_EOS,
        clean_up_tokenization_spaces=False,
    )


def _randomize_norm(module: torch.nn.LayerNorm, gen: torch.Generator) -> None:
    # Non-trivial affine parameters, so a swapped or dropped LayerNorm cannot go unnoticed.
    with torch.no_grad():
        module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


def _head_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _write(path: Path, lm, tokenizer, extra_config: dict, head: dict[str, torch.Tensor], sharded: bool) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    weights_file = path / "model.safetensors"
    lm_tensors = load_file(str(weights_file))
    if sharded:
        weights_file.unlink()
        keys = sorted(lm_tensors)
        shards = {
            "model-00001-of-00002.safetensors": {k: lm_tensors[k] for k in keys[: len(keys) // 2]},
            "model-00002-of-00002.safetensors": {**{k: lm_tensors[k] for k in keys[len(keys) // 2 :]}, **head},
        }
        weight_map = {}
        for name, tensors in shards.items():
            save_file(tensors, str(path / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in tensors})
        total = sum(t.numel() * t.element_size() for s in shards.values() for t in s.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    else:
        save_file({**lm_tensors, **head}, str(weights_file), metadata={"format": "pt"})
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config.update(extra_config)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def _gpt2(tokenizer: PreTrainedTokenizerFast, seed: int) -> GPT2LMHeadModel:
    eos = tokenizer.convert_tokens_to_ids(GPT2_EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=POSITIONS, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
        bos_token_id=eos, eos_token_id=eos,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def _coconut_keys(tokenizer: PreTrainedTokenizerFast) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "latent_id": ids(LATENT),
        "latent_start_id": ids(START_LATENT),
        "latent_end_id": ids(END_LATENT),
        "target_id": ids("###"),
    }


def write_tiny_coconut(path: str | Path, *, seed: int = 0, sharded: bool = False) -> Path:
    """Write a random tiny COCONUT checkpoint (GPT-2, identity latent) to directory ``path``.

    Args:
        seed: weights seed (the global RNG state is restored afterwards).
        sharded: write ``model.safetensors.index.json`` with two shards instead of one file.

    Returns:
        ``Path(path)``.
    """
    with torch.random.fork_rng(devices=[]):
        tokenizer = _gpt2_tokenizer()
        lm = _gpt2(tokenizer, seed)
        return _write(Path(path), lm, tokenizer, _coconut_keys(tokenizer), {}, sharded)


def write_tiny_codi(path: str | Path, *, seed: int = 0, sharded: bool = False) -> Path:
    """Write a random tiny CODI checkpoint (GPT-2 plus ``projector.*`` in model.safetensors).

    The projector is ``Dropout, Linear(32, 48), GELU, Linear(48, 32), LayerNorm(32)`` with
    randomised LayerNorm affine parameters. Arguments as :func:`write_tiny_coconut`.
    """
    with torch.random.fork_rng(devices=[]):
        tokenizer = _gpt2_tokenizer()
        lm = _gpt2(tokenizer, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        torch.manual_seed(seed + 2)
        projector = torch.nn.Sequential(
            torch.nn.Dropout(0.0), torch.nn.Linear(WIDTH, PROJECTOR_HIDDEN), torch.nn.GELU(),
            torch.nn.Linear(PROJECTOR_HIDDEN, WIDTH), torch.nn.LayerNorm(WIDTH),
        )
        _randomize_norm(projector[4], gen)
        extra = {
            **_coconut_keys(tokenizer),
            "projector": True,
            "projector_dropout": 0.0,
            "projector_hidden_size": PROJECTOR_HIDDEN,
        }
        return _write(Path(path), lm, tokenizer, extra, _head_tensors("projector", projector), sharded)


def write_tiny_colar(path: str | Path, *, seed: int = 0, sharded: bool = False) -> Path:
    """Write a random tiny CoLaR checkpoint (Llama with tied embeddings plus ``lt_head.*``).

    The latent head is ``fc = Linear(32, 48), GELU, Linear(48, 48), LayerNorm(48)``,
    ``mean = Linear(48, 32)``, and ``latent_embedding_std`` is 0.018. Arguments as
    :func:`write_tiny_coconut`.
    """
    with torch.random.fork_rng(devices=[]):
        tokenizer = _llama_tokenizer()
        ids = tokenizer.convert_tokens_to_ids
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=POSITIONS,
            tie_word_embeddings=True, bos_token_id=ids(LLAMA_BOS), eos_token_id=ids(LLAMA_EOS),
        )
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(config).eval()
        with torch.no_grad():
            # With tied embeddings a random model's last hidden state stays close to its input
            # embedding, so "###" would be the greedy token right after the prompt's "###" and
            # the latent phase would end at once; a smaller "###" row lets it run.
            lm.get_input_embeddings().weight[ids("###")] *= 0.3
        gen = torch.Generator().manual_seed(seed + 1)
        torch.manual_seed(seed + 2)
        fc = torch.nn.Sequential(
            torch.nn.Linear(WIDTH, COLAR_INTERMEDIATE), torch.nn.GELU(),
            torch.nn.Linear(COLAR_INTERMEDIATE, COLAR_INTERMEDIATE), torch.nn.LayerNorm(COLAR_INTERMEDIATE),
        )
        _randomize_norm(fc[3], gen)
        mean = torch.nn.Linear(COLAR_INTERMEDIATE, WIDTH)
        head = {**_head_tensors("lt_head.fc", fc), **_head_tensors("lt_head.mean", mean)}
        extra = {"latent_intermediate_size": COLAR_INTERMEDIATE, "latent_embedding_std": COLAR_STD}
        return _write(Path(path), lm, tokenizer, extra, head, sharded)


def write_tiny_released_latentrm(path: str | Path, *, seed: int = 0) -> Path:
    """Write a random tiny LatentRM in the released layout: GPT-2 ``config.json``, weights
    ``transformer.*`` + ``classifier.weight``/``classifier.bias`` (Linear d->1) in
    model.safetensors, and the COCONUT tokenizer (with the latent tokens). No latentlit files.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        tokenizer = _gpt2_tokenizer()
        lm = _gpt2(tokenizer, seed)
        torch.manual_seed(seed + 3)
        classifier = torch.nn.Linear(WIDTH, 1)
        path.mkdir(parents=True, exist_ok=True)
        lm.config.save_pretrained(path)
        tokenizer.save_pretrained(path)
        tensors = {f"transformer.{k}": v.detach().clone().contiguous() for k, v in lm.transformer.state_dict().items()}
        tensors.update(_head_tensors("classifier", classifier))
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
