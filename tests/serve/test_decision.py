"""A binary classifier's decision threshold decides the label the server returns, on every
protocol; a changed one is served at the next reload; one it cannot use never stops it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.linear_model import LogisticRegression

from gyre.auth import hash_key
from gyre.config import load_config
from gyre.registry import CHAMPION, Registry
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient
from tests.serve.test_grpc import _serve

RNG = np.random.default_rng(11)
X = RNG.normal(size=(400, 2))
Y = (X[:, 0] + 0.8 * RNG.normal(size=400) > 0).astype(int)
ADMIN_KEY = "admin-key"


def fitted(labels: np.ndarray = Y) -> LogisticRegression:
    return LogisticRegression().fit(X, labels)


def row_at(model: LogisticRegression, p: float) -> list[float]:
    """A row whose probability of the second class is `p` (the first feature solved for)."""
    logit = math.log(p / (1 - p))
    first = (logit - model.intercept_[0]) / model.coef_[0, 0]
    row = [float(first), 0.0]
    assert model.predict_proba([row])[0, 1] == pytest.approx(p, abs=1e-6)
    return row


MODEL = fitted()
ROW = row_at(MODEL, 0.7)  # the model's own label: 1; at a threshold of 0.9: 0


def v2(row: list[float]) -> dict:
    return {"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": row}]}


def v2_label(client: AppClient, ref: str, row: list[float] = ROW) -> object:
    path = "/v2/models/" + ref.replace(":", "/versions/") + "/infer"
    response = client.post(path, json=v2(row))
    assert response.status_code == 200, response.text
    (label,) = response.json()["outputs"][0]["data"]
    return label


def publish_two(home: Path) -> None:
    """Version 1 with a threshold of 0.9, version 2 the same model without one."""
    registry = Registry(home)
    registry.publish("churn", MODEL, X, decision_threshold=0.9)
    registry.publish("churn", MODEL, X, force_new=True)
    registry.close()


@pytest.fixture
def client(home: Path) -> Iterator[AppClient]:
    publish_two(home)
    app = AppClient(load_config(home=home))
    yield app
    app.close()


def test_the_threshold_decides_the_label_on_every_http_protocol(client: AppClient) -> None:
    assert MODEL.predict([ROW]).tolist() == [1]
    assert (v2_label(client, "churn:1"), v2_label(client, "churn:2")) == (0, 1)
    tf = [
        client.post(f"/v1/models/churn/versions/{v}:predict", json={"instances": [ROW]}).json()
        for v in (1, 2)
    ]
    assert [answer["predictions"][0]["label"] for answer in tf] == [0, 1]
    mlflow = [
        client.post("/invocations", json={"inputs": [ROW]}, headers={"Gyre-Model": f"churn:{v}"})
        for v in (1, 2)
    ]
    assert [answer.json()["predictions"][0]["label"] for answer in mlflow] == [0, 1]
    # The probabilities are the model's own either way; rows past the threshold are 1.
    assert tf[0]["predictions"][0]["probabilities"] == tf[1]["predictions"][0]["probabilities"]
    assert v2_label(client, "churn:1", row_at(MODEL, 0.95)) == 1
    assert v2_label(client, "churn:1", row_at(MODEL, 0.2)) == 0


def test_a_batch_is_labelled_row_by_row(client: AppClient) -> None:
    rows = [row_at(MODEL, p) for p in (0.1, 0.7, 0.89, 0.91, 0.99)]
    body = {"inputs": [{"name": "X", "shape": [5, 2], "datatype": "FP32", "data": rows}]}
    answer = client.post("/v2/models/churn/versions/1/infer", json=body).json()
    label = answer["outputs"][0]
    assert (label["datatype"], label["shape"], label["data"]) == ("INT64", [5], [0, 0, 0, 1, 1])


def test_string_classes_keep_their_datatype(home: Path) -> None:
    model = fitted(np.where(Y == 1, "yes", "no"))
    registry = Registry(home)
    registry.publish("churn", model, X, decision_threshold=0.9)
    registry.close()
    client = AppClient(load_config(home=home))
    try:
        answer = client.post("/v2/models/churn/infer", json=v2(ROW)).json()["outputs"][0]
        assert (answer["datatype"], answer["data"]) == ("BYTES", ["no"])
        assert model.predict([ROW]).tolist() == ["yes"]
        assert v2_label(client, "churn", row_at(model, 0.95)) == "yes"
    finally:
        client.close()


def test_a_threshold_set_while_serving_is_served_at_the_next_reload_cached_or_not(
    home: Path,
) -> None:
    registry = Registry(home)
    registry.publish("churn", MODEL, X)
    config = home.parent / "gyre.toml"
    config.write_text("[serve.models.churn]\ncache = true\n")
    client = AppClient(load_config(home=home, config_file=config))
    try:
        assert v2_label(client, "churn:1") == 1  # now in the cache
        registry.set_decision_threshold("churn", 1, 0.9, reason="learned")
        client.refresh()
        assert v2_label(client, "churn:1") == 0
        metrics = client.get("/metrics").text
        assert 'gyre_cache_lookups_total{model="churn",result="hit"} 1.0' in metrics
        registry.set_decision_threshold("churn", 1, None, reason="undo")
        client.refresh()
        assert v2_label(client, "churn:1") == 1
    finally:
        client.close()
        registry.close()


def test_a_stored_threshold_the_server_cannot_use_never_stops_it(home: Path) -> None:
    registry = Registry(home)
    registry.publish("churn", MODEL, X)
    registry.metadata.set_decision("churn", 1, {"threshold": 1.5, "classes": [0, 1]}, reason="db")
    client = AppClient(load_config(home=home))
    broken = 'gyre_registry_broken_entries{entry="decision_threshold:1",model="churn"}'
    try:
        assert client.get("/v2/health/ready").status_code == 200
        assert v2_label(client, "churn:1") == 1  # the model's own label
        assert f"{broken} 1.0" in client.get("/metrics").text
        registry.set_decision_threshold("churn", 1, 0.9, reason="fixed")
        client.refresh()
        assert v2_label(client, "churn:1") == 0
        assert f"{broken} 0.0" in client.get("/metrics").text
        # Broken again, while served: the last good rule is dropped, serving goes on.
        registry.metadata.set_decision("churn", 1, {"threshold": "high"}, reason="db")  # type: ignore[dict-item]
        client.refresh()
        assert v2_label(client, "churn:1") == 1
        assert f"{broken} 1.0" in client.get("/metrics").text
    finally:
        client.close()
        registry.close()


def test_a_shadow_is_compared_on_the_labels_each_version_answers(home: Path) -> None:
    publish_two(home)
    registry = Registry(home)
    registry.set_alias("churn", CHAMPION, 1, reason=UNBLESSED, force=True)
    registry.set_alias("churn", "challenger", 2, reason=UNBLESSED, force=True)
    registry.set_policy("churn", "shadow", {"shadow": "challenger"})
    registry.close()
    config = home.parent / "gyre.toml"
    config.write_text(
        f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n'
    )
    client = AppClient(load_config(home=home, config_file=config))
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        for row in (ROW, row_at(MODEL, 0.95)):
            response = client.post("/v2/models/churn/infer", json=v2(row), headers=auth)
            assert response.headers["gyre-model-version"] == "1"
        client.loop.run_until_complete(client.app.predictor.drain())
        (pair,) = client.get("/v1/admin/models/churn/shadow", headers=auth).json()["summary"]
        # The same model: only the threshold makes them disagree, on the row at p = 0.7.
        assert (pair["agree"], pair["disagree"]) == (1, 1)
    finally:
        client.close()


@pytest.mark.integration
def test_http_and_grpc_answer_the_same_label(home: Path) -> None:
    publish_two(home)
    server, address = _serve(home, "[serve]\nworkers = 1\n")
    grpc_client = triton.InferenceServerClient(address)
    try:
        rows = np.array([ROW, row_at(MODEL, 0.95), row_at(MODEL, 0.3)], dtype=np.float32)
        for version, expected in (("1", [0, 1, 0]), ("2", [1, 1, 0])):
            tensor = triton.InferInput("X", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            grpc_labels = grpc_client.infer("churn", [tensor], model_version=version)
            inputs = [{"name": "X", "shape": [3, 2], "datatype": "FP32", "data": rows.tolist()}]
            body = {"inputs": inputs}
            http = httpx.post(f"{server.url}/v2/models/churn/versions/{version}/infer", json=body)
            assert grpc_labels.as_numpy("label").tolist() == expected
            assert http.json()["outputs"][0]["data"] == expected
    finally:
        grpc_client.close()
        assert server.stop() == 0
