"""MC-dropout sampler (paper Sec. 3.1, "epistemic" sampling; Gal & Ghahramani 2016).

Dropout stays active in selected modules during the latent steps. The masks are not drawn from
torch's global generator but from keyed random numbers (``latentlit.rng``), so a
trajectory's masks depend only on (seed, question id, sample index, step, module, position).

The sampler does not switch modules to training mode: it registers forward hooks that multiply
the *output* of each targeted module by ``mask / (1 - p)``. On an ``nn.Dropout`` in eval mode
(output == input) this is exactly dropout; on any other module (Llama has no dropout modules, so
the default there is each MLP down-projection, as in the reference work) it is dropout applied
to that module's output.

Attention dropout (on the softmax probabilities, which transformers applies functionally) is
reached through latentlit's own attention implementation (``latentlit.models.attention``)
and is off by default: ``attention_p > 0`` turns it on, which also switches the model to eager
attention. The reference code's ``model.train()`` enables it together with the other dropouts.
"""

from __future__ import annotations

import warnings
from fnmatch import fnmatch

import torch
from torch import nn

from latentlit.models.attention import HOOK_ATTR, key_positions, use_keyed_attention
from latentlit.models.hooks import Sampler
from latentlit.rng import hash_ints, keyed_keep

DEFAULT_TARGETS = {
    "gpt2": ("*.attn.resid_dropout", "*.mlp.dropout"),
    "llama": ("*.mlp.down_proj",),
}
DEFAULT_ATTENTION_TARGETS = {
    "gpt2": ("*.attn",),
    "llama": ("*.self_attn",),
}
MASK_SCOPES = ("step", "trajectory")
_ATTENTION_TAG = 19
# Key positions are folded into one int64 element index; prompts + latents + answer stay far below.
_KEY_SPAN = 1 << 16
_PHASE_CODE = {"prefill": 11, "latent": 12, "answer": 13}


