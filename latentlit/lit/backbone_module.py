"""LightningModule that trains a latent backbone with the COCONUT curriculum."""

from __future__ import annotations

import difflib
import json
import time
from pathlib import Path

import lightning as L
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.curriculum import TokenizedProblem, build_stage_batch, tokenize_problem
from latentlit.data.problem import Problem
from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT, check_questions, require_latent_tokens
from latentlit.evaluation.metrics import DistinctMean
from latentlit.lit.resume import override_optimizer_options, warn_untrained
from latentlit.lit.step_mean import StepMean
from latentlit.models.backbone import LatentBackbone, LatentConfig
from latentlit.models.checkpoints import load_backbone, save_backbone

SCHEDULES = ("steps", "epochs")


class LatentBackboneModule(L.LightningModule):
    """COCONUT curriculum training (Hao et al. 2024, Sec. 3) of a GPT-2 / Llama backbone.

    Stage 0 (explicit CoT) lasts ``stage0_length`` steps (or epochs); stages 1..``num_stages``
    ``stage_length`` each; training stays at the last stage after that. At stage k the first k
    steps are replaced by k*``thoughts_per_step`` latents; the exported model has
    T = num_stages * thoughts_per_step.

    Args:
        arch: config fields for a model built from scratch: GPT-2 by default (``n_layer``,
            ``n_embd``, ``n_head``, ``resid_pdrop``...), or any transformers causal LM named by
            ``model_type`` (``llama``: ``hidden_size``, ``num_hidden_layers``,
            ``num_attention_heads``, ``intermediate_size``...); vocab size and special ids come
            from the tokenizer. Dropout stays in the config: MC-dropout needs it at inference.
        dynamic_stop: train a CoLaR-style dynamic latent stop: at stage k a problem with s
            reasoning steps gets min(k, s)*c latents (not k*c), the LM head learns to emit
            ``<|latent|>`` while thinking and ``<|end-latent|>`` after the last latent
            (:meth:`LatentBackbone.forward_train` ``stop_targets``), and the exported backbone
            stops when it emits ``<|end-latent|>`` (``latent_stop_id``), after at most
            ``num_stages * thoughts_per_step`` latents.
        init_from: a latentlit backbone directory to start from instead (its tokenizer is used).
        schedule: ``steps`` | ``epochs``. reset_optimizer: clear AdamW state at each new stage.
        export_dir: where the trained backbone is saved (HF format) at the end of fit; default
            ``<log_dir>/backbone``.
        val_max_new_tokens: answer tokens decoded in validation.
    """

    def __init__(self, arch: dict[str, int | float | bool | str] | None = None, init_from: str | None = None, num_stages: int = 4,
                 thoughts_per_step: int = 1, schedule: str = "steps", stage0_length: int = 1000,
                 stage_length: int = 250, lr: float = 1e-3, weight_decay: float = 0.01,
                 reset_optimizer: bool = True, prompt_template: str = "{question} " + START_LATENT,
                 answer_format: str = "coconut", export_dir: str | None = None, val_max_new_tokens: int = 40,
                 seed: int = 0, dynamic_stop: bool = False):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; expected one of {SCHEDULES}")
        check_arch(arch or {})
        self.save_hyperparameters()
        self.backbone: LatentBackbone | None = None
        self._tokenized: dict[str, TokenizedProblem] = {}
        self._stage_seen = -1
        self._t0 = None
        self.val_acc = DistinctMean()
        self.val_latents = DistinctMean()
        self.val_stop = DistinctMean()
        self.step_mean = StepMean()
        self.history: list[dict] = []
        self._seconds_before = 0.0  # training time of the runs this one resumes
        self._weights_loaded = False  # a checkpoint restored the weights (--ckpt_path)

    # ------------------------------------------------------------------ model construction
    def setup(self, stage: str) -> None:
        if self.backbone is not None:
            return
        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        if hp.init_from:
            self.backbone = load_backbone(hp.init_from)
            if dm is not None:
                dm.tokenizer = self.backbone.tokenizer
            if hp.dynamic_stop:
                cfg = self.backbone.latent_config
                if cfg.latent_id is None:
                    raise ValueError(f"dynamic_stop needs a backbone with a <|latent|> token; {hp.init_from} has none")
                cfg.latent_stop_id = cfg.latent_stop_id if cfg.latent_stop_id is not None else cfg.end_latent_id
                cfg.max_latents = hp.num_stages * hp.thoughts_per_step
        else:
            if dm is None or getattr(dm, "tokenizer", None) is None:
                raise RuntimeError("LatentBackboneModule built from scratch needs a datamodule that provides a tokenizer")
            self.backbone = build_backbone(dm.tokenizer, hp.arch or {}, hp.num_stages * hp.thoughts_per_step,
                                           hp.prompt_template, hp.answer_format, seed=hp.seed,
                                           dynamic_stop=hp.dynamic_stop)
        # validation reads every question through the tokenizer: one it cannot read fails now, not
        # after the first training steps (latentlit.data.tokenizer.check_questions)
        validates = self._trainer is None or self.trainer.limit_val_batches != 0
        val = (getattr(dm, "val_problems", None) or []) if validates else []
        check_questions(self.backbone.tokenizer, [p.question for p in val], [p.id for p in val])


    # ------------------------------------------------------------------ curriculum
    def current_stage(self) -> int:
        """Curriculum stage k (0 = chain of thought) at the current step or epoch."""
        hp = self.hparams
        clock = self.global_step if hp.schedule == "steps" else self.current_epoch
        if clock < hp.stage0_length:
            return 0
        return min(hp.num_stages, 1 + (clock - hp.stage0_length) // max(hp.stage_length, 1))

    def _tokens(self, problems: list[Problem]) -> list[TokenizedProblem]:
        cfg = self.backbone.latent_config
        out = []
        for p in problems:
            if p.id not in self._tokenized:
                self._tokenized[p.id] = tokenize_problem(p, self.backbone.tokenizer, cfg.prompt_template, cfg.eos_id, cfg.add_bos)
            out.append(self._tokenized[p.id])
        return out

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        stage = self.current_stage()
        if stage != self._stage_seen:
            if self._stage_seen >= 0 and self.hparams.reset_optimizer:
                for opt in self.trainer.optimizers:
                    opt.state.clear()
            self._stage_seen = stage

    def training_step(self, batch: list[Problem], batch_idx: int) -> torch.Tensor:
        cfg = self.backbone.latent_config
        stage = self.current_stage()
        dynamic = self.hparams.dynamic_stop
        b = build_stage_batch(self._tokens(batch), stage, self.hparams.thoughts_per_step, cfg.end_latent_id, cfg.pad_id,
                              self.device, dynamic=dynamic)
        loss_sum, n = self.backbone.forward_train(b["prompt_ids"], b["prompt_mask"], b["num_latents"], b["suffix_ids"],
                                                  b["suffix_mask"], stop_targets=dynamic)
        self.log("train/stage", float(stage), prog_bar=True, batch_size=len(batch))
        # the summed loss: the gradient is divided by the whole step's target tokens in
        # on_before_optimizer_step, so accumulation and DDP do not change it
        return self.step_mean.add(loss_sum, n)

    def on_fit_start(self) -> None:
        StepMean.check(self.trainer)

    def on_before_optimizer_step(self, optimizer) -> None:
        mean = self.step_mean.finish(self.trainer, optimizer)
        if mean is not None:
            # per target token over the whole optimiser step (all micro-batches and processes)
            self.log("train/loss", mean.float(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=False)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: list[tuple[int, Problem]], batch_idx: int) -> None:
        t = self.current_stage() * self.hparams.thoughts_per_step
        out = self.backbone.generate([p.question for _, p in batch], num_latents=t,
                                     max_new_tokens=self.hparams.val_max_new_tokens)
        fmt = self.backbone.latent_config.answer_format
        correct = [answers_match(extract_answer(text, fmt), p.answer) for text, (_, p) in zip(out.answers_text, batch)]
        # keyed by problem index: DDP's padded repeats count once, so the accuracy is exact
        index = torch.tensor([i for i, _ in batch])
        self.val_acc.update(index, torch.tensor(correct, dtype=torch.float64))
        # with a dynamic stop: does the latent phase end after the problem's own number of steps?
        used = out.latent_mask.sum(1).cpu()
        c = max(self.hparams.thoughts_per_step, 1)
        wanted = torch.tensor([min(len(p.steps), t // c) * c for _, p in batch])
        self.val_latents.update(index, used.to(torch.float64))
        self.val_stop.update(index, (used == wanted).to(torch.float64))

    def on_validation_start(self) -> None:
        warn_untrained(self, self._weights_loaded or bool(self.hparams.init_from),
                       "the backbone is built from scratch (arch) with random weights",
                       "--ckpt_path <a checkpoint of latentlit fit with this config> or --model.init_args.init_from "
                       "<an exported backbone directory>")

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        latents, stop = float(self.val_latents.compute()), float(self.val_stop.compute())
        for metric in (self.val_acc, self.val_latents, self.val_stop):
            metric.reset()
        stage = self.current_stage()
        self.log("val/acc", acc, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:  # Lightning's pre-training check, not a validation of the run
            return
        elapsed = self._train_seconds()
        entry = {"step": int(self.global_step), "stage": stage, "val_acc": acc, "elapsed_s": round(elapsed, 1)}
        extra = ""
        if self.hparams.dynamic_stop:
            self.log("val/mean_latents", latents, sync_dist=False)
            self.log("val/stop_exact", stop, sync_dist=False)
            entry.update(mean_latents=round(latents, 4), stop_exact=round(stop, 4))
            extra = f", mean latents {latents:.2f}, stop at the problem's own step count {stop:.3f}"
        self.history.append(entry)
        if self.trainer.is_global_zero:
            print(f"[latentlit] step {self.global_step} stage {stage} (T={stage * self.hparams.thoughts_per_step}): "
                  f"val accuracy {acc:.3f}{extra}, {elapsed:.0f} s", flush=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ resume
    def _train_seconds(self) -> float:
        """Training time so far, over every run of this fit (resumed runs included)."""
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # what the training summary reports, so that a resumed fit's summary covers the whole run
        checkpoint["latentlit"] = {"validation_history": list(self.history), "train_seconds": self._train_seconds()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # options come from the config: the stored optimiser state must not bring back its lr
        override_optimizer_options(checkpoint, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        self._weights_loaded = True
        stored = checkpoint.get("latentlit", {})
        self.history = list(stored.get("validation_history", []))
        self._seconds_before = float(stored.get("train_seconds", 0.0))

    # ------------------------------------------------------------------ export
    def export_path(self) -> Path:
        """Directory the trained backbone is saved to at the end of fit."""
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "backbone"

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        path = self.export_path()
        self.backbone.latent_config.num_latents = self.hparams.num_stages * self.hparams.thoughts_per_step
        if self.hparams.dynamic_stop:
            self.backbone.latent_config.max_latents = self.backbone.latent_config.num_latents
        save_backbone(self.backbone, path)
        summary = {"train_seconds": round(self._train_seconds(), 1) if self._t0 or self._seconds_before else None,
                   "global_step": int(self.global_step), "validation": self.history}
        (path / "training_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[latentlit] trained backbone saved to {path}", flush=True)


def _config_class(arch: dict):
    model_type = arch.get("model_type", "gpt2")
    try:
        return type(AutoConfig.for_model(model_type))
    except ValueError as err:
        raise ValueError(f"arch model_type={model_type!r} is not a transformers model type") from err


def check_arch(arch: dict) -> None:
    """Check ``arch`` fields (GPT-2, or the config class of ``arch["model_type"]``) before
    training starts.

    Raises:
        ValueError: an unknown ``model_type``; a field its config does not have (a typo would
            otherwise be stored and ignored); a dropout rate (``*_pdrop``, ``*_dropout``)
            outside [0, 1).
    """
    cls = _config_class(arch)
    known = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {})) | {"model_type"}
    for key, value in arch.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            family = "GPT-2" if cls.model_type == "gpt2" else cls.model_type
            raise ValueError(f"arch field {key!r} is not a {family} config field" + (f" (did you mean {close}?)" if close else ""))
        if key.endswith(("pdrop", "dropout")) and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"arch {key}={value!r} must be a dropout rate in [0, 1)")


def build_backbone(tokenizer, arch: dict, num_latents: int, prompt_template: str, answer_format: str,
                   seed: int = 0, dynamic_stop: bool = False) -> LatentBackbone:
    """A randomly initialised latent backbone sized by ``arch`` over ``tokenizer``: GPT-2, or
    the causal LM of ``arch["model_type"]`` (``AutoModelForCausalLM.from_config``).

    GPT-2 uses transformers' fused ``gelu_pytorch_tanh`` (same function as GPT-2's ``gelu_new``)
    and 256 positions unless ``arch`` says otherwise. With ``dynamic_stop`` the latent phase
    ends when the LM head emits ``<|end-latent|>`` (at most ``num_latents`` steps).
    """

    check_arch(arch)
    ids = require_latent_tokens(tokenizer, "training tokenizer")
    fields = {k: v for k, v in arch.items() if k != "model_type"}
    if arch.get("model_type", "gpt2") == "gpt2":
        fields = {"n_positions": 256, "activation_function": "gelu_pytorch_tanh", **fields}
    config = _config_class(arch)(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(config)
    latent = LatentConfig(num_latents=num_latents, start_latent_id=ids[START_LATENT], latent_id=ids[LATENT],
                          end_latent_id=ids[END_LATENT], eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                          prompt_template=prompt_template, answer_format=answer_format,
                          latent_stop_id=ids[END_LATENT] if dynamic_stop else None, max_latents=num_latents)
    return LatentBackbone(lm, tokenizer, latent)


def build_gpt2_backbone(tokenizer, arch: dict, num_latents: int, prompt_template: str, answer_format: str,
                        seed: int = 0, dynamic_stop: bool = False) -> LatentBackbone:
    """:func:`build_backbone` for a GPT-2 ``arch`` (kept for callers that name the family)."""
    return build_backbone(tokenizer, {"model_type": "gpt2", **arch}, num_latents, prompt_template, answer_format,
                          seed=seed, dynamic_stop=dynamic_stop)
