"""Entity requests end to end: events in, a model trained on a feature view, served by
entity id, every served vector logged, and the skew check finding none (or the one we
plant)."""

from __future__ import annotations

import itertools
import json
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from gyre.collect import SQLiteFactLog, event_types
from gyre.config import Config, load_config
from gyre.errors import InvalidModel
from gyre.features import feature_views, training_set
from gyre.monitor import check_skew
from gyre.registry import CHAMPION, Registry
from tests.conftest import start_server
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient

MINUTE = 60_000_000
CONFIG = """
[collect.events.orders]
fields = {id = "string", shop = "int", amount = "float", items = "int", at = "timestamp"}
entity = ["shop"]
time = "at"
id = "id"

[features.views.shop_orders]
source = "orders"
transforms = {per_item = "amount / items"}
aggregations = ["count() over 10m", "sum(amount) over 1h", "mean(per_item) over 1d",
                "max(items) over 1h"]
request = {basket = "float", hour = "hour_of_day"}
"""


def orders(rng: random.Random, start: int, count: int, now_us: int) -> list[dict]:
    return [
        {"id": f"o{start + i}", "shop": rng.randrange(5), "amount": round(rng.uniform(1, 90), 2),
         "items": rng.randrange(0, 4), "at": (now_us - rng.randrange(0, 120 * MINUTE)) / 1e6}
        for i in range(count)
    ]  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, Path]]:
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(CONFIG)
    config = load_config(tmp_path / "home", config_file)
    yield config, config_file


def train_and_publish(config: Config, rng: random.Random, now_us: int) -> None:
    """Train on a point-in-time correct training set from the log, publish with the view."""
    types = event_types(config.collect.events)
    view = feature_views(config.features.views, types)["shop_orders"]
    log = SQLiteFactLog(config.home / "facts.db")
    log.append([(types["orders"], [types["orders"].validate(o) for o in
                                   orders(rng, 10_000, 300, now_us - 200 * MINUTE)])])  # fmt: skip
    queries = [{"shop": rng.randrange(5), "ts": now_us - 200 * MINUTE - rng.randrange(60 * MINUTE),
                "basket": rng.uniform(0, 100), "label": i % 2} for i in range(200)]  # fmt: skip
    rows = training_set(log, view, queries)
    log.close()
    model = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0)
    model.fit(view.matrix(rows), [row["label"] for row in rows])
    registry = Registry.from_config(config)
    registry.publish(
        "shops", model, view.matrix(rows), alias=CHAMPION, features=view, force_alias=UNBLESSED
    )
    registry.close()


def post_once(config: Config, url: str, body: dict) -> httpx.Response:
    """One request to a fresh in-process server over `config`."""
    client = AppClient(config)
    try:
        return client.post(url, json=body)
    finally:
        client.close()


