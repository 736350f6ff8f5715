"""One run per output directory: an exclusive lock held for the whole run.

A prediction or labelling run appends to its output directory and resumes from what it finds
there, so two runs writing one directory at once (a stopped job still finishing its batch while
the user resumes it, two shells) would each write the same questions. The run holds an exclusive
``flock`` on ``<output_dir>/.latentlit.lock`` from before anything is written until it ends; a
second run into a held directory stops at once with one line naming the directory (and the
process holding it). The operating system releases a ``flock`` when its process ends, crash or
``kill -9`` included, so a stopped run never leaves a stale lock behind; the lock file itself is
removed at the end of a run (a leftover one from a killed run is harmless: it is locked anew).

Processes of one run: the lock is taken by the process of global rank 0 before Lightning
launches the others; it writes the directories it holds into the environment variable
``LATENTLIT_RUN_LOCK``, which the processes it starts (DDP ranks) inherit, so they are part of
the run and never wait on their own lock. Within one process the lock is re-entrant (counted).

Platforms without ``fcntl`` (Windows): no lock is taken, with a warning; running one job per
output directory is then up to the user. Locks over network file systems follow that file
system's ``flock`` semantics (NFSv4 supports them; some older mounts do not).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".latentlit.lock"
ENV = "LATENTLIT_RUN_LOCK"
# resolved directory -> [file descriptor (None without fcntl), count, created by the lock]
_held: dict[str, list] = {}


class DirectoryInUse(OSError):
    """The output directory is held by another run (message names the directory)."""


def _key(directory: str | Path) -> str:
    return str(Path(directory).resolve())


def _inherited() -> set[str]:
    return {x for x in os.environ.get(ENV, "").split(os.pathsep) if x}


def _set_inherited(keys: set[str]) -> None:
    if keys:
        os.environ[ENV] = os.pathsep.join(sorted(keys))
    else:
        os.environ.pop(ENV, None)


def holds(directory: str | Path) -> bool:
    """True when this process (or the process that started it) holds ``directory``'s lock."""
    key = _key(directory)
    return key in _held or key in _inherited()


def acquire(directory: str | Path) -> None:
    """Hold ``directory``'s run lock (creating the directory); re-entrant within a process, and a
    no-op in a process started by the holder (DDP ranks).

    Raises:
        DirectoryInUse: another process holds it (names the directory and that process's id).
    """
    key = _key(directory)
    if key in _held:
        _held[key][1] += 1
        return
    if key in _inherited():
        return
    if fcntl is None:
        warnings.warn(f"this platform has no fcntl: {directory} is not locked; run one job per output directory",
                      stacklevel=2)
        _held[key] = [None, 1]
        return
    created = not Path(directory).exists()
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DirectoryInUse(f"{directory} is in use by another latentlit run"
                                 + (f" (process {holder})" if holder else "")
                                 + ": wait for it to end (or stop it), or give another output directory") from None
        # the previous holder removes the file when it ends: a lock on a removed file locks nothing
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = [fd, 1, created]
    _set_inherited(_inherited() | {key})


def release(directory: str | Path) -> None:
    """Undo one :func:`acquire` of this process; the last one removes the lock file and unlocks,
    and removes the directory itself when :func:`acquire` created it and the run left it empty
    (nothing happens for a directory this process does not hold)."""
    key = _key(directory)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    _set_inherited(_inherited() - {key})
    fd = entry[0]
    if fd is None:
        return
    path = Path(key) / LOCK_FILE
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            path.unlink()  # while still locked: nobody can hold a file that is about to go
    except FileNotFoundError:
        pass
    os.close(fd)
    if len(entry) > 2 and entry[2]:
        # a directory the lock itself created and the run left empty (a fit stopped before its
        # export) is not left behind
        try:
            Path(key).rmdir()
        except OSError:
            pass


def release_all() -> None:
    """Release every lock this process holds (the end of a CLI run, however it ended)."""
    for key in list(_held):
        _held[key][1] = 1
        release(key)
