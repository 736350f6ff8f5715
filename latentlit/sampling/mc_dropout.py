"""MC-dropout sampler (paper Sec. 3.1, "epistemic" sampling; Gal & Ghahramani 2016).

Dropout stays active in selected modules during the latent steps. The masks are not drawn from
torch's global generator but from keyed random numbers (``latentlit.sampling.rng``), so a
trajectory's masks depend only on (seed, question id, sample index, step, module, position).

The sampler does not switch modules to training mode: it registers forward hooks that multiply
the *output* of each targeted module by ``mask / (1 - p)``. On an ``nn.Dropout`` in eval mode
(output == input) this is exactly dropout; on any other module (Llama has no dropout modules, so
the default there is each MLP down-projection, as in the reference work) it is dropout applied
to that module's output.
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch
from torch import nn

from latentlit.sampling.base import Sampler
from latentlit.sampling.rng import hash_ints, keyed_uniform

DEFAULT_TARGETS = {
    "gpt2": ("*.attn.resid_dropout", "*.mlp.dropout"),
    "llama": ("*.mlp.down_proj",),
}
MASK_SCOPES = ("step", "trajectory")
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

    Raises:
        ValueError: p outside [0, 1), unknown mask scope, or (at bind time) patterns that match
            no module of the model.
    """

    def __init__(self, p: float = 0.1, targets: list[str] | None = None, mask_scope: str = "step",
                 prefill: str = "per_sample", on_answer: bool = False):
        super().__init__(prefill=prefill, on_answer=on_answer)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"MCDropout p={p} must be in [0, 1)")
        if mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope={mask_scope!r}; expected one of {MASK_SCOPES}")
        self.p, self.targets, self.mask_scope = float(p), list(targets) if targets else None, mask_scope
        self._handles: list = []
        self.target_names: list[str] = []

    @property
    def stochastic(self) -> bool:
        """True unless p is 0."""
        return self.p > 0

    def _attach(self, backbone: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        lm = backbone.lm
        patterns = self.targets or DEFAULT_TARGETS.get(lm.config.model_type)
        if patterns is None:
            raise ValueError(f"MCDropout has no default targets for model_type={lm.config.model_type!r}; "
                             "set targets (glob patterns over module names)")
        names = [n for n, _ in lm.named_modules() if n and any(fnmatch(n, pat) for pat in patterns)]
        if not names:
            raise ValueError(f"MCDropout targets {list(patterns)} match no module of the {lm.config.model_type} model")
        modules = dict(lm.named_modules())
        self.target_names = names
        for index, name in enumerate(names):
            self._handles.append(modules[name].register_forward_hook(self._make_hook(index)))

    def _make_hook(self, module_index: int):
        def hook(module, inputs, output):
            ctx = self._ctx
            if ctx is None or self.p == 0.0 or not torch.is_tensor(output):
                return None
            rows, width = output.shape[0], output.shape[-1]
            seq = output.shape[1] if output.dim() == 3 else 1
            dims = torch.arange(width, device=output.device)
            if self.mask_scope == "trajectory":
                counter = hash_ints(module_index, 7)
                index = dims.expand(rows, seq, width)
            else:
                counter = hash_ints(module_index, _PHASE_CODE[ctx.phase], ctx.step)
                pos = ctx.positions.to(output.device).reshape(rows, seq, 1)
                index = pos * width + dims
            u = keyed_uniform(ctx.keys.to(output.device), counter, seq * width, index.reshape(rows, -1))
            keep = (u >= self.p).reshape(output.shape).to(output.dtype)
            return output * keep / (1.0 - self.p)

        return hook

    def describe(self) -> dict:
        return {**super().describe(), "p": self.p, "targets": self.targets or "default", "mask_scope": self.mask_scope,
                "target_modules": len(self.target_names)}
