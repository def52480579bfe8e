"""The supervisor of a multi-process `gyre serve`: real processes, killed for real."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from gyre.registry import Registry
from tests.conftest import ServerProcess, process_running, server_workers, start_server

pytestmark = pytest.mark.integration

IRIS = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5, 3, 1, 0]}]}


def ready_pids(server: ServerProcess) -> list[int]:
    """The pids the supervisor has logged as ready, in order."""
    return [int(pid) for pid in re.findall(r"\(pid (\d+)\) is ready", server.output())]


def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_slot_that_keeps_dying_never_takes_the_healthy_worker_or_the_server_down(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    """8 deaths in one slot (the old supervisor exited after 3 x workers = 6 deaths over
    its whole life, killing the healthy worker with it): the first after it was ready,
    then 7 of its replacements while they start. The other worker answers every request
    throughout, the supervisor keeps trying the slot with a backoff, and its last
    replacement becomes ready and serves."""
    home = tmp_path / "home"
    Registry(home).publish("iris", iris_classifier, iris[0])
    config = tmp_path / "gyre.toml"
    config.write_text("[serve]\nworker_start_backoff_ms = 100\nworker_start_backoff_max_ms = 200\n")
    server = start_server(home, "--workers", "2", config=config)
    statuses: list[int | str] = []
    stop = threading.Event()

    def load() -> None:  # a new connection per request: the kernel picks a listening worker
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=10, limits=limits) as http:
            while not stop.is_set():
                try:
                    statuses.append(http.post("/v2/models/iris/infer", json=IRIS).status_code)
                except httpx.TransportError as exc:
                    statuses.append(type(exc).__name__)

    loader = threading.Thread(target=load)
    try:
        wait_for(lambda: len(ready_pids(server)) == 2)
        victim, healthy = ready_pids(server)
        os.kill(victim, signal.SIGKILL)  # a ready worker: replaced at once
        wait_for(lambda: not process_running(victim))
        loader.start()
        killed = {victim}

        def starting() -> set[int]:
            return set(server_workers(server.process.pid)) - killed - {healthy}

        for _ in range(7):  # each replacement, as soon as it exists: a failed start
            wait_for(lambda: server.process.poll() is not None or starting())
            assert server.process.poll() is None, "the supervisor exited"
            assert process_running(healthy)
            (pid,) = starting()
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        wait_for(lambda: len(ready_pids(server)) == 3)  # the slot serves again
        replacement = ready_pids(server)[-1]
        assert replacement not in killed
        time.sleep(1.0)  # both workers answer for a while
    finally:
        stop.set()
        if loader.is_alive():
            loader.join(timeout=30)
        output = server.output()
        assert server.stop() == 0, output
    assert server_workers(server.process.pid) == []
    assert len(statuses) > 20
    assert set(statuses) == {200}, [s for s in statuses if s != 200]  # not one failed
    assert output.count("before it was ready; starting another in") == 7
    assert "after it was ready; starting another in 0.0 s" in output


def test_a_server_none_of_whose_workers_can_start_exits_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = tmp_path / "gyre.toml"
    config.write_text(
        '[collect.events.clicks]\nfields = { id = "string", at = "timestamp" }\n'
        'time = "at"\nid = "id"\n'
    )
    (home / "facts.db").mkdir(parents=True)  # no worker can open its fact log
    with pytest.raises(RuntimeError, match="no server process could start"):
        start_server(home, "--workers", "2", config=config)
