"""Whatever a client sends, the server answers with a 4xx and a reason, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline

from gyre.config import load_config
from gyre.registry import Registry
from tests.serve.apptest import AppClient
from tests.serve.models import two_input_adder


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, iris_classifier: Pipeline, iris: tuple
) -> Iterator[AppClient]:
    home: Path = tmp_path_factory.mktemp("fuzz") / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0])
    registry.publish_onnx("adder", two_input_adder())
    registry.close()
    app = AppClient(load_config(home=home))
    yield app
    app.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
keys = st.sampled_from(
    ["inputs", "outputs", "id", "parameters", "name", "shape", "datatype", "data",
     "instances", "dataframe_split", "dataframe_records", "columns", "binary_data_size"]
)  # fmt: skip
# Bodies shaped like the protocols' own, with wrong values in them.
protocol_like = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=40,
)
urls = st.sampled_from(
    [
        "/v2/models/iris/infer",
        "/v2/models/adder/infer",
        "/v2/models/iris/versions/1/infer",
        "/v1/models/iris:predict",
        "/v1/models/adder:predict",
        "/invocations",
    ]
)


def _assert_clean(response_status: int, body: bytes) -> None:
    assert response_status in (200, 400, 404, 413), body
    if response_status != 200:
        error = json.loads(body)
        assert error.get("error") or error.get("message")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=urls, body=protocol_like)
def test_json_bodies_never_cause_a_500(client: AppClient, url: str, body: object) -> None:
    response = client.post(url, json=body, headers={"Gyre-Model": "iris"})
    _assert_clean(response.status_code, response.content)


@settings(max_examples=100, deadline=None)
@given(url=urls, body=st.binary(max_size=200), header=st.none() | st.integers(-5, 300).map(str))
def test_raw_bytes_never_cause_a_500(
    client: AppClient, url: str, body: bytes, header: str | None
) -> None:
    headers = {"Gyre-Model": "iris"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    response = client.post(url, content=body, headers=headers)
    _assert_clean(response.status_code, response.content)


@pytest.mark.parametrize(
    "url",
    ["/v2/models/iris/infer", "/v1/models/iris:predict", "/invocations", "/v1/feedback"],
)
@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_json_nested_past_the_decoder_limit_is_a_400(
    client: AppClient, url: str, depth: int
) -> None:
    nested = b"[" * depth + b"]" * depth
    response = client.post(url, content=nested, headers={"Gyre-Model": "iris"})
    assert response.status_code == 400, response.content
    body = b'{"inputs": [{"name": "X", "data": ' + nested + b"}]}"
    response = client.post(url, content=body, headers={"Gyre-Model": "iris"})
    assert response.status_code == 400, response.content
    assert "recursion" in response.text  # in `error`, or MLflow's `message`


@settings(max_examples=100, deadline=None)
@given(
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/:@._-", max_size=40),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_unknown_routes_are_404(client: AppClient, path: str, method: str) -> None:
    response = client.request(method, "/" + path.lstrip("/"))
    assert response.status_code in (200, 400, 404, 503), response.text
