"""The server's protocols and error handling, in process (the real app, no network)."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from gyre.config import load_config
from gyre.errors import BadRequest
from gyre.registry import CHAMPION, Registry
from gyre.types import TensorSpec
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient
from tests.serve.models import ONNX_TYPES, identity, two_input_adder

FEATURES = ("sepal length", "sepal width", "petal length", "petal width")


@pytest.fixture
def client(home: Path, iris_classifier: Pipeline, iris: tuple) -> Iterator[AppClient]:
    registry = Registry(home)
    # Feature names come from a named CSV header in real use; here from the `names` argument.
    registry.publish("iris", iris_classifier, iris[0], names=FEATURES)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish_onnx("adder", two_input_adder())
    for datatype in ONNX_TYPES:
        registry.publish_onnx(f"id-{datatype.lower()}", identity(datatype))
    registry.close()
    app = AppClient(load_config(home=home, serve_overrides={"max_body_bytes": 4096}))
    yield app
    app.close()


def v2_body(rows: list[list[float]], datatype: str = "FP32", **extra: object) -> dict:
    return {
        "inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": datatype, "data": rows}],
        **extra,
    }


ROW = [5.1, 3.5, 1.4, 0.2]


# -- v2 ---------------------------------------------------------------------------------


def test_v2_server_health_and_metadata(client: AppClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["extensions"] == [
        "binary_tensor_data", "model_configuration", "statistics",
    ]  # fmt: skip
    meta = client.get("/v2/models/iris").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert client.get("/v2/models/iris/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert client.get("/v2/models/iris/versions/2/ready").status_code == 200


def test_v2_infer_flat_and_nested_data_echoes_id(
    client: AppClient, iris_classifier: Pipeline
) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    nested = client.post("/v2/models/iris/infer", json=v2_body(rows, id="req-7")).json()
    flat_body = v2_body(rows)
    flat_body["inputs"][0]["data"] = [v for row in rows for v in row]
    flat = client.post("/v2/models/iris/infer", json=flat_body).json()
    assert nested["id"] == "req-7"
    assert nested["model_name"] == "iris"
    assert nested["model_version"] == "2"  # the champion
    assert nested["outputs"] == flat["outputs"]
    label = nested["outputs"][0]
    assert label == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "data": iris_classifier.predict(np.array(rows)).tolist(),
    }
    proba = nested["outputs"][1]
    assert proba["shape"] == [2, 3]
    np.testing.assert_allclose(
        np.array(proba["data"]).reshape(2, 3), iris_classifier.predict_proba(rows), atol=1e-5
    )


def test_v2_fp64_data_and_an_explicit_version(client: AppClient) -> None:
    response = client.post("/v2/models/iris/versions/1/infer", json=v2_body([ROW], "FP64"))
    assert response.status_code == 200
    assert response.json()["model_version"] == "1"


def test_v2_outputs_selection(client: AppClient) -> None:
    body = v2_body([ROW], outputs=[{"name": "probabilities"}])
    outputs = client.post("/v2/models/iris/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]


def test_v2_binary_input_and_output(client: AppClient) -> None:
    rows = np.array([ROW, ROW], dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": False}},
            ],
        }
    ).encode()
    response = client.post(
        "/v2/models/iris/infer",
        content=header + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200
    json_length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:json_length])
    label_meta, proba_meta = meta["outputs"]
    assert label_meta["parameters"] == {"binary_data_size": 16}
    labels = np.frombuffer(response.content[json_length:], dtype=np.int64)
    assert labels.tolist() == [0, 0]
    assert len(proba_meta["data"]) == 6


def test_v2_binary_data_output_parameter_applies_to_all_outputs(client: AppClient) -> None:
    body = v2_body([ROW], parameters={"binary_data_output": True})
    response = client.post("/v2/models/iris/infer", json=body)
    length = int(response.headers["inference-header-content-length"])
    sizes = [
        o["parameters"]["binary_data_size"]
        for o in json.loads(response.content[:length])["outputs"]
    ]
    assert sizes == [8, 12]
    assert len(response.content) == length + 20


VALUES = {
    "BOOL": [[True, False], [False, True]],
    "INT32": [[1, -2], [3, 2**31 - 1]],
    "INT64": [[1, -2], [3, 2**40]],
    "FP32": [[0.5, -1.25], [3.0, 1e10]],
    "FP64": [[0.1, -1e-300], [3.0, 1e300]],
    "BYTES": [["a", "héllo"], ["", "z"]],
}


def _binary(values: list, datatype: str) -> bytes:
    if datatype == "BYTES":
        items = [v.encode() for row in values for v in row]
        return b"".join(struct.pack("<I", len(v)) + v for v in items)
    numpy_type = {"BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64,
                  "FP32": np.float32, "FP64": np.float64}[datatype]  # fmt: skip
    return np.array(values, dtype=numpy_type).tobytes()


@pytest.mark.parametrize("datatype", list(VALUES))
def test_v2_every_datatype_round_trips_in_json_and_binary(client: AppClient, datatype: str) -> None:
    url = f"/v2/models/id-{datatype.lower()}/infer"
    values = VALUES[datatype]
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": values}]}
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert (out["datatype"], out["shape"]) == (datatype, [2, 2])
    assert out["data"] == [v for row in values for v in row]

    raw = _binary(values, datatype)
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    response = client.post(
        url, content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    assert response.content[length:] == raw


@pytest.mark.parametrize("datatype", ["INT32", "INT64"])
def test_v2_integer_tensors_refuse_fractions_rather_than_truncate(
    client: AppClient, datatype: str
) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype,
                        "data": [1, 2, 3.5, 4]}]}  # fmt: skip
    response = client.post(f"/v2/models/id-{datatype.lower()}/infer", json=body)
    assert response.status_code == 400
    assert "3.5 is not a whole number" in response.json()["error"]
    body["inputs"][0]["data"] = [1, 2, 3.0, 4]  # a whole number written as a float is one
    assert client.post(f"/v2/models/id-{datatype.lower()}/infer", json=body).status_code == 200


def test_v2_bytes_that_are_not_utf8_are_refused(client: AppClient) -> None:
    raw = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"\xff\xfe"
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    response = client.post(
        "/v2/models/id-bytes/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "not UTF-8 text" in response.json()["error"]


def test_v2_two_inputs(client: AppClient) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [10, 20]},
        ]
    }
    assert client.post("/v2/models/adder/infer", json=body).json()["outputs"][0]["data"] == [11, 22]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"inputs": "x"}', 400, r"Expected `array`, got `str` - at `\$.inputs`.*expected \{"),
        (json.dumps(v2_body([ROW], "FP17")).encode(), 400, "unknown datatype 'FP17'"),
        (json.dumps(v2_body([[1, 2, 3]])).encode(), 400, r"3 values do not fill shape \[1, 4\]"),
        (
            json.dumps(v2_body([["a", "b", "c", "d"]])).encode(),
            400,
            r"not a regular FP32 tensor .*; expected shape \[1, 4\]",
        ),
        (
            json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32"}]}).encode(),
            400,
            "has no `data`",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "Y", "shape": [1], "datatype": "FP32", "data": [1]}]}
            ).encode(),
            400,
            r"has no input `Y`; it expects `X` FP32 \[-1, 4\]",
        ),
        (
            json.dumps(v2_body([ROW], outputs=[{"name": "nope"}])).encode(),
            400,
            "has no output `nope`; outputs: `label`, `probabilities`",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
            ).encode(),
            400,
            r"shape \[1, 3\]; model `iris` version 2 expects FP32 \[-1, 4\]",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "X", "shape": [-1, 4], "datatype": "FP32", "data": ROW}]}
            ).encode(),
            400,
            "negative dimension",
        ),
    ],
)
def test_v2_bad_requests_get_400_with_the_reason(
    client: AppClient, body: bytes, status: int, message: str
) -> None:
    response = client.post("/v2/models/iris/infer", content=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert pytest.importorskip("re").search(message, response.json()["error"])


def test_v2_binary_size_mismatches_are_400(client: AppClient) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    short = client.post(
        "/v2/models/iris/infer",
        content=header + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "runs past the end of the body" in short.json()["error"]
    bad_header = client.post(
        "/v2/models/iris/infer",
        content=header,
        headers={"Inference-Header-Content-Length": "99999"},
    )
    assert bad_header.status_code == 400


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/v2/models/nope/infer", "unknown model `nope`; served models: adder, id-bool, id-bytes"),
        ("/v2/models/iris/versions/9/infer", "model `iris` has no version 9; versions: 1, 2"),
        ("/v2/models/iris/versions/x/infer", None),
        ("/v2/nowhere", "no v2 route"),
    ],
)
def test_v2_unknown_things(client: AppClient, url: str, message: str | None) -> None:
    response = client.post(url, json=v2_body([ROW]))
    if message is None:
        assert response.status_code == 400
        return
    assert response.status_code == 404
    assert message in response.json()["error"]


def test_json_booleans_for_a_number_input_are_refused(client: AppClient) -> None:
    # numpy reads true/false as 1/0: the model answered for a row nobody sent.
    bools = [True, False, True, False]
    v2 = client.post(
        "/v2/models/iris/infer",
        json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": bools}]},
    )
    tf = client.post("/v1/models/iris:predict", json={"instances": [bools]})
    for answer in (v2, tf):
        assert answer.status_code == 400, answer.text
        assert "expected numbers, got true/false" in answer.json()["error"]


def test_made_up_model_names_are_no_metric_series(client: AppClient) -> None:
    # Each unknown name in a URL became a series of gyre_requests_total: a client could
    # grow /metrics (and the server's memory) without bound.
    for name in ("made-up-1", "made-up-2"):
        assert client.post(f"/v2/models/{name}/infer", json=v2_body([ROW])).status_code == 404
        assert client.post(f"/v1/models/{name}:predict", json={"instances": [ROW]}).is_error
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).status_code == 200
    metrics = client.get("/metrics").text
    assert "made-up" not in metrics
    assert 'model="iris",protocol="v2",status="200"' in metrics


def test_oversized_bodies_get_413(client: AppClient) -> None:
    rows = [ROW] * 400
    response = client.post("/v2/models/iris/infer", json=v2_body(rows))
    assert response.status_code == 413
    assert "over the limit of 4096 bytes (serve.max_body_bytes)" in response.json()["error"]
    bomb = gzip.compress(b" " * 100_000)
    response = client.post(
        "/v2/models/iris/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413


def test_gzip_bodies_are_accepted(client: AppClient) -> None:
    response = client.post(
        "/v2/models/iris/infer",
        content=gzip.compress(json.dumps(v2_body([ROW])).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    # A stream cut short was taken as the whole body (for events: the lines before the cut).
    cut = gzip.compress(json.dumps(v2_body([ROW] * 20)).encode())[:-12]
    response = client.post(
        "/v2/models/iris/infer", content=cut, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400 and "truncated gzip" in response.text, response.text


# -- TensorFlow Serving -----------------------------------------------------------------


def test_tf_status_and_metadata(client: AppClient) -> None:
    status = client.get("/v1/models/iris").json()["model_version_status"]
    assert [s["version"] for s in status] == ["1", "2"]
    assert status[0]["state"] == "AVAILABLE"
    assert [
        s["version"]
        for s in client.get("/v1/models/iris/labels/champion").json()["model_version_status"]
    ] == ["2"]
    meta = client.get("/v1/models/iris/versions/1/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["X"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["X"]["tensor_shape"]["dim"][1]["size"] == "4"
    assert meta["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}


def test_tf_predict_instances_and_inputs(client: AppClient, iris_classifier: Pipeline) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    predictions = client.post("/v1/models/iris:predict", json={"instances": rows}).json()
    expected = iris_classifier.predict(np.array(rows)).tolist()
    assert [p["label"] for p in predictions["predictions"]] == expected
    assert len(predictions["predictions"][0]["probabilities"]) == 3
    outputs = client.post("/v1/models/iris/versions/1:predict", json={"inputs": rows}).json()
    assert outputs["outputs"]["label"] == expected
    by_label = client.post("/v1/models/iris/labels/champion:predict", json={"inputs": {"X": rows}})
    assert by_label.json()["outputs"]["label"] == expected


def test_tf_predict_with_named_inputs(client: AppClient) -> None:
    body = {"instances": [{"a": [1, 2], "b": [3, 4]}, {"a": [0, 0], "b": [1, 1]}]}
    assert client.post("/v1/models/adder:predict", json=body).json() == {
        "predictions": [[4.0, 6.0], [1.0, 1.0]]
    }


@pytest.mark.parametrize(
    ("url", "body", "status", "message"),
    [
        ("/v1/models/iris:predict", {"instances": [ROW], "inputs": [ROW]}, 400, "exactly one of"),
        ("/v1/models/iris:predict", {"instances": []}, 400, "non-empty list"),
        ("/v1/models/iris:predict", {"instances": [[1, 2]]}, 400, r"shape \[1, 2\]"),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3, 4], [1]]}, 400, "not a regular"),
        ("/v1/models/adder:predict", {"instances": [[1, 2]]}, 400, "several inputs"),
        ("/v1/models/iris/labels/canary:predict", {"instances": [ROW]}, 404, "no alias `canary`"),
        ("/v1/models/nope:predict", {"instances": [ROW]}, 404, "unknown model `nope`"),
        ("/v1/models/iris:classify", {"instances": [ROW]}, 404, "no TF Serving route"),
    ],
)
def test_tf_errors(client: AppClient, url: str, body: dict, status: int, message: str) -> None:
    response = client.post(url, json=body)
    assert response.status_code == status
    assert pytest.importorskip("re").search(message, response.json()["error"])


# -- MLflow -----------------------------------------------------------------------------


def test_mlflow_formats_agree(client: AppClient, iris_classifier: Pipeline) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    expected = iris_classifier.predict(np.array(rows)).tolist()
    headers = {"Gyre-Model": "iris:1"}
    # Columns out of order are matched to the model's feature names.
    order = [2, 0, 3, 1]
    split = {
        "dataframe_split": {
            "columns": [FEATURES[i] for i in order],
            "data": [[row[i] for i in order] for row in rows],
        }
    }
    records = {"dataframe_records": [dict(zip(FEATURES, row, strict=True)) for row in rows]}
    for body in (split, records, {"instances": rows}, {"inputs": rows}):
        response = client.post("/invocations", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == expected


def test_mlflow_records_are_matched_by_name_or_refused(
    client: AppClient, iris_classifier: Pipeline
) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    expected = iris_classifier.predict(np.array(rows)).tolist()
    # Each record in its own key order: every one is matched to the feature names.
    records = [
        {name: row[FEATURES.index(name)] for name in order}
        for row, order in zip(rows, (FEATURES[::-1], FEATURES[1:] + FEATURES[:1]), strict=True)
    ]
    named = client.post(
        "/invocations", json={"dataframe_records": records}, headers={"Gyre-Model": "iris:1"}
    )
    assert [p["label"] for p in named.json()["predictions"]] == expected, named.text
    # Version 2 records no feature names: its records' values used to be taken in the order
    # they came, so a reordered record was scored as another row, without a word.
    unnamed = client.post(
        "/invocations", json={"dataframe_records": records}, headers={"Gyre-Model": "iris:2"}
    )
    assert unnamed.status_code == 400, unnamed.text
    assert "published without feature names" in unnamed.json()["message"]
    assert "dataframe_split" in unnamed.json()["message"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        # The first `sepal length` was taken and the second silently dropped.
        (["sepal length", "sepal length", "sepal width", "petal length", "petal width"],
         "names column(s) sepal length more than once"),
        # Five values under four names: the fifth was dropped without a word.
        (["sepal length", "sepal width", "petal length", "petal width"],
         "rows have 5 values for 4 columns"),
    ],
)  # fmt: skip
def test_mlflow_columns_that_cannot_name_the_values_are_refused(
    client: AppClient, columns: list[str], message: str
) -> None:
    answer = client.post(
        "/invocations",
        json={"dataframe_split": {"columns": columns, "data": [[5.1, 9.9, 3.5, 1.4, 0.2]]}},
        headers={"Gyre-Model": "iris:1"},
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_mlflow_errors_use_mlflow_error_shape(client: AppClient) -> None:
    missing = client.post(
        "/invocations",
        json={"dataframe_split": {"columns": ["sepal length"], "data": [[1.0]]}},
        headers={"Gyre-Model": "iris:1"},
    )
    assert missing.status_code == 400
    assert missing.json()["error_code"] == "BAD_REQUEST"
    assert "lacks column(s) sepal width, petal length, petal width" in missing.json()["message"]
    unchosen = client.post("/invocations", json={"instances": [ROW]})
    assert unchosen.status_code == 400
    assert "Gyre-Model" in unchosen.json()["message"]
    unknown = client.post("/invocations", json={"instances": [ROW]}, headers={"Gyre-Model": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    both = client.post(
        "/invocations", json={"instances": [ROW], "inputs": [ROW]}, headers={"Gyre-Model": "iris"}
    )
    assert both.status_code == 400
    other = client.post(
        "/invocations", content=b"1,2", headers={"Gyre-Model": "iris", "Content-Type": "text/tsv"}
    )
    assert other.status_code == 400
    assert "send application/json or text/csv" in other.json()["message"]


def test_mlflow_ping(client: AppClient) -> None:
    assert client.get("/ping").status_code == 200


def csv_post(
    client: AppClient, model: str, text: str, content_type: str = "text/csv"
) -> httpx.Response:
    return client.post(
        "/invocations",
        content=text.encode(),
        headers={"Gyre-Model": model, "Content-Type": content_type},
    )


def test_mlflow_csv_is_read_as_dataframe_split_is(
    client: AppClient, iris_classifier: Pipeline
) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    expected = iris_classifier.predict(np.array(rows)).tolist()
    # Columns in another order are matched to the feature names, as in dataframe_split.
    order = [3, 1, 0, 2]
    lines = [",".join(f'"{FEATURES[i]}"' for i in order)]
    lines += [",".join(str(row[i]) for i in order) for row in rows]
    for newline in ("\n", "\r\n"):
        answer = csv_post(client, "iris:1", newline.join(lines) + newline)
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == expected
    split = client.post(
        "/invocations",
        json={"dataframe_split": {"columns": [FEATURES[i] for i in order],
                                  "data": [[row[i] for i in order] for row in rows]}},
        headers={"Gyre-Model": "iris:1"},
    )  # fmt: skip
    assert answer.json() == split.json()
    # Version 2 has no feature names: its columns are taken in order, as dataframe_split's.
    table = "a,b,c,d\n" + "\n".join(",".join(str(v) for v in row) for row in rows)
    positional = csv_post(client, "iris:2", table, "text/csv; charset=utf-8")
    assert [p["label"] for p in positional.json()["predictions"]] == expected, positional.text
    # Each cell is read as its input's datatype: text stays text, digits and all.
    text = csv_post(client, "id-bytes", 'x,y\n007,"a, b"\n')
    assert text.json()["predictions"] == [["007", "a, b"]], text.text
    flags = csv_post(client, "id-bool", "x,y\ntrue,FALSE\n")
    assert flags.json()["predictions"] == [[True, False]], flags.text
    whole = csv_post(client, "id-int64", "x,y\n-3,+12\n")
    assert whole.json()["predictions"] == [[-3, 12]], whole.text


def test_a_csv_cell_of_thousands_of_digits_is_read_not_a_500() -> None:
    # int() of 4,301 digits or more raises ValueError, which was a 500 (a body that size
    # fits the default max_body_bytes).
    from gyre.serve.protocols._csv import _cell

    digits = "9" * 5000
    with pytest.raises(BadRequest, match="is past 64 bits"):
        _cell(digits, TensorSpec("x", "INT64", (-1, 1)), "CSV row 1, column `x`")
    assert _cell(digits, TensorSpec("x", "FP64", (-1, 1)), "CSV row 1, column `x`") == float("inf")


@pytest.mark.parametrize(
    ("model", "text", "message"),
    [
        ("iris:1", "", "the CSV body is empty"),
        ("iris:1", "\n\n", "the CSV body is empty"),
        ("iris:1", ",".join(FEATURES) + "\n", "a header and no rows"),
        ("iris:1", ",".join(FEATURES) + "\n1,2,3\n", "row 1 has 3 values for the header's 4"),
        ("iris:1", ",".join(FEATURES) + "\n1,2,3,4,5\n", "row 1 has 5 values"),
        ("iris:1", ",".join(FEATURES) + "\n1,2,x,4\n",
         "row 1, column `petal length`: 'x' is not a number; input `X` is FP32"),
        ("iris:1", ",".join(FEATURES) + "\n1,2,,4\n", "an empty cell is no value"),
        ("iris:1", ",".join(FEATURES) + "\n1,2,1_0,4\n", "'1_0' is not a number"),
        ("iris:1", ",".join(FEATURES) + ",colour\n1,2,3,4,red\n", "has no column(s) colour"),
        ("iris:1", "sepal length,sepal length\n1,2\n", "more than once"),
        ("iris:1", ",".join(FEATURES[:3]) + ",\n1,2,3,4\n", "needs a name"),
        ("iris:1", "sepal length,sepal width\n1,2\n", "lacks column(s) petal length"),
        ("iris:2", "a,b,c\n1,2,3\n", "expects FP32 [-1, 4]"),
        ("id-int64", "x,y\n1.5,2\n", "1.5 is not a whole number"),
        ("id-bool", "x,y\nyes,no\n", "'yes' is not true or false"),
        ("id-int64", "x,y\n" + "9" * 30 + ",2\n", "is past 64 bits"),
        ("iris:1", '"sepal length\n1\n', "cannot be read"),
    ],
)  # fmt: skip
def test_mlflow_bad_csv_is_400_with_the_reason(
    client: AppClient, model: str, text: str, message: str
) -> None:
    answer = csv_post(client, model, text)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "BAD_REQUEST"
    assert message in answer.json()["message"]


def test_mlflow_csv_must_be_utf8(client: AppClient) -> None:
    latin = csv_post(client, "iris:2", "a,b,c,d\n1,2,3,4\n", "text/csv; charset=latin-1")
    assert latin.status_code == 400 and "must be UTF-8" in latin.json()["message"]
    garbled = client.post(
        "/invocations",
        content=b"a,b,c,d\n1,2,3,\xff\n",
        headers={"Gyre-Model": "iris:2", "Content-Type": "text/csv"},
    )
    assert garbled.status_code == 400 and "not UTF-8" in garbled.json()["message"]


def test_mlflow_version_is_the_server_version_as_text(client: AppClient) -> None:
    import gyre

    answer = client.get("/version")
    assert answer.status_code == 200 and answer.text == gyre.__version__


def test_mlflow_answers_a_regressor_with_a_flat_list(
    home: Path, iris_regressor: object, iris: tuple
) -> None:
    registry = Registry(home)
    registry.publish("ridge", iris_regressor, iris[0])
    registry.close()
    app = AppClient(load_config(home=home))
    try:
        rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
        expected = iris_regressor.predict(np.array(rows))  # type: ignore[attr-defined]
        assert app.get("/v2/models/ridge").json()["outputs"][0]["shape"] == [-1, 1]
        for body in ({"instances": rows}, {"dataframe_split": {"data": rows}}):
            answer = app.post("/invocations", json=body).json()["predictions"]
            assert isinstance(answer[0], float)
            np.testing.assert_allclose(answer, expected, rtol=1e-5)
        # TF Serving keeps the row shape.
        tf = app.post("/v1/models/ridge:predict", json={"instances": rows}).json()
        assert len(tf["predictions"][0]) == 1
    finally:
        app.close()


# -- metrics ----------------------------------------------------------------------------


def test_metrics_count_requests_batches_and_loads(client: AppClient) -> None:
    client.post("/v2/models/iris/infer", json=v2_body([ROW]))
    client.post("/v2/models/iris/infer", content=b"{")
    client.get("/v2/models/iris/ready")
    client.get("/v2/models/iris")
    text = client.get("/metrics").text
    # Readiness and metadata by model name count against the version that answered.
    assert (
        'gyre_requests_total{consumer="",model="iris",protocol="v2",status="200",version="2"} 3.0'
        in text
    )
    assert 'model="iris",protocol="v2",version=""' not in text
    assert (
        'gyre_requests_total{consumer="",model="iris",protocol="v2",status="400",version="2"} 1.0'
        in text
    )
    assert (
        'gyre_request_duration_seconds_bucket{le="0.5",model="iris",protocol="v2",version="2"}'
        in text
    )
    assert 'gyre_batch_size_rows_count{model="iris",version="2"} 1.0' in text
    assert 'gyre_queue_depth{model="iris",version="2"} 0.0' in text
    assert 'gyre_model_load_events_total{event="loaded",model="iris",version="1"} 1.0' in text


# -- reload -----------------------------------------------------------------------------


def test_refresh_loads_new_versions_and_follows_alias_moves(
    client: AppClient, home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], force_new=True)
    client.refresh()
    assert client.get("/v2/models/iris").json()["versions"] == ["1", "2", "3"]
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).json()["model_version"] == "2"
    registry.set_alias("iris", CHAMPION, 3, reason=UNBLESSED, force=True)
    client.refresh()
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).json()["model_version"] == "3"
    registry.delete_version("iris", 1)
    client.refresh()
    assert client.get("/v2/models/iris/versions/1").status_code == 404
    registry.close()


def test_a_corrupted_artifact_fails_its_version_only(
    client: AppClient, home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(home)
    mv = registry.publish("other", iris_classifier, iris[0][:, :4] * 2)
    path = registry.artifacts.path_of(mv.artifact_sha256)
    path.write_bytes(b"corrupt")
    client.refresh()
    response = client.post("/v2/models/other/infer", json=v2_body([ROW]))
    assert response.status_code == 503
    assert "failed to load" in response.json()["error"]
    assert "corrupted: expected sha256" in response.json()["error"]
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).status_code == 200
    assert 'event="failed",model="other"' in client.get("/metrics").text
    registry.close()


def test_a_body_cut_short_by_a_disconnect_is_refused_not_processed() -> None:
    import asyncio

    from gyre.errors import BadRequest
    from gyre.serve._http import read_body

    messages = iter(
        [{"type": "http.request", "body": b'[{"id": 1}]\n[{"i', "more_body": True},
         {"type": "http.disconnect"}]
    )  # fmt: skip

    async def receive() -> dict:
        return next(messages)

    with pytest.raises(BadRequest, match="closed before the whole body arrived"):
        asyncio.run(read_body({"headers": []}, receive, 1000))


def test_body_reservations_are_returned_however_a_request_ends(client: AppClient) -> None:
    bodies = client.app.bodies
    assert bodies.budget_bytes == 4 * 4096  # the default: 4 x max_body_bytes
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).status_code == 200
    assert client.post("/v2/models/iris/infer", content=b"{oops").status_code == 400
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW] * 400)).status_code == 413
    assert client.post("/v2/models/nope/infer", json=v2_body([ROW])).status_code == 404
    assert client.post("/invocations", json={"instances": [ROW]}).status_code == 400
    assert bodies.held_bytes == 0
    bodies.held_bytes = bodies.budget_bytes - 10  # as if other requests held the rest
    response = client.post("/v2/models/iris/infer", json=v2_body([ROW]))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "serve.max_inflight_body_bytes" in response.json()["error"]
    bodies.held_bytes = 0
    assert client.post("/v2/models/iris/infer", json=v2_body([ROW])).status_code == 200
