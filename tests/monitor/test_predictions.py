"""The prediction log: one record per answered request, sampled per model, written off the
request path, read back by id pages over HTTP and from the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.config import load_config
from gyre.errors import ServeError
from gyre.features import ServedVector
from gyre.monitor import PredictionLog, read_predictions
from gyre.monitor._prediction_chunks import CHUNK_RECORDS, SCHEMA_VERSION
from gyre.registry import CHAMPION, Registry
from gyre.stores import Stores
from tests.conftest import free_port, start_server
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient

PYMODELS = Path(__file__).parent.parent / "serve" / "pymodels"
ROW = [5.1, 3.5, 1.4, 0.2]
ADMIN_KEY, CALLER_KEY = "admin-key", "caller-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CALLER = {"Authorization": f"Bearer {CALLER_KEY}"}
CONSUMERS = (
    f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n'
    f'[serve.consumers.shop]\nkey_sha256 = "{hash_key(CALLER_KEY)}"\n'
)


def v2(rows: list[list[float]], name: str = "X") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                    "data": rows}]
    }  # fmt: skip


@pytest.fixture
def iris_home(home: Path, iris_classifier: Pipeline, iris: tuple) -> Path:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish(
        "iris", iris_classifier, iris[0], alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    registry.close()
    return home


def client_for(home: Path, config_text: str = "") -> AppClient:
    path = home.parent / "gyre.toml"
    path.write_text(CONSUMERS + config_text)
    return AppClient(load_config(home=home, config_file=path))


def logged(client: AppClient, model: str, query: str = "") -> dict[str, Any]:
    answer = client.get(f"/v1/admin/models/{model}/predictions{query}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_each_answer_is_logged_with_its_route_input_output_and_caller(iris_home: Path) -> None:
    client = client_for(iris_home)
    try:
        routed = client.post("/v2/models/iris/infer", json=v2([ROW, ROW]), headers=CALLER)
        pinned = client.post("/v2/models/iris/versions/2/infer", json=v2([ROW]), headers=CALLER)
        by_alias = client.post(
            "/v1/models/iris/labels/challenger:predict", json={"instances": [ROW]}, headers=CALLER
        )
        refused = client.post("/v2/models/iris/infer", json={"inputs": []}, headers=CALLER)
        assert [r.status_code for r in (routed, pinned, by_alias, refused)] == [200, 200, 200, 400]
        page = logged(client, "iris")
    finally:
        client.close()
    records = page["predictions"]
    assert page["next"] == records[-1]["id"]
    # The refused request got no answer: it is no prediction.
    assert [(r["route"], r["version"], r["protocol"]) for r in records] == [
        ("champion", 1, "v2"), ("pinned", 2, "v2"), ("alias", 2, "tf"),
    ]  # fmt: skip
    first = records[0]
    assert first["request_id"] == routed.headers["gyre-request-id"]
    assert first["consumer"] == "shop" and first["model"] == "iris"
    assert first["input_kind"] == "tensors"
    assert first["input"] == {"X": {"datatype": "FP32", "shape": [2, 4],
                                    "data": np.float32([ROW, ROW]).tolist()}}  # fmt: skip
    outputs = {o["name"]: o for o in routed.json()["outputs"]}
    assert first["output"]["label"]["data"] == outputs["label"]["data"]
    assert first["output"]["label"]["shape"] == outputs["label"]["shape"] == [2]
    assert np.ravel(first["output"]["probabilities"]["data"]).tolist() == pytest.approx(
        outputs["probabilities"]["data"]
    )
    assert first["latency_ms"] > 0 and first["default"] is False
    assert first["default_reason"] is None
    assert [r["request_id"] for r in records[1:]] == [
        pinned.headers["gyre-request-id"], by_alias.headers["gyre-request-id"],
    ]  # fmt: skip


def test_pages_follow_ids_and_other_models_stay_apart(iris_home: Path, iris_regressor: Any) -> None:
    registry = Registry(iris_home)
    registry.publish("petals", iris_regressor, np.array([ROW]))
    registry.close()
    client = client_for(iris_home)
    try:
        for _ in range(5):
            assert client.post("/v2/models/iris/infer", json=v2([ROW]), headers=CALLER).is_success
            assert client.post("/v2/models/petals/infer", json=v2([ROW]), headers=CALLER).is_success
        first = logged(client, "iris", "?limit=2")
        second = logged(client, "iris", f"?limit=2&after={first['next']}")
        rest = logged(client, "iris", f"?after={second['next']}")
        empty = logged(client, "iris", f"?after={rest['next']}")
        petals = logged(client, "petals")["predictions"]
    finally:
        client.close()
    ids = [r["id"] for page in (first, second, rest) for r in page["predictions"]]
    assert [len(p["predictions"]) for p in (first, second, rest)] == [2, 2, 1]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert empty == {"model": "iris", "predictions": [], "next": rest["next"]}
    assert len(petals) == 5 and {r["model"] for r in petals} == {"petals"}


def test_reading_the_log_takes_an_admin_key_and_a_sound_page(iris_home: Path) -> None:
    client = client_for(iris_home)
    try:
        url = "/v1/admin/models/iris/predictions"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=CALLER).status_code == 403
        for query, reason in [
            ("?limit=0", "limit must be a whole number from 1 to 1000"),
            ("?limit=1001", "limit must be a whole number from 1 to 1000"),
            ("?after=-1", "after must be a record id"),
            ("?after=%C2%B2", "after must be a record id"),
            ("?offset=10", "unknown parameter 'offset'"),
            ("?limit=1&limit=2", "given twice"),
        ]:
            answer = client.get(url + query, headers=ADMIN)
            assert answer.status_code == 400 and reason in answer.text, (query, answer.text)
    finally:
        client.close()


def test_a_model_sampled_at_zero_logs_nothing(iris_home: Path, iris_regressor: Any) -> None:
    registry = Registry(iris_home)
    registry.publish("petals", iris_regressor, np.array([ROW]))
    registry.close()
    client = client_for(iris_home, "[serve.models.iris]\nprediction_log_sample = 0\n")
    try:
        for _ in range(5):
            assert client.post("/v2/models/iris/infer", json=v2([ROW]), headers=CALLER).is_success
        assert client.post("/v2/models/petals/infer", json=v2([ROW]), headers=CALLER).is_success
        assert logged(client, "iris")["predictions"] == []
        assert len(logged(client, "petals")["predictions"]) == 1  # the log itself works
    finally:
        client.close()


def test_a_share_between_zero_and_one_is_drawn_per_request(tmp_path: Path) -> None:
    log = PredictionLog.open(
        tmp_path / "p.db", max_records=10, buffer_bytes=1000, rng=random.Random(3)
    )
    draws = [log.sampled(0.25) for _ in range(4000)]
    assert 900 < sum(draws) < 1100
    assert all(log.sampled(1.0) for _ in range(100))
    assert not any(log.sampled(0.0) for _ in range(100))


def test_a_default_answer_is_logged_as_one_with_its_reason(home: Path) -> None:
    Registry(home).publish_file("scorer", PYMODELS / "scorer.py")
    client = client_for(
        home,
        "[serve.models.scorer]\nlatency_slo_ms = 100\nworker_timeout_ms = 1000\n"
        "default_output = { score = -1.0 }\n",
    )
    try:
        fast = client.post("/v2/models/scorer/infer", json=v2([[0, 1.5]], name="x"),
                           headers=CALLER)  # fmt: skip
        late = client.post("/v2/models/scorer/infer", json=v2([[1, 1.5]], name="x"),
                           headers=CALLER)  # fmt: skip
        assert late.headers["gyre-default"] and "gyre-default" not in fast.headers
        records = logged(client, "scorer")["predictions"]
    finally:
        client.close()
    assert [(r["default"], r["output"]["score"]["data"]) for r in records] == [
        (False, [3.0]), (True, [-1.0]),
    ]  # fmt: skip
    assert records[1]["default_reason"] == late.headers["gyre-default"]
    assert "deadline" in records[1]["default_reason"] and records[0]["default_reason"] is None


def test_a_stuck_writer_costs_records_not_requests(iris_home: Path) -> None:
    # A write lock held on the log's file: the log's thread waits on it, as on a slow disk.
    client = client_for(iris_home, "[serve]\nprediction_log_buffer_bytes = 1200\n")
    path = Stores(iris_home).prediction_log_path
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        answers = [
            client.post("/v2/models/iris/infer", json=v2([ROW]), headers=CALLER) for _ in range(10)
        ]
        assert all(a.status_code == 200 for a in answers)
        metrics = client.get("/metrics").text
        blocker.execute("ROLLBACK")
        kept = logged(client, "iris")["predictions"]
    finally:
        blocker.close()
        client.close()
    dropped = 10 - len(kept)
    assert 1 <= len(kept) < 10  # a record of 1 row is about 550 bytes: 2 fit
    line = f'gyre_prediction_log_dropped_total{{model="iris",reason="full"}} {dropped}.0'
    assert line in metrics
    assert [r["request_id"] for r in kept] == [
        a.headers["gyre-request-id"] for a in answers[: len(kept)]
    ]


def _vector(i: int) -> ServedVector:
    return ServedVector("v", "h", {"shop": i}, {}, 0, 0, {"count": i})


def _record(log: PredictionLog, i: int, model: str = "m") -> None:
    x = {"x": np.array([[float(i)]], dtype=np.float32)}
    log.record(f"r{i}", model, 1, "champion", "v2", "", x, x, 0.001)


def test_the_log_keeps_the_newest_records_and_logs_feature_vectors(tmp_path: Path) -> None:
    path = tmp_path / "p.db"

    async def run() -> None:
        log = PredictionLog.open(path, max_records=3, buffer_bytes=1 << 20)
        for i in range(5):  # a chunk each
            _record(log, i)
            await log.flush()
        _record(log, 5, model="other")
        x = {"x": np.zeros((2, 1), dtype=np.float32)}
        log.record("r6", "m", 1, "bandit", "v2", "", x, x, 0.001, None, [_vector(1), _vector(2)])
        await log.close()

    asyncio.run(run())
    kept = read_predictions(path, "m")
    assert [(r["id"], r["request_id"]) for r in kept] == [(5, "r4"), (7, "r6")]
    assert kept[1]["input_kind"] == "features"
    assert [(v["view"], v["entity"], v["values"]) for v in kept[1]["input"]] == [
        ("v", {"shop": i}, {"count": i}) for i in (1, 2)
    ]
    assert kept[1]["input"][0]["definition_hash"] == "h"
    with sqlite3.connect(path) as db:  # r5 is another model's
        assert db.execute("SELECT COUNT(*) FROM predictions").fetchone() == (3,)


def test_records_are_stored_in_chunks_and_read_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    total = CHUNK_RECORDS + 5

    async def run() -> None:
        log = PredictionLog.open(path, max_records=5, buffer_bytes=1 << 30)
        for i in range(total):
            _record(log, i)
        await log.close()

    asyncio.run(run())
    # Retention drops a chunk once all its records are older than the newest 5.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT first_id, last_id FROM predictions").fetchall() == [
            (CHUNK_RECORDS + 1, total)
        ]
    page = read_predictions(path, "m", after=CHUNK_RECORDS + 2, limit=2)
    assert [(r["id"], r["request_id"]) for r in page] == [
        (CHUNK_RECORDS + 3, f"r{CHUNK_RECORDS + 2}"), (CHUNK_RECORDS + 4, f"r{CHUNK_RECORDS + 3}"),
    ]  # fmt: skip
    assert page[0]["input"]["x"]["data"] == [[float(CHUNK_RECORDS + 2)]]


def test_a_failing_store_drops_the_batch_counts_it_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.db"
    drops: list[tuple[str, int, str]] = []

    async def run() -> None:
        log = PredictionLog.open(
            path, max_records=10, buffer_bytes=1 << 20, on_drop=lambda *a: drops.append(a)
        )
        with sqlite3.connect(path) as db:  # the storage breaks under the writer
            db.execute("ALTER TABLE predictions RENAME TO broken")
        _record(log, 1)
        _record(log, 2)
        await log.flush()
        with sqlite3.connect(path) as db:  # repaired
            db.execute("ALTER TABLE broken RENAME TO predictions")
        _record(log, 3)
        await log.close()

    asyncio.run(run())
    assert drops == [("m", 2, "error")]
    assert "could not write 2 prediction log records" in caplog.text
    assert [r["request_id"] for r in read_predictions(path, "m")] == ["r3"]


def test_a_log_written_by_a_later_gyre_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ServeError, match="schema version 2, this gyre reads version 1"):
        PredictionLog.open(path, max_records=10, buffer_bytes=1000)


@pytest.fixture
def served(iris_home: Path) -> Iterator[tuple[str, str]]:
    config = iris_home.parent / "serve.toml"
    config.write_text(CONSUMERS + "[serve]\nworkers = 1\n")
    grpc_port = free_port()
    server = start_server(iris_home, config=config, grpc_port=grpc_port)
    try:
        yield server.url, f"127.0.0.1:{grpc_port}"
    finally:
        assert server.stop() == 0


@pytest.mark.integration
def test_every_protocol_is_logged_by_a_real_server(
    served: tuple[str, str], iris_home: Path
) -> None:
    url, grpc_address = served
    with httpx.Client(base_url=url, headers=CALLER) as http:
        assert http.post("/v2/models/iris/infer", json=v2([ROW])).is_success
        assert http.post("/v1/models/iris:predict", json={"instances": [ROW]}).is_success
        answer = http.post(
            "/invocations",
            json={"dataframe_split": {"data": [ROW]}},
            headers={"Gyre-Model": "iris@challenger"},
        )
        assert answer.is_success, answer.text
    grpc = triton.InferenceServerClient(grpc_address)
    try:
        tensor = triton.InferInput("X", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.float32([ROW]))
        grpc.infer("iris", [tensor], model_version="2", headers={"x-api-key": CALLER_KEY})
    finally:
        grpc.close()
    page = httpx.get(f"{url}/v1/admin/models/iris/predictions", headers=ADMIN).json()
    assert [(r["protocol"], r["route"], r["version"]) for r in page["predictions"]] == [
        ("v2", "champion", 1), ("tf", "champion", 1), ("mlflow", "alias", 2),
        ("grpc", "pinned", 2),
    ]  # fmt: skip
    assert {r["consumer"] for r in page["predictions"]} == {"shop"}
    # The CLI reads the same file.
    out = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(iris_home), "monitor", "predictions",
         "iris", "--after", str(page["predictions"][1]["id"]), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [r["protocol"] for r in json.loads(out.stdout)] == ["mlflow", "grpc"]
    table = subprocess.run(
        [sys.executable, "-m", "gyre", "--home", str(iris_home), "monitor", "predictions",
         "iris"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "predictions of iris" in table and "grpc" in table and "pinned" in table


def test_an_entity_request_logs_the_feature_vectors_it_was_given(tmp_path: Path) -> None:
    from tests.serve.test_features import CONFIG, train_and_publish

    config_file = tmp_path / "gyre.toml"
    config_file.write_text(CONFIG)
    config = load_config(tmp_path / "home", config_file)
    train_and_publish(config, random.Random(7), time.time_ns() // 1000)
    client = AppClient(config)
    try:
        body = {"parameters": {"entity": [{"shop": 1}, {"shop": 2}],
                               "request_features": {"basket": 5.0}}}  # fmt: skip
        answer = client.post("/v2/models/shops/infer", json=body)
        assert answer.status_code == 200, answer.text
    finally:
        client.close()
    (record,) = read_predictions(Stores.from_config(config).prediction_log_path, "shops")
    assert record["input_kind"] == "features"
    assert [vector["entity"] for vector in record["input"]] == [{"shop": 1}, {"shop": 2}]
    assert {vector["view"] for vector in record["input"]} == {"shop_orders"}
    assert all(vector["values"]["basket"] == 5.0 for vector in record["input"])
    assert record["output"]["label"]["shape"] == [2]
