"""A KV cache that grows in place, for inference.

transformers' ``DynamicCache`` concatenates every new key/value onto the old ones, which copies
the whole cache at every decoding step: with N samples of a long prompt that copy was 30% of the
time of a GPT-2-small latent loop on CPU. :class:`LatentCache` keeps the same ``Cache`` interface
(so the models' mask and position logic is unchanged) but writes each step into preallocated
room and hands out views of the filled part; it grows by half when full.

In-place writes would break autograd through the cache, so training keeps ``DynamicCache``
(:meth:`LatentBackbone.prefill` chooses by ``torch.is_grad_enabled()``).

:class:`SharedPrefixCache` holds a prompt's keys/values once for the N trajectories that share
it (shared prefill) and only each trajectory's own suffix (latent steps, answer tokens) per row;
the attention over both is ``latentlit.models.attention``. Memory then grows with N by
the suffix alone: at T = 6 and 8 answer tokens that is 14 positions per trajectory instead of
the prompt's ~60-110 plus 14.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

PREFIX_KWARG = "latentlit_shared_prefix"
"""Keyword the backbone passes to the transformer's forward with a :class:`SharedPrefixCache`;
transformers hands it on to the cache's ``update`` and to the attention function."""

HEADROOM = 16  # room for T latents and a short answer before the first regrowth


class PreallocatedLayer(DynamicLayer):
    """One layer's keys/values (B, heads, S, head_dim), stored in a buffer with spare room.

    Args:
        room: positions to reserve beyond the first write (e.g. T latents + answer tokens still
            to come); default: ``HEADROOM`` or half the first write, whichever is larger. Later
            regrowth always adds half.
    """

    def __init__(self, room: int | None = None):
        super().__init__()
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0
        self._room = room

    def _reserve(self, like_k: torch.Tensor, like_v: torch.Tensor, need: int) -> None:
        if self._k is None and self._room is not None:
            cap = need + self._room
        else:
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

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Take buffers (B, heads, capacity, head_dim) whose first ``length`` positions are filled
        (no copy)."""
        self.lazy_initialization(keys, values)
        self._k, self._v, self._len = keys, values, length
        self.keys, self.values = keys[..., :length, :], values[..., :length, :]


class LatentCache(DynamicCache):
    """``DynamicCache`` with :class:`PreallocatedLayer` layers.

    Args:
        data: optional per-layer (keys, values) to start from (copied), e.g. the selected rows of
            another cache when a state is forked for rollouts or beam search.
        room: positions to reserve after the first write of each layer (see
            :class:`PreallocatedLayer`).
    """

    def __init__(self, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None, room: int | None = None):
        Cache.__init__(self, layer_class_to_replicate=lambda: PreallocatedLayer(room))
        for keys, values in data or []:
            layer = PreallocatedLayer(room)
            layer.update(keys, values)
            self.layers.append(layer)

    @classmethod
    def from_buffers(cls, buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> "LatentCache":
        """A cache over per-layer buffers (B, heads, capacity, head_dim) whose first ``length``
        positions are filled; the buffers are used in place."""
        cache = cls()
        for keys, values in buffers:
            layer = PreallocatedLayer()
            layer.adopt(keys, values, length)
            cache.layers.append(layer)
        return cache

    def select_rows(self, index: torch.Tensor) -> "LatentCache":
        """A new cache holding rows ``index`` ((K,) long, repeats allowed) in that order, with its
        own storage (a fork must not write into its parent)."""
        return LatentCache([(layer.keys[index], layer.values[index]) for layer in self.layers])

    def shared_by(self, group: int, room: int | None = None) -> "SharedPrefixCache":
        """A :class:`SharedPrefixCache` whose prefix q is row q of this cache, read in place (no
        copy) by ``group`` rows each; ``room``: suffix positions to reserve."""
        return SharedPrefixCache([(layer.keys, layer.values) for layer in self.layers], group, room=room)


class SharedPrefixLayer(PreallocatedLayer):
    """One layer of a :class:`SharedPrefixCache`: the prefix keys/values (Q, heads, Lp, head_dim),
    read-only and shared by consecutive groups of rows, and the rows' own suffix (R, heads, Ls,
    head_dim) in a preallocated buffer (``keys`` / ``values`` are the suffix)."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, room: int | None = None):
        super().__init__(room)
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values

    def _reserve(self, like_k: torch.Tensor, like_v: torch.Tensor, need: int) -> None:
        if self._k is None and self._room is not None:  # the suffix's whole capacity is `room`
            self._room = max(0, self._room - need)
        super()._reserve(like_k, like_v, need)

    @property
    def prefix_length(self) -> int:
        return self.prefix_keys.shape[-2]

    @property
    def suffix_length(self) -> int:
        return self._len

    def get_seq_length(self) -> int:
        return self.prefix_length + self._len


