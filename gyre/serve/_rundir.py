"""State a running server keeps on disk, which a crash can leave behind: it lives under
`<home>/run/`, never in the temporary folder, and a start removes what dead servers left.

A server with several processes keeps prometheus' multiprocess files in
`run/metrics-<supervisor pid>-<random>/`. Every process that writes there (the supervisor
and each of its workers) holds a shared `flock` on the folder's `lock` file for as long
as it lives. The kernel drops a process's locks however it ends, `kill -9` included, so a
folder whose lock can be taken exclusively belongs to no live process: each start takes
the lock of every `metrics-*` folder it finds, and removes the ones it gets. A lock rather
than a pid check, because pids are reused (a server in a container is often pid 1 every
time). Folders are made and removed only under an exclusive lock on `run/lock`, so a
start never removes a folder that another start has made and not yet locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gyre.stores import Stores

log = logging.getLogger("gyre.serve")

_LOCK = "lock"
_PREFIX = "metrics-"


def run_dir(home: Path) -> Path:
    return Stores(home).run_path


class MetricsDir:
    """This server's folder of metrics files, held (shared lock) while this process lives."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, home: Path) -> MetricsDir:
        """Remove the folders dead servers left under `home`, then make and hold one."""
        run = run_dir(home)
        run.mkdir(parents=True, exist_ok=True)
        with _exclusive(run / _LOCK):
            remove_stale(run)
            path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=run))
            return cls(path, hold(path))

    def remove(self) -> None:
        """Remove the folder (at a clean exit, once every worker has exited)."""
        with _exclusive(self.path.parent / _LOCK):
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)


def hold(metrics_dir: Path) -> int:
    """Hold `metrics_dir` for as long as this process lives (or until the returned
    descriptor is closed): a shared lock, which keeps any start from removing it."""
    fd = os.open(metrics_dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def remove_stale(run: Path) -> list[Path]:
    """Remove every metrics folder under `run` that no live process holds; call it with
    `run/lock` held. Returns the folders removed."""
    removed = []
    for path in sorted(run.glob(f"{_PREFIX}*")):
        if not path.is_dir():
            continue
        try:
            fd: int | None = os.open(path / _LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:  # made but never locked: its maker died at once
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live server's
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.info("removed %s, left by a server that is no longer running", path)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
