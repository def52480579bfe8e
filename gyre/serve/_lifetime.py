"""Child processes die with their parent: a server worker or a Python model worker must
not outlive the process that supervises it, even when that one is killed with SIGKILL."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent, whose pid the parent passed
    in as `parent`, dies (no-op elsewhere). A parent that died before this call (a child
    spends a while importing first) is noticed too: this process was then reparented.

    Linux tracks the parent *thread*: only use this in a process started from a thread
    that lives as long as its parent (the main thread); otherwise use `watch_parent`."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def watch_parent(parent: int, interval_s: float = 0.5) -> None:
    """Exit at once when the parent process, whose pid the parent passed in as `parent`,
    is gone (checked now, then from a daemon thread)."""
    import threading
    import time

    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="gyre-parent-watch", daemon=True).start()