class SharedPrefixCache(LatentCache):
    """KV cache of R = Q * G rows in which rows ``q*G .. q*G+G-1`` share prefix ``q``.

    The prefix (e.g. a question's prompt, left-padded to the longest prompt of the batch) is
    stored once per question; each row stores only what it appends (its suffix). The attention
    mask of a row spans prefix then suffix positions, exactly as the copied layout would. Only
    attention functions that know the layout may read it: the backbone passes the cache as
    ``PREFIX_KWARG`` to the transformer, and :meth:`update` refuses to run without it (an
    attention that silently ignored the prefix would give wrong results).

    Args:
        prefix: per-layer (keys, values), each (Q, heads_kv, Lp, head_dim); never written.
        group: G, rows per prefix.
        room: suffix positions to reserve (T latents + answer tokens).
        suffix: optional per-layer (keys, values) (R, heads_kv, Ls, head_dim) to start from (copied).

    Raises:
        ValueError: layers with different prefix lengths, or group < 1.
    """

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], group: int, room: int | None = None,
                 suffix: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        Cache.__init__(self, layers=[SharedPrefixLayer(k, v, room) for k, v in prefix])
        if group < 1:
            raise ValueError(f"SharedPrefixCache group must be >= 1, got {group}")
        if len({k.shape[-2] for k, _ in prefix}) > 1:
            raise ValueError("SharedPrefixCache: every layer's prefix must have the same length")
        self.group = int(group)
        for layer, (k, v) in zip(self.layers, suffix or []):
            layer.update(k, v)

    @property
    def prefixes(self) -> int:
        """Q, the number of prefixes."""
        return self.layers[0].prefix_keys.shape[0] if self.layers else 0

    @property
    def rows(self) -> int:
        """R = Q * G."""
        return self.prefixes * self.group

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if (kwargs.get("kwargs") or {}).get(PREFIX_KWARG) is not self:
            raise RuntimeError("a SharedPrefixCache must be run through LatentBackbone (its attention reads the shared "
                               "prefix); this forward pass did not pass it to the attention function")
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def owners(self, device: torch.device | None = None) -> torch.Tensor:
        """(R,) long, the prefix of each row."""
        return torch.arange(self.prefixes, device=device).repeat_interleave(self.group)

    def select_rows(self, index: torch.Tensor) -> LatentCache:
        """Rows ``index`` ((K,) long, repeats allowed) in that order, in a new cache. When the
        selected rows again form consecutive equal-size groups with one prefix each (forks of
        whole questions, e.g. ``repeat_interleave`` or the rows of kept questions), the result
        shares the (selected) prefixes; otherwise the prefix is copied into each row (a plain
        :class:`LatentCache` with the same positions and mask layout)."""
        index = index.to(self.layers[0].prefix_keys.device)
        owner = self.owners(index.device)[index]
        suffix = [(layer.keys[index], layer.values[index]) for layer in self.layers] if self.layers[0].suffix_length else None
        runs = _runs(owner.tolist())
        sizes = {n for _, n in runs}
        heads = [q for q, _ in runs]
        if len(sizes) == 1 and len(set(heads)) == len(heads):
            group = sizes.pop()
            pick = torch.tensor(heads, dtype=torch.long, device=index.device)
            same = heads == list(range(self.prefixes))
            prefix = [(layer.prefix_keys, layer.prefix_values) if same else
                      (layer.prefix_keys[pick], layer.prefix_values[pick]) for layer in self.layers]
            return SharedPrefixCache(prefix, group, suffix=suffix)
        data = []
        for i, layer in enumerate(self.layers):
            keys, values = layer.prefix_keys[owner], layer.prefix_values[owner]
            if suffix is not None:
                keys, values = torch.cat([keys, suffix[i][0]], -2), torch.cat([values, suffix[i][1]], -2)
            data.append((keys, values))
        return LatentCache(data)


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of equal values: [(value, length), ...]."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    return runs
