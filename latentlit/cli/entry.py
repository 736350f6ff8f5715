"""``latentlit``: the command's entry point (fit, validate, predict; study and rescore over finished runs).

What needs no class is answered before torch and Lightning load (:mod:`latentlit.cli.quick`: ``--help``, an unknown
subcommand or option, a short option's bad value, a missing config file); everything else runs the LightningCLI of
:mod:`latentlit.cli.lightning_cli`.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

from latentlit.cli.quick import answer, interrupted_while_starting
from latentlit.cli.scripts import run as run_tool

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if sys.argv[:1] == ["-m"] or Path(sys.argv[0]).name == "latentlit":  # the command (or -m latentlit.cli)
    # Ctrl-C while imports, parsing or model loading run: one line, nothing to save
    signal.signal(signal.SIGINT, interrupted_while_starting)

TOOLS = {"study": "latentlit.cli.study", "rescore": "latentlit.cli.rescore"}  # latentlit <tool>: over finished runs


def main(args: list[str] | None = None) -> None:
    """Run the CLI on ``args`` (default ``sys.argv[1:]``). Exit status: 0 done; 1 failed; 2 bad input (one
    ``latentlit: error:`` line); 130 Ctrl-C (one ``latentlit: interrupted`` line; a stopped fit saves a resumable
    checkpoint and prints the command, predict resumes when run again); 143 SIGTERM."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] and argv[0] in TOOLS:  # commands over finished runs: no Lightning run
        tool = importlib.import_module(TOOLS[argv[0]]).main
        try:
            run_tool(lambda: tool(argv[1:]))
        except SystemExit as stop:  # a status of 0 returns, as the other subcommands do
            if stop.code:
                raise
        return
    answer(argv)  # help and the errors that need no class: exits here, before torch loads

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from latentlit.cli.lightning_cli import input_error, quiet_libraries

    quiet_libraries()
    try:
        _run_cli(args)
    except SIGTERMException as err:  # Lightning's fit loop raises it with no exit status (the shell saw 0)
        raise SystemExit(err.code or 143) from None
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning ends a run stopped by Ctrl-C with sys.exit(1), after its graceful shutdown
        context = err.__context__
        while context is not None and not isinstance(context, KeyboardInterrupt):
            context = context.__context__
        if os.environ.get("LATENTLIT_DEBUG") or isinstance(err, SystemExit) and not (err.code == 1 and context):
            raise
        sys.stderr.write("latentlit: interrupted\n")
        raise SystemExit(130) from None
    except (ValueError, KeyError, FileNotFoundError, OSError, TypeError) as err:
        if (found := input_error(err)) is None or os.environ.get("LATENTLIT_DEBUG"):
            raise
        root, where = found
        sys.stderr.write(f"latentlit: error: {type(root).__name__}: {root}\n(raised while {where}; LATENTLIT_DEBUG=1 "
                         "shows the traceback)\n")
        raise SystemExit(2) from None


def _run_cli(args: list[str] | None) -> None:
    from latentlit.cli.lightning_cli import run

    run(args)