class MCDropout(Sampler):
    """Dropout with rate ``p`` on the outputs of the targeted modules during the latent steps.

    Args:
        p: drop probability in [0, 1).
        targets: glob patterns over ``lm.named_modules()`` names; default by model type
            (GPT-2: the residual and MLP dropouts of each block; Llama: ``*.mlp.down_proj``).
        mask_scope: ``step`` draws a new mask at every forward pass and position (paper);
            ``trajectory`` fixes one mask per trajectory and module for all steps and positions.
        prefill: ``per_sample`` (default, as the reference code: each sample prefills the
            question with its own masks) or ``shared`` (prefill once, dropout only in latent steps).
        on_answer: keep dropout on while decoding the answer.
        attention_p: drop probability of each attention probability (query, key pair, head) in
            the attention modules ``attention_targets`` (default GPT-2 ``*.attn``, Llama
            ``*.self_attn``); 0 (default) leaves attention untouched. Kept probabilities are
            scaled by 1/(1 - attention_p), as in training-time attention dropout. With
            ``mask_scope="trajectory"`` a (head, key token) pair is dropped for the whole
            trajectory. Memory: one (rows, heads, queries, keys) mask per attention call.

    Raises:
        ValueError: p or attention_p outside [0, 1), unknown mask scope, or (at bind time)
            patterns that match no module of the model.
    """

    def __init__(self, p: float = 0.1, targets: list[str] | None = None, mask_scope: str = "step",
                 prefill: str = "per_sample", on_answer: bool = False, attention_p: float = 0.0,
                 attention_targets: list[str] | None = None):
        super().__init__(prefill=prefill, on_answer=on_answer)
        for name, value in (("p", p), ("attention_p", attention_p)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"MCDropout {name}={value} must be in [0, 1)")
        if mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope={mask_scope!r}; expected one of {MASK_SCOPES}")
        self.p, self.targets, self.mask_scope = float(p), list(targets) if targets else None, mask_scope
        if attention_targets and not attention_p:
            warnings.warn("MCDropout attention_targets is set but attention_p is 0: attention is left untouched",
                          stacklevel=2)
        self.attention_p = float(attention_p)
        self.attention_targets = list(attention_targets) if attention_targets else None
        self._handles: list = []
        self._attention_modules: list[nn.Module] = []
        self.target_names: list[str] = []
        self.attention_names: list[str] = []

    @property
    def stochastic(self) -> bool:
        """True unless both p and attention_p are 0."""
        return self.p > 0 or self.attention_p > 0

    @property
    def stochastic_forward(self) -> bool:
        """True unless both p and attention_p are 0: the masks act in every forward pass."""
        return self.stochastic

    def _attach(self, backbone: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for module in self._attention_modules:
            if hasattr(module, HOOK_ATTR):
                delattr(module, HOOK_ATTR)
        self._attention_modules.clear()
        lm = backbone.lm
        if self.attention_p > 0:
            self._attach_attention(lm)
        named = _match_modules(lm, "targets", self.targets, DEFAULT_TARGETS)
        self.target_names = [n for n, _ in named]
        for index, (_, module) in enumerate(named):
            self._handles.append(module.register_forward_hook(self._make_hook(index)))

    def _attach_attention(self, lm: nn.Module) -> None:
        named = _match_modules(lm, "attention_targets", self.attention_targets, DEFAULT_ATTENTION_TARGETS)
        patterns = self.attention_targets or DEFAULT_ATTENTION_TARGETS[lm.config.model_type]
        # The probabilities hook only runs inside an attention module's call to the attention
        # function; on any other module it would be attached and silently never run.
        wrong = [f"{n} ({type(m).__name__})" for n, m in named if not type(m).__name__.endswith("Attention")]
        if wrong:
            raise ValueError(f"MCDropout attention_targets {list(patterns)} match modules that are not attention "
                             f"modules: {wrong[:4]}; target the attention modules themselves (e.g. '*.attn')")
        use_keyed_attention(lm)
        self.attention_names = [n for n, _ in named]
        for index, (_, module) in enumerate(named):
            setattr(module, HOOK_ATTR, self._make_attention_hook(index))
            self._attention_modules.append(module)

    def _make_attention_hook(self, module_index: int):
        def hook(probs: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
            ctx = self._ctx
            if ctx is None:
                return probs
            rows, heads, queries, kv_len = probs.shape
            device = probs.device
            kpos = key_positions(attention_mask, rows, kv_len, device)[:, None, None, :]
            head = torch.arange(heads, device=device)[None, :, None, None]
            if self.mask_scope == "trajectory":
                # (R, H, 1, K): the same for every query, broadcast below
                counter = hash_ints(module_index, _ATTENTION_TAG)
                keep = keyed_keep(ctx.keys.to(device), counter, self.attention_p, head * _KEY_SPAN, kpos)
            else:
                counter = hash_ints(module_index, _ATTENTION_TAG, _PHASE_CODE[ctx.phase], ctx.step)
                qpos = ctx.positions.to(device).reshape(rows, 1, queries, 1)
                keep = keyed_keep(ctx.keys.to(device), counter, self.attention_p, (qpos * heads + head) * _KEY_SPAN, kpos)
            return _apply_keep(probs, keep, self.attention_p)

        return hook

    def _make_hook(self, module_index: int):
        def hook(module, inputs, output):
            ctx = self._ctx
            if ctx is None or self.p == 0.0 or not torch.is_tensor(output):
                return None
            rows, width = output.shape[0], output.shape[-1]
            seq = output.shape[1] if output.dim() == 3 else 1
            dims = torch.arange(width, device=output.device)
            if self.mask_scope == "trajectory":
                # (R, 1, d): one mask per trajectory, broadcast over positions
                counter = hash_ints(module_index, 7)
                keep = keyed_keep(ctx.keys.to(output.device), counter, self.p, dims.view(1, 1, width))
            else:
                counter = hash_ints(module_index, _PHASE_CODE[ctx.phase], ctx.step)
                pos = ctx.positions.to(output.device).reshape(rows, seq, 1)
                keep = keyed_keep(ctx.keys.to(output.device), counter, self.p, pos * width, dims)
            return _apply_keep(output.view(rows, seq, width), keep, self.p).view(output.shape)

        return hook

    def describe(self) -> dict:
        return {**super().describe(), "p": self.p, "targets": self.targets or "default", "mask_scope": self.mask_scope,
                "target_modules": len(self.target_names),
                "attention_p": self.attention_p, "attention_targets": self.attention_targets or "default",
                "attention_modules": len(self.attention_names)}


def _apply_keep(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """``x * keep / (1 - p)`` with ``keep`` bool, broadcast: multiplying by a bool gives the same
    values as multiplying by its 0/1 float, so outputs equal those of a float mask."""
    return (x * keep).div_(1.0 - p)


def _match_modules(lm: nn.Module, option: str, patterns: list[str] | None, defaults: dict) -> list[tuple[str, nn.Module]]:
    """(name, module) of ``lm`` matching the glob ``patterns`` (default by model type).

    Raises:
        ValueError: no default for this model type, or no module matches (naming ``option``).
    """
    model_type = lm.config.model_type
    patterns = patterns or defaults.get(model_type)
    if patterns is None:
        raise ValueError(f"MCDropout has no default {option} for model_type={model_type!r}; "
                         f"set {option} (glob patterns over module names)")
    named = [(n, m) for n, m in lm.named_modules() if n and any(fnmatch(n, pat) for pat in patterns)]
    if not named:
        raise ValueError(f"MCDropout {option} {list(patterns)} match no module of the {model_type} model")
    return named
