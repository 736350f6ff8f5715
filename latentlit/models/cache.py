"""A KV cache that grows in place, for inference.

transformers' ``DynamicCache`` concatenates every new key/value onto the old ones, which copies
the whole cache at every decoding step: with N samples of a long prompt that copy was 30% of the
time of a GPT-2-small latent loop on CPU. :class:`LatentCache` keeps the same ``Cache`` interface
(so the models' mask and position logic is unchanged) but writes each step into preallocated
room and hands out views of the filled part; it grows by half when full.

In-place writes would break autograd through the cache, so training keeps ``DynamicCache``
(:meth:`LatentBackbone.new_cache` chooses by ``torch.is_grad_enabled()``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

HEADROOM = 16  # room for T latents and a short answer before the first regrowth


class PreallocatedLayer(DynamicLayer):
    """One layer's keys/values (B, heads, S, head_dim), stored in a buffer with spare room."""

    def __init__(self):
        super().__init__()
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0

    def _reserve(self, like_k: torch.Tensor, like_v: torch.Tensor, need: int) -> None:
        cap = max(need + HEADROOM, int(need * 1.5))
        k = like_k.new_empty(*like_k.shape[:-2], cap, like_k.shape[-1])
        v = like_v.new_empty(*like_v.shape[:-2], cap, like_v.shape[-1])
        if self._len:
            k[..., : self._len, :].copy_(self._k[..., : self._len, :])
            v[..., : self._len, :].copy_(self._v[..., : self._len, :])
        self._k, self._v = k, v

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._len + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            self._reserve(key_states, value_states, end)
        self._k[..., self._len:end, :].copy_(key_states)
        self._v[..., self._len:end, :].copy_(value_states)
        self._len = end
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values


class LatentCache(DynamicCache):
    """``DynamicCache`` with :class:`PreallocatedLayer` layers.

    Args:
        data: optional per-layer (keys, values) to start from (copied), e.g. the selected rows of
            another cache when a state is forked for rollouts or beam search.
    """

    def __init__(self, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        Cache.__init__(self, layer_class_to_replicate=PreallocatedLayer)
        for keys, values in data or []:
            layer = PreallocatedLayer()
            layer.update(keys, values)
            self.layers.append(layer)

    def select_rows(self, index: torch.Tensor) -> "LatentCache":
        """A new cache holding rows ``index`` ((K,) long, repeats allowed) in that order, with its
        own storage (a fork must not write into its parent)."""
        return LatentCache([(layer.keys[index], layer.values[index]) for layer in self.layers])