def test_entity_requests_are_served_logged_and_free_of_skew(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    rng = random.Random(7)
    now_us = time.time_ns() // 1000
    train_and_publish(config, rng, now_us)
    client = AppClient(config)
    served = 0
    try:
        for batch in range(12):
            answer = client.post("/v1/events/orders", json=orders(rng, batch * 40, 40, now_us))
            assert answer.status_code == 200 and answer.json()["accepted"] == 40
            for _ in range(5):
                shop, basket = rng.randrange(6), round(rng.uniform(0, 100), 1)
                body = {"parameters": {"entity": {"shop": shop},
                                       "request_features": {"basket": basket}}}  # fmt: skip
                response = client.post("/v2/models/shops/infer", json=body)
                assert response.status_code == 200, response.text
                assert response.headers["gyre-model-version"] == "1"
                served += 1
        several = {"parameters": {"entity": [{"shop": 1}, {"shop": 2}],
                                  "request_features": {"basket": 5}}}  # fmt: skip
        answer = client.post("/v2/models/shops/infer", json=several).json()
        assert answer["outputs"][0]["shape"][0] == 2
        served += 2
        metrics = client.get("/metrics").text
        assert f'gyre_feature_vectors_total{{view="shop_orders"}} {served}.0' in metrics
        assert 'gyre_feature_lookup_seconds_count{view="shop_orders"} 61.0' in metrics
        assert "gyre_feature_log_position 780.0" in metrics  # 300 for training + 12 x 40
    finally:
        client.close()
    views = feature_views(config.features.views, event_types(config.collect.events))
    log = SQLiteFactLog(config.home / "facts.db")
    (report,) = check_skew(log, views, config.home / "served.db")
    assert report.checked == served
    assert report.mismatches == dict.fromkeys(views["shop_orders"].features, 0)
    # The check can fail: corrupt one logged value and it is found, with an example.
    with sqlite3.connect(config.home / "served.db") as db:
        (vector,) = db.execute("SELECT vector FROM served WHERE id = 3").fetchone()
        values = json.loads(vector)
        values["sum_amount_1h"] += 1.0
        db.execute("UPDATE served SET vector = ? WHERE id = 3", (json.dumps(values),))
    (report,) = check_skew(log, views, config.home / "served.db")
    log.close()
    assert report.mismatches["sum_amount_1h"] == 1 and sum(report.mismatches.values()) == 1
    assert report.examples[0]["feature"] == "sum_amount_1h"
    cli = [sys.executable, "-m", "gyre", "--home", str(config.home), "--config", str(config_file)]
    result = subprocess.run([*cli, "features", "skew"], capture_output=True, text=True)
    assert result.returncode == 3 and "1 mismatching values" in result.stdout
    export = config.home / "export"
    subprocess.run([*cli, "events", "export", "orders", "--out", str(export)], check=True)
    from_export = [*cli, "features", "skew", "--export", str(export), "--json"]
    result = subprocess.run(from_export, capture_output=True, text=True)
    (reported,) = json.loads(result.stdout)
    assert result.returncode == 3 and reported["checked"] == served
    assert reported["mismatches"]["sum_amount_1h"] == 1
    listed = subprocess.run([*cli, "features", "list"], capture_output=True, text=True)
    assert (
        "shop_orders" in listed.stdout
        and views["shop_orders"].definition_hash[:12] in listed.stdout
    )


def test_the_served_vector_is_the_models_input(setup: tuple[Config, Path]) -> None:
    config, _ = setup
    rng = random.Random(3)
    now_us = time.time_ns() // 1000
    train_and_publish(config, rng, now_us)
    client = AppClient(config)
    try:
        client.post("/v1/events/orders", json=orders(rng, 0, 50, now_us))
        body = {"parameters": {"entity": {"shop": 2}, "request_features": {"basket": 9.5}}}
        answer = client.post("/v2/models/shops/infer", json=body).json()
    finally:
        client.close()
    with sqlite3.connect(config.home / "served.db") as db:
        (vector,) = db.execute("SELECT vector FROM served").fetchone()
    values = json.loads(vector)
    assert values["basket"] == 9.5
    views = feature_views(config.features.views, event_types(config.collect.events))
    registry = Registry.from_config(config)
    model = registry.load_native(registry.resolve("shops"))
    registry.close()
    table = views["shop_orders"].matrix([values])
    expected = model.predict_proba(table.astype(np.float64))[0]
    probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    assert np.allclose(probabilities["data"], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"parameters": {"entity": {"shop": "x"}}}, 400, "entity key `shop`: expected int"),
        ({"parameters": {"entity": {"store": 1}, "request_features": {"basket": 1}}}, 400,
         "entity key `shop` is missing"),
        ({"parameters": {"entity": {"shop": 1}}}, 400, "`basket` (float) is missing"),
        ({"parameters": {"entity": []}}, 400, "non-empty list of objects"),
        ({"inputs": [{"name": "X", "shape": [1, 6], "datatype": "FP32", "data": [0] * 6}],
          "parameters": {"entity": {"shop": 1}}}, 400, "not both"),
        ({"parameters": {}}, 400, "the request has no inputs"),
    ],
)  # fmt: skip
def test_bad_entity_requests_get_the_reason(
    setup: tuple[Config, Path], body: dict, status: int, message: str
) -> None:
    config, _ = setup
    train_and_publish(config, random.Random(1), time.time_ns() // 1000)
    response = post_once(config, "/v2/models/shops/infer", body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_changed_view_definition_is_refused_for_the_old_model(
    setup: tuple[Config, Path], tmp_path: Path
) -> None:
    config, _ = setup
    train_and_publish(config, random.Random(1), time.time_ns() // 1000)
    changed = tmp_path / "changed.toml"
    changed.write_text(CONFIG.replace("count() over 10m", "count() over 20m"))
    body = {"parameters": {"entity": {"shop": 1}, "request_features": {"basket": 1}}}
    response = post_once(load_config(config.home, changed), "/v2/models/shops/infer", body)
    assert response.status_code == 409
    assert "retrain and publish on the current definition" in response.json()["error"]


def test_a_model_without_a_view_cannot_take_an_entity(
    setup: tuple[Config, Path], iris_classifier: object, iris: tuple
) -> None:
    config, _ = setup
    registry = Registry.from_config(config)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.close()
    response = post_once(config, "/v2/models/iris/infer", {"parameters": {"entity": {"shop": 1}}})
    assert response.status_code == 400
    assert "published without a feature view" in response.json()["error"]


def test_publishing_records_the_view_and_refuses_a_mismatched_model(
    setup: tuple[Config, Path], iris_classifier: object, iris: tuple
) -> None:
    config, _ = setup
    train_and_publish(config, random.Random(1), time.time_ns() // 1000)
    registry = Registry.from_config(config)
    version = registry.resolve("shops")
    view = feature_views(config.features.views, event_types(config.collect.events))["shop_orders"]
    assert version.signature.features is not None
    assert version.signature.features.definition_hash == view.definition_hash
    assert version.signature.feature_names == tuple(view.features)
    assert version.lineage["feature_definition_hash"] == view.definition_hash
    with pytest.raises(InvalidModel, match="takes 4 columns but feature view `shop_orders` has 6"):
        registry.publish("iris", iris_classifier, iris[0], features=view)
    registry.close()


@pytest.mark.integration
def test_every_worker_counts_the_events_any_worker_acknowledged(
    setup: tuple[Config, Path],
) -> None:
    config, config_file = setup
    now_us = time.time_ns() // 1000
    train_and_publish(config, random.Random(1), now_us)
    server = start_server(config.home, "--workers", "2", config=config_file)
    acknowledged = {}
    try:
        for i in range(1, 21):
            event = {"id": f"fresh{i}", "shop": 9, "amount": 1.0, "items": 1, "at": time.time()}
            # A new connection each time: the kernel spreads them over the workers.
            ack = httpx.post(f"{server.url}/v1/events/orders", json=[event]).json()
            acknowledged[i] = ack["watermark"]
            body = {"parameters": {"entity": {"shop": 9}, "request_features": {"basket": i}}}
            assert httpx.post(f"{server.url}/v2/models/shops/infer", json=body).status_code == 200
    finally:
        assert server.stop() == 0
    with sqlite3.connect(config.home / "served.db") as db:
        rows = db.execute("SELECT watermark, vector FROM served").fetchall()
    assert len(rows) == 20
    assert (config.home / "online.snapshot").is_file()  # saved at shutdown for the restart
    for watermark, vector in rows:
        values = json.loads(vector)
        i = int(values["basket"])
        assert watermark >= acknowledged[i]
        assert values["count_events_10m"] == i


@pytest.mark.integration
def test_no_skew_while_events_stream_in_during_lookups(setup: tuple[Config, Path]) -> None:
    """Ingestion, the online followers and lookups all run at once; every served vector
    must still match the offline engine at its logged log position."""
    config, config_file = setup
    # The followers apply new facts all the time, racing the lookups.
    config_file.write_text(CONFIG + "\n[features]\nfollow_interval_ms = 1.0\n")
    train_and_publish(config, random.Random(1), time.time_ns() // 1000)
    server = start_server(config.home, "--workers", "2", config=config_file)
    stop = threading.Event()

    def ingest() -> None:
        with httpx.Client(base_url=server.url) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                batch = [{"id": f"s{i}-{j}", "shop": j % 3, "amount": 1.0 + j, "items": j % 4,
                          "at": time.time()} for j in range(20)]  # fmt: skip
                assert http.post("/v1/events/orders", json=batch).status_code == 200

    feeder = threading.Thread(target=ingest)
    feeder.start()
    answered = 0
    try:
        with httpx.Client(base_url=server.url) as http:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                body = {"parameters": {"entity": [{"shop": 0}, {"shop": 1}, {"shop": 2}],
                                       "request_features": {"basket": 1.5}}}  # fmt: skip
                assert http.post("/v2/models/shops/infer", json=body).status_code == 200
                answered += 3
    finally:
        stop.set()
        feeder.join()
        assert server.stop() == 0
    views = feature_views(config.features.views, event_types(config.collect.events))
    log = SQLiteFactLog(config.home / "facts.db")
    (report,) = check_skew(log, views, config.home / "served.db")
    log.close()
    assert report.checked == answered > 30
    assert sum(report.mismatches.values()) == 0, report.examples


def test_a_shadow_is_asked_only_when_it_was_trained_on_the_same_features(
    setup: tuple[Config, Path],
) -> None:
    config, _ = setup
    now_us = time.time_ns() // 1000
    train_and_publish(config, random.Random(1), now_us)  # version 1, champion
    train_and_publish(config, random.Random(2), now_us)  # version 2, same view
    registry = Registry.from_config(config)
    registry.set_alias("shops", "challenger", 2, reason=UNBLESSED, force=True)
    registry.set_alias("shops", CHAMPION, 1, reason=UNBLESSED, force=True)
    registry.set_policy("shops", "shadow", {"shadow": "challenger"})
    registry.close()
    body = {"parameters": {"entity": {"shop": 1}, "request_features": {"basket": 1}}}
    client = AppClient(config)
    try:
        assert client.post("/v2/models/shops/infer", json=body).status_code == 200
        client.loop.run_until_complete(client.app.predictor.drain())
        metrics = client.get("/metrics").text
        # Asked: the two versions were trained on different rows, so they may disagree.
        assert re.search(
            r'gyre_shadow_comparisons_total\{model="shops",result="(dis)?agree"\} 1', metrics
        )
        assert 'result="error"' not in metrics
    finally:
        client.close()
    # A challenger trained on raw columns (no view) must not get the view's vectors.
    registry = Registry.from_config(config)
    table = np.random.default_rng(0).normal(size=(50, 6))
    raw = GradientBoostingClassifier(n_estimators=5).fit(table, np.arange(50) % 2)
    registry.publish("shops", raw, table)  # version 3
    registry.set_alias("shops", "challenger", 3, reason=UNBLESSED, force=True)
    registry.close()
    client = AppClient(config)
    try:
        assert client.post("/v2/models/shops/infer", json=body).status_code == 200
        client.loop.run_until_complete(client.app.predictor.drain())
        metrics = client.get("/metrics").text
        assert 'gyre_shadow_comparisons_total{model="shops",result="error"} 1.0' in metrics
        assert 'agree"}' not in metrics
    finally:
        client.close()
