"""The latent backbone: a transformers causal LM plus the continuous-thought loop.

Inference (COCONUT, Hao et al. 2024, Sec. 3; the same loop serves CODI and CoLaR):

1. prefill ``prompt_template.format(question=q)`` (ends with ``<|start-latent|>``), left-padded,
   explicit position ids;
2. T latent steps: the input embedding of step t is ``h_t = f(last-layer hidden state of the
   previous position)``; the sampler may perturb ``h_t`` and the step's forward pass;
3. feed ``end_latent_id`` (``<|end-latent|>``; CoLaR: ``###``) and decode the answer greedily with
   the KV cache until eos or ``max_new_tokens``.

The loop is split into :meth:`prefill`, :meth:`latent_step`, :meth:`run_latents` and
:meth:`decode_answer` over a :class:`LatentState`, so that rollouts (continue M times from a
prefix) and latent beam search (fork and select rows) reuse the same seams. Training
(:meth:`forward_train`) goes through the same prefill and latent steps, with gradients through
the whole chain, then teacher-forces the suffix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from latentlit.data.padding import left_pad
from latentlit.data.tokenizer import check_questions
from latentlit.models.attention import prefix_kwargs, supports_prefix_attention
from latentlit.models.cache import LatentCache
from latentlit.models.hooks import Deterministic, Sampler
from latentlit.models.latent_head import LATENT_HEADS, build_latent_head

CONFIG_KEY = "latentlit"
LOGIT_BLOCK = 2048
LATENT_HEAD_FILE = "latent_head.safetensors"


@dataclass
class LatentConfig:
    """Everything about the latent loop that a checkpoint must carry (stored in ``config.json``
    under the key ``"latentlit"``).

    Attributes:
        num_latents: T, the number of latent steps the model was trained with.
        start_latent_id / latent_id / end_latent_id: ids of ``<|start-latent|>``, ``<|latent|>``
            and the token fed after the last latent (``<|end-latent|>``; CoLaR: ``###``).
        eos_id / pad_id: end-of-sequence and padding ids.
        prompt_template: prompt text with a ``{question}`` field.
        add_bos: tokenize the prompt with the tokenizer's BOS.
        answer_format: how to read the answer from the decoded text (``latentlit.data.answers``).
        latent_head: f, one of ``identity`` | ``projector`` | ``scaled_head``.
        latent_head_kwargs: sizes of f (``projector_hidden_size``, ``latent_intermediate_size``...).
        latent_stop_id: CoLaR-style dynamic stop: a row ends its latent phase when the LM head's
            greedy token at a latent step is this id (then at most ``max_latents`` steps).
        max_latents: cap on latent steps when ``latent_stop_id`` is set.
    """

    num_latents: int
    end_latent_id: int
    eos_id: int
    pad_id: int
    start_latent_id: int | None = None
    latent_id: int | None = None
    prompt_template: str = "{question} <|start-latent|>"
    add_bos: bool = False
    answer_format: str = "coconut"
    latent_head: str = "identity"
    latent_head_kwargs: dict = field(default_factory=dict)
    latent_stop_id: int | None = None
    max_latents: int = 64

    def __post_init__(self):
        if self.latent_head not in LATENT_HEADS:
            raise ValueError(f"latent_head={self.latent_head!r}; expected one of {LATENT_HEADS}")
        if self.num_latents < 0:
            raise ValueError(f"num_latents must be >= 0, got {self.num_latents}")

    @classmethod
    def from_dict(cls, d: dict) -> "LatentConfig":
        """Build from a dict (e.g. config.json's section), ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class LatentState:
    """The latent loop's state for R rows.

    Attributes:
        cache: KV cache of the R rows (``LatentCache`` at inference, ``DynamicCache`` in training).
        attention_mask: (R, S) long, 1 for real positions, 0 for padding (left padding, and
            masked steps of rows whose latent phase ended early).
        next_position: (R,) long position id of the next token of each row.
        hidden: (R, d) last-layer hidden state (after the final norm) at each row's last position.
        active: (R,) bool, rows still in their latent phase (all True without a dynamic stop).
    """

    cache: DynamicCache
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    hidden: torch.Tensor
    active: torch.Tensor

    @property
    def rows(self) -> int:
        return self.hidden.shape[0]

    def _with_cache_rows(self, index: torch.Tensor) -> "LatentState":
        # A fresh cache: DynamicCache.batch_* mutate in place, and forks must not share storage.
        if isinstance(self.cache, LatentCache):
            cache = self.cache.select_rows(index)
        else:
            cache = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in self.cache.layers])
        return LatentState(
            cache=cache,
            attention_mask=self.attention_mask[index],
            next_position=self.next_position[index],
            hidden=self.hidden[index],
            active=self.active[index],
        )

    def repeat_interleave(self, n: int) -> "LatentState":
        """Each row repeated ``n`` times consecutively (R -> R*n), with its own cache copy."""
        index = torch.arange(self.rows, device=self.hidden.device).repeat_interleave(n)
        return self._with_cache_rows(index)

    def select(self, index: torch.Tensor) -> "LatentState":
        """Rows ``index`` (K,) long, in that order (beam search selection)."""
        return self._with_cache_rows(index.to(self.hidden.device))

    def share_prefix(self, n: int, room: int | None = None) -> "LatentState":
        """Each row repeated ``n`` times consecutively (R -> R*n) like :meth:`repeat_interleave`,
        but the n copies share this state's cache as their prefix (:class:`SharedPrefixCache`)
        instead of copying it; ``room``: suffix positions to reserve.

        Raises:
            TypeError: the cache is not a :class:`LatentCache` that has not been shared already.
        """
        if type(self.cache) is not LatentCache:
            raise TypeError(f"share_prefix needs a LatentCache, got {type(self.cache).__name__}")
        return LatentState(
            cache=self.cache.shared_by(n, room=room),
            attention_mask=self.attention_mask.repeat_interleave(n, 0),
            next_position=self.next_position.repeat_interleave(n, 0),
            hidden=self.hidden.repeat_interleave(n, 0),
            active=self.active.repeat_interleave(n, 0),
        )


