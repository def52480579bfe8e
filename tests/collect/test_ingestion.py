"""Event ingestion through the real server and the CLI, and durability on SIGKILL."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from gyre.auth import hash_key
from gyre.collect import EventClient, SQLiteFactLog
from gyre.config import StoreConfig
from gyre.stores import Stores
from tests.conftest import free_port, server_workers, start_server, store_toml

pytestmark = pytest.mark.integration

CLICKS = (
    "[collect.events.clicks]\n"
    'fields = { id = "string", user = "int", page = "string?", at = "timestamp" }\n'
    'entity = ["user"]\ntime = "at"\nid = "id"\n'
)


def click(i: int, at: str = "2026-11-26T08:00:00Z") -> dict:
    return {"id": f"c{i}", "user": i % 5, "at": at}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gyre.toml"
    path.write_text(CLICKS + "[serve]\nmax_body_bytes = 200000\n")
    return path


def test_ingest_over_http_json_array_and_ndjson(tmp_path: Path, config: Path) -> None:
    server = start_server(tmp_path / "home", config=config)
    try:
        url = f"{server.url}/v1/events/clicks"
        body = [click(1), click(2), {"id": "bad", "user": "x", "at": 0}, click(1)]
        answer = httpx.post(url, json=body).json()
        assert answer["accepted"] == 2
        assert answer["duplicates"] == 1
        assert answer["rejected"] == [
            {"index": 2, "reason": "field `user`: expected int, got str 'x'"}
        ]
        ndjson = b'{"id": "c3", "user": 1, "at": 0}\n{oops}\n'
        answer = httpx.post(url, content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        assert answer.json()["accepted"] == 1
        assert "line 2 is not JSON" in answer.json()["rejected"][0]["reason"]
        unknown = httpx.post(f"{server.url}/v1/events/nope", json=[click(1)])
        assert unknown.status_code == 404 and "declared: clicks" in unknown.json()["error"]
        broken = httpx.post(url, content=b"[{")
        assert broken.status_code == 400 and "not a valid JSON array" in broken.json()["error"]
        big = httpx.post(url, json=[click(i) for i in range(10_000)])
        assert big.status_code == 413
        with EventClient(server.url) as client:
            result = client.ingest("clicks", [click(4), click(5)])
        assert (result.accepted, result.watermark) == (2, 5)
        # JSON nested past the decoder's limit is bad input, not a server error.
        deep = b"[" * 5_000 + b"]" * 5_000
        answer = httpx.post(url, content=b'{"id": "c6", "user": 1, "at": 0}\n' + deep)
        assert answer.json()["accepted"] == 1
        assert "line 2 is not JSON" in answer.json()["rejected"][0]["reason"]
        too_deep = httpx.post(url, content=b"[" + deep + b"]")
        assert too_deep.status_code == 400 and "not a valid JSON array" in too_deep.text
    finally:
        assert server.stop() == 0


def test_event_routes_follow_consumer_scopes(tmp_path: Path) -> None:
    config = tmp_path / "gyre.toml"
    config.write_text(
        CLICKS + f'[serve.consumers.tracker]\nkey_sha256 = "{hash_key("t")}"\nevents = ["clicks"]\n'
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key("a")}"\n'
    )
    server = start_server(tmp_path / "home", config=config)
    try:
        url = f"{server.url}/v1/events/clicks"
        assert httpx.post(url, json=[click(1)]).status_code == 401
        assert httpx.post(url, json=[click(1)], headers={"X-Api-Key": "a"}).status_code == 403
        assert httpx.post(url, json=[click(1)], headers={"X-Api-Key": "t"}).status_code == 200
    finally:
        assert server.stop() == 0


def gyre(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(tmp_path / "home"), "--config", str(config),
         *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_cli_types_ingest_tail_stats_export(tmp_path: Path, config: Path) -> None:
    assert "clicks" in gyre(tmp_path, config, "events", "types").stdout
    events = tmp_path / "clicks.ndjson"
    events.write_text(
        "\n".join(json.dumps(click(i, f"2026-11-2{5 + i % 2}T08:00:00Z")) for i in range(10))
        + '\n{"id": "x", "user": 1}\n'
    )
    result = gyre(tmp_path, config, "events", "ingest", "clicks", str(events))
    assert result.returncode == 2  # one record was rejected
    assert "10 stored, 0 duplicates, 1 rejected" in result.stdout
    assert "record 10: missing field(s) at" in result.stdout
    tail = gyre(tmp_path, config, "events", "tail", "clicks", "-n", "2").stdout.splitlines()
    assert [json.loads(line)["id"] for line in tail] == ["c8", "c9"]
    assert "clicks" in gyre(tmp_path, config, "events", "stats").stdout
    out = tmp_path / "parquet"
    exported = gyre(tmp_path, config, "events", "export", "clicks", "--out", str(out))
    assert "wrote 2 Parquet file(s)" in exported.stdout
    days = sorted(p.parent.name for p in out.rglob("*.parquet"))
    assert days == ["day=2026-11-25", "day=2026-11-26"]
    table = pq.read_table(out / "type=clicks" / "day=2026-11-25")
    assert table.num_rows == 5 and table.schema.field("at").type.unit == "us"


def test_every_acknowledged_event_survives_sigkill_exactly_once(
    tmp_path: Path, config: Path
) -> None:
    home = tmp_path / "home"
    server = start_server(home, config=config)
    url = f"{server.url}/v1/events/clicks"
    acknowledged: set[str] = set()
    unacknowledged: list[list[dict]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        batch_number = 0
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                batch = [click(worker * 1_000_000 + batch_number * 100 + i) for i in range(50)]
                batch_number += 1
                try:
                    response = http.post(url, json=batch)
                    ok = response.status_code == 200
                except httpx.TransportError:
                    ok = False
                with lock:
                    if ok:
                        acknowledged.update(e["id"] for e in batch)
                    else:
                        unacknowledged.append(batch)
                if not ok or stop.is_set():
                    return

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.8, 1.6))
    server.kill_all()
    for thread in threads:
        thread.join(timeout=30)
    stop.set()
    assert len(acknowledged) > 500
    log = SQLiteFactLog(home / "facts.db")
    stored = [f.data["id"] for f in log.scan("clicks")]
    assert len(stored) == len(set(stored))  # nothing twice
    assert acknowledged <= set(stored)  # nothing acknowledged was lost
    log.close()
    # Clients retry what was not acknowledged: the ids make the retries idempotent.
    restarted = start_server(home, config=config)
    try:
        for batch in unacknowledged:
            answer = httpx.post(f"{restarted.url}/v1/events/clicks", json=batch).json()
            assert answer["accepted"] + answer["duplicates"] == len(batch)
    finally:
        assert restarted.stop() == 0
    log = SQLiteFactLog(home / "facts.db")
    stored = [f.data["id"] for f in log.scan("clicks")]
    expected = acknowledged | {e["id"] for batch in unacknowledged for e in batch}
    assert sorted(stored) == sorted(expected)
    log.close()


def test_a_kill_9_campaign_loses_nothing_acknowledged_and_stores_nothing_twice(
    tmp_path: Path, store_config: StoreConfig
) -> None:
    """A 2-process server under 4 clients that retry each batch until it is acknowledged
    (on a connection error or a 5xx, as a real client would): 5 times SIGKILL to the whole
    process group then a restart on the same port, and 3 times SIGKILL to one worker (the
    supervisor replaces it), in between. After each, the server is back within 20 s: for
    a process group, from the kill until a batch is acknowledged again; for one worker,
    until its replacement is ready (the other serves meanwhile). At the end every
    acknowledged event is in the fact log exactly once. On each backend (SQLite, PostgreSQL)."""
    home = tmp_path / "home"
    config = tmp_path / "gyre.toml"
    config.write_text(CLICKS + store_toml(store_config) + "[serve]\nmax_body_bytes = 200000\n")
    port = free_port()
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    server = start_server(home, "--workers", "2", config=config, port=port, env=env)
    url = f"http://127.0.0.1:{port}/v1/events/clicks"
    acknowledged: list[str] = []
    failures: list[str] = []
    retries: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(timeout=5) as http:
            for batch_number in itertools.count():
                if stop.is_set():
                    return
                batch = [click(number * 1_000_000 + batch_number * 20 + i) for i in range(20)]
                deadline = time.monotonic() + 60
                while True:  # until acknowledged
                    try:
                        response = http.post(url, json=batch)
                        if response.status_code == 200:
                            answer = response.json()
                            if answer["accepted"] + answer["duplicates"] == len(batch):
                                break
                            failures.append(f"not all stored: {answer}")
                            return
                        if response.status_code < 500:
                            failures.append(f"{response.status_code}: {response.text}")
                            return
                    except httpx.TransportError:
                        pass
                    retries.append(1)
                    if time.monotonic() > deadline:
                        failures.append(f"batch {batch_number} of client {number} never stored")
                        return
                    time.sleep(0.05)
                with lock:
                    acknowledged.extend(event["id"] for event in batch)

    def ready() -> set[int]:  # the workers the supervisors have logged as ready
        return {int(pid) for pid in re.findall(r"\(pid (\d+)\) is ready", server.output())}

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    back_s: dict[str, list[float]] = {"process group": [], "one worker": []}
    try:
        group, worker = "process group", "one worker"
        for kind in [group, worker, group, group, worker, group, worker, group]:
            time.sleep(random.uniform(0.3, 0.8))  # ingestion under way
            killed = time.monotonic()
            if kind == group:
                server.kill_all()
                server = start_server(home, "--workers", "2", config=config, port=port, env=env)
                count = len(acknowledged)
                while len(acknowledged) == count and time.monotonic() - killed < 30:
                    time.sleep(0.01)  # back: a client's batch is acknowledged again
            else:
                before = ready()
                serving = [pid for pid in server_workers(server.process.pid) if pid in before]
                os.kill(random.choice(serving), signal.SIGKILL)
                while not ready() - before and time.monotonic() - killed < 30:
                    time.sleep(0.01)  # the other worker serves meanwhile
            back_s[kind].append(time.monotonic() - killed)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        assert server.stop() == 0
    print(f"back and serving after a kill (s): {back_s}; {len(acknowledged)} events "
          f"acknowledged, {len(retries)} retries")  # fmt: skip
    assert failures == []
    assert max(back_s["process group"] + back_s["one worker"]) < 20
    assert len(acknowledged) > 1000
    log = Stores(home, store_config).open_fact_log()
    stored = [fact.data["id"] for fact in log.scan("clicks")]
    log.close()
    assert len(stored) == len(set(stored))  # nothing twice
    assert set(acknowledged) <= set(stored)  # nothing acknowledged lost
    # What the kills left was removed by the next start; nothing was left elsewhere.
    assert list((home / "run").glob("metrics-*")) == []
    assert [p.name for p in temp.iterdir() if p.name != ".ses"] == []  # .ses: onnxruntime's
