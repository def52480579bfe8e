"""The active runs of this process, and what ends them: SIGTERM, and the end of the
program (`_tracking.py` says what each does to a run).

While a run is active, and when the first one started in the main thread (where Python
runs signal handlers, and the only thread that may set them), SIGTERM is handled here and
SIGINT, if it was left at the operating system's default, raises KeyboardInterrupt. The
handlers found are put back when the last run ends in the main thread; a handler someone
set in between is left alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("gyre.learn")


class Ending(Protocol):
    def _end_quietly(self, status: str | None, error: str | None) -> None: ...


_LIVE: dict[Ending, int] = {}  # in start order: the process that started each
_LIVE_LOCK = threading.Lock()
_PREVIOUS: dict[int, Any] = {}  # the handlers ours replaced
_AT_EXIT: list[bool] = []


def watch(run: Ending) -> None:
    with _LIVE_LOCK:
        _LIVE[run] = os.getpid()
        if not _AT_EXIT:
            atexit.register(_at_exit)
            _AT_EXIT.append(True)
    if threading.current_thread() is not threading.main_thread() or _PREVIOUS:
        return
    term = signal.getsignal(signal.SIGTERM)
    if term is not None and term is not signal.SIG_IGN:  # None: set outside Python
        _PREVIOUS[signal.SIGTERM] = term
        signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:
        _PREVIOUS[signal.SIGINT] = signal.SIG_DFL
        signal.signal(signal.SIGINT, signal.default_int_handler)


def unwatch(run: Ending) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(run, None)
        if _LIVE:
            return
    if threading.current_thread() is threading.main_thread():
        _restore()


def _live() -> list[Ending]:
    """The active runs this process started (a forked child ends none of its parent's)."""
    with _LIVE_LOCK:
        return [run for run, pid in _LIVE.items() if pid == os.getpid()]


def _restore() -> None:
    ours: dict[int, Any] = {signal.SIGTERM: _on_sigterm, signal.SIGINT: signal.default_int_handler}
    for signum, previous in list(_PREVIOUS.items()):
        if signal.getsignal(signum) is ours[signum]:
            signal.signal(signum, previous)
        del _PREVIOUS[signum]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _PREVIOUS.get(signal.SIGTERM, signal.SIG_DFL)
    for run in _live():
        run._end_quietly(None, "interrupted by SIGTERM")
    _restore()
    if callable(previous):
        previous(signum, frame)
    elif previous is signal.SIG_DFL:  # end as SIGTERM ends a process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _at_exit() -> None:
    uncaught = getattr(sys, "last_value", None)  # the exception the program ended with
    for run in _live():
        if isinstance(uncaught, KeyboardInterrupt):
            run._end_quietly("interrupted", "KeyboardInterrupt")
        elif uncaught is not None:
            run._end_quietly("failed", f"{type(uncaught).__name__}: {uncaught}")
        else:
            run._end_quietly("finished", None)
