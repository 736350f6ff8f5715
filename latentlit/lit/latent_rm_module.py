"""LightningModule training a LatentRM on rollout-labelled step groups (paper Sec. 3.3)."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch

from latentlit.models.latent_rm import LatentRM
from latentlit.scoring.losses import step_bce_loss, step_contrastive_loss, trajectory_score

LOSSES = ("contrastive", "bce")


class LatentRMModule(L.LightningModule):
    """Train r_t = g(x, h_1..h_t) with the step-level contrastive loss (or BCE).

    Args:
        backbone: the latent backbone whose weights initialise the RM (and whose tokenizer and
            prompt it uses). n_layer: keep only the first ``n_layer`` blocks (a smaller RM).
        loss: ``contrastive`` (softmax over the N candidates at each step) | ``bce``.
        score: trajectory score for validation recall@1: ``sum`` (paper) | ``mean`` | ``last`` | ``min``.
        export_dir: where the best RM (by validation recall@1) is saved at the end of fit;
            default ``<log_dir>/latent_rm``. With ``trainer.max_steps=0`` the untrained
            random-head RM is exported (the baseline).
    """

    def __init__(self, backbone: str = "quickstart", n_layer: int | None = None, loss: str = "contrastive",
                 lr: float = 3e-4, weight_decay: float = 0.0, score: str = "sum", head_dropout: float = 0.1,
                 export_dir: str | None = None, seed: int = 0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; expected one of {LOSSES}")
        self.save_hyperparameters()
        from latentlit.models.backbone import LatentBackbone

        self.rm = LatentRM.from_backbone(LatentBackbone.from_pretrained(backbone), n_layer=n_layer, seed=seed,
                                         head_dropout=head_dropout)
        self._best: tuple[float, dict] | None = None
        self._val: list[torch.Tensor] = []


    def on_fit_start(self) -> None:
        groups = getattr(self.trainer.datamodule, "train_groups", None)
        width = self.rm.transformer.config.n_embd
        if groups and groups[0].latents.shape[-1] != width:
            raise ValueError(f"the groups in {self.trainer.datamodule.groups_dir} hold {groups[0].latents.shape[-1]}-dim "
                             f"latents but the RM built from backbone {self.hparams.backbone} reads {width}-dim ones: "
                             "train from the backbone that labelled them")

    def _scores(self, batch: dict) -> torch.Tensor:
        g, n, t = batch["labels"].shape
        ids, mask = self.rm.encode_prompts(batch["questions"])
        flat = batch["latents"].reshape(g * n, t, -1)
        fmask = batch["latent_mask"].reshape(g * n, t)
        return self.rm(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), flat, fmask).reshape(g, n, t)

    def _loss(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        fn = step_contrastive_loss if self.hparams.loss == "contrastive" else step_bce_loss
        return fn(scores, batch["labels"], batch["latent_mask"]) / scores.shape[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self._scores(batch), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["questions"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = self._scores(batch)
        self.log("val/loss", self._loss(scores, batch), batch_size=len(batch["questions"]))
        traj = trajectory_score(scores, batch["latent_mask"], self.hparams.score)
        traj = traj.masked_fill(~batch["candidate_mask"], float("-inf"))
        top = traj.argmax(1)
        self._val.append(batch["final_correct"].gather(1, top[:, None]).squeeze(1).float())

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        recall = torch.cat(self._val).mean()
        self._val.clear()
        recall = self.trainer.strategy.reduce(recall, reduce_op="mean")
        self.log("val/recall@1", recall, prog_bar=True)
        if not self.trainer.sanity_checking and (self._best is None or float(recall) > self._best[0]):
            self._best = (float(recall), copy.deepcopy({k: v.detach().cpu() for k, v in self.rm.state_dict().items()}))

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
        self.rm.save_pretrained(path)
        best = f" ({what})"
        print(f"[latentlit] LatentRM saved to {path}{best}", flush=True)
