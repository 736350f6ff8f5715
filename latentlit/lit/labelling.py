"""Rollout labelling as a prediction job: ``latentlit predict --config configs/quickstart/label.yaml``.

Each ``predict_step`` labels a batch of questions (``latentlit.scoring.rollouts``) and a
callback writes the groups to shards as they are produced. Re-running into the same directory
skips the questions already indexed; under DDP every rank writes its own shards and index, and
the result equals a one-process run (labels are keyed by question, sample and rollout).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from latentlit.data.problem import Problem
from latentlit.data.tokenizer import check_questions
from latentlit.lit.callbacks import ClosingLines
from latentlit.lit.options import check_at_least, check_inference_run, refuse_checkpoint
from latentlit.lit.writer import stop_on_sigterm
from latentlit.models.checkpoints import load_backbone
from latentlit.models.hooks import Sampler
from latentlit.runs.directory import (
    OutputDirectory,
    let_go_output_dir,
    release_if_empty,
)
from latentlit.runs.fingerprint import weights_fingerprint
from latentlit.runs.lock import holds
from latentlit.sampling.mc_dropout import MCDropout
from latentlit.scoring.rollouts import ROLLOUT_BRANCH, ROLLOUT_PREFIXES, LabelStats, label_problems
from latentlit.scoring.shards import GroupShardWriter, read_index


class RolloutLabeller(ClosingLines, OutputDirectory, L.LightningModule):
    """Produce rollout-labelled step groups for LatentRM training.

    Args:
        backbone: backbone directory or ``"quickstart"``.
        sampler: the sampler of both the N trajectories and the rollouts (default MC-dropout p=0.1).
        n_samples: N trajectories per question. n_rollouts: M rollouts per (trajectory, step).
        drop_all_correct / drop_all_wrong: filters on the N final answers.
        output_dir: the groups directory (shards + index); re-running into it resumes. Default
            ``outputs/<run_name>-<hash>`` of :meth:`run_settings` and the problem source.
        shard_size: groups per shard.
        rollout_prefix: ``"per_rollout"`` (default, the paper's definition: every rollout encodes
            the prompt and h_1..h_t with its own randomness) or ``"shared"`` (rollouts reuse the
            trajectory's cached prompt and h_1..h_{t-1}; cheaper, labels closer to the
            trajectory's outcome under MC-dropout); ``latentlit.scoring.rollouts.label_problems``.
            Stored in ``run.json`` (a resumed run must match) and ``summary.json``.

    Raises:
        ValueError: a count below 1, or an unknown ``rollout_prefix``.
    """

    # the config's name (``quickstart_label``); the latentlit CLI sets it
    run_name = "label"

    def __init__(self, backbone: str = "quickstart", sampler: Sampler | None = None, n_samples: int = 8,
                 n_rollouts: int = 8, seed: int = 0, drop_all_correct: bool = True, drop_all_wrong: bool = True,
                 max_new_tokens: int = 8, output_dir: str | None = None, shard_size: int = 256,
                 rollout_prefix: str = "per_rollout"):
        super().__init__()

        # checked before anything is loaded or written: a failed start leaves no directory behind
        check_at_least("RolloutLabeller", n_samples=(n_samples, 1), n_rollouts=(n_rollouts, 1),
                       max_new_tokens=(max_new_tokens, 1), shard_size=(shard_size, 1))
        if rollout_prefix not in ROLLOUT_PREFIXES:
            raise ValueError(f"RolloutLabeller: rollout_prefix={rollout_prefix!r}; expected one of {ROLLOUT_PREFIXES}")
        self.save_hyperparameters(ignore=["sampler"])
        self.sampler = sampler if sampler is not None else MCDropout(p=0.1)
        self.backbone = load_backbone(backbone)
        # what the weights are, not where they came from (run.json; latentlit.runs.fingerprint)
        self.backbone_fingerprint = weights_fingerprint(self.backbone)
        self.stats = LabelStats()
        self._seconds = 0.0
        self.output_path: Path | None = None

    def configure_callbacks(self):
        return [GroupWriter(self._resolve_output_dir())]

    def run_settings(self) -> dict:
        """Everything that decides the labelled groups (stored in ``run.json``); a resumed run must
        match it. The backbone is named by path and by the fingerprint of its weights, which a
        LatentRM trained on these groups records as its provenance. Left out (they change
        neither): ``output_dir``, ``shard_size`` (how groups are split into files)."""
        hp = self.hparams
        self.sampler.bind(self.backbone)  # describe() then counts the hooked modules
        return {"backbone": str(hp.backbone), "backbone_fingerprint": self.backbone_fingerprint,
                "sampler": self.sampler.describe(), "n_samples": hp.n_samples, "n_rollouts": hp.n_rollouts,
                "seed": hp.seed, "drop_all_correct": hp.drop_all_correct, "drop_all_wrong": hp.drop_all_wrong,
                "max_new_tokens": hp.max_new_tokens, "rollout_branch": ROLLOUT_BRANCH,
                # absent from run.json of earlier versions (labelled "shared"): such a directory is
                # refused on resume rather than guessed
                "rollout_prefix": hp.rollout_prefix}

    def setup(self, stage: str) -> None:
        check_inference_run(self._trainer, "RolloutLabeller")
        self.backbone.eval()
        hp = self.hparams
        problems = getattr(getattr(self._trainer, "datamodule", None), "problems", None)
        if problems:  # every question, before any work and before run.json binds the directory
            ids, questions = [p.id for p in problems], [p.question for p in problems]
            self.backbone.check_lengths(ids, questions, hp.max_new_tokens)
            check_questions(self.backbone.tokenizer, questions, ids)
        done = self.open_output_dir(lambda out: read_index(out) if out.exists() else [])
        self._skip = {line["id"] for line in done}
        if self._trainer is None or self.trainer.is_global_zero:
            print(f"[latentlit] labelling: {self.sampler.describe()['name']}, N = {hp.n_samples}, M = {hp.n_rollouts}, "
                  f"seed {hp.seed}, rollout prefix {hp.rollout_prefix}, backbone {hp.backbone}: output directory "
                  f"{self.output_path}" + (f" (resuming: {len(self._skip)} questions done)" if self._skip else ""),
                  flush=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        refuse_checkpoint(self._trainer, "RolloutLabeller")

    def predict_step(self, batch: list[tuple[int, Problem]], batch_idx: int):
        hp = self.hparams
        batch = [(i, p) for i, p in batch if p is not None and p.id not in self._skip]  # placeholders, resume
        if not batch:
            return []
        self.backbone.check_lengths([p.id for _, p in batch], [p.question for _, p in batch], hp.max_new_tokens)
        start = time.perf_counter()
        groups, stats = label_problems(self.backbone, self.sampler, [p for _, p in batch], n_samples=hp.n_samples,
                                       n_rollouts=hp.n_rollouts, seed=hp.seed, drop_all_correct=hp.drop_all_correct,
                                       drop_all_wrong=hp.drop_all_wrong, max_new_tokens=hp.max_new_tokens,
                                       rollout_prefix=hp.rollout_prefix)
        self._seconds += time.perf_counter() - start
        self.stats.merge(stats)
        # plain dicts: Lightning walks predict outputs and cannot rebuild frozen dataclasses
        return [{"index": i, "id": p.id, "question": p.question, "gold": p.answer, "group": g}
                for (i, p), g in zip(batch, groups)]


def _ratio(saving: float) -> str:
    """``saving`` = reference tokens / tokens run, in words either way (per-rollout prefixes run
    about the reference's count, a little more with padding)."""
    return f"{saving:.1f}x fewer" if saving >= 1 else f"{1 / saving:.2f}x more"


# what a groups directory holds once a question is labelled (globs)
GROUP_FILES = ("index.r*.jsonl", "shard-*.safetensors", "summary.json", "stats.r*.json")


class GroupWriter(Callback):
    """Writes labelled groups to shards per batch; at the end merges statistics into
    ``summary.json`` and prints them."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.writer: GroupShardWriter | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # only a run that holds the directory touches it (not one refused because another holds
        # it); one that stopped before its first group leaves no directory behind
        if trainer.is_global_zero and holds(self.output_dir):
            release_if_empty(self.output_dir, GROUP_FILES)
            let_go_output_dir(trainer, self.output_dir)

    def on_predict_start(self, trainer, pl_module) -> None:
        self.writer = GroupShardWriter(self.output_dir, rank=trainer.global_rank, shard_size=pl_module.hparams.shard_size)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for o in outputs:
            self.writer.add(o["index"], o["id"], o["question"], o["gold"], o["group"])
        # one shard per batch keeps progress on disk; shard_size caps very large batches
        self.writer.flush()
        stop_on_sigterm(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        try:
            self._finish(trainer, pl_module)
        finally:
            let_go_output_dir(trainer, self.output_dir)

    def _finish(self, trainer, pl_module) -> None:
        self.writer.flush()
        part = self.output_dir / f"stats.r{trainer.global_rank}.json"
        s = pl_module.stats
        part.write_text(json.dumps({**vars(s), "seconds": pl_module._seconds}))
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return
        total, seconds = LabelStats(), 0.0
        for p in sorted(self.output_dir.glob("stats.r*.json")):
            d = json.loads(p.read_text())
            seconds = max(seconds, d.pop("seconds"))
            total.merge(LabelStats(**d))
        if total.questions == 0 and (self.output_dir / "summary.json").exists():
            pl_module.say_at_end(f"[latentlit] nothing left to label in {self.output_dir}; its summary.json is kept")
            return
        summary = {"this_run": total.summary(), "seconds_this_run": round(seconds, 1),
                   "config": plain_config(pl_module.hparams), "sampler": pl_module.sampler.describe(),
                   "groups_total": sum(1 for line in read_index(self.output_dir) if line["kept"]),
                   "questions_total": len(read_index(self.output_dir))}
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        pl_module.say_at_end(f"[latentlit] {label_line(summary['this_run'], seconds)}; rollout prefix "
                             f"{pl_module.hparams.rollout_prefix}. Groups in {self.output_dir}")


def plain_config(hparams) -> dict:
    """The module's options for ``summary.json``: jsonargparse's bookkeeping entries
    (``_class_path``, ``_instantiator``) left out."""
    return {k: v for k, v in hparams.items() if not str(k).startswith("_")}


def label_line(r: dict, seconds: float) -> str:
    """The one-line account of a labelling run (:meth:`LabelStats.summary` ``r``); label
    statistics only when labels were made."""
    kept = (f"kept {r['kept']} ({100 * r['kept_fraction']:.1f}%" if r["kept_fraction"] is not None else f"kept {r['kept']} (")
    line = (f"labelled {r['questions']} questions in {seconds:.0f} s: {kept}; dropped {r['dropped_all_correct']} "
            f"all-correct, {r['dropped_all_wrong']} all-wrong); ")
    if r["labels"]:
        line += (f"labels mean {r['label_mean']:.3f}" + (f" std {r['label_std']:.3f}" if r["label_std"] is not None else "")
                 + f", {100 * r['label_fraction_0']:.1f}% zeros, {100 * r['label_fraction_1']:.1f}% ones")
        if r["label_fraction_pre_final_equal_final"] is not None:
            line += (f", {100 * r['label_fraction_pre_final_equal_final']:.1f}% of those before a trajectory's last "
                     "step equal its final correctness")
        line += "; "
    else:
        line += "no labels (no question kept); "
    saving = f" ({_ratio(r['saving_vs_reference'])})" if r["saving_vs_reference"] is not None else ""
    return (line + f"forward tokens {r['forward_tokens']} vs reference re-prefill {r['reference_forward_tokens']}"
            + saving)
