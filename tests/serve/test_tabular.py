"""Mixed-type, multi-input models over every protocol: a published scikit-learn pipeline
(one-hot strings, scaled numbers) answers as scikit-learn does on the same rows, and a
hand-built ONNX graph with FP32, INT64 and STRING inputs is validated, cached and batched."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from gyre.config import load_config
from gyre.registry import Registry
from tests.conftest import free_port, start_server
from tests.serve.apptest import AppClient
from tests.serve.models import mixed_inputs, vector_adder

# Rows the pipeline was not fitted on, with a city it never saw (one-hot: all zeros).
ROWS = pd.DataFrame(
    {
        "city": ["Oslo", "Bergen", "Paris", "Tromsø"],
        "age": [31, 64, 45, 22],
        "income": [52_000.0, 38_250.5, 71_000.25, 49_999.0],
    }
)


@pytest.fixture
def client(
    home: Path, tmp_path: Path, mixed_classifier: Pipeline, mixed_table: tuple
) -> Iterator[AppClient]:
    registry = Registry(home)
    registry.publish("loans", mixed_classifier, mixed_table[0])
    registry.publish_onnx("mixed", mixed_inputs())
    registry.publish_onnx("vectors", vector_adder())
    registry.close()
    config = tmp_path / "gyre.toml"
    config.write_text(
        "[serve.models.mixed]\ncache = true\n"
        # Long enough for concurrent requests to meet in one batch on a loaded machine.
        "max_batch_delay_ms = 50\nlatency_slo_ms = 2000\n"
    )
    app = AppClient(load_config(home=home, config_file=config))
    yield app
    app.close()


def records() -> list[dict[str, Any]]:
    return [
        {"city": c, "age": int(a), "income": float(i)}
        for c, a, i in zip(ROWS["city"], ROWS["age"], ROWS["income"], strict=True)
    ]


def v2_inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    n = len(frame)
    return [
        {"name": "city", "datatype": "BYTES", "shape": [n, 1], "data": frame["city"].tolist()},
        {"name": "age", "datatype": "INT64", "shape": [n, 1], "data": frame["age"].tolist()},
        {"name": "income", "datatype": "FP32", "shape": [n, 1], "data": frame["income"].tolist()},
    ]


def triton_inputs(triton: Any, **options: bool) -> list[Any]:
    """ROWS as one [N, 1] tensor per column, in a tritonclient module's own type (`http`
    or `grpc`); `options` go to set_data_from_numpy (`binary_data` for http)."""
    inputs = []
    for name, datatype, values in (
        ("city", "BYTES", ROWS["city"].to_numpy(object)),
        ("age", "INT64", ROWS["age"].to_numpy(np.int64)),
        ("income", "FP32", ROWS["income"].to_numpy(np.float32)),
    ):
        tensor = triton.InferInput(name, [len(ROWS), 1], datatype)
        tensor.set_data_from_numpy(values.reshape(-1, 1), **options)
        inputs.append(tensor)
    return inputs


def assert_as_sklearn(
    pipeline: Pipeline, labels: list[Any], proba: Any, frame: pd.DataFrame = ROWS
) -> None:
    assert labels == pipeline.predict(frame).tolist()
    np.testing.assert_allclose(np.array(proba), pipeline.predict_proba(frame), atol=1e-5)


def test_metadata_names_every_column_with_its_datatype(client: AppClient) -> None:
    meta = client.get("/v2/models/loans").json()
    assert meta["inputs"] == [
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "age", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "income", "datatype": "FP32", "shape": [-1, 1]},
    ]
    tf = client.get("/v1/models/loans/metadata").json()
    inputs = tf["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {name: spec["dtype"] for name, spec in inputs.items()} == {
        "city": "DT_STRING",
        "age": "DT_INT64",
        "income": "DT_FLOAT",
    }


def test_v2_several_input_tensors_with_bytes_answer_as_sklearn(
    client: AppClient, mixed_classifier: Pipeline
) -> None:
    response = client.post("/v2/models/loans/infer", json={"inputs": v2_inputs(ROWS)})
    assert response.status_code == 200, response.text
    label, proba = response.json()["outputs"]
    assert label["shape"] == [4] and proba["shape"] == [4, 2]
    assert_as_sklearn(mixed_classifier, label["data"], np.reshape(proba["data"], (4, 2)))


def test_tf_serving_instances_as_objects_and_inputs_by_name_answer_as_sklearn(
    client: AppClient, mixed_classifier: Pipeline
) -> None:
    rows = client.post("/v1/models/loans:predict", json={"instances": records()})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert_as_sklearn(
        mixed_classifier,
        [p["label"] for p in predictions],
        [p["probabilities"] for p in predictions],
    )
    for city in (ROWS["city"].tolist(), [[c] for c in ROWS["city"]]):  # scalars or [N, 1]
        body = {
            "inputs": {"city": city, "age": ROWS["age"].tolist(), "income": ROWS["income"].tolist()}
        }
        outputs = client.post("/v1/models/loans:predict", json=body).json()["outputs"]
        assert_as_sklearn(mixed_classifier, outputs["label"], outputs["probabilities"])


def test_mlflow_dataframes_instances_and_inputs_answer_as_sklearn(
    client: AppClient, mixed_classifier: Pipeline
) -> None:
    # The columns in another order, with one the model does not take: matched by name.
    columns = ["income", "note", "age", "city"]
    split = {
        "dataframe_split": {
            "columns": columns,
            "data": [[r["income"], "x", r["age"], r["city"]] for r in records()],
        }
    }
    bodies = [
        split,
        {"dataframe_records": records()},
        {"instances": records()},
        {"inputs": {name: ROWS[name].tolist() for name in ROWS.columns}},
    ]
    for body in bodies:
        response = client.post("/invocations", json=body, headers={"Gyre-Model": "loans"})
        assert response.status_code == 200, (body, response.text)
        predictions = response.json()["predictions"]
        assert_as_sklearn(
            mixed_classifier,
            [p["label"] for p in predictions],
            [p["probabilities"] for p in predictions],
        )


def with_row(change: dict[str, Any]) -> list[dict[str, Any]]:
    rows = records()
    rows[1] = {**rows[1], **change}
    return [row for row in rows if row]


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        (
            "/invocations",
            {"dataframe_split": {"columns": ["city", "age"], "data": [["Oslo", 31]]}},
            r"dataframe lacks column\(s\) income of model `loans` version 1; "
            r"its inputs are city, age, income",
        ),
        (
            "/invocations",
            {"dataframe_records": [{"city": "Oslo", "income": 1.0}]},
            r"lacks column\(s\) age",
        ),
        (
            "/v1/models/loans:predict",
            {"instances": [{"city": "Oslo", "age": 3, "income": 1.0}, {"city": "Oslo", "age": 3}]},
            r"row 1 lacks income; .* every row to name each of its inputs: city, age, income",
        ),
        (
            "/v1/models/loans:predict",
            {"instances": [{"city": "Oslo", "age": 3, "income": 1.0, "zip": 0}]},
            "row 0 names zip, which model `loans` version 1 does not take",
        ),
        (
            "/v1/models/loans:predict",
            {"instances": with_row({"income": "52000"})},
            "`instances` `income`: values are not a regular FP32 tensor .*expected numbers, "
            "got the string '52000'",
        ),
        (
            "/invocations",
            {"dataframe_records": with_row({"age": "31"})},
            "column `age`: .*expected numbers, got the string '31'",
        ),
        (
            "/invocations",
            {"dataframe_records": with_row({"city": 31})},
            "column `city`: .*expected strings, got 31; send text as JSON strings",
        ),
        (
            "/v1/models/loans:predict",
            {"instances": with_row({"city": None})},
            "`instances` `city`: .*expected strings, got None",
        ),
        (
            "/v2/models/loans/infer",
            {
                "inputs": [
                    *v2_inputs(ROWS)[1:],
                    {"name": "city", "datatype": "BYTES", "shape": [4, 1], "data": [1, 2, 3, 4]},
                ]
            },
            "input `city`: .*expected strings, got 1",
        ),
        (
            "/v2/models/loans/infer",
            {"inputs": v2_inputs(ROWS)[1:]},
            "needs input `city`; it expects `city` BYTES \\[-1, 1\\], `age` INT64 \\[-1, 1\\]",
        ),
    ],
)
def test_bad_mixed_rows_are_refused_naming_the_column(
    client: AppClient, url: str, body: dict[str, Any], message: str
) -> None:
    response = client.post(url, json=body, headers={"Gyre-Model": "loans"})
    assert response.status_code == 400, response.text
    assert re.search(message, response.text), response.text


def mixed_body(city: str, age: int, income: float) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": [city]},
            {"name": "age", "datatype": "INT64", "shape": [1, 1], "data": [age]},
            {"name": "income", "datatype": "FP32", "shape": [1, 1], "data": [income]},
        ]
    }


def answer(response: Any) -> tuple[float, str]:
    assert response.status_code == 200, response.text
    total, city = response.json()["outputs"]
    return total["data"][0], city["data"][0]


def test_an_onnx_graph_with_typed_inputs_serves_on_every_protocol(client: AppClient) -> None:
    assert answer(client.post("/v2/models/mixed/infer", json=mixed_body("Oslo", 3, 0.5))) == (
        3.5,
        "Oslo",
    )
    tf = client.post(
        "/v1/models/mixed:predict", json={"instances": [{"city": "Bø", "age": 2, "income": 1.0}]}
    )
    assert tf.json() == {"predictions": [{"total": [3.0], "city_out": ["Bø"]}]}
    mlflow = client.post(
        "/invocations",
        json={"dataframe_split": {"columns": ["age", "income", "city"], "data": [[1, 1.5, "x"]]}},
        headers={"Gyre-Model": "mixed"},
    )
    assert mlflow.json() == {"predictions": [{"total": [2.5], "city_out": ["x"]}]}


def test_requests_differing_only_in_a_string_are_cached_apart(client: AppClient) -> None:
    oslo = client.post("/v2/models/mixed/infer", json=mixed_body("Oslo", 3, 0.5))
    bergen = client.post("/v2/models/mixed/infer", json=mixed_body("Bergen", 3, 0.5))
    again = client.post("/v2/models/mixed/infer", json=mixed_body("Oslo", 3, 0.5))
    assert answer(oslo) == answer(again) == (3.5, "Oslo")
    assert answer(bergen) == (3.5, "Bergen")
    metrics = client.get("/metrics").text
    assert 'gyre_cache_lookups_total{model="mixed",result="hit"} 1.0' in metrics
    assert 'gyre_cache_lookups_total{model="mixed",result="miss"} 2.0' in metrics


def test_concurrent_mixed_requests_are_batched_and_each_gets_its_own_rows(
    client: AppClient,
) -> None:
    count = 12
    bodies = [mixed_body(f"city-{i}", i, i / 4) for i in range(count)]

    async def send_all() -> list[Any]:
        return await asyncio.gather(
            *(client._client.post("/v2/models/mixed/infer", json=body) for body in bodies)
        )

    responses = client.loop.run_until_complete(send_all())
    assert [answer(r) for r in responses] == [(i + i / 4, f"city-{i}") for i in range(count)]
    metrics = client.get("/metrics").text
    batches = float(
        re.search(r'gyre_batch_size_rows_count\{model="mixed",version="1"\} (\S+)', metrics)[1]
    )
    rows = float(
        re.search(r'gyre_batch_size_rows_sum\{model="mixed",version="1"\} (\S+)', metrics)[1]
    )
    assert rows == count
    assert batches < count  # some batch held several requests' rows


def test_a_row_lacking_an_input_is_refused_not_read_as_nan(client: AppClient) -> None:
    rows = [{"a": 1.0, "b": 2.0}, {"a": 3.0}]
    for url, headers in (
        ("/v1/models/vectors:predict", {}),
        ("/invocations", {"Gyre-Model": "vectors"}),
    ):
        response = client.post(url, json={"instances": rows}, headers=headers)
        assert response.status_code == 400, response.text
        assert "row 1 lacks b" in response.text
    whole = client.post("/v1/models/vectors:predict", json={"instances": rows[:1]})
    assert whole.json() == {"predictions": [3.0]}


def test_tritonclient_binary_bytes_int64_and_fp32_inputs_answer_as_sklearn(
    client: AppClient, mixed_classifier: Pipeline
) -> None:
    import tritonclient.http as triton

    inputs = triton_inputs(triton, binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs)
    response = client.post(
        "/v2/models/loans/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
    assert response.status_code == 200, response.text
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"])
    )
    assert_as_sklearn(
        mixed_classifier, result.as_numpy("label").tolist(), result.as_numpy("probabilities")
    )


def test_a_one_column_string_model_without_unknown_categories_serves_rows_and_records(
    home: Path, mixed_table: tuple
) -> None:
    frame, labels = mixed_table
    cities = frame[["city"]]
    model = make_pipeline(
        ColumnTransformer([("city", OneHotEncoder(), ["city"])]), LogisticRegression()
    ).fit(cities, labels)
    registry = Registry(home)
    assert registry.publish("cities", model, cities).signature.feature_names == ("city",)
    registry.close()
    app = AppClient(load_config(home=home))
    try:
        expected = model.predict(pd.DataFrame({"city": ["Oslo", "Bergen"]})).tolist()
        for url, body in (
            ("/v1/models/cities:predict", {"instances": ["Oslo", "Bergen"]}),
            ("/v1/models/cities:predict", {"instances": [{"city": "Oslo"}, {"city": "Bergen"}]}),
            ("/invocations", {"dataframe_records": [{"city": "Oslo"}, {"city": "Bergen"}]}),
            (
                "/invocations",
                {"dataframe_split": {"columns": ["city"], "data": [["Oslo"], ["Bergen"]]}},
            ),
        ):
            response = app.post(url, json=body)
            assert response.status_code == 200, (body, response.text)
            assert [p["label"] for p in response.json()["predictions"]] == expected
        # Its encoder raises on an unknown category (so it was served without warm-up on
        # the empty string): such a row is the sender's to fix.
        unknown = app.post("/v1/models/cities:predict", json={"instances": ["Paris"]})
        assert unknown.status_code == 400
        assert "could not compute this input" in unknown.json()["error"]
    finally:
        app.close()


@pytest.mark.integration
def test_a_real_server_answers_the_pipeline_as_sklearn_over_every_protocol(
    home: Path, mixed_classifier: Pipeline, mixed_table: tuple
) -> None:
    import httpx
    import tritonclient.http as triton

    registry = Registry(home)
    registry.publish("loans", mixed_classifier, mixed_table[0])
    registry.close()
    grpc_port = free_port()
    server = start_server(home, grpc_port=grpc_port)
    try:
        _assert_grpc_as_sklearn(f"127.0.0.1:{grpc_port}", mixed_classifier)
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        for binary in (True, False):
            inputs = triton_inputs(triton, binary_data=binary)
            result = client.infer("loans", inputs)
            assert_as_sklearn(
                mixed_classifier,
                result.as_numpy("label").tolist(),
                result.as_numpy("probabilities"),
            )
        client.close()
        for url, body in (
            ("/v1/models/loans:predict", {"instances": records()}),
            ("/invocations", {"dataframe_records": records()}),
        ):
            predictions = httpx.post(server.url + url, json=body).json()["predictions"]
            assert_as_sklearn(
                mixed_classifier,
                [p["label"] for p in predictions],
                [p["probabilities"] for p in predictions],
            )
        # MLflow's CSV body: the columns in another order than the signature's.
        csv = ROWS[["income", "city", "age"]].to_csv(index=False)
        answer = httpx.post(
            server.url + "/invocations", content=csv, headers={"Content-Type": "text/csv"}
        )
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert_as_sklearn(
            mixed_classifier,
            [p["label"] for p in predictions],
            [p["probabilities"] for p in predictions],
        )
    finally:
        assert server.stop() == 0


def _assert_grpc_as_sklearn(address: str, pipeline: Pipeline) -> None:
    """tritonclient.grpc sends each column as a raw tensor (BYTES length-prefixed)."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(address)
    try:
        deadline = time.monotonic() + 10
        while True:  # the gRPC port listens right after HTTP answers
            try:
                if client.is_server_live():
                    break
            except triton_grpc.InferenceServerException:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        metadata = client.get_model_metadata("loans", as_json=True)
        assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
            ("city", "BYTES"), ("age", "INT64"), ("income", "FP32"),
        ]  # fmt: skip
        result = client.infer("loans", triton_inputs(triton_grpc))
        assert_as_sklearn(
            pipeline, result.as_numpy("label").tolist(), result.as_numpy("probabilities")
        )
    finally:
        client.close()
