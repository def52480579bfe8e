"""Python models in supervised worker processes, never in the server process.

`PythonRuntime` is the server's side: it sends each batch to its worker over a pipe and
waits up to `worker_timeout_ms`. A worker that dies (segfault, `os._exit`) or hangs is
killed; the batch in flight fails with `Unavailable` (503, or the model's default), and
the worker is restarted after an exponential backoff (`worker_backoff_ms` doubling up to
`worker_backoff_max_ms`) while requests meanwhile get 503 at once. Other models, in their
own processes, are not affected.
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from gyre.config import ModelServeConfig
from gyre.errors import Unavailable
from gyre.registry._files import VersionFiles
from gyre.registry._pymodel import call_load, check_outputs, load_class
from gyre.serve._lifetime import watch_parent
from gyre.serve._runtime import SignatureRuntime, Tensors
from gyre.types import Signature

log = logging.getLogger("gyre.serve")


def worker_main(code_path: str, class_name: str, module_name: str, signature_json: bytes,
                conn: Connection, server: int,
                files: VersionFiles | None = None) -> None:  # fmt: skip
    """The worker process: materialize the version's files (verified), load the class
    once, then answer batches until told to stop."""
    import msgspec

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    # No server, no work. (Workers are restarted from short-lived timer threads, so the
    # parent-death signal, which follows the spawning thread, cannot be used here.)
    watch_parent(server)
    signature = msgspec.json.decode(signature_json, type=Signature)
    where = f"class `{class_name}`"
    try:
        artifacts = files.materialize() if files is not None else None
        instance = load_class(Path(code_path), class_name, module_name)
        call_load(instance, artifacts, where)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            kind, feeds = conn.recv()
        except EOFError:
            return
        if kind == "stop":
            return
        try:
            rows = len(next(iter(feeds.values()))) if feeds else 1
            outputs = instance.predict(feeds)
            check_outputs(outputs, signature, rows, where)
            conn.send(("ok", {spec.name: outputs[spec.name] for spec in signature.outputs}))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class PythonRuntime(SignatureRuntime):
    """One worker process per version, supervised."""

    inline_allowed = False

    def __init__(
        self,
        model: str,
        version: int,
        code_path: Path,
        class_name: str,
        signature: Signature,
        settings: ModelServeConfig,
        on_restart: Callable[[], None] | None = None,
        files: VersionFiles | None = None,
    ) -> None:
        super().__init__(model, version, signature)
        self._args = (str(code_path), class_name, f"gyre_user_{model}_{version}".replace("-", "_"))
        self._files = files  # every (re)start materializes and verifies them
        self._signature_json = __import__("msgspec").json.encode(signature)
        self.timeout_s = settings.worker_timeout_ms / 1000.0
        self.load_timeout_s = settings.worker_load_timeout_ms / 1000.0
        self.backoff_s = settings.worker_backoff_ms / 1000.0
        self.backoff_max_s = settings.worker_backoff_max_ms / 1000.0
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._failures = 0
        self._next_start = 0.0
        self._closed = False
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=worker_main,
            args=(*self._args, self._signature_json, child, os.getpid(), self._files),
            daemon=True,
        )
        process.start()
        child.close()
        try:
            if not parent.poll(self.load_timeout_s):
                raise Unavailable(
                    f"{self.what}: worker did not load within {self.load_timeout_s:g} s"
                )
            status, payload = parent.recv()
        except (EOFError, OSError):
            status, payload = "error", f"worker process died while loading ({process.exitcode})"
        except Unavailable:
            process.kill()
            raise
        if status != "ready":
            process.kill()
            process.join()
            raise Unavailable(f"{self.what}: worker failed to load: {payload}")
        self._process, self._conn = process, parent
        log.info("worker for %s started (pid %s)", self.what, process.pid)

    def run(self, feeds: Tensors) -> Tensors:
        with self._lock:
            if self._conn is None:
                wait_s = self._next_start - time.monotonic()
                raise Unavailable(
                    f"{self.what}: its worker is restarting; retry in {max(wait_s, 0.1):.1f} s"
                )
            started = time.perf_counter()
            try:
                self._conn.send(("predict", feeds))
                if not self._conn.poll(self.timeout_s):
                    self._crashed(
                        f"worker did not answer within {self.timeout_s:g} s and was killed"
                    )
                status, payload = self._conn.recv()
            except (EOFError, OSError):
                self._crashed("worker process died")
            if status != "ok":
                raise RuntimeError(payload)  # the model's own error, about these inputs
            self._failures = 0
            self._timed(started)
            return payload  # type: ignore[no-any-return]

    def _crashed(self, reason: str) -> NoReturn:
        process, self._process, self._conn = self._process, None, None
        if process is not None:
            process.kill()
            process.join(timeout=5)
            reason += f" (exit code {process.exitcode})"
        self._failures += 1
        if self._on_restart is not None:
            self._on_restart()
        backoff = min(self.backoff_max_s, self.backoff_s * 2 ** (self._failures - 1))
        self._next_start = time.monotonic() + backoff
        log.error("%s: %s; restarting in %.1f s", self.what, reason, backoff)
        timer = threading.Timer(backoff, self._restart)
        timer.daemon = True
        timer.start()
        raise Unavailable(f"{self.what}: {reason}; restarting in {backoff:.1f} s")

    def _restart(self) -> None:
        with self._lock:
            if self._closed or self._conn is not None:
                return
            try:
                self._start()
            except Unavailable as exc:
                self._failures += 1
                backoff = min(self.backoff_max_s, self.backoff_s * 2 ** (self._failures - 1))
                self._next_start = time.monotonic() + backoff
                log.error("%s; next try in %.1f s", exc, backoff)
                timer = threading.Timer(backoff, self._restart)
                timer.daemon = True
                timer.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(("stop", None))
            if self._process is not None:
                self._process.join(timeout=5)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()
            self._process, self._conn = None, None
