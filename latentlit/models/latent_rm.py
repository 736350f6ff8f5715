"""LatentRM: a step-wise scorer of latent trajectories (paper Sec. 3.3).

A transformer reads ``prompt tokens, h_1, ..., h_T`` (the latent vectors fed in place of
``<|latent|>`` slot embeddings) and a linear head reads the hidden state at each latent
position: ``r_t = g(x, h_1..h_t)``, causal by construction. Only the latent positions are scored,
so tokens after the latents (``<|end-latent|>``, the answer), which the released input format
also carries, cannot change any r_t and are not fed.

The transformer is the base model of any transformers causal LM (``AutoModel.from_config``:
``GPT2Model``, ``LlamaModel``, ...). :meth:`LatentRM.from_backbone` initialises it from the
backbone's own transformer (optionally its first ``n_layer`` blocks), or from another causal LM
(a smaller one): when that transformer's width differs from the backbone's latent width d, a
learned ``projection`` (Linear d -> width) maps each latent into it.

Directory layout (:meth:`LatentRM.save_pretrained`): ``config.json`` (the transformer's
transformers config), ``latent_rm.json`` (the RM's own settings: prompt template, BOS, head
dropout, latent width), ``model.safetensors`` with ``transformer.*``, ``classifier.*`` and, only
when widths differ, ``projection.*``, and the tokenizer files. The released COCONUT LatentRM
(GPT-2 ``transformer.*`` + ``classifier.*``, no ``latent_rm.json``) is this layout without the
RM settings. ``latent_rm.json`` also records the RM's ``provenance`` when it is known (written by
:class:`~latentlit.lit.latent_rm_module.LatentRMModule`'s export): the path and weights
fingerprint (:mod:`latentlit.runs.fingerprint`) of the backbone whose latents it was trained
on, which ``latentlit predict`` compares with its backbone, and the number of training steps
(``trained_steps``; predict warns at 0). Loading is strict: a missing or unexpected tensor or a
shape that disagrees with the config is an error naming the key.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from latentlit.data.padding import left_pad, right_pad
from latentlit.data.tokenizer import END_LATENT, LATENT_TOKENS, check_questions, require_latent_tokens
from latentlit.models.backbone import CONFIG_KEY
from latentlit.models.attention import prefix_kwargs, supports_prefix_attention
from latentlit.models.cache import LatentCache
from latentlit.models.checkpoints import DETECT_KEYS, load_backbone, load_lm_strict, resolve_path, strict_loading_error
from latentlit.runs.files import save_tensors
from latentlit.runs.fingerprint import weights_fingerprint

RM_CONFIG = "latent_rm.json"
RM_WEIGHTS = "model.safetensors"
# The released LatentRM was written by the COCONUT authors' code: its prompt and no head dropout.
RELEASED_RM_SETTINGS = {"prompt_template": "{question}\n<|start-latent|>", "add_bos": False, "head_dropout": 0.0}
# GPT-2 attention-mask constants that older transformers wrote as buffers: no learned values.
_MASK_BUFFERS = re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\.")


def _rm_config(config: PretrainedConfig, n_layer: int | None) -> PretrainedConfig:
    """A copy of an LM config for the RM's transformer: the backbone-layout keys removed (an RM
    directory must never be taken for a backbone), depth cut to ``n_layer`` when given."""
    config = copy.deepcopy(config)
    for key in {CONFIG_KEY, *(k for _, k in DETECT_KEYS), "latent_start_id", "latent_end_id", "target_id",
                "projector_dropout", "projector_hidden_size", "latent_intermediate_size"}:
        if key in config.__dict__:
            delattr(config, key)
    if n_layer is not None:
        depth = config.num_hidden_layers
        if not 1 <= n_layer <= depth:
            raise ValueError(f"n_layer={n_layer} must be in 1..{depth}")
        config.num_hidden_layers = n_layer
    return config


def _prompt_tokens(template: str) -> list[str]:
    return [t for t in LATENT_TOKENS if t in template]


def _rm_precision(method):
    """Run an inference method of the RM (or of its step scorer) outside any autocast region:
    scores are computed in the RM's own dtype (float32 as loaded), never at the bfloat16 or
    float16 of a mixed-precision trainer or backbone, so that best-of-N, the weighted vote and
    beam search rank values of float32 precision on every process."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        device = (self if isinstance(self, LatentRM) else self.rm).device
        with torch.autocast(device_type=device.type, enabled=False):
            return method(self, *args, **kwargs)

    return wrapped


