"""LightningModule that trains a latent backbone with the COCONUT curriculum."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.curriculum import TokenizedProblem, build_stage_batch, tokenize_problem
from latentlit.data.problem import Problem
from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT
from latentlit.lit.resume import override_optimizer_options
from latentlit.lit.step_mean import StepMean
from latentlit.metrics import DistinctMean
from latentlit.models.backbone import LatentBackbone, LatentConfig

SCHEDULES = ("steps", "epochs")


class LatentBackboneModule(L.LightningModule):
    """COCONUT curriculum training (Hao et al. 2024, Sec. 3) of a GPT-2 / Llama backbone.

    Stage 0 (explicit CoT) lasts ``stage0_length`` steps (or epochs); stages 1..``num_stages``
    ``stage_length`` each; training stays at the last stage after that. At stage k the first k
    steps are replaced by k*``thoughts_per_step`` latents; the exported model has
    T = num_stages * thoughts_per_step.

    Args:
        arch: GPT-2 config fields for a model built from scratch (``n_layer``, ``n_embd``,
            ``n_head``, ``resid_pdrop``...; vocab size and special ids come from the tokenizer).
            Dropout stays in the config: MC-dropout needs it at inference.
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
                 seed: int = 0):
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
        self.step_mean = StepMean()
        self.history: list[dict] = []
        self._seconds_before = 0.0  # training time of the runs this one resumes

    # ------------------------------------------------------------------ model construction
    def setup(self, stage: str) -> None:
        if self.backbone is not None:
            return
        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        if hp.init_from:
            self.backbone = LatentBackbone.from_pretrained(hp.init_from)
            if dm is not None:
                dm.tokenizer = self.backbone.tokenizer
            return
        if dm is None or getattr(dm, "tokenizer", None) is None:
            raise RuntimeError("LatentBackboneModule built from scratch needs a datamodule that provides a tokenizer")
        self.backbone = build_gpt2_backbone(dm.tokenizer, hp.arch or {}, hp.num_stages * hp.thoughts_per_step,
                                            hp.prompt_template, hp.answer_format, seed=hp.seed)


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
        b = build_stage_batch(self._tokens(batch), stage, self.hparams.thoughts_per_step, cfg.end_latent_id, cfg.pad_id, self.device)
        loss_sum, n = self.backbone.forward_train(b["prompt_ids"], b["prompt_mask"], b["num_latents"], b["suffix_ids"], b["suffix_mask"])
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
        self.val_acc.update(torch.tensor([i for i, _ in batch]), torch.tensor(correct, dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        self.val_acc.reset()
        stage = self.current_stage()
        self.log("val/acc", acc, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:  # Lightning's pre-training check, not a validation of the run
            return
        elapsed = self._train_seconds()
        self.history.append({"step": int(self.global_step), "stage": stage, "val_acc": acc, "elapsed_s": round(elapsed, 1)})
        if self.trainer.is_global_zero:
            print(f"[latentlit] step {self.global_step} stage {stage} (T={stage * self.hparams.thoughts_per_step}): "
                  f"val accuracy {acc:.3f}, {elapsed:.0f} s", flush=True)

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
        self.backbone.save_pretrained(path)
        summary = {"train_seconds": round(self._train_seconds(), 1) if self._t0 or self._seconds_before else None,
                   "global_step": int(self.global_step), "validation": self.history}
        (path / "training_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[latentlit] trained backbone saved to {path}", flush=True)


def check_arch(arch: dict) -> None:
    """Check GPT-2 ``arch`` fields before training starts.

    Raises:
        ValueError: a field GPT2Config does not have (a typo would otherwise be stored and
            ignored), or a dropout rate (``*_pdrop``) outside [0, 1).
    """
    import difflib

    from transformers import GPT2Config

    known = set(GPT2Config().to_dict()) | set(GPT2Config.attribute_map)
    for key, value in arch.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise ValueError(f"arch field {key!r} is not a GPT-2 config field" + (f" (did you mean {close}?)" if close else ""))
        if key.endswith("pdrop") and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"arch {key}={value!r} must be a dropout rate in [0, 1)")


def build_gpt2_backbone(tokenizer, arch: dict, num_latents: int, prompt_template: str, answer_format: str,
                        seed: int = 0) -> LatentBackbone:
    """A randomly initialised GPT-2 latent backbone sized by ``arch`` over ``tokenizer``.

    Uses transformers' fused ``gelu_pytorch_tanh`` (same function as GPT-2's ``gelu_new``).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from latentlit.data.tokenizer import require_latent_tokens

    ids = require_latent_tokens(tokenizer, "training tokenizer")
    fields = {"n_positions": 256, "activation_function": "gelu_pytorch_tanh", **arch}
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, **fields)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(config)
    latent = LatentConfig(num_latents=num_latents, start_latent_id=ids[START_LATENT], latent_id=ids[LATENT],
                          end_latent_id=ids[END_LATENT], eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                          prompt_template=prompt_template, answer_format=answer_format)
    return LatentBackbone(lm, tokenizer, latent)
