"""Triton's model-configuration, statistics and repository-index extensions: in process on
the real app, and over loopback with the real `tritonclient` against a server of two
processes (whose statistics must cover both)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto, helper
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.config import load_config
from gyre.registry import CHAMPION, Registry
from tests.conftest import start_server
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient
from tests.serve.models import two_input_adder

PYMODELS = Path(__file__).parent / "pymodels"
ROW = [5.1, 3.5, 1.4, 0.2]


def fixed_identity() -> bytes:
    """out = Identity(x), FP32 [3]: a model without a batch dimension."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


def v2(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}


def app_for(home: Path, config_text: str = "") -> AppClient:
    home.mkdir(parents=True, exist_ok=True)
    path = home.parent / "gyre.toml"
    path.write_text(config_text)
    return AppClient(load_config(home=home, config_file=path))


@pytest.fixture
def client(home: Path, iris_classifier: Pipeline, iris: tuple) -> Iterator[AppClient]:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0])
    registry.publish(
        "iris", iris_classifier, iris[0], alias=CHAMPION, force_new=True, force_alias=UNBLESSED
    )
    registry.publish_onnx("adder", two_input_adder())
    registry.publish_onnx("fixed", fixed_identity())
    registry.publish_file("scorer", PYMODELS / "scorer.py")
    registry.close()
    app = app_for(
        home,
        "[serve.model_defaults]\nmax_batch_size = 32\nmax_batch_delay_ms = 0.5\n"
        "[serve.models.adder]\ncache = true\n",
    )
    yield app
    app.close()


