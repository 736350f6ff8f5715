"""LightningModule: GRPO on a latent backbone, or on a learned sampler over a frozen one (docs/rl.md)."""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.problem import Problem
from latentlit.evaluation.metrics import DistinctMean
from latentlit.lit.resume import override_optimizer_options
from latentlit.lit.step_mean import StepMean
from latentlit.models.backbone import LatentBackbone
from latentlit.models.checkpoints import load_backbone, resolve_path, save_backbone
from latentlit.models.ensemble import load_latent_rm
from latentlit.models.hooks import Sampler
from latentlit.sampling import AGN, LearnedSampler
from latentlit.training.grpo import ADVANTAGES, gaussian_kl, group_advantages, grpo_loss, k3_kl
from latentlit.training.policy import (
    PolicyLogprobs,
    Rollouts,
    draw_rollouts,
    is_gaussian,
    policy_logprobs,
    rollout_keys,
)

TRAINS = ("backbone", "sampler")


class GRPOModule(L.LightningModule):
    """Group Relative Policy Optimization (Shao et al. 2024) with a latentlit sampler as exploration.

    Each training step takes B questions (``GRPODataModule``), draws G rollouts per question with
    ``sampler`` through the sampling engine (keyed by seed, question, sample and round), rewards
    each 1/0 by the answer rule, and minimises :func:`latentlit.training.grpo.grpo_loss` on the
    policy log-probabilities of :func:`latentlit.training.policy.policy_logprobs`. The KL is to
    the starting model (frozen copy): closed-form Gaussian KL on latent steps, k3 on answer tokens.

    Args:
        backbone: the starting backbone (a directory, hub id or ``quickstart``).
        sampler: the exploration (default AGN sigma 1.0 relative). ``train="sampler"`` needs a
            :class:`~latentlit.sampling.LearnedSampler`.
        train: ``backbone`` (the policy is the backbone; the sampler is fixed) or ``sampler``
            (the learned sampler's network; the backbone is frozen).
        group_size: G rollouts per question.
        advantage: ``leave_one_out`` (default), ``mean`` or ``mean_std``
            (:func:`~latentlit.training.grpo.group_advantages`).
        kl_coef: beta, the weight of the KL to the starting model (0: no reference is kept).
        clip_low / clip_high: PPO clip range of the ratio (clip_high default: clip_low).
        updates_per_batch: optimiser steps on each round of rollouts (> 1: PPO reuse; the ratio
            is to the policy that drew them and the clip acts).
        answer_logprob: include the answer tokens in the policy (required for MC-dropout).
        latent_rm / rm_weight: a LatentRM (directory or shipped name) whose trajectory score
            (sum of r_t, paper Eq. 2) times ``rm_weight`` is added to each rollout's 1/0 reward;
            the score is in the RM's own units, so ``rm_weight`` sets how far it can move a reward.
        lr / weight_decay: AdamW.
        max_new_tokens: answer tokens decoded per rollout and at validation.
        seed: keys the rollouts. export_dir: where the trained backbone or sampler is saved at
            the end of fit (default ``<log_dir>/backbone`` or ``<log_dir>/sampler``).

    Raises:
        ValueError: unknown ``train`` or ``advantage``, G < 2, a negative ``kl_coef``,
            ``updates_per_batch`` < 1, or ``train="sampler"`` without a LearnedSampler.
    """

    def __init__(self, backbone: str = "quickstart", sampler: Sampler | None = None, train: str = "backbone",
                 group_size: int = 16, advantage: str = "leave_one_out", kl_coef: float = 0.02, clip_low: float = 0.2,
                 clip_high: float | None = None, updates_per_batch: int = 1, answer_logprob: bool = True,
                 latent_rm: str | None = None, rm_weight: float = 0.0, lr: float = 1e-4, weight_decay: float = 0.0,
                 max_new_tokens: int = 6, seed: int = 0, export_dir: str | None = None):
        super().__init__()
        if train not in TRAINS:
            raise ValueError(f"train={train!r}; expected one of {TRAINS}")
        if advantage not in ADVANTAGES:
            raise ValueError(f"advantage={advantage!r}; expected one of {ADVANTAGES}")
        if group_size < 2:
            raise ValueError(f"group_size={group_size}: GRPO needs at least 2 rollouts per question")
        if bool(latent_rm) != bool(rm_weight):
            raise ValueError(f"latent_rm={latent_rm!r} and rm_weight={rm_weight}: set both (a LatentRM term in the "
                             "reward) or neither")
        if kl_coef < 0:
            raise ValueError(f"kl_coef={kl_coef} must be >= 0 (the weight of the KL to the starting model)")
        if updates_per_batch < 1:
            raise ValueError(f"updates_per_batch={updates_per_batch} must be >= 1 (optimiser steps per round of rollouts)")
        self.sampler = sampler if sampler is not None else AGN(1.0)
        if train == "sampler" and not isinstance(self.sampler, LearnedSampler):
            raise ValueError(f"train='sampler' trains a LearnedSampler's network; got {type(self.sampler).__name__}")
        if not self.sampler.stochastic:
            raise ValueError(f"GRPO needs a stochastic sampler to explore; {type(self.sampler).__name__} draws "
                             "G identical rollouts")
        if not answer_logprob and not is_gaussian(self.sampler):
            raise ValueError(f"{type(self.sampler).__name__}: the policy log-probability of a sampler without a "
                             "latent distribution is the answer tokens' (answer_logprob must be true)")
        self.save_hyperparameters(ignore=["sampler"])
        self.updates_per_batch = updates_per_batch
        self.backbone: LatentBackbone | None = None
        self.step_mean = StepMean()
        self.val_acc = DistinctMean()
        self.history: list[dict] = []
        self._round: tuple | None = None  # (round index, question ids, rollouts, old log-probs)
        self._t0 = None
        self._seconds_before = 0.0
        object.__setattr__(self, "_reference", None)  # (backbone, sampler) at the start, frozen
        object.__setattr__(self, "_latent_rm", None)

    # ------------------------------------------------------------------ construction
    def setup(self, stage: str) -> None:
        if self.backbone is not None:
            return
        path = resolve_path(self.hparams.backbone)
        self.backbone = load_backbone(path)
        trains_backbone = self.hparams.train == "backbone"
        for p in self.backbone.parameters():
            p.requires_grad_(trains_backbone)
        # kept outside the module's state: the start is reloadable, and a checkpoint stays one model.
        # Built before the sampler binds: a copy of a bound sampler (or of a backbone carrying its
        # hooks) would share hook handles with the policy's
        reference = None
        if self.hparams.kl_coef > 0:
            ref_sampler = copy.deepcopy(self.sampler)
            ref_backbone = load_backbone(path) if trains_backbone else self.backbone
            for p in [*ref_backbone.parameters(), *ref_sampler.parameters()]:
                p.requires_grad_(False)
            reference = (ref_backbone, ref_sampler)
        self.sampler.bind(self.backbone)
        object.__setattr__(self, "_reference", reference)
        rm = None
        if self.hparams.latent_rm:
            rm = load_latent_rm(resolve_path(self.hparams.latent_rm, "latent_rm"))
            for p in rm.parameters():
                p.requires_grad_(False)
        object.__setattr__(self, "_latent_rm", rm)

    def train(self, mode: bool = True):
        # the sampler's keyed masks are the only dropout: torch's own (GPT-2's nn.Dropout in
        # train mode) would make the policy differ from the one that drew the rollouts
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    def on_fit_start(self) -> None:
        StepMean.check(self.trainer)
        if self.updates_per_batch > 1 and self.trainer.accumulate_grad_batches > 1:
            raise ValueError("updates_per_batch > 1 (PPO reuse) with accumulate_grad_batches > 1 is not supported: "
                             "raise the GRPO batch_size instead")
        if self._reference is not None:
            self._reference[0].to(self.device)
            self._reference[1].to(self.device)
        if self._latent_rm is not None:
            self._latent_rm.to(self.device)

    # ------------------------------------------------------------------ one step
    def _rollouts(self, batch: list[Problem]) -> tuple[Rollouts, torch.Tensor | None]:
        """This step's rollouts and, when they are reused, their log-probabilities under the policy
        that drew them."""
        hp = self.hparams
        index = self.global_step // self.updates_per_batch
        ids = [p.id for p in batch]
        if self._round is not None and self._round[0] == index and self.updates_per_batch > 1:
            if self._round[1] == ids:
                return self._round[2], self._round[3]
            # a checkpoint holds one process's round (rank zero's): another process resumed inside
            # that round draws its rollouts again (same keys), but the policy that drew them is gone
            warnings.warn(f"resumed inside round {index} of reused rollouts on a process whose round is not in the "
                          "checkpoint: its rollouts are drawn again and, until the round ends, the PPO ratio is to the "
                          "current policy, not the one that drew them", stacklevel=2)
        keys = rollout_keys(hp.seed, ids, hp.group_size, index)
        rollouts = draw_rollouts(self.backbone, self.sampler, ids, [p.question for p in batch], [p.answer for p in batch],
                                 hp.group_size, keys, hp.max_new_tokens)
        if self._latent_rm is not None:
            rollouts.rewards = rollouts.rewards + hp.rm_weight * self._rm_scores(rollouts).cpu()
        self._round = (index, ids, rollouts, None)
        return rollouts, None

    @torch.no_grad()
    def _rm_scores(self, rollouts: Rollouts) -> torch.Tensor:
        """(R,) LatentRM trajectory scores of the rollouts (question-major)."""
        g, (rows, t, d) = rollouts.group_size, rollouts.latents.shape
        texts = [rollouts.texts[i:i + g] for i in range(0, rows, g)]
        scores = self._latent_rm.score_trajectories(rollouts.questions, rollouts.latents.view(-1, g, t, d),
                                                    rollouts.latent_mask.view(-1, g, t), texts=texts)
        return scores.reshape(-1).float()

    def _kl(self, now: PolicyLogprobs, ref: PolicyLogprobs) -> torch.Tensor:
        parts = []
        if now.latent_logp is not None:
            parts.append(gaussian_kl(now.latent_mean.float(), now.latent_std.float(), ref.latent_mean.float(),
                                     ref.latent_std.float()))
        if now.token_logp is not None:
            parts.append(k3_kl(now.token_logp, ref.token_logp))
        return torch.cat(parts, 1)

    def training_step(self, batch: list[Problem], batch_idx: int) -> torch.Tensor:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        hp = self.hparams
        rollouts, logp_old = self._rollouts(batch)
        now = policy_logprobs(self.backbone, self.sampler, rollouts, answer_tokens=hp.answer_logprob,
                              backbone_grad=hp.train == "backbone")
        logp, mask = now.actions()
        if logp_old is None:
            logp_old = logp.detach()
            if self.updates_per_batch > 1:
                self._round = (*self._round[:3], logp_old)
        kl = None
        if self._reference is not None:
            with torch.no_grad():
                ref = policy_logprobs(*self._reference, rollouts, answer_tokens=hp.answer_logprob, backbone_grad=False)
            kl = self._kl(now, ref)
        rewards = rollouts.rewards.to(logp.device)
        advantages = group_advantages(rewards.view(-1, hp.group_size), hp.advantage).reshape(-1)
        loss, stats = grpo_loss(logp, logp_old, advantages, mask, kl, hp.kl_coef, hp.clip_low, hp.clip_high)
        self._log_stats(rollouts, rewards, advantages, stats, now)
        # summed over trajectories; on_before_optimizer_step divides by the step's trajectory count
        return self.step_mean.add(loss.sum(), loss.shape[0])

    def _log_stats(self, rollouts: Rollouts, rewards: torch.Tensor, advantages: torch.Tensor, stats: dict,
                   now: PolicyLogprobs) -> None:
        g = self.hparams.group_size
        groups = rewards.view(-1, g)
        solved = rollouts.correct.to(rewards.device).view(-1, g)
        values = {
            "train/reward": rewards.mean(),
            "train/accuracy": solved.float().mean(),
            "train/solved_groups": solved.any(1).float().mean(),
            "train/zero_advantage_groups": (groups == groups[:, :1]).all(1).float().mean(),
            "train/advantage_abs": advantages.abs().mean(),
            "train/kl": stats["kl"].mean(),
            "train/clip_fraction": stats["clipped"].mean(),
            "train/distinct_answers": torch.tensor(
                sum(len(set(rollouts.answers[i:i + g])) for i in range(0, len(rollouts.answers), g)) / len(groups)),
        }
        if now.token_entropy is not None:
            values["train/answer_entropy"] = (now.token_entropy * now.token_mask).sum() / now.token_mask.sum().clamp_min(1)
        if now.latent_std is not None:
            values["train/latent_log_std"] = now.latent_std.detach().float().log().mean()
        for name, value in values.items():
            self.log(name, value.float().to(self.device), on_step=True, on_epoch=False, sync_dist=True,
                     batch_size=len(groups))

    def on_before_optimizer_step(self, optimizer) -> None:
        mean = self.step_mean.finish(self.trainer, optimizer)
        if mean is not None:
            self.log("train/loss", mean.float(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=False)

    # ------------------------------------------------------------------ validation: greedy accuracy
    def validation_step(self, batch: list[tuple[int, Problem]], batch_idx: int) -> None:
        out = self.backbone.generate([p.question for _, p in batch], max_new_tokens=self.hparams.max_new_tokens)
        fmt = self.backbone.latent_config.answer_format
        correct = [answers_match(extract_answer(t, fmt), p.answer) for t, (_, p) in zip(out.answers_text, batch)]
        self.val_acc.update(torch.tensor([i for i, _ in batch]), torch.tensor(correct, dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        self.val_acc.reset()
        self.log("val/greedy_accuracy", acc, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        elapsed = self._train_seconds()
        self.history.append({"step": int(self.global_step), "val_greedy_accuracy": acc, "elapsed_s": round(elapsed, 1)})
        if self.trainer.is_global_zero:
            print(f"[latentlit] step {self.global_step}: val greedy accuracy {acc:.3f}, {elapsed:.0f} s", flush=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ resume
    def _train_seconds(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        stored = {"validation_history": list(self.history), "train_seconds": self._train_seconds()}
        if self._round is not None and self._round[3] is not None:
            # a round of reused rollouts in progress: the ratio's denominator cannot be recomputed
            index, ids, rollouts, logp_old = self._round
            # plain tensors, strings and lists: Lightning loads checkpoints with torch's weights_only
            fields = {k: v.cpu() if torch.is_tensor(v) else v for k, v in vars(rollouts).items()}
            stored["round"] = {"index": index, "ids": ids, "rollouts": fields, "logp_old": logp_old.cpu()}
        checkpoint["latentlit"] = stored

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        override_optimizer_options(checkpoint, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        stored = checkpoint.get("latentlit", {})
        self.history = list(stored.get("validation_history", []))
        self._seconds_before = float(stored.get("train_seconds", 0.0))
        if "round" in stored:
            r = stored["round"]
            self._round = (r["index"], r["ids"], Rollouts(**r["rollouts"]), r["logp_old"])

    # ------------------------------------------------------------------ export
    def export_path(self) -> Path:
        """Directory the trained backbone (or sampler) is saved to at the end of fit."""
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / self.hparams.train

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        path = self.export_path()
        if self.hparams.train == "backbone":
            save_backbone(self.backbone, path)
        else:
            self.sampler.save(path)
        summary = {"train_seconds": round(self._train_seconds(), 1), "global_step": int(self.global_step),
                   "start": str(self.hparams.backbone), "train": self.hparams.train,
                   "sampler": self.sampler.describe(), "validation": self.history}
        (path / "training_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[latentlit] GRPO-trained {self.hparams.train} saved to {path}", flush=True)
