"""Child processes die with their parent: a server worker or a Python model worker must
not outlive the process that supervises it, even when that one is killed with SIGKILL."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere).

    Linux tracks the parent *thread*: only use this in a process started from a thread
    that lives as long as its parent (the main thread); otherwise use `watch_parent`."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def watch_parent(interval_s: float = 0.5) -> None:
    """Exit at once when the parent process is gone (checked from a daemon thread)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="gyre-parent-watch", daemon=True).start()
