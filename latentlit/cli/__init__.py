"""The ``latentlit`` command: ``latentlit fit | validate | predict`` (a LightningCLI)."""

from latentlit.cli.entry import main

__all__ = ["main"]
