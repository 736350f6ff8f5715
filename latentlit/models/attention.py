"""latentlit's attention implementations, registered with transformers' attention interface.

**Shared prefix** (shared prefill without N copies). With shared prefill, the N trajectories of
a question read the same prompt keys/values. Instead of copying them N times (memory N x prompt
length), :class:`~latentlit.models.cache.SharedPrefixCache` stores them once per question and
:func:`shared_prefix_attention` computes, for each row,

    softmax([q K_prefix^T, q K_suffix^T] * scale + mask) [V_prefix; V_suffix]

with one batched product per question for the prefix (its G rows' queries stacked against one
K_prefix) and a per-row product for the suffix. The logits, mask, softmax and probabilities are
those of eager attention over the concatenated keys, so the result equals the copying path to
float tolerance (summation order differs). :func:`use_prefix_attention` switches a model from
``sdpa`` (or ``eager``) to a registered wrapper that runs the original function unchanged unless
the forward pass carries a shared prefix (``PREFIX_KWARG``), so every other forward pass
computes exactly what it did before.

**Keyed attention dropout** (MC-dropout's ``attention_p``, paper Sec. 3.1). transformers applies
attention dropout inside its attention functions (``F.dropout`` on the softmax output in training
mode), not through an ``nn.Dropout`` module, so a forward hook cannot reach it. latentlit
registers its own implementation, ``latentlit_keyed_eager``: eager attention (softmax(QK^T *
scale + mask) V) that, between the softmax and the product with V, calls a per-module function
(``HOOK_ATTR``) which the sampler installs (:class:`latentlit.sampling.MCDropout`); without
one it computes exactly eager attention. It handles a shared prefix itself. Works for any model
whose attention modules call ``ALL_ATTENTION_FUNCTIONS`` (GPT-2, Llama, ...); grouped-query
attention is expanded via the module's ``num_key_value_groups``.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

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
    impl = lm.config._attn_implementation
    if impl in WRAPPED.values() or (impl not in WRAPPED and supports_prefix_attention(lm)):
        return
    if not supports_prefix_attention(lm):
        raise ValueError(f"shared-prefix KV needs sdpa or eager attention, the model uses {impl!r}")
    name = WRAPPED[impl]
    AttentionInterface.register(name, _wrap(AttentionInterface._global_mapping[impl] if impl != "eager" else _model_eager))
    AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[impl])
    lm.set_attn_implementation(name)


def prefix_kwargs(lm: nn.Module, cache) -> dict:
    """Extra forward keyword arguments for a pass of ``lm`` over ``cache``: for a
    :class:`SharedPrefixCache`, ``lm`` is switched to an attention that reads the shared prefix
    (:func:`use_prefix_attention`) and the cache is handed to it as ``PREFIX_KWARG``; other caches
    need none (``{}``)."""
    if not isinstance(cache, SharedPrefixCache):
        return {}
    use_prefix_attention(lm)
    return {PREFIX_KWARG: cache}


def _model_eager(module: nn.Module, *args, **kwargs):
    # transformers has no global "eager" function: each model's module defines its own
    # eager_attention_forward, which is what the model ran before the switch
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", keyed_eager_attention)
    return fn(module, *args, **kwargs)


# ---------------------------------------------------------------------------------------- keyed dropout
IMPLEMENTATION = "latentlit_keyed_eager"
HOOK_ATTR = "_latentlit_attention_dropout"
ProbsHook = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""(probs (R, H, S, K), additive mask (R, 1, S, K) or None) -> probs of the same shape."""


def keyed_eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                          **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with a hook on the probabilities.

    Args:
        query: (R, H, S, Dh). key, value: (R, H_kv, K, Dh). attention_mask: additive (R, 1, S, K).
        scaling: logit scale (default Dh^-0.5). dropout: the model's own training-time attention
            dropout (applied with torch's generator, as transformers does, only in training mode).

    Returns:
        (R, S, H, Dh) attention output and (R, H, S, K) probabilities.

    With a shared prefix in ``kwargs`` (``latentlit.models.attention``) the keys are the
    prefix then the row's suffix, the hook sees probabilities over both.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    prefix = prefix_of(module, kwargs)
    if prefix is not None:
        if dropout and module.training:
            raise ValueError("shared prefix attention runs at inference only (attention dropout is on)")
        return shared_prefix_attention(query, key, value, *prefix, attention_mask, scaling,
                                       probs_hook=getattr(module, HOOK_ATTR, None))
    logits = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        logits = logits + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(value.dtype)
    hook: ProbsHook | None = getattr(module, HOOK_ATTR, None)
    if hook is not None:
        probs = hook(probs, attention_mask)
    if dropout and module.training:
        probs = nn.functional.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def use_keyed_attention(lm: nn.Module) -> None:
    """Switch ``lm`` (a transformers ``PreTrainedModel``) to :data:`IMPLEMENTATION`, registering
    it (and eager masks for it) with transformers on first use. Idempotent.

    Raises:
        ValueError: from transformers, if the model does not dispatch through
            ``ALL_ATTENTION_FUNCTIONS`` (no ``set_attn_implementation`` support).
    """
    AttentionInterface.register(IMPLEMENTATION, keyed_eager_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
    if lm.config._attn_implementation != IMPLEMENTATION:
        lm.set_attn_implementation(IMPLEMENTATION)


def key_positions(attention_mask: torch.Tensor | None, rows: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """(R, K) logical position of each key (0 = first real token of the row), so that keyed
    masks do not depend on how much left padding the batch added. From the additive mask's last
    query row, which under a causal mask sees every real key."""
    if attention_mask is None:
        return torch.arange(kv_len, device=device).expand(rows, kv_len)
    visible = (attention_mask[:, 0, -1, :kv_len] == 0).expand(rows, kv_len)
    return (visible.long().cumsum(-1) - 1).clamp_min(0)
