"""LatentRM: a step-wise scorer of latent trajectories (paper Sec. 3.3).

A GPT-2-style transformer reads ``prompt tokens, h_1, ..., h_T`` (the latent vectors fed in
place of ``<|latent|>`` slot embeddings) and a linear head reads the hidden state at each latent
position: ``r_t = g(x, h_1..h_t)``, causal by construction. Parameter names (``transformer.*``,
``classifier.*``) follow the released LatentRM, so its weights load with ``strict=True``. Only
the latent positions are scored, so tokens after the latents (``<|end-latent|>``, the answer),
which the released input format also carries, cannot change any r_t and are not fed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2Model

from latentlit.models.backbone import left_pad
from latentlit.models.cache import LatentCache
from latentlit.scoring.losses import trajectory_score

RM_CONFIG = "latent_rm.json"
RM_WEIGHTS = "model.safetensors"


class LatentRM(nn.Module):
    """Step scorer.

    Args:
        config: GPT-2 config of the transformer. tokenizer: the backbone's tokenizer.
        prompt_template: the backbone's prompt template (``{question}``...).
        add_bos: tokenize prompts with BOS. head_dropout: dropout before the head.
    """

    def __init__(self, config: GPT2Config, tokenizer, prompt_template: str, add_bos: bool = False, head_dropout: float = 0.1):
        super().__init__()
        self.transformer = GPT2Model(config)
        self.dropout = nn.Dropout(head_dropout)
        self.classifier = nn.Linear(config.n_embd, 1)
        self.tokenizer = tokenizer
        self.prompt_template, self.add_bos, self.head_dropout = prompt_template, add_bos, head_dropout

    @property
    def device(self) -> torch.device:
        """Device of the RM's weights."""
        return self.classifier.weight.device

    @classmethod
    def from_backbone(cls, backbone, n_layer: int | None = None, seed: int = 0, head_dropout: float = 0.1) -> "LatentRM":
        """Initialise from a GPT-2 latent backbone's weights (first ``n_layer`` blocks when
        given: a smaller RM), with a randomly initialised head (seeded).

        Raises:
            ValueError: the backbone is not GPT-2, or n_layer exceeds its depth.
        """
        lm = backbone.lm
        if lm.config.model_type != "gpt2":
            raise ValueError(f"LatentRM.from_backbone supports GPT-2 backbones, got {lm.config.model_type}")
        config = GPT2Config.from_dict(lm.config.to_dict())
        if n_layer is not None:
            if not 1 <= n_layer <= config.n_layer:
                raise ValueError(f"n_layer={n_layer} must be in 1..{config.n_layer}")
            config.n_layer = n_layer
        lc = backbone.latent_config
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            rm = cls(config, backbone.tokenizer, lc.prompt_template, lc.add_bos, head_dropout)
        state = {k: v for k, v in lm.transformer.state_dict().items()}
        missing, unexpected = rm.transformer.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"backbone lacks transformer weights {missing[:5]}")
        return rm

    def encode_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask (B, L)."""
        rows = [self.tokenizer(self.prompt_template.format(question=q), add_special_tokens=self.add_bos)["input_ids"]
                for q in questions]
        return left_pad(rows, self.tokenizer.pad_token_id or 0, self.device)

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, latents: torch.Tensor,
                latent_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Step scores.

        Args:
            prompt_ids, prompt_mask: (R, L) left-padded prompts. latents: (R, T, d).
            latent_mask: (R, T) bool, False for missing steps.

        Returns:
            r: (R, T) float32 step scores.
        """
        r, t = latents.shape[:2]
        if latent_mask is None:
            latent_mask = torch.ones(r, t, dtype=torch.bool, device=latents.device)
        embeds = torch.cat([self.transformer.wte(prompt_ids), latents.to(self.transformer.wte.weight.dtype)], dim=1)
        mask = torch.cat([prompt_mask.long(), latent_mask.long()], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        hidden = self.transformer(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        return self.classifier(self.dropout(hidden[:, -t:])).squeeze(-1).float() if t else hidden.new_zeros(r, 0)

    @torch.no_grad()
    def score_groups(self, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of N trajectories per question: questions (B,), latents (B, N, T, d) -> (B, N, T)."""
        b, n = latents.shape[:2]
        ids, mask = self.encode_prompts(questions)
        flat = latents.reshape(b * n, *latents.shape[2:]).to(self.device)
        fm = None if latent_mask is None else latent_mask.reshape(b * n, -1).to(self.device)
        return self(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), flat, fm).reshape(b, n, -1)

    @torch.no_grad()
    def encode_prefix(self, questions: list[str]) -> tuple[LatentCache, torch.Tensor]:
        """Run the prompts once: their KV cache (B rows) and (B, L) left-padded mask, the start of
        incremental scoring (:class:`LatentRMStepScorer`)."""
        ids, mask = self.encode_prompts(questions)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = LatentCache()
        self.transformer(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        return cache, mask

    # ------------------------------------------------------------------ io
    def save_pretrained(self, path: str | Path) -> None:
        """Directory: GPT-2 ``config.json``, ``latent_rm.json``, ``model.safetensors``
        (``transformer.*``, ``classifier.*``), tokenizer files."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.config.save_pretrained(path)
        (path / RM_CONFIG).write_text(json.dumps({"prompt_template": self.prompt_template, "add_bos": self.add_bos,
                                                   "head_dropout": self.head_dropout}, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / RM_WEIGHTS))
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, prompt_template: str | None = None) -> "LatentRM":
        """Load a LatentRM directory (ours, or the released COCONUT LatentRM layout: GPT-2
        ``transformer.*`` + ``classifier.*``; its prompt defaults to COCONUT's).

        Raises:
            FileNotFoundError: missing directory or weights. KeyError: missing/unexpected tensors
            (named). ValueError: a tokenizer without the latent tokens.
        """
        from latentlit.data.tokenizer import require_latent_tokens
        from latentlit.models.io import resolve_path

        path = Path(resolve_path(path, kind="latent_rm"))
        if not path.is_dir():
            raise FileNotFoundError(f"LatentRM directory {path} does not exist")
        if not (path / RM_WEIGHTS).exists():
            raise FileNotFoundError(f"no {RM_WEIGHTS} in LatentRM directory {path}")
        meta = json.loads((path / RM_CONFIG).read_text()) if (path / RM_CONFIG).exists() else {
            "prompt_template": "{question}\n<|start-latent|>", "add_bos": False, "head_dropout": 0.0}
        config = GPT2Config.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # without them the prompt's <|start-latent|> would be spelled out byte by byte, silently
        require_latent_tokens(tokenizer, path)
        rm = cls(config, tokenizer, prompt_template or meta["prompt_template"],
                 meta.get("add_bos", False), meta.get("head_dropout", 0.0))
        state = load_file(str(path / RM_WEIGHTS))
        expected = set(rm.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        # buffers such as attention biases may be absent from released files
        missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
        if missing or unexpected:
            raise KeyError(f"{path}/{RM_WEIGHTS}: missing tensors {missing[:8]}, unexpected tensors {unexpected[:8]}")
        rm.load_state_dict(state, strict=False)
        return rm.eval()


class LatentRMStepScorer:
    """Incremental LatentRM scoring of growing trajectories, for latent beam search (paper
    Sec. 3.2-3.3: step scores r_t, trajectory score = sum of r_t by default).

    The prompts are encoded once; each :meth:`extend` feeds one latent per row through the RM's
    KV cache, so scoring T steps costs T one-position passes instead of T passes over the whole
    prompt and prefix (the r_t are the same: the RM is causal, ``r_t = g(x, h_1..h_t)``).

    Args:
        rm: the LatentRM (eval mode). questions: the B questions.
        how: trajectory score from the step scores (``sum``, paper; ``mean``, ``last``, ``min``).
    """

    def __init__(self, rm: LatentRM, questions: list[str], how: str = "sum"):
        self.rm, self.how = rm, how
        self._cache, self._mask = rm.encode_prefix(questions)
        self._steps = torch.zeros(len(questions), 0, device=rm.device)

    def reset(self, owners: torch.Tensor) -> None:
        """Start R rows, row i belonging to question ``owners[i]`` ((R,) long)."""
        self._take(owners.to(self.rm.device))

    def _take(self, rows: torch.Tensor) -> None:
        self._cache = self._cache.select_rows(rows)
        self._mask, self._steps = self._mask[rows], self._steps[rows]

    @torch.no_grad()
    def extend(self, parents: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Append latent ``latents[i]`` (R', d) to the prefix of row ``parents[i]`` of the
        previous call (or of :meth:`reset`) and return the R' trajectory scores (float32)."""
        self._take(parents.to(self.rm.device))
        rows = latents.shape[0]
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, self._mask.new_ones(rows, 1)], dim=1)
        embeds = latents[:, None].to(device=self.rm.device, dtype=self.rm.transformer.wte.weight.dtype)
        hidden = self.rm.transformer(inputs_embeds=embeds, attention_mask=self._mask, position_ids=positions,
                                     cache=self._cache, use_cache=True).last_hidden_state[:, -1]
        r = self.rm.classifier(self.rm.dropout(hidden)).squeeze(-1).float()
        self._steps = torch.cat([self._steps, r[:, None]], dim=1)
        return trajectory_score(self._steps, how=self.how)
