"""Test helpers: tiny, seeded checkpoints in the released layouts (see :mod:`latentlit.testing.checkpoints`)."""

from latentlit.testing.checkpoints import write_tiny_coconut, write_tiny_codi, write_tiny_colar

__all__ = ["write_tiny_coconut", "write_tiny_codi", "write_tiny_colar"]