@dataclass
class LatentOutput:
    """Result of :meth:`LatentBackbone.generate` for R = B * N rows (question-major).

    Attributes:
        latents: (R, T, d) the latent vectors fed at each step (the trajectory).
        latent_mask: (R, T) bool, False for steps after a dynamic stop.
        answer_ids: (R, L) long, greedy answer tokens, ``pad_id`` after eos.
        answers_text: R decoded answer strings (special tokens removed).
        first_logits: (R, V) logits of the first answer token (after ``end_latent_id``).
    """

    latents: torch.Tensor
    latent_mask: torch.Tensor
    answer_ids: torch.Tensor
    answers_text: list[str]
    first_logits: torch.Tensor


class LatentBackbone(nn.Module):
    """A transformers causal LM (GPT-2 or Llama family) run as a latent reasoning model.

    Args:
        lm: a ``PreTrainedModel`` with an LM head (``GPT2LMHeadModel``, ``LlamaForCausalLM``...).
        tokenizer: its tokenizer (must contain the latent tokens the config names).
        config: the :class:`LatentConfig`.
        latent_head: f; built from ``config.latent_head`` when omitted.

    Attributes:
        prefill_max_padding: prompts are prefilled in buckets of similar length with at most this
            fraction of padding each (:meth:`prefill_rows`; default 0.1; 0: one batch per
            distinct length; 1: all prompts padded to the longest in one batch).
        share_prefix_kv: with shared prefill, keep each prompt's keys/values once for its N
            trajectories (:class:`SharedPrefixCache`; default True where the model's attention
            implementation allows it; False: copy them N times).
    """

    def __init__(self, lm: PreTrainedModel, tokenizer: Any, config: LatentConfig, latent_head: nn.Module | None = None):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.latent_config = config
        self.latent_head = latent_head or build_latent_head(
            config.latent_head, lm.config.hidden_size, **config.latent_head_kwargs
        )
        # token positions run through the transformer so far (rows x sequence length), for
        # compute accounting in benchmarks and the rollout-cost report
        self.forward_tokens = 0
        self.prefill_max_padding = 0.1
        self.share_prefix_kv = True

    # ------------------------------------------------------------------ construction / io
    @property
    def hidden_size(self) -> int:
        """d, the width of hidden states and latent vectors."""
        return self.lm.config.hidden_size

    @property
    def device(self) -> torch.device:
        """Device of the LM's weights."""
        return next(self.lm.parameters()).device

    def set_num_latents(self, num_latents: int) -> None:
        """Run with T = ``num_latents``; warns when it differs from the trained T. With a
        dynamic stop (``latent_stop_id``) it is the cap on latent steps (``max_latents``)."""
        cfg = self.latent_config
        trained = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
        if num_latents != trained:
            what = "at most" if cfg.latent_stop_id is not None else "with"
            warnings.warn(
                f"running {what} num_latents={num_latents} latent steps, but the checkpoint was trained with "
                f"{'a cap of ' if cfg.latent_stop_id is not None else ''}num_latents={trained}",
                stacklevel=2,
            )
        cfg.num_latents = int(num_latents)
        if cfg.latent_stop_id is not None:
            cfg.max_latents = int(num_latents)

    @property
    def max_positions(self) -> int | None:
        """The LM's position limit (GPT-2 ``n_positions``, else ``max_position_embeddings``), or
        None when its config names none."""
        for key in ("n_positions", "max_position_embeddings"):
            value = getattr(self.lm.config, key, None)
            if value:
                return int(value)
        return None

    def check_lengths(self, question_ids: list[str], questions: list[str], max_new_tokens: int) -> None:
        """Refuse questions whose prompt + latent steps + answer tokens exceed the position limit.

        A question needs ``prompt tokens + T + max_new_tokens`` positions (prompt at 0..L-1, the
        T latent steps, then ``end_latent_id`` and the answer tokens fed one per position; with a
        dynamic stop T is ``max_latents``). Beyond the limit GPT-2's position embedding fails
        with a bare IndexError mid-run; this check runs before any work.

        Raises:
            ValueError: naming the first such question's id, its token count and the limit (or
                an empty question, or one with unknown words: :meth:`prompt_tokens`).
        """
        prompts = self.prompt_tokens(questions, question_ids)
        limit = self.max_positions
        if limit is None:
            return
        cfg = self.latent_config
        steps = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
        for qid, prompt in zip(question_ids, prompts):
            tokens = len(prompt)
            if tokens + steps + max_new_tokens > limit:
                raise ValueError(
                    f"question {qid}: its prompt is {tokens} tokens, + {steps} latent steps + max_new_tokens "
                    f"{max_new_tokens} = {tokens + steps + max_new_tokens} positions, but the model holds {limit}; "
                    "leave that question out, or lower max_new_tokens / num_latents")

    # ------------------------------------------------------------------ tokens
    def prompt_tokens(self, questions: list[str], ids: list[str] | None = None) -> list[list[int]]:
        """Token ids of the prompts of ``questions`` (unpadded), after the input check every
        entry point shares (:func:`latentlit.data.tokenizer.check_questions`: no empty question,
        no word the tokenizer reads as unknown; ``ids`` name the question in the error).

        Raises:
            ValueError: an empty question or one with unknown words.
        """
        check_questions(self.tokenizer, questions, ids)
        cfg = self.latent_config
        return [
            self.tokenizer(cfg.prompt_template.format(question=q), add_special_tokens=cfg.add_bos)["input_ids"]
            for q in questions
        ]

    def encode_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts of ``questions``, left-padded.

        Returns:
            input_ids (B, L) long and attention_mask (B, L) long, on the model's device.
        """
        return left_pad(self.prompt_tokens(questions), self.latent_config.pad_id, self.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (...,) -> input embeddings (..., d)."""
        return self.lm.get_input_embeddings()(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (..., d) -> vocabulary logits (..., V).

        At inference on CPU a plain linear LM head runs in blocks of ``LOGIT_BLOCK`` vocabulary
        rows: for a few dozen rows against a 50k vocabulary the BLAS kernel reached ~19 GFLOP/s in
        one call and ~30 in blocks (GPT-2-small head, 64 rows, one thread), with identical results.
        """
        head = self.lm.get_output_embeddings()
        if (hidden.device.type == "cpu" and type(head) is nn.Linear and head.out_features > 2 * LOGIT_BLOCK
                and not torch.is_grad_enabled()):
            return blocked_linear(hidden, head.weight, head.bias, LOGIT_BLOCK)
        return head(hidden)

    def decode(self, answer_ids: torch.Tensor) -> list[str]:
        """(R, L) answer ids -> R strings, special tokens removed."""
        return self.tokenizer.batch_decode(answer_ids.tolist(), skip_special_tokens=True)

    # ------------------------------------------------------------------ forward
    def _forward(self, embeds: torch.Tensor, state_mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """One cached forward pass. embeds (R, S, d), state_mask (R, S_total), positions (R, S)
        -> last-layer hidden states (R, S, d) after the final norm."""
        self.forward_tokens += embeds.shape[0] * embeds.shape[1]
        out = self.lm.base_model(inputs_embeds=embeds, attention_mask=state_mask, position_ids=positions, cache=cache,
                                 use_cache=True, **prefix_kwargs(self.lm, cache))
        return out.last_hidden_state

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, sampler: Sampler | None = None,
                keys: torch.Tensor | None = None, room: int | None = None) -> LatentState:
        """Run the (left-padded) prompts (R, L) and return the state after them. ``room``:
        cache positions to reserve for what follows (T latents + answer tokens)."""
        sampler = sampler or _DETERMINISTIC
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        # in-place cache writes would break autograd through the latent chain
        cache = LatentCache(room=room) if not torch.is_grad_enabled() else DynamicCache(config=self.lm.config)
        with sampler.scope("prefill", _keys(keys, input_ids), 0, positions):
            hidden = self._forward(self.embed(input_ids), attention_mask, positions, cache)
        return LatentState(
            cache=cache,
            attention_mask=attention_mask.long(),
            next_position=positions[:, -1] + 1,
            hidden=hidden[:, -1],
            active=torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device),
        )

    def prefill_rows(self, rows: list[list[int]], *, sampler: Sampler | None = None, keys: torch.Tensor | None = None,
                     room: int | None = None) -> LatentState:
        """Prefill prompts given as token lists of different lengths with little computation on
        padding: rows are bucketed by length (:func:`length_buckets`, at most
        :attr:`prefill_max_padding` padding per bucket), each bucket runs as one left-padded
        batch, and its keys/values are written right-aligned into one left-padded cache, so the
        state is the one :meth:`prefill` gives for the whole left-padded batch (positions left
        of a bucket's width hold zeros and are masked).

        With gradients enabled (training) it is :meth:`prefill` of the padded batch. A row's
        result does not depend on the other rows (keyed masks use the row key and the token's
        position within its prompt, as in the padded batch); float results agree with the padded
        batch to rounding (other matmul shapes).

        Args:
            rows: R token lists. keys: (R,) row keys. room: as in :meth:`prefill`.

        Returns:
            the :class:`LatentState` of the R rows, attention mask (R, longest) left-padded.
        """
        pad_id, device = self.latent_config.pad_id, self.device
        buckets = length_buckets([len(r) for r in rows], self.prefill_max_padding)
        if len(buckets) == 1 or torch.is_grad_enabled() or not all(rows):
            ids, mask = left_pad(rows, pad_id, device)
            return self.prefill(ids, mask, sampler=sampler, keys=keys, room=room)
        _, mask = left_pad(rows, pad_id, device)
        width = mask.shape[1]
        keys = _keys(keys, mask)
        buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = None
        for bucket in buckets:
            index = torch.tensor(bucket, dtype=torch.long, device=device)
            ids, part_mask = left_pad([rows[i] for i in bucket], pad_id, device)
            part = self.prefill(ids, part_mask, sampler=sampler, keys=keys[index], room=0)
            if hidden is None:
                hidden = part.hidden.new_empty(len(rows), part.hidden.shape[-1])
                cap = width + (room if room is not None else max(16, width // 2))
                buffers = [(layer.keys.new_empty(len(rows), *layer.keys.shape[1:-2], cap, layer.keys.shape[-1]),
                            layer.values.new_empty(len(rows), *layer.values.shape[1:-2], cap, layer.values.shape[-1]))
                           for layer in part.cache.layers]
            start = width - ids.shape[1]
            for (k, v), layer in zip(buffers, part.cache.layers):
                # slices of consecutive rows (a question's N samples): plain copies, not index_put
                for src, dst, count in _row_runs(bucket):
                    k[dst:dst + count, ..., start:width, :].copy_(layer.keys[src:src + count])
                    v[dst:dst + count, ..., start:width, :].copy_(layer.values[src:src + count])
                    if start:  # masked, but 0 * garbage (inf/nan) in empty memory would not be 0
                        k[dst:dst + count, ..., :start, :].zero_()
                        v[dst:dst + count, ..., :start, :].zero_()
            hidden[index] = part.hidden
        return LatentState(
            cache=LatentCache.from_buffers(buffers, width),
            attention_mask=mask,
            next_position=mask.sum(1),
            hidden=hidden,
            active=torch.ones(len(rows), dtype=torch.bool, device=device),
        )

    def stops(self, state: LatentState) -> torch.Tensor:
        """(R,) bool: rows whose latent phase ends before the next latent step, i.e. rows
        already stopped, and, with a dynamic stop (``latent_stop_id``), rows whose LM head's
        greedy token at their last position is the stop token. Deterministic given the state
        (no sampler acts on the LM head), so every continuation of a prefix stops at the same
        step."""
        stopped = ~state.active
        if self.latent_config.latent_stop_id is not None:
            stopped = stopped | (self.logits(state.hidden).argmax(-1) == self.latent_config.latent_stop_id)
        return stopped

    def latent_step(self, state: LatentState, step: int, *, sampler: Sampler | None = None,
                    keys: torch.Tensor | None = None, active: torch.Tensor | None = None) -> tuple[LatentState, torch.Tensor]:
        """Latent step ``step`` (1-based): feed h_t = perturb(f(hidden)) and advance
        (:meth:`propose_latent` then :meth:`feed_latent`).

        Args:
            active: (R,) bool, teacher forcing (training): rows that take this step, in place
                of the dynamic stop's LM-head decision (rows already stopped stay stopped).

        Returns:
            the new state and the fed latent vectors (R, d) (zeros for rows already stopped).
        """
        active = state.active & active if active is not None else ~self.stops(state)
        latent = self.propose_latent(state, step, sampler=sampler, keys=keys)
        new = self.feed_latent(state, latent, step, sampler=sampler, keys=keys, active=active)
        return new, torch.where(active[:, None], latent, torch.zeros_like(latent))

    def propose_latent(self, state: LatentState, step: int, *, sampler: Sampler | None = None,
                       keys: torch.Tensor | None = None) -> torch.Tensor:
        """h_t = perturb(f(hidden)) (R, d): the latent each row would feed at step ``step``
        (computed for every row; the sampler's perturbation, e.g. AGN, acts here)."""
        sampler = sampler or _DETERMINISTIC
        return sampler.perturb(self.latent_head(state.hidden), _keys(keys, state.hidden), step)

    def feed_latent(self, state: LatentState, latent: torch.Tensor, step: int, *, sampler: Sampler | None = None,
                    keys: torch.Tensor | None = None, active: torch.Tensor | None = None) -> LatentState:
        """The forward pass of latent step ``step`` on ``latent`` (R, d), inside the sampler's
        scope (MC-dropout acts here), for rows ``active`` ((R,) bool, default all); the other
        rows keep their state. Returns the new state (its ``active`` is ``active``)."""
        sampler = sampler or _DETERMINISTIC
        keys = _keys(keys, state.hidden)
        active = torch.ones_like(state.active) if active is None else active
        positions = state.next_position[:, None]
        # A stopped row still occupies a column of the batch; masking it keeps its own sequence
        # (and so its answer) identical to running it alone.
        mask = torch.cat([state.attention_mask, active.long()[:, None]], dim=1)
        with sampler.scope("latent", keys, step, positions):
            hidden = self._forward(latent[:, None].to(self.lm.dtype), mask, positions, state.cache)[:, -1]
        return LatentState(
            cache=state.cache,
            attention_mask=mask,
            next_position=state.next_position + active.long(),
            hidden=torch.where(active[:, None], hidden, state.hidden),
            active=active,
        )

    def run_latents(self, state: LatentState, num_latents: int | None = None, *, sampler: Sampler | None = None,
                    keys: torch.Tensor | None = None, start_step: int = 1) -> tuple[LatentState, torch.Tensor, torch.Tensor]:
        """Latent steps ``start_step .. num_latents`` (T = config value by default; with a
        dynamic stop, up to ``max_latents``).

        Returns:
            state, latents (R, T', d), latent_mask (R, T') bool, T' = steps run.
        """
        cfg = self.latent_config
        last = (cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents) if num_latents is None else num_latents
        latents, masks = [], []
        for step in range(start_step, last + 1):
            if not bool(state.active.any()):
                break
            state, h = self.latent_step(state, step, sampler=sampler, keys=keys)
            latents.append(h)
            masks.append(state.active.clone())
        if not latents:
            empty = state.hidden.new_zeros(state.rows, 0, self.hidden_size)
            return state, empty, torch.zeros(state.rows, 0, dtype=torch.bool, device=empty.device)
        return state, torch.stack(latents, 1), torch.stack(masks, 1)

    @torch.no_grad()
    def decode_answer(self, state: LatentState, *, max_new_tokens: int = 16, sampler: Sampler | None = None,
                      keys: torch.Tensor | None = None, first_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``end_latent_id`` and decode greedily until eos or ``max_new_tokens``.

        Returns:
            answer_ids (R, L) long (``pad_id`` after eos, eos included) and the first answer
            token's logits (R, V).
        """
        cfg = self.latent_config
        sampler = sampler or _DETERMINISTIC
        keys = _keys(keys, state.hidden)
        rows, device = state.rows, state.hidden.device
        token = torch.full((rows,), cfg.end_latent_id, dtype=torch.long, device=device)
        mask, pos = state.attention_mask, state.next_position
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        out, first_logits = [], None
        for i in range(max_new_tokens):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            with sampler.scope("answer", keys, first_step + i, pos[:, None]):
                hidden = self._forward(self.embed(token)[:, None], mask, pos[:, None], state.cache)[:, -1]
            logits = self.logits(hidden)
            if first_logits is None:
                first_logits = logits.float()
            token = torch.where(finished, cfg.pad_id, logits.argmax(-1))
            del logits  # (R, V): not held while the next step's are computed
            out.append(token)
            finished |= token == cfg.eos_id
            pos = pos + 1
            if bool(finished.all()):
                break
        if not out:
            return torch.zeros(rows, 0, dtype=torch.long, device=device), torch.zeros(rows, 0, device=device)
        return torch.stack(out, 1), first_logits

    def answer_logits(self, state: LatentState, answer_ids: torch.Tensor, *, sampler: Sampler | None = None,
                      keys: torch.Tensor | None = None, first_step: int = 0) -> torch.Tensor:
        """Teacher-forced logits of given answers after the latent phase: feed ``end_latent_id``
        then ``answer_ids[:, :-1]`` at the positions :meth:`decode_answer` used, with gradients
        when enabled (GRPO's policy log-probability). One pass over the L positions, or one per
        token when the sampler's masks act on answer tokens (keyed by step, as in decoding).

        Args:
            answer_ids: (R, L) long, as :meth:`decode_answer` returned them.

        Returns:
            (R, L, V) float32 logits; row r, position j predicts ``answer_ids[r, j]``.
        """
        cfg = self.latent_config
        sampler = sampler or _DETERMINISTIC
        keys = _keys(keys, state.hidden)
        rows, length = answer_ids.shape
        first = torch.full((rows, 1), cfg.end_latent_id, dtype=torch.long, device=answer_ids.device)
        tokens = torch.cat([first, answer_ids[:, :-1]], 1)
        positions = state.next_position[:, None] + torch.arange(length, device=answer_ids.device)
        mask = torch.cat([state.attention_mask, torch.ones_like(tokens)], 1)
        base = state.attention_mask.shape[1]
        if sampler.active_in("answer") and sampler.stochastic_forward:
            hidden = []
            for i in range(length):
                with sampler.scope("answer", keys, first_step + i, positions[:, i:i + 1]):
                    hidden.append(self._forward(self.embed(tokens[:, i:i + 1]), mask[:, :base + i + 1],
                                                positions[:, i:i + 1], state.cache))
            hidden = torch.cat(hidden, 1)
        else:
            hidden = self._forward(self.embed(tokens), mask, positions, state.cache)
        return self.logits(hidden).float()

    def prefill_samples(self, questions: list[str], n_samples: int, sampler: Sampler, keys: torch.Tensor,
                        room: int | None = None) -> LatentState:
        """The state of B*N rows (question-major) after the prompts: prefilled once per question
        and shared by its N rows (``sampler.prefill == "shared"``; a :class:`SharedPrefixCache`
        with :attr:`share_prefix_kv`, else the cache copied N times), or once per row inside the
        sampler's scope (``"per_sample"``). Prompts are prefilled by length
        (:meth:`prefill_rows`). ``keys``: (B*N,) row keys; ``room``: positions to reserve for
        the latent steps and answer tokens that follow."""
        prompts = self.prompt_tokens(questions)
        if sampler.prefill == "per_sample" and n_samples > 1:
            return self.prefill_rows([r for r in prompts for _ in range(n_samples)], sampler=sampler, keys=keys, room=room)
        if n_samples == 1:
            return self.prefill_rows(prompts, sampler=sampler, keys=keys, room=room)
        state = self.prefill_rows(prompts, sampler=sampler, keys=keys[::n_samples], room=0)
        if self.share_prefix_kv and not torch.is_grad_enabled() and supports_prefix_attention(self.lm):
            return state.share_prefix(n_samples, room=room)
        return state.repeat_interleave(n_samples)

    @torch.no_grad()
    def generate(self, questions: list[str], *, n_samples: int = 1, sampler: Sampler | None = None,
                 keys: torch.Tensor | None = None, num_latents: int | None = None,
                 max_new_tokens: int = 16) -> LatentOutput:
        """N trajectories for each of B questions, all advancing together.

        Args:
            questions: B question texts.
            n_samples: N. With ``sampler.prefill == "shared"`` each question is prefilled once
                and its keys/values shared by its N rows; with ``"per_sample"`` each of the B*N
                rows is prefilled inside the sampler's scope.
            keys: (B*N,) int64 row keys (``latentlit.rng.trajectory_keys``); required
                for stochastic samplers.
            num_latents: override T for this call (no warning; see :meth:`set_num_latents`).

        Returns:
            :class:`LatentOutput` with B*N rows, question-major (row = q * N + j).

        Raises:
            ValueError: a stochastic sampler without keys, or keys of the wrong length.
        """
        sampler = sampler or _DETERMINISTIC
        sampler.bind(self)
        rows = len(questions) * n_samples
        if keys is None:
            if sampler.stochastic:
                raise ValueError(f"{type(sampler).__name__} needs per-trajectory keys (trajectory_keys(...))")
            keys = torch.zeros(rows, dtype=torch.long)
        if keys.shape != (rows,):
            raise ValueError(f"keys must have shape ({rows},) for {len(questions)} questions x {n_samples} samples, got {tuple(keys.shape)}")
        keys = keys.to(self.device)
        cfg = self.latent_config
        steps = num_latents if num_latents is not None else (
            cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents)
        state = self.prefill_samples(questions, n_samples, sampler, keys, room=steps + max_new_tokens)
        state, latents, latent_mask = self.run_latents(state, num_latents, sampler=sampler, keys=keys)
        answer_ids, first_logits = self.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys,
                                                      first_step=latents.shape[1] + 1)
        return LatentOutput(latents, latent_mask, answer_ids, self.decode(answer_ids), first_logits)

    # ------------------------------------------------------------------ training
    def forward_train(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_latents: int | torch.Tensor,
                      suffix_ids: torch.Tensor, suffix_mask: torch.Tensor, *,
                      stop_targets: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced multi-pass forward (COCONUT Sec. 3): prompt, ``num_latents`` latent
        steps each fed the previous position's f(hidden) (gradients through the chain), then
        the suffix ``<|end-latent|> steps... ### answer <eos>``.

        Args:
            prompt_ids, prompt_mask: (B, L) left-padded prompts ending with ``<|start-latent|>``.
            num_latents: T for every row (int), or (B,) long, each row's own number of latents
                (a row that has run its latents is masked, as a stopped row at inference).
            suffix_ids, suffix_mask: (B, S) right-padded suffixes starting with ``end_latent_id``.
            stop_targets: also train the dynamic stop (``latent_stop_id``): the LM head at each
                position that decides a latent step (the prompt's last token and latents
                1..n-1) targets ``latent_id`` ("think on") and at the row's last latent (the
                prompt's last token when n = 0) targets ``latent_stop_id``, so that at
                inference :meth:`stops` ends the row after its n-th latent. These targets
                count as tokens.

        Returns:
            (summed token cross-entropy over the targets, number of target tokens). Suffix
            targets are the tokens after ``end_latent_id``.

        Raises:
            ValueError: ``stop_targets`` without ``latent_stop_id`` and ``latent_id`` in the config.
        """
        rows = prompt_ids.shape[0]
        lengths = (num_latents if torch.is_tensor(num_latents)
                   else torch.full((rows,), int(num_latents), dtype=torch.long)).to(prompt_ids.device)
        state = self.prefill(prompt_ids, prompt_mask)
        decisions = [state.hidden]
        for step in range(1, int(lengths.max()) + 1 if rows else 1):
            state, _ = self.latent_step(state, step, active=lengths >= step)
            decisions.append(state.hidden)
        positions = state.next_position[:, None] + torch.arange(suffix_ids.shape[1], device=suffix_ids.device)
        mask = torch.cat([state.attention_mask, suffix_mask.long()], dim=1)
        hidden = self._forward(self.embed(suffix_ids), mask, positions, state.cache)
        logits = self.logits(hidden[:, :-1]).float()
        targets = suffix_ids[:, 1:].masked_fill(suffix_mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum")
        count = (targets != -100).sum()
        if stop_targets:
            cfg = self.latent_config
            if cfg.latent_stop_id is None or cfg.latent_id is None:
                raise ValueError("stop_targets needs latent_stop_id and latent_id in the latent config")
            stop_logits = self.logits(torch.stack(decisions, 1)).float()  # (B, max n + 1, V)
            index = torch.arange(stop_logits.shape[1], device=lengths.device)[None]
            stop_t = torch.full_like(index.expand(rows, -1), -100)
            stop_t = stop_t.masked_fill(index < lengths[:, None], cfg.latent_id)
            stop_t = stop_t.masked_fill(index == lengths[:, None], cfg.latent_stop_id)
            loss = loss + F.cross_entropy(stop_logits.reshape(-1, stop_logits.shape[-1]), stop_t.reshape(-1),
                                          ignore_index=-100, reduction="sum")
            count = count + (stop_t != -100).sum()
        return loss, count


_DETERMINISTIC = Deterministic()


def _keys(keys: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if keys is None:
        return torch.zeros(like.shape[0], dtype=torch.long, device=like.device)
    return keys.to(like.device)


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, block: int) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed ``block`` output features at a time (written into
    one output, so only one block is held twice): x (..., d), weight (V, d), bias (V,) or None
    -> (..., V). Each output is the same dot product over d as in the single call."""
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    for i in range(0, weight.shape[0], block):
        out[..., i:i + block] = F.linear(x, weight[i:i + block], None if bias is None else bias[i:i + block])
    return out


def length_buckets(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Group row indices by length so that each group, left-padded to its longest row, is at most
    ``max_padding`` padding: every row of a group is at least ``(1 - max_padding)`` times the
    group's longest. Groups run longest first; rows within a group keep their order.

    Args:
        lengths: R row lengths. max_padding: in [0, 1]; 0 gives one group per distinct length,
            1 a single group.

    Returns:
        the groups, lists of indices into ``lengths`` covering each index once.

    Raises:
        ValueError: max_padding outside [0, 1].
    """
    if not 0.0 <= max_padding <= 1.0:
        raise ValueError(f"max_padding={max_padding} must be in [0, 1]")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    longest = None
    for i in order:
        if longest is None or lengths[i] < (1.0 - max_padding) * longest:
            groups.append([])
            longest = lengths[i]
        groups[-1].append(i)
    return [sorted(g) for g in groups]


def _row_runs(rows: list[int]) -> list[tuple[int, int, int]]:
    """Consecutive runs in an increasing index list: (position in the list, first row, count)."""
    runs: list[tuple[int, int, int]] = []
    for i, r in enumerate(rows):
        if runs and runs[-1][1] + runs[-1][2] == r:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((i, r, 1))
    return runs


def answer_positions(answer_ids, eos_id: int, max_new_tokens: int) -> list[int]:
    """Forward passes that decoded each answer: up to and including the first eos, or
    ``max_new_tokens`` when there is none (a row without eos ran every step).

    Args:
        answer_ids: (R, L) tokens from ``LatentBackbone.decode_answer`` (L <= max_new_tokens).
    """
    out = []
    for row in answer_ids.tolist():
        out.append(row.index(eos_id) + 1 if eos_id in row else max_new_tokens)
    return out
