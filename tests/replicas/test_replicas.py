"""Two `gyre serve` replicas on two hosts (network namespaces, tests/replicas/hosts.py)
sharing one PostgreSQL database and one artifact folder: alias moves reach both, events
posted to both are stored once, also across kill -9, and rate limits are per replica."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from gyre._postgres import close_pools
from gyre.auth import hash_key
from gyre.config import StoreConfig
from gyre.registry import Registry
from gyre.stores import Stores
from tests import pgcluster
from tests.conftest import ServerProcess, free_port, start_server
from tests.forced import UNBLESSED
from tests.replicas.hosts import Host, network_hosts

pytestmark = pytest.mark.integration

APP_KEY = "replica-app-key"
METERED_KEY = "replica-metered-key"
BURST = 5
ROW = [5.1, 3.5, 1.4, 0.2]
INFER = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}

CONFIG = """
[store]
url = "{url}"
artifacts = "{artifacts}"

[collect.events.clicks]
fields = {{ id = "string", user = "int", at = "timestamp" }}
entity = ["user"]
time = "at"
id = "id"

[serve]
max_body_bytes = 200000

[serve.consumers.app]
key_sha256 = "{app}"
models = ["*"]
events = ["clicks"]

# A rate so low that no token comes back during a test: only the burst is ever admitted.
[serve.consumers.metered]
key_sha256 = "{metered}"
models = ["*"]
rate_per_s = 0.001
burst = {burst}
"""


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[Host]]:
    with network_hosts(2) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts: list[Host]) -> Iterator[pgcluster.Cluster]:
    """A PostgreSQL cluster that listens on loopback and on the host side of both links."""
    folder = Path(tempfile.mkdtemp(prefix="gyre-pg-replicas-"))
    started = pgcluster.start(folder, listen=[pgcluster.LOOPBACK, *(h.gateway for h in hosts)])
    try:
        yield started
    finally:
        close_pools()
        started.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Replicas:
    """Two hosts, each with its own home, one config naming the shared database (at the
    first host's gateway) and the shared artifact folder."""

    hosts: list[Host]
    homes: list[Path]
    ports: list[int]
    config: Path
    stores: Stores  # the root namespace's view of the same state (a control host)
    servers: list[ServerProcess | None]

    def start(self, i: int) -> ServerProcess:
        host = self.hosts[i]
        server = start_server(
            self.homes[i], "--workers", "1", config=self.config, port=self.ports[i],
            netns=host.namespace, address=host.address,
        )  # fmt: skip
        self.servers[i] = server
        return server

    def start_all(self) -> None:
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(self.start, range(len(self.hosts))))

    def url(self, i: int) -> str:
        return self.hosts[i].url(self.ports[i])


@pytest.fixture
def replicas(tmp_path: Path, hosts: list[Host], cluster: pgcluster.Cluster) -> Iterator[Replicas]:
    import psycopg

    name = f"r_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url(name, host=hosts[0].gateway)
    artifacts = tmp_path / "shared-artifacts"
    config = tmp_path / "gyre.toml"
    config.write_text(
        CONFIG.format(
            url=url, artifacts=artifacts, app=hash_key(APP_KEY),
            metered=hash_key(METERED_KEY), burst=BURST,
        )
    )  # fmt: skip
    homes = [tmp_path / f"host{i}" / "home" for i in range(len(hosts))]
    for home in homes:
        home.parent.mkdir(parents=True)
    stores = Stores(tmp_path / "control", StoreConfig(url=url, artifacts=str(artifacts)))
    made = Replicas(hosts, homes, [free_port() for _ in hosts], config, stores, [None] * 2)
    try:
        yield made
    finally:
        for server in made.servers:
            if server is not None and server.process.poll() is None:
                try:
                    server.stop()
                except subprocess.TimeoutExpired:
                    server.kill_all()
        close_pools()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def client(url: str, key: str = APP_KEY, timeout_s: float = 10.0) -> httpx.Client:
    # trust_env=False: straight to the test host, whatever proxy the environment names.
    return httpx.Client(
        base_url=url, headers={"X-Api-Key": key}, timeout=timeout_s, trust_env=False
    )


def served_version(http: httpx.Client) -> str:
    response = http.post("/v2/models/iris/infer", json=INFER)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def seconds_until_both_serve(replicas: Replicas, version: str, since: float) -> list[float]:
    """For each host, seconds from `since` (time.time()) until it answers with `version`;
    each host is polled by its own thread, and then asked 20 times more: no answer from an
    older version may follow."""
    reached: list[float] = [0.0] * len(replicas.hosts)
    after: list[set[str]] = [set() for _ in replicas.hosts]

    def poll(i: int) -> None:
        with client(replicas.url(i)) as http:
            deadline = time.monotonic() + 30
            while served_version(http) != version:
                assert time.monotonic() < deadline, f"host {i} never served version {version}"
                time.sleep(0.01)
            reached[i] = time.time() - since
            after[i] = {served_version(http) for _ in range(20)}

    with ThreadPoolExecutor(len(replicas.hosts)) as pool:
        list(pool.map(poll, range(len(replicas.hosts))))
    assert after == [{version}] * len(replicas.hosts)
    return reached