def test_config_is_tritons_shape_with_the_batch_dimension_left_out(client: AppClient) -> None:
    config = client.get("/v2/models/iris/config").json()
    assert config == {
        "name": "iris",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": 32,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [
            # [N] per row is one value: Triton writes it as dims [1] reshaped to none.
            {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]},
        ],
        "dynamic_batching": {"preferred_batch_size": [], "max_queue_delay_microseconds": 500},
    }
    assert client.get("/v2/models/iris/versions/1/config").json() == config
    fixed = client.get("/v2/models/fixed/config").json()
    assert fixed["max_batch_size"] == 0 and "dynamic_batching" not in fixed
    assert fixed["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]
    scorer = client.get("/v2/models/scorer/config").json()
    assert (scorer["platform"], scorer["backend"]) == ("", "python")
    assert scorer["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}]
    assert "model_configuration" in client.get("/v2").json()["extensions"]


@pytest.mark.parametrize(
    "url", ["/v2/models/nope/config", "/v2/models/nope/stats", "/v2/models/iris/versions/9/stats"]
)
def test_unknown_models_and_versions_are_404_in_the_v2_shape(client: AppClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def _stats(client: AppClient, url: str) -> list[dict]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    stats: list[dict] = response.json()["model_stats"]
    return stats


def test_stats_count_what_each_version_served(client: AppClient) -> None:
    before_ms = time.time() * 1000
    for rows in ([ROW], [ROW, ROW], [ROW, ROW, ROW]):
        assert client.post("/v2/models/iris/infer", json=v2(rows)).status_code == 200
    bad = {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert client.post("/v2/models/iris/infer", json=bad).status_code == 400
    assert client.post("/v1/models/iris/versions/1:predict", json={"instances": [ROW]}).is_success
    assert client.post(
        "/invocations", json={"instances": [ROW]}, headers={"Gyre-Model": "iris:1"}
    ).is_success
    (two,) = _stats(client, "/v2/models/iris/versions/2/stats")
    assert two["name"] == "iris" and two["version"] == "2"
    assert two["inference_count"] == 6  # rows
    assert two["execution_count"] == 3  # one batch per request, sent one after another
    inference = two["inference_stats"]
    assert inference["success"]["count"] == 3 and inference["fail"]["count"] == 1
    for step in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[step]["count"] == 3, step
    for step in ("success", "fail", "queue", "compute_infer"):
        assert inference[step]["ns"] > 0, step
    # The request's whole time includes its steps.
    assert inference["success"]["ns"] > inference["compute_infer"]["ns"]
    assert inference["cache_hit"] == {"count": 0, "ns": 0}
    assert before_ms <= two["last_inference"] <= time.time() * 1000
    one, two_again = _stats(client, "/v2/models/iris/stats")
    assert (one["version"], two_again["version"]) == ("1", "2")
    assert one["inference_count"] == 2 and one["inference_stats"]["success"]["count"] == 2
    assert two_again["inference_count"] == 6
    # Asking for statistics is not an inference.
    assert _stats(client, "/v2/models/iris/versions/2/stats")[0]["inference_count"] == 6
    everything = _stats(client, "/v2/models/stats")
    assert [(s["name"], s["version"]) for s in everything] == [
        ("adder", "1"), ("fixed", "1"), ("iris", "1"), ("iris", "2"), ("scorer", "1"),
    ]  # fmt: skip
    assert everything[1]["inference_count"] == 0 and everything[1]["last_inference"] == 0


def test_cache_hits_are_counted_and_compute_nothing(client: AppClient) -> None:
    body = {
        "inputs": [
            {"name": name, "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
            for name in ("a", "b")
        ]
    }
    for _ in range(3):
        assert client.post("/v2/models/adder/infer", json=body).status_code == 200
    (stats,) = _stats(client, "/v2/models/adder/stats")
    inference = stats["inference_stats"]
    assert inference["cache_miss"]["count"] == 1 and inference["cache_hit"]["count"] == 2
    assert stats["inference_count"] == 1 and stats["execution_count"] == 1
    assert inference["success"]["count"] == 3


def test_a_python_models_batches_are_counted_too(client: AppClient) -> None:
    # A Python model's batches run on a thread of its own, not inline.
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [0, 1, 0, 2]}]}
    assert client.post("/v2/models/scorer/infer", json=body).status_code == 200
    (stats,) = _stats(client, "/v2/models/scorer/stats")
    assert (stats["inference_count"], stats["execution_count"]) == (2, 1)
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0


def test_repository_index_lists_ready_and_failed_versions(
    client: AppClient, home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(home)
    broken = registry.publish("broken", iris_classifier, iris[0] * 2)
    registry.artifacts.path_of(broken.artifact_sha256).write_bytes(b"corrupt")
    registry.close()
    client.refresh()
    index = client.post("/v2/repository/index").json()
    assert index[:2] == [
        {"name": "adder", "version": "1", "state": "READY"},
        {
            "name": "broken",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": index[1]["reason"],
        },
    ]
    assert "corrupted" in index[1]["reason"]
    assert [(e["name"], e["version"]) for e in index[2:]] == [
        ("fixed", "1"), ("iris", "1"), ("iris", "2"), ("scorer", "1"),
    ]  # fmt: skip
    ready = client.post("/v2/repository/index", json={"ready": True}).json()
    assert [e for e in index if e["state"] == "READY"] == ready
    assert client.post("/v2/repository/index", json={"ready": False}).json() == index
    for body in (b"[]", b'{"ready": "yes"}', b'{"readdy": true}', b"{"):
        refused = client.post("/v2/repository/index", content=body)
        assert refused.status_code == 400 and "ready" in refused.json()["error"]


def test_the_extensions_follow_the_consumer_rules(
    home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0])
    registry.publish("other", iris_classifier, iris[0])
    registry.close()
    client = app_for(
        home, f'[serve.consumers.app]\nkey_sha256 = "{hash_key("k")}"\nmodels = ["iris"]\n'
    )
    key = {"X-Api-Key": "k"}
    try:
        for method, url in (
            ("GET", "/v2/models/iris/config"),
            ("GET", "/v2/models/iris/stats"),
            ("GET", "/v2/models/stats"),
            ("POST", "/v2/repository/index"),
        ):
            assert client.request(method, url).status_code == 401, url
            assert client.request(method, url, headers=key).status_code == 200, url
        for url in ("/v2/models/other/config", "/v2/models/other/stats"):
            refused = client.get(url, headers=key)
            assert refused.status_code == 403 and "may not call model `other`" in refused.text
        # The listings show only what the key may call.
        assert [s["name"] for s in _stats_with(client, key)] == ["iris"]
        index = client.post("/v2/repository/index", headers=key).json()
        assert [e["name"] for e in index] == ["iris"]
    finally:
        client.close()


def _rows_per_process(home: Path, scratch: Path) -> list[float]:
    """gyre_inferences_total as each process's own metrics file has it."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    (folder,) = (home / "run").glob("metrics-*")
    rows = []
    for file in sorted(folder.glob("counter_*.db")):
        scratch.mkdir(exist_ok=True)
        for old in scratch.iterdir():
            old.unlink()
        shutil.copy(file, scratch / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(scratch))  # type: ignore[no-untyped-call]
        rows.append(
            sum(
                sample.value
                for family in registry.collect()
                for sample in family.samples
                if sample.name == "gyre_inferences_total"
            )
        )
    return rows


def _stats_with(client: AppClient, headers: dict[str, str]) -> list[dict]:
    stats: list[dict] = client.get("/v2/models/stats", headers=headers).json()["model_stats"]
    return stats


# -- the real tritonclient, against two server processes ---------------------------------


@pytest.mark.integration
def test_tritonclient_reads_config_stats_and_index_summed_over_processes(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    import tritonclient.http as triton

    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.close()
    server = start_server(home, "--workers", "2")
    try:
        # A connection of its own per request: the kernel spreads them over both processes.
        requests = 40
        for _ in range(requests):
            answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=v2([ROW, ROW]))
            assert answer.status_code == 200
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        config = client.get_model_config("iris")
        assert config["max_batch_size"] == 64
        assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}]
        assert client.get_model_repository_index() == [
            {"name": "iris", "version": "1", "state": "READY"}
        ]
        # Each process publishes its counts every 100 ms: every answer, from either
        # process, soon covers every request.
        deadline = time.monotonic() + 10
        while True:
            answers = []
            for _ in range(8):
                fresh = triton.InferenceServerClient(server.url.removeprefix("http://"))
                answers.append(fresh.get_inference_statistics("iris", "1")["model_stats"][0])
                fresh.close()
            if all(a["inference_stats"]["success"]["count"] == requests for a in answers):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.2)
        for stats in answers:
            assert stats["inference_count"] == 2 * requests
            assert stats["execution_count"] <= requests
            assert stats["inference_stats"]["compute_infer"]["count"] == requests
        everything = client.get_inference_statistics()["model_stats"]
        assert [(s["name"], s["version"]) for s in everything] == [("iris", "1")]
        with pytest.raises(triton.InferenceServerException, match="unknown model `nope`"):
            client.get_model_config("nope")
        client.close()
        # Both processes computed some of the rows, else this test would prove no sum.
        per_process = _rows_per_process(home, tmp_path / "one")
        assert len([rows for rows in per_process if rows > 0]) == 2, per_process
        assert sum(per_process) == 2 * requests
    finally:
        assert server.stop() == 0
