"""What the scripts under ``scripts/`` share with the ``latentlit`` command: a bad argument or bad
input (a missing directory, a corrupt record file, a run that cannot be compared) is one
``latentlit: error:`` line and a hint on stderr, exit status 2; Ctrl-C is one ``latentlit:
interrupted`` line, status 130; ``LATENTLIT_DEBUG=1`` keeps the traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


class ScriptParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one ``latentlit: error:`` line (no usage dump)."""

    def error(self, message: str):
        if os.environ.get("LATENTLIT_DEBUG"):
            super().error(message)
        sys.stderr.write(f"latentlit: error: {message}\n({self.prog} --help lists the options)\n")
        raise SystemExit(2)


def run(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` and exit with its status (None: 0), reporting bad input in one line."""
    try:
        code = main()
    except KeyboardInterrupt:
        if os.environ.get("LATENTLIT_DEBUG"):
            raise
        sys.stderr.write("latentlit: interrupted\n")
        raise SystemExit(130) from None
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        if os.environ.get("LATENTLIT_DEBUG"):
            raise
        sys.stderr.write(f"latentlit: error: {type(err).__name__}: {err}\n(LATENTLIT_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None
    raise SystemExit(code or 0)