def test_an_alias_move_on_one_host_is_served_by_both_within_2_s(
    replicas: Replicas, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(replicas.stores)
    registry.publish("iris", iris_classifier, iris[0], alias="champion", force_alias=UNBLESSED)
    registry.publish("iris", iris_classifier, iris[0], force_new=True)
    replicas.start_all()
    assert seconds_until_both_serve(replicas, "1", time.time())  # both serve version 1
    # Through the Python API of a control host (the root namespace).
    moved = time.time()
    registry.set_alias("iris", "champion", 2, reason="replica test", force=True)
    by_api = seconds_until_both_serve(replicas, "2", moved)
    # Through the CLI on the first host, as an operator there would: timed from the moment
    # its change was recorded (the change log's time, taken before the commit).
    position = registry.change_position()
    cli = subprocess.run(
        ["ip", "netns", "exec", replicas.hosts[0].namespace, sys.executable, "-m", "gyre",
         "--home", str(replicas.homes[0]), "--config", str(replicas.config),
         "registry", "alias", "iris", "champion", "1", "--reason", "back", "--force"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    (change,) = registry.metadata.changes("iris", after=position)
    assert (change["action"], change["version"], change["previous"]) == ("alias", 1, 2)
    by_cli = seconds_until_both_serve(replicas, "1", float(change["at"]))
    registry.close()
    print(f"alias move served by both hosts after (s): API {by_api}, CLI {by_cli}")
    assert max(by_api + by_cli) < 2.0


def click(i: int) -> dict:
    return {"id": f"c{i}", "user": i % 7, "at": "2026-11-26T08:00:00Z"}


def test_events_posted_to_both_hosts_are_stored_once_across_kill_9(replicas: Replicas) -> None:
    """4 clients, 2 per host, post batches of 20 fresh events and retry each until it is
    acknowledged, on the other host after a failure (as behind a load balancer). Each
    host's server is SIGKILLed with its process group under that load and restarted, the
    first twice. At the end every event sent is in the shared log exactly once."""
    replicas.start_all()
    # The same batch to both hosts at once: one of them stores it, the other finds it there.
    batch = [click(i) for i in range(20)]

    def post_to(i: int) -> httpx.Response:
        with client(replicas.url(i)) as http:
            return http.post("/v1/events/clicks", json=batch)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(post_to, [0, 1]))
    assert [a.status_code for a in answers] == [200, 200]
    assert sum(a.json()["accepted"] for a in answers) == 20
    assert sum(a.json()["duplicates"] for a in answers) == 20
    acknowledged: list[str] = [e["id"] for e in batch]
    failures: list[str] = []
    retried: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send(number: int) -> None:
        https = [client(replicas.url(i), timeout_s=5) for i in range(2)]
        target = number % 2
        for batch_number in itertools.count():
            if stop.is_set():
                break
            events = [click(1000 + number * 1_000_000 + batch_number * 20 + i) for i in range(20)]
            deadline = time.monotonic() + 60
            while True:  # until acknowledged
                try:
                    response = https[target].post("/v1/events/clicks", json=events)
                    if response.status_code == 200:
                        answer = response.json()
                        if answer["accepted"] + answer["duplicates"] == len(events):
                            break
                        failures.append(f"not all stored: {answer}")
                        return
                    if response.status_code < 500:
                        failures.append(f"{response.status_code}: {response.text}")
                        return
                except httpx.TransportError:
                    pass
                retried.append(target)
                target = 1 - target  # the other replica
                if time.monotonic() > deadline:
                    failures.append(f"batch {batch_number} of client {number} never stored")
                    return
                time.sleep(0.05)
            with lock:
                acknowledged.extend(e["id"] for e in events)
        for http in https:
            http.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for victim in (0, 1, 0):
            time.sleep(0.8)  # ingestion under way on both
            count = len(acknowledged)
            server = replicas.servers[victim]
            assert server is not None
            server.kill_all()
            deadline = time.monotonic() + 30
            while len(acknowledged) == count and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(acknowledged) > count  # the other host went on acknowledging
            replicas.start(victim)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    print(f"{len(acknowledged)} events acknowledged, {len(retried)} retries")
    assert failures == []
    assert len(acknowledged) > 1000
    assert set(retried) == {0, 1}  # clients did fail over, to each host
    log = replicas.stores.open_fact_log()
    stored = [fact.data["id"] for fact in log.scan("clicks")]
    log.close()
    assert len(stored) == len(set(stored))  # nothing twice
    # Every batch a client began was retried until acknowledged: what is stored is exactly
    # what was acknowledged.
    assert sorted(stored) == sorted(acknowledged)


def test_a_consumers_rate_limit_is_per_replica(replicas: Replicas) -> None:
    """Each server keeps its own token buckets (docs/serving.md, "What a rate limit
    enforces"): a consumer gets its burst from each host, so two hosts admit twice it."""
    replicas.start_all()
    statuses = []
    for i in range(2):
        with client(replicas.url(i), key=METERED_KEY) as http:
            statuses.append([http.get("/v2/models/iris").status_code for _ in range(BURST + 3)])
    # The model is unknown (404), which is found only once the request was admitted.
    assert statuses == [[404] * BURST + [429] * 3] * 2
    with client(replicas.url(0), key=APP_KEY) as http:
        assert http.get("/v2/models/iris").status_code == 404  # another consumer: its own