class LatentRM(nn.Module):
    """Step scorer.

    Args:
        config: transformers config of the transformer (any model type ``AutoModel`` builds).
        tokenizer: the tokenizer of that transformer's vocabulary (the backbone's when the RM
            is initialised from the backbone).
        prompt_template: the backbone's prompt template (``{question}``...).
        add_bos: tokenize prompts with BOS. head_dropout: dropout before the head.
        latent_size: d, the width of the latents scored (the backbone's hidden size); default
            the transformer's width. When they differ a ``projection`` Linear(d, width) is added.
        read_answer: also read each trajectory's decoded answer after its latents and score it:
            one more step, r_answer, at the answer's last token (:meth:`score_trajectories`;
            docs/latentrm-and-search.md#a-latentrm-that-reads-the-answer).
    """

    def __init__(self, config: PretrainedConfig, tokenizer, prompt_template: str, add_bos: bool = False,
                 head_dropout: float = 0.1, latent_size: int | None = None, read_answer: bool = False):
        super().__init__()
        self.transformer = AutoModel.from_config(config)
        width = self.transformer.config.hidden_size
        self.latent_size = int(latent_size or width)
        self.projection = nn.Linear(self.latent_size, width) if self.latent_size != width else None
        self.dropout = nn.Dropout(head_dropout)
        self.classifier = nn.Linear(width, 1)
        self.tokenizer = tokenizer
        self.prompt_template, self.add_bos, self.head_dropout = prompt_template, add_bos, head_dropout
        self.read_answer = bool(read_answer)
        # the backbone whose latents the RM was trained on (latent_rm.json "provenance"):
        # {"backbone": path, "backbone_fingerprint": latentlit.runs.fingerprint, and from the
        # export "trained_steps" (and "groups" when the groups' run.json names their backbone)}, or None
        self.provenance: dict | None = None

    @property
    def device(self) -> torch.device:
        """Device of the RM's weights."""
        return self.classifier.weight.device

    @property
    def width(self) -> int:
        """Hidden size of the RM's transformer."""
        return self.transformer.config.hidden_size

    @classmethod
    def from_backbone(cls, backbone, n_layer: int | None = None, seed: int = 0, head_dropout: float = 0.1,
                      transformer: str | None = None, read_answer: bool = False) -> "LatentRM":
        """An RM for ``backbone``'s latents with a randomly initialised head (seeded).

        Args:
            backbone: the :class:`~latentlit.models.backbone.LatentBackbone` (any family).
            n_layer: keep only the first ``n_layer`` blocks of the transformer (a smaller RM).
            transformer: initialise from this causal LM (a ``save_pretrained`` directory or hub
                id, loaded strictly) instead of the backbone: its base model and its tokenizer
                (latent tokens of the prompt template are added when it lacks them; their
                embedding rows are then new). A learned projection maps the backbone's latents
                when the widths differ.

        Raises:
            ValueError: n_layer outside 1..depth; weights that do not match the transformer.
        """
        lc = backbone.latent_config
        if transformer is None:
            lm, tokenizer = backbone.lm, backbone.tokenizer
        else:
            lm, tokenizer = load_lm_strict(str(transformer)), AutoTokenizer.from_pretrained(str(transformer))
        config = _rm_config(lm.config, n_layer)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            rm = cls(config, tokenizer, lc.prompt_template, lc.add_bos, head_dropout, latent_size=backbone.hidden_size,
                     read_answer=read_answer)
        state = lm.base_model.state_dict()
        expected = set(rm.transformer.state_dict())
        missing = sorted(expected - set(state))
        extra = sorted(k for k in set(state) - expected
                       if not (n_layer is not None and (m := _LAYER_INDEX.search(k)) and int(m.group(1)) >= n_layer))
        if missing or extra:
            raise ValueError(f"cannot initialise the LatentRM from {transformer or 'the backbone'}: missing tensors "
                             f"{missing[:8]}, unexpected tensors {extra[:8]}")
        rm.transformer.load_state_dict({k: state[k] for k in expected}, strict=True)
        if transformer is not None:
            rm._add_prompt_tokens()
        return rm

    def _add_prompt_tokens(self) -> None:
        """Add the prompt template's latent tokens to a tokenizer that lacks them (new rows)."""
        have = self.tokenizer.get_vocab()
        new = [t for t in _prompt_tokens(self.prompt_template) if t not in have]
        if new:
            self.tokenizer.add_tokens(new, special_tokens=True)
            self.transformer.resize_token_embeddings(len(self.tokenizer))
            self.transformer.config.vocab_size = len(self.tokenizer)

    def encode_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask (B, L), after the input check every entry point shares
        (:func:`latentlit.data.tokenizer.check_questions`, with the RM's own tokenizer).

        Raises:
            ValueError: an empty question or one with words the RM's tokenizer does not know.
        """
        check_questions(self.tokenizer, questions)
        rows = [self.tokenizer(self.prompt_template.format(question=q), add_special_tokens=self.add_bos)["input_ids"]
                for q in questions]
        return left_pad(rows, self.tokenizer.pad_token_id or 0, self.device)

    def embed_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., d) -> input embeddings (..., width) of the RM's transformer."""
        weight = self.transformer.get_input_embeddings().weight
        x = latents.to(device=weight.device, dtype=weight.dtype)
        return self.projection(x) if self.projection is not None else x

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, latents: torch.Tensor,
                latent_mask: torch.Tensor | None = None, answer_ids: torch.Tensor | None = None,
                answer_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Step scores.

        Args:
            prompt_ids, prompt_mask: (R, L) left-padded prompts. latents: (R, T, d).
            latent_mask: (R, T) bool, False for missing steps (padding, or steps after a
                dynamic stop); their scores are computed but meaningless.
            answer_ids, answer_mask: (R, A) right-padded answers (:meth:`encode_answers`), read
                after the latents; only with ``read_answer``.

        Returns:
            r: (R, T) float32 step scores; with answers (R, T + 1), the last column r_answer read
            at each row's last answer token.
        """
        r, t = latents.shape[:2]
        if latent_mask is None:
            latent_mask = torch.ones(r, t, dtype=torch.bool, device=latents.device)
        embeds = [self.transformer.get_input_embeddings()(prompt_ids), self.embed_latents(latents)]
        masks = [prompt_mask.long(), latent_mask.long().to(prompt_mask.device)]
        if answer_ids is not None:
            embeds.append(self.transformer.get_input_embeddings()(answer_ids))
            masks.append(answer_mask.long())
        mask = torch.cat(masks, dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        hidden = self.transformer(inputs_embeds=torch.cat(embeds, dim=1), attention_mask=mask,
                                  position_ids=positions).last_hidden_state
        return self._step_scores(hidden[:, prompt_ids.shape[1]:], t, answer_mask)

    def _step_scores(self, hidden: torch.Tensor, t: int, answer_mask: torch.Tensor | None) -> torch.Tensor:
        """Head on the hidden states (R, T [+ A], width) after the prompt: (R, T) step scores, then
        r_answer at each row's last answer token when ``answer_mask`` (R, A) is given."""
        picked = hidden[:, :t]
        if answer_mask is not None:
            last = answer_mask.long().sum(1) - 1 + t
            picked = torch.cat([picked, hidden[torch.arange(hidden.shape[0], device=hidden.device), last][:, None]], 1)
        if not picked.shape[1]:
            return hidden.new_zeros(hidden.shape[0], 0, dtype=torch.float32)
        return self.classifier(self.dropout(picked)).squeeze(-1).float()

    @property
    def prompt_once(self) -> bool:
        """:meth:`score_groups` encodes a question's prompt once for its trajectories (the
        attention reads a shared prefix)."""
        return supports_prefix_attention(self.transformer)

    def step_scorer(self, questions: list[str], how: str = "sum") -> "LatentRMStepScorer":
        """Incremental step scoring for beam search (:class:`LatentRMStepScorer`)."""
        return LatentRMStepScorer(self, questions, how=how)

    def encode_answers(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, A) right-padded ids and mask of answers as the RM reads them after the latents: the
        end-of-latents token (EOS when the tokenizer has none), then the answer text's tokens;
        never empty, so an empty answer is still scored."""
        lead = self.tokenizer.get_vocab().get(END_LATENT, self.tokenizer.eos_token_id)
        rows = [[lead] + self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        return right_pad(rows, self.tokenizer.pad_token_id or 0, self.device)

    @torch.no_grad()
    @_rm_precision
    def score_groups(self, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor | None = None, *,
                     texts: list[list[str]] | None = None, share_prompt: bool = True) -> torch.Tensor:
        """Scores of N trajectories per question: questions (B,), latents (B, N, T, d), latent_mask (B, N, T) bool
        -> (B, N, T) float32 step scores; with ``texts`` (B lists of N decoded answers, for an RM that
        reads them) (B, N, T + 1), the last column r_answer.

        Each prompt is encoded once and its N trajectories attend to its keys/values (a
        :class:`~latentlit.models.cache.SharedPrefixCache`): B*L + B*N*T forward positions instead of
        B*N*(L + T), with the scores of :meth:`forward` on the prompt repeated N times (to float tolerance). An RM
        whose attention cannot read a shared prefix (flash kernels), or ``share_prompt=False``, runs that forward."""
        b, n, t = latents.shape[:3]
        flat = latents.reshape(b * n, *latents.shape[2:]).to(self.device)
        fm = None if latent_mask is None else latent_mask.reshape(b * n, -1).to(self.device)
        answers = (None, None) if texts is None else self.encode_answers([x for row in texts for x in row])
        if not (t and share_prompt and supports_prefix_attention(self.transformer)):
            ids, mask = self.encode_prompts(questions)
            return self(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), flat, fm, *answers).reshape(b, n, -1)
        prompts, mask = self.encode_prefix(questions)
        embeds, steps = self.embed_latents(flat), torch.ones(b * n, t, dtype=torch.long, device=self.device) if fm is None else fm.long()
        if texts is not None:
            embeds = torch.cat([embeds, self.transformer.get_input_embeddings()(answers[0])], 1)
            steps = torch.cat([steps, answers[1].long()], 1)
        cache = prompts.shared_by(n, room=embeds.shape[1])
        full = torch.cat([mask.repeat_interleave(n, 0), steps], dim=1)
        hidden = self._cached_pass(embeds, full, (full.cumsum(-1) - 1).clamp_min(0)[:, -embeds.shape[1]:], cache)
        return self._step_scores(hidden, t, answers[1]).reshape(b, n, -1)

    def score_trajectories(self, questions: list[str], latents: torch.Tensor, latent_mask: torch.Tensor,
                           texts: list[list[str]] | None = None, how: str = "sum") -> torch.Tensor:
        """Trajectory scores (B, N) float32 of N trajectories per question (shapes as
        :meth:`score_groups`): :func:`trajectory_score` of the step scores; an RM that reads the
        answer scores it as one more step, after the latents.

        Raises:
            ValueError: an answer-reading RM without ``texts``.
        """
        if self.read_answer and texts is None:
            raise ValueError("this LatentRM reads each trajectory's answer (read_answer in latent_rm.json): "
                             "pass the decoded answer texts")
        steps = self.score_groups(questions, latents, latent_mask, texts=texts if self.read_answer else None)
        mask = latent_mask.to(steps.device).bool()
        if self.read_answer:
            mask = torch.cat([mask, mask.new_ones(*mask.shape[:2], 1)], -1)
        return trajectory_score(steps, mask, how)

    def _cached_pass(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The transformer's last hidden states (R, S, width) of ``embeds`` (R, S, width) after ``cache``
        (``mask``: (R, cached + S)); a shared-prefix cache is handed to the attention that reads it."""
        return self.transformer(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True, **prefix_kwargs(self.transformer, cache)).last_hidden_state

    @torch.no_grad()
    @_rm_precision
    def encode_prefix(self, questions: list[str]) -> tuple[LatentCache, torch.Tensor]:
        """Run the prompts once: their KV cache (B rows) and (B, L) left-padded mask, the start of
        incremental scoring (:class:`LatentRMStepScorer`)."""
        ids, mask = self.encode_prompts(questions)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = LatentCache()
        self.transformer(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        return cache, mask

    # ------------------------------------------------------------------ io
    def settings(self) -> dict:
        """The RM's own settings, as written to ``latent_rm.json`` (with ``provenance`` when known:
        the backbone whose latents it was trained on, by path and weights fingerprint)."""
        settings = {"prompt_template": self.prompt_template, "add_bos": self.add_bos, "head_dropout": self.head_dropout,
                    "latent_size": self.latent_size}
        if self.read_answer:
            settings["read_answer"] = True
        if self.provenance is not None:
            settings["provenance"] = dict(self.provenance)
        return settings

    def save_pretrained(self, path: str | Path) -> None:
        """Directory: the transformer's ``config.json``, ``latent_rm.json``, ``model.safetensors``
        (``transformer.*``, ``classifier.*``, ``projection.*`` when present), tokenizer files."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.config.save_pretrained(path)
        (path / RM_CONFIG).write_text(json.dumps(self.settings(), indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_tensors(state, str(path / RM_WEIGHTS))
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, prompt_template: str | None = None) -> "LatentRM":
        """Load a LatentRM directory (ours, or the released COCONUT LatentRM layout: GPT-2
        ``transformer.*`` + ``classifier.*``; its prompt defaults to COCONUT's).

        Raises:
            FileNotFoundError: missing directory or weights. ValueError: a missing or unexpected
            tensor, or a tensor whose shape disagrees with the config (each named with the
            file); a tokenizer without the latent tokens its prompt template uses.
        """
        path = Path(resolve_path(path, kind="latent_rm"))
        if not path.is_dir():
            raise FileNotFoundError(f"LatentRM directory {path} does not exist")
        if not (path / RM_WEIGHTS).exists():
            raise FileNotFoundError(f"no {RM_WEIGHTS} in LatentRM directory {path}")
        meta = json.loads((path / RM_CONFIG).read_text()) if (path / RM_CONFIG).exists() else dict(RELEASED_RM_SETTINGS)
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        template = prompt_template or meta["prompt_template"]
        # without them the prompt's <|start-latent|> would be spelled out byte by byte, silently
        require_latent_tokens(tokenizer, path, _prompt_tokens(template))
        rm = cls(config, tokenizer, template, meta.get("add_bos", False), meta.get("head_dropout", 0.0),
                 latent_size=meta.get("latent_size"), read_answer=meta.get("read_answer", False))
        state = load_file(str(path / RM_WEIGHTS))
        state = {k: v for k, v in state.items() if not _MASK_BUFFERS.match(k)}
        check_state(rm.state_dict(), state, f"{path}/{RM_WEIGHTS}")
        rm.load_state_dict(state, strict=True)
        rm.provenance = meta.get("provenance")
        return rm.eval()


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Strict weight check: every expected tensor present with its shape, nothing else.

    Raises:
        ValueError: naming ``source`` and the missing, unexpected and mis-shaped keys (with both
            shapes).
    """
    shapes = [f"{k}: file {tuple(found[k].shape)}, model {tuple(expected[k].shape)}"
              for k in set(expected) & set(found) if found[k].shape != expected[k].shape]
    error = strict_loading_error(source, "LatentRM", missing=set(expected) - set(found),
                                 unexpected=set(found) - set(expected), mismatched=shapes)
    if error is not None:
        raise error

TRAJECTORY_SCORES = ("sum", "mean", "last", "min")


def trajectory_score(step_scores: torch.Tensor, mask: torch.Tensor | None = None, how: str = "sum") -> torch.Tensor:
    """Trajectory score from step scores (..., T): ``sum`` (paper), ``mean``, ``last`` or ``min``
    over the unmasked steps. Returns (...,).

    Trajectories of different lengths (a dynamic latent stop) are scored over their own steps:
    with ``sum`` a longer trajectory adds more terms, so the sign of the RM's step scores
    decides whether length helps; ``mean`` compares per-step averages. A trajectory with no
    step at all (its latent phase ended before the first latent) has no LatentRM score: it
    scores ``-inf`` under every ``how``, so it loses to any scored trajectory.

    Raises:
        ValueError: unknown ``how``.
    """
    if how not in TRAJECTORY_SCORES:
        raise ValueError(f"trajectory score how={how!r}; expected one of {TRAJECTORY_SCORES}")
    if mask is None:
        mask = torch.ones_like(step_scores, dtype=torch.bool)
    mask = mask.bool()
    s = step_scores.float()
    if how == "sum":
        out = (s * mask).sum(-1)
    elif how == "mean":
        out = (s * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    elif how == "min":
        out = s.masked_fill(~mask, float("inf")).amin(-1)
    else:
        last = (mask.long().cumsum(-1) * mask).argmax(-1, keepdim=True)
        out = s.gather(-1, last).squeeze(-1) if s.shape[-1] else s.sum(-1)
    return out.masked_fill(~mask.any(-1), float("-inf"))


class LatentRMStepScorer:
    """Incremental LatentRM scoring of growing trajectories, for latent beam search (paper
    Sec. 3.2-3.3: step scores r_t, trajectory score = sum of r_t by default).

    The prompts are encoded once; each :meth:`extend` feeds one latent per row through the RM's
    KV cache, so scoring T steps costs T one-position passes instead of T passes over the whole
    prompt and prefix (the r_t are the same: the RM is causal, ``r_t = g(x, h_1..h_t)``).

    Args:
        rm: the LatentRM (eval mode). questions: the B questions.
        how: trajectory score from the step scores (``sum``, paper; ``mean``, ``last``, ``min``).
        share_prompt: a question's rows read its prompt's keys/values in place (False: each row a copy).
    """

    def __init__(self, rm: LatentRM, questions: list[str], how: str = "sum", share_prompt: bool = True):
        self.rm, self.how, self.share_prompt = rm, how, share_prompt
        self._prompts, self._prompt_mask = rm.encode_prefix(questions)
        self._cache, self._mask = self._prompts, self._prompt_mask
        self._steps = torch.zeros(len(questions), 0, device=rm.device)
        self._step_mask = torch.zeros(len(questions), 0, dtype=torch.bool, device=rm.device)

    def reset(self, owners: torch.Tensor) -> None:
        """Start R rows, row i belonging to question ``owners[i]`` ((R,) long). When each question owns an equal
        run of consecutive rows (beam search, DVTS) they share its prompt's keys/values instead of copying them."""
        owners = owners.to(self.rm.device)
        q, rows = len(self._prompt_mask), len(owners)
        group = rows // q if q and rows % q == 0 else 0
        if group and self.share_prompt and supports_prefix_attention(self.rm.transformer) and torch.equal(
                owners, torch.arange(q, device=owners.device).repeat_interleave(group)):
            self._cache = self._prompts.shared_by(group)
            self._mask = self._prompt_mask.repeat_interleave(group, 0)
        else:
            self._cache, self._mask = self._prompts.select_rows(owners), self._prompt_mask[owners]
        self._steps = torch.zeros(rows, 0, device=self.rm.device)
        self._step_mask = torch.zeros(rows, 0, dtype=torch.bool, device=self.rm.device)

    def _take(self, rows: torch.Tensor) -> None:
        self._cache = self._cache.select_rows(rows)
        self._mask, self._steps, self._step_mask = self._mask[rows], self._steps[rows], self._step_mask[rows]

    @torch.no_grad()
    @_rm_precision
    def extend(self, parents: torch.Tensor, latents: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Append latent ``latents[i]`` (R', d) to the prefix of row ``parents[i]`` of the
        previous call (or of :meth:`reset`) and return the R' trajectory scores (float32).

        ``active`` (R',) bool: rows given False append nothing (a trajectory whose latent phase
        has ended) and keep their parent's score; their column is masked in the RM's cache."""
        self._take(parents.to(self.rm.device))
        rows = latents.shape[0]
        act = torch.ones(rows, dtype=torch.bool, device=self.rm.device) if active is None else active.to(self.rm.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, act.long()[:, None]], dim=1)
        hidden = self.rm._cached_pass(self.rm.embed_latents(latents[:, None]), self._mask, positions, self._cache)[:, -1]
        r = self.rm.classifier(self.rm.dropout(hidden)).squeeze(-1).float()
        self._steps = torch.cat([self._steps, r[:, None]], dim=1)
        self._step_mask = torch.cat([self._step_mask, act[:, None]], dim=1)
        return trajectory_score(self._steps, self._step_mask, how=self.how)


def write_provenance(rm_dir: str | Path, backbone: str) -> dict:
    """Record in ``rm_dir/latent_rm.json`` that the LatentRM there was trained on the latents of
    ``backbone`` (loaded to fingerprint its weights); the weights are not touched.

    For LatentRM directories written before the export recorded it (the shipped quickstart RMs
    were stamped with this). It states a fact the caller knows: stamping the wrong backbone
    defeats ``latentlit predict``'s check.

    Returns:
        the provenance written.
    """
    path = Path(resolve_path(rm_dir, kind="latent_rm")) / RM_CONFIG
    meta = json.loads(path.read_text()) if path.exists() else dict(RELEASED_RM_SETTINGS)
    fingerprint = weights_fingerprint(load_backbone(backbone))
    provenance = {"backbone": str(backbone), "backbone_fingerprint": fingerprint}
    path.write_text(json.dumps({**meta, "provenance": provenance}, indent=2))
    return provenance
