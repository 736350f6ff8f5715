"""Keyed dropout on attention probabilities, for MC-dropout (paper Sec. 3.1, epistemic sampling).

transformers applies attention dropout inside its attention functions (``F.dropout`` on the
softmax output when the module is in training mode), not through an ``nn.Dropout`` module, so
a forward hook cannot reach it. latentlit registers its own attention implementation,
``latentlit_keyed_eager``: eager attention (softmax(QK^T * scale + mask) V) that, between the
softmax and the product with V, calls a per-module function the sampler installs. Outside a
sampler's scope that function is absent or returns the probabilities unchanged, so the model
computes exactly eager attention.

Works for any model whose attention modules call ``ALL_ATTENTION_FUNCTIONS`` (GPT-2, Llama, ...);
grouped-query attention is expanded via the module's ``num_key_value_groups``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from latentlit.models.prefix_attention import prefix_of, shared_prefix_attention

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

    With a shared prefix in ``kwargs`` (``latentlit.models.prefix_attention``) the keys are the
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
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

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
