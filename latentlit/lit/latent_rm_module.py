"""LightningModule training a LatentRM on rollout-labelled step groups (paper Sec. 3.3)."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from latentlit.evaluation.metrics import DistinctMean
from latentlit.lit.resume import override_optimizer_options, warn_untrained
from latentlit.lit.step_mean import StepMean
from latentlit.models.checkpoints import load_backbone
from latentlit.models.latent_rm import LatentRM, trajectory_score
from latentlit.runs.fingerprint import same_weights, weights_fingerprint
from latentlit.scoring.losses import (
    answer_group_loss,
    listwise_outcome_loss,
    pairwise_loss,
    step_bce_loss,
    step_contrastive_loss,
)
from latentlit.scoring.shards import groups_provenance

LOSSES = ("contrastive", "bce", "pairwise", "listwise", "group")
# the (G, ...) batch tensors a loss may read: validation slices each to one group
_LOSS_KEYS = ("labels", "latent_mask", "final_correct", "candidate_mask", "answer_groups")


class LatentRMModule(L.LightningModule):
    """Train r_t = g(x, h_1..h_t) with the step-level contrastive loss (or another objective).

    Args:
        backbone: the latent backbone (any family latentlit loads) whose latents the RM scores;
            its transformer initialises the RM (and its tokenizer and prompt are used).
            n_layer: keep only the first ``n_layer`` blocks (a smaller RM).
        transformer: initialise from this transformers causal LM instead (a directory or hub
            id, e.g. a smaller LM; its tokenizer reads the prompt); a learned projection maps
            the backbone's latents when the widths differ.
        loss: ``contrastive`` (softmax over the N candidates at each step) | ``bce`` | ``pairwise``
            (Bradley-Terry on the step labels' order) | ``listwise`` (contrastive + ListNet on the
            final outcome over trajectory scores) | ``group`` (contrastive + ListNet over answer
            groups, for the weighted vote; needs groups labelled with their answers).
        read_answer: the RM also reads each trajectory's decoded answer after its latents and
            scores it as one more step, r_answer, whose label is the trajectory's own outcome
            (needs groups labelled with their answers).
        score: trajectory score for validation recall@1: ``sum`` (paper) | ``mean`` | ``last`` | ``min``.
        export_dir: where the best RM (by validation recall@1) is saved at the end of fit;
            default ``<log_dir>/latent_rm``. With ``trainer.max_steps=0`` the untrained
            random-head RM is exported (the baseline).
    """

    def __init__(self, backbone: str = "quickstart", n_layer: int | None = None, loss: str = "contrastive",
                 lr: float = 3e-4, weight_decay: float = 0.0, score: str = "sum", head_dropout: float = 0.1,
                 export_dir: str | None = None, seed: int = 0, transformer: str | None = None,
                 read_answer: bool = False):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; expected one of {LOSSES}")
        self.save_hyperparameters()

        source = load_backbone(backbone)
        self.rm = LatentRM.from_backbone(source, n_layer=n_layer, seed=seed, head_dropout=head_dropout,
                                         transformer=transformer, read_answer=read_answer)
        # exported in latent_rm.json: latentlit predict compares it with its own backbone
        self.backbone_fingerprint = weights_fingerprint(source)
        self.rm.provenance = {"backbone": str(backbone), "backbone_fingerprint": self.backbone_fingerprint}
        self._weights_loaded = False  # a checkpoint restored the RM (--ckpt_path)
        self._best: tuple[float, dict] | None = None
        self.step_mean = StepMean()
        self.val_recall, self.val_loss = DistinctMean(), DistinctMean()
        self._val_seen = 0


    def on_fit_start(self) -> None:
        StepMean.check(self.trainer)
        groups = getattr(self.trainer.datamodule, "train_groups", None)
        width = self.rm.latent_size
        if groups and groups[0].latents.shape[-1] != width:
            raise ValueError(f"the groups in {self.trainer.datamodule.groups_dir} hold {groups[0].latents.shape[-1]}-dim "
                             f"latents but the RM built from backbone {self.hparams.backbone} reads {width}-dim ones: "
                             "train from the backbone that labelled them")
        labelled = groups_provenance(getattr(self.trainer.datamodule, "groups_dir", None))
        if labelled is not None:
            # the provenance is the backbone that produced the training latents
            if not same_weights(labelled["backbone_fingerprint"], self.backbone_fingerprint):
                rank_zero_warn(f"LATENTRM / BACKBONE MISMATCH: the groups in {self.trainer.datamodule.groups_dir} were "
                               f"labelled with backbone {labelled['backbone']!r} (weights fingerprint "
                               f"{labelled['backbone_fingerprint']}) but this RM is built from backbone "
                               f"{self.hparams.backbone} (fingerprint {self.backbone_fingerprint}): train from the backbone "
                               "that labelled them; the exported RM records the labelling backbone as its provenance")
            self.rm.provenance = labelled

    def on_validation_start(self) -> None:
        warn_untrained(self, self._weights_loaded, "the LatentRM's head is randomly initialised",
                       "--ckpt_path <a checkpoint of latentlit fit with this config>")

    def _scores(self, batch: dict) -> torch.Tensor:
        """(G, N, T) step scores of a batch; (G, N, T + 1) for an RM that reads the answer (its
        last column r_answer: :meth:`_targets` gives the labels and mask that go with it)."""
        g, n, t = batch["labels"].shape
        ids, mask = self.rm.encode_prompts(batch["questions"])
        flat = batch["latents"].reshape(g * n, t, -1)
        fmask = batch["latent_mask"].reshape(g * n, t)
        answers = ()
        if self.rm.read_answer:
            answers = self.rm.encode_answers([x for row in self._answer_texts(batch) for x in row])
        return self.rm(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), flat, fmask, *answers).reshape(g, n, -1)

    def _answer_texts(self, batch: dict) -> list[list[str]]:
        self._require_answers(batch, "answer_texts", "read_answer=True needs each trajectory's answer text")
        return batch["answer_texts"]

    def _require_answers(self, batch: dict, key: str, need: str) -> None:
        """ValueError naming the groups directory when ``batch`` lacks ``key`` (groups labelled before
        answers were stored)."""
        if key not in batch:
            where = getattr(getattr(self._trainer, "datamodule", None), "groups_dir", None)
            where = f"the groups in {where}" if where else "these groups"
            raise ValueError(f"{need}, but {where} hold no answers (labelled by an older latentlit): relabel them "
                             "with this version")

    def _targets(self, batch: dict) -> dict:
        """The batch the loss reads: for an RM that reads the answer, the answer step appended to
        every candidate (label: the trajectory's own outcome; present for every real candidate)."""
        if not self.rm.read_answer:
            return batch
        return {**batch, "labels": torch.cat([batch["labels"], batch["final_correct"].float()[..., None]], -1),
                "latent_mask": torch.cat([batch["latent_mask"], batch["candidate_mask"][..., None]], -1)}

    def _loss(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """The loss summed over the groups of (G, N, T) ``scores`` (the unit of the mean is the
        group); ``batch`` gives the labels and masks (keys of :func:`collate_groups`)."""
        kind, labels, mask = self.hparams.loss, batch["labels"], batch["latent_mask"]
        if kind == "bce":
            return step_bce_loss(scores, labels, mask)
        if kind == "pairwise":
            return pairwise_loss(scores, labels, mask)
        loss = step_contrastive_loss(scores, labels, mask)
        if kind == "listwise":
            loss = loss + listwise_outcome_loss(scores, mask, batch["final_correct"], batch["candidate_mask"])
        elif kind == "group":
            self._require_answers(batch, "answer_groups", "loss='group' needs each candidate's answer group")
            loss = loss + answer_group_loss(scores, mask, batch["final_correct"], batch["answer_groups"],
                                            batch["candidate_mask"])
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # the summed loss: on_before_optimizer_step divides the gradient by the groups of the
        # whole optimiser step (all micro-batches and processes)
        loss = self._loss(self._scores(batch), self._targets(batch))
        return self.step_mean.add(loss, len(batch["questions"]))

    def on_before_optimizer_step(self, optimizer) -> None:
        mean = self.step_mean.finish(self.trainer, optimizer)
        if mean is not None:
            self.log("train/loss", mean.float(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores, batch = self._scores(batch), self._targets(batch)
        # per group, keyed by its index: DDP's padded repeats count once (exact under any cut)
        losses = torch.stack([self._loss(scores[i:i + 1], {k: batch[k][i:i + 1] for k in _LOSS_KEYS if k in batch})
                              for i in range(scores.shape[0])])
        traj = trajectory_score(scores, batch["latent_mask"], self.hparams.score)
        traj = traj.masked_fill(~batch["candidate_mask"], float("-inf"))
        top = traj.argmax(1)
        hit = batch["final_correct"].gather(1, top[:, None]).squeeze(1)
        if "index" in batch:
            index = batch["index"]
        else:  # groups without their dataset index (another datamodule): distinct keys, no deduplication
            index = (self._val_seen + torch.arange(scores.shape[0])) * self.trainer.world_size + self.global_rank
            self._val_seen += scores.shape[0]
        self.val_recall.update(index, hit)
        self.val_loss.update(index, losses.detach())

    def on_validation_epoch_end(self) -> None:
        if self.val_recall.update_count == 0:
            return
        recall, loss = float(self.val_recall.compute()), float(self.val_loss.compute())
        self.val_recall.reset()
        self.val_loss.reset()
        self._val_seen = 0
        # the same on every process (gathered and deduplicated): no sync_dist
        self.log("val/recall@1", recall, prog_bar=True, sync_dist=False)
        self.log("val/loss", loss, sync_dist=False)
        if not self.trainer.sanity_checking and (self._best is None or recall > self._best[0]):
            self._best = (recall, copy.deepcopy({k: v.detach().cpu() for k, v in self.rm.state_dict().items()}))

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the best RM so far, so that a resumed run still exports the best, not the last weights
        if self._best is not None:
            checkpoint["latentlit"] = {"best_recall": self._best[0], "best_rm": self._best[1]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # options come from the config: the stored optimiser state must not bring back its lr
        override_optimizer_options(checkpoint, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        self._weights_loaded = True
        stored = checkpoint.get("latentlit", {})
        if "best_rm" in stored:
            self._best = (float(stored["best_recall"]), dict(stored["best_rm"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        path = Path(self.hparams.export_dir) if self.hparams.export_dir else Path(self.trainer.log_dir or self.trainer.default_root_dir) / "latent_rm"
        if self._best is not None:
            self.rm.load_state_dict(self._best[1])
            what = f"best validation recall@1 {self._best[0]:.3f}"
        elif self.global_step == 0:
            what = "untrained head"
        else:
            what = f"last weights after {self.global_step} steps: no validation ran (no validation groups?)"
        # predict warns when it is given an RM exported with no training step
        self.rm.provenance = {**(self.rm.provenance or {}), "trained_steps": int(self.global_step)}
        self.rm.save_pretrained(path)
        best = f" ({what})"
        print(f"[latentlit] LatentRM saved to {path}{best}", flush=True)
