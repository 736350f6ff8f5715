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


def check_inference_precision(trainer, owner: str) -> None:
    """Refuse a Trainer ``precision`` other than full float32 for a job whose records are keyed and
    resumable (``latentlit predict``: TTS and rollout labelling).

    A precision plugin would run the forward passes under autocast (``*-mixed``) or cast inputs
    (``*-true``) outside the run's settings: its numbers would mix with float32 ones on resume
    under the same ``run.json``, and under autocast a question's latents depend on what else is
    in its batch. The weights' dtype is the one way to run in lower precision: ``dtype``
    (``--dtype bfloat16``), part of the run's settings.

    Raises:
        ValueError: naming the precision and the option to use instead.
    """
    precision = getattr(trainer, "precision", None) if trainer is not None else None
    if precision not in (None, "32-true"):
        raise ValueError(f"{owner} runs in the weights' dtype: --trainer.precision {precision} would change its numbers "
                         "outside the run's settings (and, under autocast, make a question's latents depend on its "
                         "batch); leave precision at 32-true and give --dtype bfloat16 or float16 instead")
