"""Shared fixtures: small real models, a registry in a temporary home, a real server, and
the two store backends (SQLite under the home, and a throwaway PostgreSQL cluster)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gyre._numbers import parse_count
from gyre._postgres import close_pools
from gyre.config import StoreConfig
from gyre.registry import Registry
from gyre.stores import Stores
from tests import pgcluster


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def iris_classifier(iris: tuple[np.ndarray, np.ndarray]) -> Pipeline:
    x, y = iris
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


@pytest.fixture(scope="session")
def iris_regressor(iris: tuple[np.ndarray, np.ndarray]) -> Ridge:
    x, y = iris
    return Ridge().fit(x, y)


CITIES = ("Oslo", "Bergen", "Tromsø", "Stavanger")


@pytest.fixture(scope="session")
def mixed_table() -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of a mixed-type table (a string, an integer and a float column) and labels."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "city": rng.choice(CITIES, n),
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50_000.0, 12_000.0, n).round(2),
        }
    )
    labels = ((frame["income"] > 50_000) ^ (frame["city"] == "Oslo")).to_numpy(int)
    return frame, labels


@pytest.fixture(scope="session")
def mixed_classifier(mixed_table: tuple[pd.DataFrame, np.ndarray]) -> Pipeline:
    """The pipeline most tabular models are: one-hot strings, scaled numbers, a classifier."""
    frame, labels = mixed_table
    columns = ColumnTransformer(
        [
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("numbers", StandardScaler(), ["age", "income"]),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=500)).fit(frame, labels)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgcluster.Cluster]:
    """One PostgreSQL cluster for the whole run, on loopback (tests get a database each)."""
    pgcluster.ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="gyre-pg-"))
    cluster = pgcluster.start(folder)
    yield cluster
    close_pools()
    cluster.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: pgcluster.Cluster) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    close_pools()
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


# Every store-backed suite runs against each of these.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest) -> StoreConfig:
    """The `[store]` settings of one backend: SQLite under the home, or a new database."""
    if request.param == "sqlite":
        return StoreConfig()
    return StoreConfig(url=request.getfixturevalue("postgres_url"), connect_timeout_s=5.0)


@pytest.fixture
def stores(home: Path, store_config: StoreConfig) -> Stores:
    return Stores(home, store_config)


def store_toml(config: StoreConfig) -> str:
    """The `[store]` section of gyre.toml for `config` (empty for SQLite)."""
    return "" if config.url is None else f'[store]\nurl = "{config.url}"\n'


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    reg = Registry(home)
    yield reg
    reg.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A real `gyre serve` (or `gyre control`) process on a free loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    home: Path
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)

    def kill_all(self) -> None:
        """SIGKILL to the server and every process it started (workers included)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def process_running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie, dead but not yet reaped, is not)."""
    try:
        state = (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def server_workers(supervisor: int) -> list[int]:
    """The live server processes of a multi-process `gyre serve` (its spawned children,
    not multiprocessing's resource tracker). /proc/PID/task/*/children is not in every
    kernel: each process's parent is read from its stat instead."""
    workers = []
    for entry in Path("/proc").iterdir():
        if parse_count(entry.name) is None:
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == supervisor and stat[0] != "Z" and b"spawn_main" in command:
            workers.append(int(entry.name))
    return sorted(workers)


def start_server(
    home: Path,
    *extra: str,
    config: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    grpc_port: int = 0,
    netns: str | None = None,
    address: str = "127.0.0.1",
) -> ServerProcess:
    """`gyre serve` on `port` (default: a free one), ready; `env` is added to the
    environment it inherits (without any GYRE_ variable). `grpc_port`: 0 for no gRPC (the
    default 8001 would be shared by every server a test run starts). `netns`: run it in
    that network namespace (`ip netns exec`), bound to all its addresses and reached at
    `address` (tests/replicas)."""
    port = port or free_port()
    args = ["serve", "--port", str(port), "--grpc-port", str(grpc_port), *extra]
    if netns is not None:
        args += ["--host", "0.0.0.0"]
    return _start(home, args, config, port, env, "/v2/health/ready", "serve", netns, address)


def start_control(
    home: Path, *extra: str, config: Path | None = None, port: int | None = None
) -> ServerProcess:
    """`gyre control` on `port` (default: a free one), ready."""
    port = port or free_port()
    return _start(home, ["control", "--port", str(port), *extra], config, port, None, "/health",
                  "control")  # fmt: skip


def _start(
    home: Path,
    args: list[str],
    config: Path | None,
    port: int,
    env: dict[str, str] | None,
    ready_path: str,
    name: str,
    netns: str | None = None,
    address: str = "127.0.0.1",
) -> ServerProcess:
    """`gyre [--config CONFIG] ARGS` in its own session (in network namespace `netns`,
    reached at `address`), once `ready_path` answers 200."""
    log = home.parent / f"{name}-{port}.log"
    command = [] if netns is None else ["ip", "netns", "exec", netns]
    command += [sys.executable, "-m", "gyre", "--home", str(home)]
    if config is not None:
        command += ["--config", str(config)]
    command += args
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    environment.update(env or {})
    with log.open("ab") as out:
        # Its own session: a test can kill the server with every process it started.
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    # (`ip netns exec` execs the command: the process is the server itself.)
    server = ServerProcess(process, f"http://{address}:{port}", home, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gyre {name} exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"gyre {name} did not become ready:\n{server.output()}")
