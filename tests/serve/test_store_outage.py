"""A PostgreSQL store that is unreachable or goes away: a clear error naming the host and
database (never the password), retries with backoff at start, readiness false while it is
away, recovery when it returns, and no acknowledged event lost."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from gyre.config import StoreConfig
from gyre.registry import CHAMPION, Registry
from gyre.stores import Stores
from tests import pgcluster
from tests.conftest import free_port, start_server
from tests.forced import UNBLESSED

pytestmark = pytest.mark.integration

CLICKS = (
    "[collect.events.clicks]\n"
    'fields = { id = "string", user = "int", at = "timestamp" }\n'
    'entity = ["user"]\ntime = "at"\nid = "id"\n'
)


@pytest.fixture
def own_cluster() -> Iterator[pgcluster.Cluster]:
    """A cluster of this test's own: it is stopped and started again."""
    folder = Path(tempfile.mkdtemp(prefix="gyre-pg-outage-"))
    cluster = pgcluster.start(folder)
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
        cluster.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


def ready(url: str) -> int:
    return httpx.get(f"{url}/v2/health/ready", timeout=10).status_code


def until(condition: object, timeout_s: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s")


def test_a_server_survives_its_database_going_away_and_coming_back(
    tmp_path: Path,
    own_cluster: pgcluster.Cluster,
    iris: tuple[np.ndarray, np.ndarray],
    iris_classifier: Pipeline,
) -> None:
    url = own_cluster.url()
    store = StoreConfig(url=url, connect_timeout_s=2.0)
    registry = Registry(Stores(tmp_path / "home", store))
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.close()
    config = tmp_path / "gyre.toml"
    config.write_text(f'{CLICKS}[store]\nurl = "{url}"\nconnect_timeout_s = 2.0\n')
    server = start_server(tmp_path / "home", config=config)
    events = f"{server.url}/v1/events/clicks"
    infer = f"{server.url}/v2/models/iris/infer"
    row = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],
                       "data": iris[0][0].tolist()}]}  # fmt: skip
    acknowledged: list[str] = []
    stop = threading.Event()

    def client() -> None:  # posts and retries each event until it is acknowledged
        with httpx.Client(timeout=15) as http:
            for i in range(100_000):
                if stop.is_set():
                    return
                event = {"id": f"e{i}", "user": i % 3, "at": 1_700_000_000 + i}
                while not stop.is_set():
                    answer = http.post(events, json=[event])
                    if answer.status_code == 200:
                        acknowledged.append(event["id"])
                        break
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["retry-after"] == "1"
                    time.sleep(0.05)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert httpx.post(infer, json=row).status_code == 200
        until(lambda: len(acknowledged) > 20)
        own_cluster.stop("immediate")  # the database goes away
        until(lambda: ready(server.url) == 503)
        refused = httpx.post(events, json=[{"id": "x", "user": 1, "at": 0}], timeout=15)
        assert refused.status_code == 503
        message = refused.json()["error"]
        assert f"cannot reach PostgreSQL database `postgres` on 127.0.0.1:{own_cluster.port}" in (
            message
        )
        assert pgcluster.PASSWORD not in message and pgcluster.PASSWORD not in server.output()
        # The models it loaded keep answering meanwhile.
        assert httpx.post(infer, json=row, timeout=15).status_code == 200
        count = len(acknowledged)
        own_cluster.start()  # it comes back, on the same port
        until(lambda: ready(server.url) == 200, timeout_s=30)
        until(lambda: len(acknowledged) > count + 20, timeout_s=30)
    finally:
        stop.set()
        thread.join(timeout=60)
        assert server.stop() == 0
    log = Stores(tmp_path / "home", store).open_fact_log()
    stored = [fact.data["id"] for fact in log.scan("clicks")]
    assert sorted(stored) == sorted(set(stored)) and set(acknowledged) <= set(stored)


def test_a_database_that_never_comes_up_stops_the_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gyre.toml"
    port = free_port()  # nothing listens there
    secret = "s3cret-do-not-print"
    config.write_text(
        f'[store]\nurl = "postgresql://gyre:{secret}@127.0.0.1:{port}/models"\n'
        "start_timeout_s = 2.0\nconnect_timeout_s = 1.0\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(tmp_path / "home"), "--config",
         str(config), "serve", "--port", str(free_port()), "--grpc-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot reach PostgreSQL database `models` on 127.0.0.1:{port} as `gyre`" in output
    assert "waiting for PostgreSQL" in output  # it retried before giving up
    assert secret not in output
    assert time.monotonic() - started < 60


def test_a_wrong_password_stops_at_once_and_is_never_printed(
    tmp_path: Path, postgres: pgcluster.Cluster
) -> None:
    """Waiting would not help: the start fails on the first refusal, not after
    start_timeout_s, naming the user, host and database."""
    config = tmp_path / "gyre.toml"
    url = postgres.url().replace(pgcluster.PASSWORD, "wrong-secret")
    config.write_text(f'[store]\nurl = "{url}"\nstart_timeout_s = 60.0\n')
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(tmp_path / "home"), "--config",
         str(config), "registry", "list"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert f"PostgreSQL database `postgres` on 127.0.0.1:{postgres.port} refused `gyre`" in output
    assert "password authentication failed" in output and "wrong-secret" not in output
