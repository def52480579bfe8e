"""Overload, crashing workers and several server processes, against real `gyre serve`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from gyre.registry import CHAMPION, Registry
from gyre.serve._app import METRICS_FLUSH_S
from gyre.serve._auth import hash_key
from tests.conftest import ServerProcess, process_running, start_server

pytestmark = pytest.mark.integration

PYMODELS = Path(__file__).parent / "pymodels"
ROW = [5.1, 3.5, 1.4, 0.2]
IRIS = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def scorer(command: int) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [command, 1]}]}


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_overload_is_shed_with_503_and_retry_after_not_queued(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Registry(home).publish_file("scorer", PYMODELS / "scorer.py")
    config = tmp_path / "gyre.toml"
    # Every batch takes 0.2 s and holds one row: the model serves 5 requests a second.
    config.write_text(
        "[serve.models.scorer]\nmax_batch_size = 1\nlatency_slo_ms = 1000\n"
        "adaptive_batching = false\n"
    )
    server = start_server(home, config=config)
    try:
        url = f"{server.url}/v2/models/scorer/infer"
        httpx.post(url, json=scorer(1), timeout=10)  # calibrate: one 0.2 s batch
        rss_before = rss_kib(server.process.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            responses = list(
                pool.map(lambda _: httpx.post(url, json=scorer(1), timeout=30), range(300))
            )
        elapsed = time.monotonic() - started
        statuses = Counter(r.status_code for r in responses)
        shed = [r for r in responses if r.status_code == 503]
        assert set(statuses) <= {200, 503, 504}, statuses
        assert statuses[503] > 200, statuses  # most are refused at once…
        assert statuses[200] >= 5  # …while the model keeps answering what it can
        assert int(shed[0].headers["retry-after"]) >= 1
        assert "overloaded" in shed[0].json()["error"]
        assert elapsed < 20  # nothing waited in an unbounded queue
        assert rss_kib(server.process.pid) - rss_before < 50_000
        metrics = httpx.get(f"{server.url}/metrics").text
        assert re.search(r'gyre_shed_requests_total\{model="scorer"\} [1-9]', metrics)
    finally:
        assert server.stop() == 0


def test_killing_a_python_worker_mid_load_hangs_nothing_and_recovers(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish_file("scorer", PYMODELS / "scorer.py")
    registry.publish("iris", iris_classifier, iris[0])
    config = tmp_path / "gyre.toml"
    config.write_text(
        "[serve.models.scorer]\nworker_timeout_ms = 1000\nworker_backoff_ms = 100\n"
        "latency_slo_ms = 5000\n"
    )
    server = start_server(home, config=config)
    stop = threading.Event()
    results: dict[str, list[int]] = {"iris": [], "scorer": []}

    def load(model: str, body: dict) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                results[model].append(http.post(f"/v2/models/{model}/infer", json=body).status_code)

    threads = [threading.Thread(target=load, args=("iris", IRIS)) for _ in range(2)]
    threads += [threading.Thread(target=load, args=("scorer", scorer(0))) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            crash = http.post("/v2/models/scorer/infer", json=scorer(2))  # os._exit in the worker
            assert crash.status_code == 503
            assert "worker process died" in crash.json()["error"]
            started = time.monotonic()
            hang = None
            while time.monotonic() - started < 10:  # wait out the restart, then hang it
                hang = http.post("/v2/models/scorer/infer", json=scorer(3))
                if "did not answer" in hang.text:
                    break
                time.sleep(0.1)
            assert hang is not None and hang.status_code == 503
            time.sleep(1.0)
            recovered = False
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not recovered:
                recovered = http.post("/v2/models/scorer/infer", json=scorer(0)).status_code == 200
                time.sleep(0.1)
            assert recovered
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert server.stop() == 0
    assert not any(thread.is_alive() for thread in threads)  # no request hung
    assert set(results["iris"]) == {200}  # the other model never noticed
    assert set(results["scorer"]) <= {200, 503}
    assert re.search(r'gyre_worker_restarts_total\{model="scorer",version="1"\} [2-9]', metrics)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_several_workers_share_the_port_reload_and_sum_metrics(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION)
    config = tmp_path / "gyre.toml"
    config.write_text(f'[serve.consumers.app]\nkey_sha256 = "{hash_key("k")}"\n')
    server = start_server(home, "--workers", "2", config=config)
    headers = {"X-Api-Key": "k"}
    try:
        deadline = time.monotonic() + 30
        while len(_children(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _children(server.process.pid)
        assert len(workers) >= 2
        time.sleep(2)  # let both workers finish loading and join the port's group
        for _ in range(100):  # a new connection each: the kernel spreads them over workers
            assert httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS,
                              headers=headers).status_code == 200  # fmt: skip
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS).status_code == 401
        # Each process publishes its counts within METRICS_FLUSH_S; any one sums them all.
        counted = re.compile(
            r'gyre_requests_total\{consumer="app",model="iris",protocol="v2",status="200",'
            r'version="1"\} ([0-9.]+)'
        )
        summed = None
        deadline = time.monotonic() + 5
        while summed != 100.0 and time.monotonic() < deadline:
            time.sleep(METRICS_FLUSH_S)
            found = counted.search(httpx.get(f"{server.url}/metrics").text)
            summed = float(found.group(1)) if found else None
        assert summed == 100.0
        registry.publish("iris", iris_classifier, iris[0])
        registry.set_alias("iris", CHAMPION, 2)
        time.sleep(2.5)
        versions = {
            httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS, headers=headers).json()[
                "model_version"
            ]
            for _ in range(40)
        }
        assert versions == {"2"}
        os.kill(workers[0], signal.SIGKILL)  # the supervisor replaces a dead worker
        time.sleep(3)
        assert len(_children(server.process.pid)) >= 2
    finally:
        assert server.stop() == 0


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path, iris_classifier: Pipeline,
                                                    iris: tuple) -> None:  # fmt: skip
    home = tmp_path / "home"
    Registry(home).publish("iris", iris_classifier, iris[0])
    server = start_server(home, "--workers", "2")
    try:
        deadline = time.monotonic() + 30
        while len(_children(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _children(server.process.pid)  # two servers (and multiprocessing's tracker)
        assert len(workers) >= 2
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(process_running(pid) for pid in workers):
            time.sleep(0.1)
        assert [pid for pid in workers if process_running(pid)] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


def _wait_for_workers(server: ServerProcess, loaded: str, workers: int = 2) -> None:
    """Until `workers` processes have loaded `loaded` (then they listen within moments)."""
    deadline = time.monotonic() + 60
    while server.output().count(f"loaded {loaded}") < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.output().count(f"loaded {loaded}") >= workers, server.output()
    time.sleep(0.5)


def test_feedback_posted_at_once_to_another_worker_is_taken(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION)
    registry.publish("iris", iris_classifier, iris[0], alias="challenger")
    registry.set_policy("iris", "bandit", {"arms": ["champion", "challenger"]})
    server = start_server(home, "--workers", "2")
    try:
        _wait_for_workers(server, "iris:2")
        for _ in range(24):
            # A new connection each: the kernel spreads them over both workers, so about
            # half of the posts reach a worker that has not written the answer's record.
            answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS)
            request_id = answer.headers["gyre-request-id"]
            feedback = httpx.post(
                f"{server.url}/v1/feedback", json={"request_id": request_id, "reward": 1}
            )
            assert feedback.status_code == 200, feedback.text
            assert feedback.json()["recorded"] is True
    finally:
        assert server.stop() == 0


def test_a_rate_limit_holds_over_all_worker_processes(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    Registry(home).publish("iris", iris_classifier, iris[0], alias=CHAMPION)
    rate, burst = 20.0, 5.0
    config = tmp_path / "gyre.toml"
    config.write_text(
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key("k")}"\n'
        f"rate_per_s = {rate}\nburst = {burst}\n"
    )
    server = start_server(home, "--workers", "2", config=config)
    url, headers = f"{server.url}/v2/models/iris/infer", {"X-Api-Key": "k"}
    try:
        _wait_for_workers(server, "iris:1")
        # One kept-alive connection: one worker answers it all, yet the consumer's rate is
        # its total over both workers, so this connection alone gets all of it.
        statuses: Counter[int] = Counter()
        with httpx.Client(timeout=10) as http:
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                statuses[http.post(url, json=IRIS, headers=headers).status_code] += 1
            elapsed = time.monotonic() - started
        assert set(statuses) == {200, 429}, statuses
        # At most a full bucket and what refilled, give or take the one request in flight
        # at each end; at least three quarters of that (a loaded machine's client pauses).
        allowed = burst + rate * elapsed
        assert 0.75 * allowed <= statuses[200] <= allowed + 1, (statuses, elapsed)

        # Several clients at once, on kept-alive and on new connections (spread over both
        # workers by the kernel): together they get the rate, not a rate per worker.
        counts: Counter[int] = Counter()
        stop = threading.Event()

        def kept_alive() -> None:
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    counts[http.post(url, json=IRIS, headers=headers).status_code] += 1

        def new_connections() -> None:
            while not stop.is_set():
                counts[httpx.post(url, json=IRIS, headers=headers, timeout=10).status_code] += 1

        loops = (kept_alive, kept_alive, new_connections, new_connections)
        clients = [threading.Thread(target=loop) for loop in loops]
        started = time.monotonic()
        for client in clients:
            client.start()
        time.sleep(2.0)
        stop.set()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - started
        assert set(counts) == {200, 429}, counts
        # The bucket was drained just before: at most one burst left, plus the refill.
        assert 0.75 * rate * elapsed <= counts[200] <= burst + rate * elapsed + 1, (counts, elapsed)
    finally:
        assert server.stop() == 0
