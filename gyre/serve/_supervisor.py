"""The supervisor of `gyre serve --workers N`: N server processes kept running.

Each slot holds one spawned server process. A process tells the supervisor when it is
ready (its models loaded, its socket listening) with one message on a pipe of its own.
When a process dies the supervisor notes it (its live gauges leave /metrics) and starts
a replacement when the slot's `RestartPolicy` says so; meanwhile the other processes keep
serving, untouched. The supervisor never stops a healthy process because another died.
It gives up only when no process has ever become ready and every slot has failed to
start at least once: the server cannot start at all (like a single-process server whose
start fails), and saying so beats retrying forever without ever serving. Once any
process has been ready, deaths only ever lead to restarts.

On SIGTERM or SIGINT it forwards SIGTERM to every process, waits for their graceful
shutdown, and removes its metrics folder (under the home directory, see `_rundir`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client import multiprocess

from gyre.config import Config
from gyre.serve._metrics import MULTIPROCESS_DIR_ENV
from gyre.serve._restarts import RestartPolicy
from gyre.serve._rundir import MetricsDir

log = logging.getLogger("gyre.serve")

READY = b"ready"
# The longest the supervisor sleeps between looks at its slots when nothing happens.
_TICK_S = 0.2

# (config, processes, metrics folder, supervisor pid, ready pipe) -> runs one server
WorkerTarget = Callable[[Config, int, str, int, Connection], None]


class _Slot:
    """One place for a server process, and its restart schedule."""

    def __init__(self, number: int, policy: RestartPolicy) -> None:
        self.number = number
        self.policy = policy
        self.process: BaseProcess | None = None
        self.ready_pipe: Connection | None = None
        self.ready = False
        self.ever_ready = False
        self.start_at = 0.0
        self.deaths = 0


def supervise(config: Config, workers: int, target: WorkerTarget) -> None:
    """Run `workers` processes of `target` until SIGTERM or SIGINT."""
    metrics = MetricsDir.create(config.home)
    # prometheus_client's multiprocess mode reads this in each freshly spawned process.
    os.environ[MULTIPROCESS_DIR_ENV] = str(metrics.path)
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    serve = config.serve

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    def start(slot: _Slot, now: float) -> None:
        try:
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=target,
                args=(config, workers, str(metrics.path), os.getpid(), writer),
                name=f"gyre-server-{slot.number}",
            )
            process.start()
        except OSError as exc:  # out of processes, memory or descriptors: try again later
            slot.deaths += 1
            slot.start_at = slot.policy.died(now, was_ready=False)
            log.error("could not start server process %d (%s); next try in %.1f s",
                      slot.number, exc, slot.start_at - now)  # fmt: skip
            return
        writer.close()  # the child has its copy; a dead child's pipe then reads as closed
        slot.process, slot.ready_pipe, slot.ready = process, reader, False
        slot.policy.started(now)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    slots = [
        _Slot(
            number,
            RestartPolicy(
                serve.worker_restarts_per_min,
                serve.worker_start_backoff_ms / 1000.0,
                serve.worker_start_backoff_max_ms / 1000.0,
            ),
        )
        for number in range(workers)
    ]
    try:
        for slot in slots:
            start(slot, time.monotonic())
        while not stopping.is_set():
            _wait_for_news(slots)
            now = time.monotonic()
            for slot in slots:
                _look_at(slot, now, metrics.path)
                if slot.process is None and now >= slot.start_at and not stopping.is_set():
                    start(slot, now)
            if not any(slot.ever_ready for slot in slots) and all(s.deaths for s in slots):
                raise SystemExit(
                    "gyre serve: no server process could start (each slot failed); "
                    "see the log above"
                )
    finally:
        _stop_all(slots, serve.shutdown_timeout_s + 10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        metrics.remove()


def _wait_for_news(slots: list[_Slot]) -> None:
    """Sleep until a process exits or reports ready, a restart is due, or a tick passes."""
    watched: list[Connection | int] = []
    for slot in slots:
        if slot.process is not None:
            watched.append(slot.process.sentinel)
            if slot.ready_pipe is not None:
                watched.append(slot.ready_pipe)
    due = [slot.start_at - time.monotonic() for slot in slots if slot.process is None]
    timeout = min([_TICK_S, *due])
    if timeout > 0:
        wait(watched, timeout=timeout)


def _look_at(slot: _Slot, now: float, metrics_dir: Path) -> None:
    """Note what happened to the slot's process: ready, or dead (then plan its restart)."""
    process, pipe = slot.process, slot.ready_pipe
    if process is None:
        return
    if pipe is not None and not slot.ready and pipe.poll():
        with contextlib.suppress(EOFError):  # closed without a word: died before ready
            slot.ready = pipe.recv_bytes() == READY
        if slot.ready:
            slot.ever_ready = True
            log.info("server process %d (pid %s) is ready", slot.number, process.pid)
        pipe.close()
        slot.ready_pipe = None
    if process.exitcode is None:
        return
    # Its gauges of live values must not count on /metrics any more; its counters stay.
    multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    slot.deaths += 1
    slot.start_at = slot.policy.died(now, was_ready=slot.ready)
    how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"status {process.exitcode}"
    log.error(
        "server process %d (pid %s) exited with %s %s; starting another in %.1f s",
        slot.number,
        process.pid,
        how,
        "after it was ready" if slot.ready else "before it was ready",
        max(0.0, slot.start_at - now),
    )
    if slot.ready_pipe is not None:
        slot.ready_pipe.close()
    process.close()  # its sentinel's descriptor: a supervisor may restart for months
    slot.process, slot.ready_pipe, slot.ready = None, None, False


def _stop_all(slots: list[_Slot], timeout_s: float) -> None:
    """SIGTERM to every process (a graceful shutdown each), then wait; SIGKILL the late."""
    running = [slot.process for slot in slots if slot.process is not None]
    for process in running:
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in running:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
