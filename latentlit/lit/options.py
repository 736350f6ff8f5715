"""Checks of the options a Lightning module is built with, before anything is loaded or written."""

from __future__ import annotations


def check_at_least(owner: str, **values: tuple[int | None, int]) -> None:
    """Raise ``ValueError`` naming ``owner`` and the option for each given integer option below
    its minimum; ``values`` maps ``name`` to ``(value, minimum)``. ``None`` values are skipped."""
    for name, (value, minimum) in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{owner}: {name} ({value!r}) must be an integer")
        if value is not None and value < minimum:
            raise ValueError(f"{owner}: {name} ({value!r}) must be >= {minimum}")


def check_inference_run(trainer, owner: str) -> None:
    """Refuse what would change the numbers of a job whose records are keyed and resumable
    (``latentlit predict``: TTS and rollout labelling) outside its settings (docs/determinism.md#what-decides-the-numbers):

    * a Trainer ``precision`` other than full float32: a precision plugin runs the forward passes
      under autocast (``*-mixed``) or casts inputs (``*-true``); those numbers would mix with
      float32 ones on resume under the same ``run.json``, and under autocast a question's latents
      depend on what else is in its batch. The weights' ``dtype`` (``--dtype bfloat16``), part of
      the settings, is the one way to run in lower precision;
    * processes that do not split the questions (``use_distributed_sampler`` false under DDP):
      every process would run and count every question;
    * a ``ckpt_path`` (:func:`refuse_checkpoint`): Lightning would restore its weights after the
      run's settings named the loaded backbone and LatentRM by their fingerprints; a trained model
      is given as a directory (``latentlit fit --export_dir``), which its fingerprint then names.

    Raises:
        ValueError: naming the option and what to use instead.
    """
    precision = getattr(trainer, "precision", None) if trainer is not None else None
    if precision not in (None, "32-true"):
        raise ValueError(f"{owner} runs in the weights' dtype: --trainer.precision {precision} would change its numbers "
                         "outside the run's settings (and, under autocast, make a question's latents depend on its "
                         "batch); leave precision at 32-true and give --dtype bfloat16 or float16 instead")
    connector = getattr(trainer, "_accelerator_connector", None)  # what the Trainer was given
    if trainer is not None and trainer.world_size > 1 and not getattr(connector, "use_distributed_sampler", True):
        raise ValueError(f"{owner} splits its questions across processes: with --trainer.use_distributed_sampler false "
                         "every process would run every question; leave it true")


def refuse_checkpoint(trainer, owner: str) -> None:
    """The ``ckpt_path`` rule of :func:`check_inference_run`, raised from ``on_load_checkpoint`` (Lightning
    restores a checkpoint after ``setup``, before the first batch).

    Raises:
        ValueError: always, naming the checkpoint and what to do instead.
    """
    ckpt = getattr(trainer, "ckpt_path", None)
    raise ValueError(f"{owner} takes its weights from its backbone (and latent_rm) directories, named by their "
                     f"fingerprints in run.json; --ckpt_path {ckpt} would replace them after that: export the "
                     "trained model with latentlit fit --export_dir and give that directory as --backbone")


# What each option of a prediction run (TTS or labelling) can do to its numbers, and so how latentlit
# treats it (docs/determinism.md#what-decides-the-numbers; tests/lit/test_option_rules.py checks that every
# option of these classes and of the Trainer is here, and each rule).
RULES = {
    "setting": "in the run's settings (run.json, the directory hash): another value is another run",
    "problems": "which problems run: the source is in the directory hash, and a resumed run must hold the same "
                "questions and golds (a larger limit grows the directory, a smaller one is answered from its records)",
    "float": "the same answers; latents agree to float32 summation order, as across batch shapes and process counts",
    "subset": "runs fewer questions, each as it would run anyway: the directory resumes like --limit",
    "none": "cannot change a number",
    "where": "where outputs and logs go, or what is printed",
    "training": "read by fit only: the prediction loop does not use it",
    "refused": "refused in one line: it would change numbers outside the run's settings",
}
PREDICT_OPTIONS = {
    # TTSPredictor and RolloutLabeller
    "backbone": "setting", "sampler": "setting", "n_samples": "setting", "seed": "setting", "num_latents": "setting",
    "max_new_tokens": "setting", "answer_format": "setting", "dtype": "setting", "latent_rm": "setting",
    "rm_score": "setting", "selector": "setting", "beam_width": "setting", "dvts_width": "setting", "searches": "setting",
    "adaptive": "setting", "save_latents": "setting", "n_rollouts": "setting", "drop_all_correct": "setting",
    "drop_all_wrong": "setting", "rollout_prefix": "setting", "max_trajectories": "float", "output_dir": "where",
    "shard_size": "where",
    # samplers (their describe(), in run.json's sampler)
    "sampler.p": "setting", "sampler.targets": "setting", "sampler.mask_scope": "setting", "sampler.prefill": "setting",
    "sampler.on_answer": "setting", "sampler.attention_p": "setting", "sampler.attention_targets": "setting",
    "sampler.sigma": "setting", "sampler.relative": "setting",
    # data
    "problems": "problems", "batch_size": "float",
    # the Trainer
    "trainer.accelerator": "float", "trainer.strategy": "float", "trainer.devices": "float",
    "trainer.num_nodes": "float", "trainer.deterministic": "float", "trainer.benchmark": "float",
    "trainer.precision": "refused", "trainer.plugins": "refused",  # a precision plugin; others (cluster) are harmless
    "trainer.use_distributed_sampler": "refused",
    "trainer.fast_dev_run": "subset", "trainer.limit_predict_batches": "subset",
    "trainer.inference_mode": "none", "trainer.detect_anomaly": "none", "trainer.sync_batchnorm": "none",
    "trainer.barebones": "none",
    "trainer.logger": "where", "trainer.callbacks": "where", "trainer.log_every_n_steps": "where",
    "trainer.enable_checkpointing": "where", "trainer.enable_progress_bar": "where",
    "trainer.enable_model_summary": "where", "trainer.profiler": "where", "trainer.default_root_dir": "where",
    "trainer.enable_autolog_hparams": "where", "trainer.model_registry": "where",
    **{f"trainer.{name}": "training" for name in (
        "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
        "limit_test_batches", "overfit_batches", "val_check_interval", "check_val_every_n_epoch",
        "num_sanity_val_steps", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
        "reload_dataloaders_every_n_epochs")},
    # the command
    "seed_everything": "refused", "ckpt_path": "refused",
}
