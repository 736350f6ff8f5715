"""Attention over a shared prefix plus per-row suffixes (shared prefill without N copies).

With shared prefill, the N trajectories of a question read the same prompt keys/values. Instead
of copying them N times (memory N x prompt length), :class:`~latentlit.models.cache.SharedPrefixCache`
stores them once per question and :func:`shared_prefix_attention` computes, for each row,

    softmax([q K_prefix^T, q K_suffix^T] * scale + mask) [V_prefix; V_suffix]

with one batched product per question for the prefix (its G rows' queries stacked against one
K_prefix) and a per-row product for the suffix. The logits, mask, softmax and probabilities are
those of eager attention over the concatenated keys, so the result equals the copying path to
float tolerance (summation order differs).

It is reached through the model's attention interface: :func:`use_prefix_attention` switches a
model from ``sdpa`` (or ``eager``) to a registered wrapper that runs the original function
unchanged unless the forward pass carries a shared prefix (``PREFIX_KWARG``), so every other
forward pass computes exactly what it did before. latentlit's keyed eager attention
(MC-dropout ``attention_p``) handles the prefix itself.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from latentlit.models.cache import PREFIX_KWARG, SharedPrefixCache

WRAPPED = {"sdpa": "latentlit_prefix_sdpa", "eager": "latentlit_prefix_eager"}
"""Attention implementations that can be wrapped, and the wrapper's registered name."""


def shared_prefix_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_key: torch.Tensor,
                            prefix_value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float,
                            probs_hook: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of R = Q * G rows over their group's prefix and their own suffix.

    Args:
        query: (R, H, S, Dh). key, value: (R, H, Ls, Dh) suffix (heads already expanded for GQA).
        prefix_key, prefix_value: (Q, H, Lp, Dh); rows ``q*G .. q*G+G-1`` read prefix ``q``.
        attention_mask: over the Lp + Ls keys, prefix first: additive float (R, 1, S, Lp+Ls), bool
            (True = attend) of that shape, or None (every key visible; causal within the
            suffix when S > 1).
        scaling: logit scale.
        probs_hook: optional ``(probs (R, H, S, Lp+Ls), additive mask or None) -> probs``
            (MC-dropout on attention probabilities), applied after the softmax.

    Returns:
        (R, S, H, Dh) attention output and the (R, H, S, Lp+Ls) probabilities.

    Raises:
        ValueError: R not a multiple of Q, or a mask whose last dimension is shorter than Lp+Ls.
    """
    rows, heads, s, dh = query.shape
    q_pre, lp = prefix_key.shape[0], prefix_key.shape[-2]
    ls = key.shape[-2]
    if rows % q_pre:
        raise ValueError(f"shared prefix attention: {rows} rows for {q_pre} prefixes")
    g = rows // q_pre
    # (Q, H, G*S, Dh): a question's G rows share one K_prefix, so their queries form one product
    stacked = query.view(q_pre, g, heads, s, dh).transpose(1, 2).reshape(q_pre, heads, g * s, dh)
    pre = torch.matmul(stacked, prefix_key.transpose(-1, -2))
    pre = pre.view(q_pre, heads, g, s, lp).transpose(1, 2).reshape(rows, heads, s, lp)
    logits = torch.cat([pre, torch.matmul(query, key.transpose(-1, -2))], dim=-1) * scaling
    additive = None
    if attention_mask is None and s > 1:
        attention_mask = torch.ones(s, lp + ls, dtype=torch.bool, device=query.device).tril(lp + ls - s)[None, None]
    if attention_mask is not None:
        if attention_mask.shape[-1] < lp + ls:
            raise ValueError(f"shared prefix attention: mask over {attention_mask.shape[-1]} keys, expected {lp + ls}")
        mask = attention_mask[..., : lp + ls]
        if mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device).masked_fill_(
                ~mask, torch.finfo(logits.dtype).min)
        else:
            additive = mask
        logits = logits + additive
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(value.dtype)
    if probs_hook is not None:
        probs = probs_hook(probs, additive)
    p_pre = probs[..., :lp].reshape(q_pre, g, heads, s, lp).transpose(1, 2).reshape(q_pre, heads, g * s, lp)
    out = torch.matmul(p_pre, prefix_value).view(q_pre, heads, g, s, dh).transpose(1, 2).reshape(rows, heads, s, dh)
    out = out + torch.matmul(probs[..., lp:], value)
    return out.transpose(1, 2).contiguous(), probs


def prefix_of(module: nn.Module, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The shared prefix keys/values (heads expanded for GQA) of ``module``'s layer, when the
    forward pass carries a :class:`SharedPrefixCache`; else None."""
    cache = kwargs.get(PREFIX_KWARG)
    if cache is None:
        return None
    if not isinstance(cache, SharedPrefixCache):
        raise TypeError(f"{PREFIX_KWARG} must be a SharedPrefixCache, got {type(cache).__name__}")
    layer = cache.layers[module.layer_idx]
    keys, values = layer.prefix_keys, layer.prefix_values
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    return keys, values


def _wrap(original: Callable) -> Callable:
    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs):
        prefix = prefix_of(module, kwargs)
        if prefix is None:
            return original(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        if dropout and module.training:
            raise ValueError("shared prefix attention runs at inference only (attention dropout is on)")
        groups = getattr(module, "num_key_value_groups", 1)
        if groups > 1:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        return shared_prefix_attention(query, key, value, *prefix, attention_mask, scaling)

    return attention


def supports_prefix_attention(lm: nn.Module) -> bool:
    """Whether :func:`use_prefix_attention` can serve ``lm`` (its attention implementation is
    ``sdpa``, ``eager``, one of latentlit's own, and it does not use GPT-2's reordered upcast)."""
    from latentlit.sampling.attention_dropout import IMPLEMENTATION

    impl = lm.config._attn_implementation
    if getattr(lm.config, "reorder_and_upcast_attn", False):
        return False
    return impl in WRAPPED or impl in WRAPPED.values() or impl == IMPLEMENTATION


def use_prefix_attention(lm: nn.Module) -> None:
    """Switch ``lm`` to an attention implementation that reads a shared prefix (idempotent;
    ``sdpa`` -> ``latentlit_prefix_sdpa``, ``eager`` -> ``latentlit_prefix_eager``; latentlit's
    keyed eager attention is kept). Without a shared prefix the wrapper calls the original
    function and mask builder, so outputs are unchanged.

    Raises:
        ValueError: an implementation that cannot be wrapped (e.g. flash attention kernels).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    impl = lm.config._attn_implementation
    if impl in WRAPPED.values() or (impl not in WRAPPED and supports_prefix_attention(lm)):
        return
    if not supports_prefix_attention(lm):
        raise ValueError(f"shared-prefix KV needs sdpa or eager attention, the model uses {impl!r}")
    name = WRAPPED[impl]
    AttentionInterface.register(name, _wrap(AttentionInterface._global_mapping[impl] if impl != "eager" else _model_eager))
    AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[impl])
    lm.set_attn_implementation(name)


def _model_eager(module: nn.Module, *args, **kwargs):
    # transformers has no global "eager" function: each model's module defines its own
    # eager_attention_forward, which is what the model ran before the switch
    import sys

    from latentlit.sampling.attention_dropout import keyed_eager_attention

    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", keyed_eager_attention)
    return fn(module, *args, **kwargs)
