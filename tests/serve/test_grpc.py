"""The v2 gRPC service of a real `gyre serve`, called by the real `tritonclient.grpc`, and
by hand-made messages for what a well-behaved client never sends."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.registry import CHAMPION, Registry
from gyre.serve.protocols import grpc_predict_v2_pb2 as pb
from tests.conftest import ServerProcess, free_port, start_server
from tests.forced import UNBLESSED
from tests.serve.protogen import GENERATED, PROTOCOLS, generate

pytestmark = pytest.mark.integration

PYMODELS = Path(__file__).parent / "pymodels"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
MAX_BODY_BYTES = 1024 * 1024


def test_the_committed_code_is_what_the_proto_makes(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in GENERATED:
        assert (tmp_path / name).read_text() == (PROTOCOLS / name).read_text(), (
            f"{name} differs from what grpc_predict_v2.proto makes: run `make proto`"
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, iris_classifier: Pipeline, iris: tuple) -> Path:
    home = tmp_path_factory.mktemp("grpc") / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish_file("shout", PYMODELS / "shout.py")
    registry.publish_file("scorer", PYMODELS / "scorer.py")
    registry.publish_file("fallback", PYMODELS / "scorer.py")
    registry.close()
    return home


def _serve(home: Path, config: str, *extra: str) -> tuple[ServerProcess, str]:
    path = home.parent / f"gyre-{free_port()}.toml"
    path.write_text(config)
    grpc_port = free_port()
    server = start_server(home, *extra, config=path, grpc_port=grpc_port)
    address = f"127.0.0.1:{grpc_port}"
    # HTTP answers first: the gRPC port listens right after it.
    client = triton.InferenceServerClient(address)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.is_server_live():
                    break
            except triton.InferenceServerException:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
    finally:
        client.close()
    return server, address


@pytest.fixture(scope="module")
def served(home: Path) -> Iterator[tuple[ServerProcess, str]]:
    server, address = _serve(
        home,
        f"[serve]\nworkers = 1\nmax_body_bytes = {MAX_BODY_BYTES}\n"
        "[serve.models.fallback]\ndefault_output = {score = -1.0}\n",
    )
    yield server, address
    assert server.stop() == 0


@pytest.fixture
def client(served: tuple[ServerProcess, str]) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(served[1])
    yield client
    client.close()


def _iris_input(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("X", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32))
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("iris", "9")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "gyre"
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]


def test_fp32_inference_is_onnxruntime_on_the_same_rows(
    client: triton.InferenceServerClient, home: Path
) -> None:
    import onnxruntime

    registry = Registry(home)
    try:
        onnx_bytes = registry.artifact(registry.resolve("iris"))
    finally:
        registry.close()
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"X": ROWS.astype(np.float32)})
    result = client.infer("iris", [_iris_input(ROWS)], request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("r-1", "iris", "1")
    # One output asked for: only it comes back.
    only = client.infer(
        "iris", [_iris_input(ROWS[:1])], outputs=[triton.InferRequestedOutput("label")]
    )
    assert [o.name for o in only.get_response().outputs] == ["label"]
    assert only.as_numpy("label").tolist() == labels[:1].tolist()


def test_bytes_inference_through_a_python_model(client: triton.InferenceServerClient) -> None:
    texts = np.array(["héllo".encode(), b"", b"gRPC"], dtype=object)
    tensor = triton.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(texts)
    result = client.infer("shout", [tensor])
    assert result.as_numpy("upper").tolist() == ["HÉLLO".encode(), b"", b"GRPC"]
    assert result.as_numpy("length").tolist() == [5, 0, 4]


def test_unknown_model_and_bad_input_are_typed_statuses(
    client: triton.InferenceServerClient,
) -> None:
    with pytest.raises(triton.InferenceServerException, match="unknown model `nope`") as info:
        client.infer("nope", [_iris_input(ROWS)])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    wrong = triton.InferInput("X", [3, 2], "FP32")
    wrong.set_data_from_numpy(np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(triton.InferenceServerException, match="expects FP32") as info:
        client.infer("iris", [wrong])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(triton.InferenceServerException, match="must be a whole number") as info:
        client.infer("iris", [_iris_input(ROWS)], model_version="one")
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_deadlines(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 1]], dtype=np.float32))  # sleeps 0.2 s
    # The client's gRPC deadline is gyre's deadline: it gives up, gyre drops the request.
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("scorer", [tensor], client_timeout=0.05)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    # v2's own `timeout` (µs): gyre answers that it passed, and how to get a default.
    with pytest.raises(triton.InferenceServerException, match="default_output") as info:
        client.infer("scorer", [tensor], timeout=50_000)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    # With a default answer configured, that is the answer, flagged.
    result = client.infer("fallback", [tensor], timeout=50_000)
    assert result.as_numpy("score").tolist() == [-1.0]
    parameters = result.get_response().parameters
    assert parameters["default"].bool_param
    assert "deadline of 50 ms exceeded" in parameters["default_reason"].string_param
    quick = triton.InferInput("x", [1, 2], "FP32")
    quick.set_data_from_numpy(np.array([[0, 3]], dtype=np.float32))
    result = client.infer("scorer", [quick], client_timeout=10)
    assert result.as_numpy("score").tolist() == [6.0]


def test_requests_are_counted_in_metrics(
    client: triton.InferenceServerClient, served: tuple[ServerProcess, str]
) -> None:
    def count(status: str) -> float:
        text = httpx.get(f"{served[0].url}/metrics").text
        found = re.search(
            rf'gyre_requests_total\{{consumer="",model="iris",protocol="grpc",'
            rf'status="{status}",version="1"\}} ([0-9.e+]+)',
            text,
        )
        return float(found.group(1)) if found else 0.0

    def triton_stats() -> dict[str, Any]:
        url = f"{served[0].url}/v2/models/iris/versions/1/stats"
        stats: dict[str, Any] = httpx.get(url).json()["model_stats"][0]["inference_stats"]
        return stats

    before_ok, before_bad, before_stats = count("200"), count("400"), triton_stats()
    client.infer("iris", [_iris_input(ROWS)])
    with pytest.raises(triton.InferenceServerException):
        client.infer("iris", [_iris_input(ROWS)], outputs=[triton.InferRequestedOutput("no")])
    assert count("200") == before_ok + 1
    assert count("400") == before_bad + 1
    # Triton's statistics count gRPC answers as HTTP ones.
    stats = triton_stats()
    assert stats["success"]["count"] == before_stats["success"]["count"] + 1
    assert stats["fail"]["count"] == before_stats["fail"]["count"] + 1
    # Names no model has are no metric series.
    for name, version in (("made-up", ""), ("iris", "12345")):
        with pytest.raises(triton.InferenceServerException):
            client.infer(name, [_iris_input(ROWS)], model_version=version)
    text = httpx.get(f"{served[0].url}/metrics").text
    assert "made-up" not in text
    assert "12345" not in text


# -- what no well-behaved client sends ------------------------------------------------------


def _infer_call(address: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    return channel, call


def _request(*inputs: dict[str, Any], raw: list[bytes] | None = None) -> Any:
    request = pb.ModelInferRequest(model_name="iris")
    for item in inputs:
        request.inputs.add(**item)
    request.raw_input_contents.extend(raw or [])
    return request


ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
X = {"name": "X", "datatype": "FP32", "shape": [1, 4]}
HOSTILE = [
    (_request(X, X, raw=[ROW.tobytes()]), "1 raw_input_contents for 2 inputs"),
    (_request(X, raw=[ROW.tobytes()[:-1]]), "15 bytes is not a whole number of FP32"),
    (_request(X, raw=[ROW.tobytes() * 2]), "8 values do not fill shape"),
    (_request({**X, "datatype": "FP33"}, raw=[ROW.tobytes()]), "unknown datatype 'FP33'"),
    (_request({**X, "shape": [1] * 65}, raw=[ROW.tobytes()]), "at most 64"),
    (_request({**X, "shape": [-1, 4]}, raw=[ROW.tobytes()]), "negative dimension"),
    (
        _request({**X, "contents": {"fp32_contents": ROW.ravel()}}, raw=[ROW.tobytes()]),
        "both `contents` and raw_input_contents",
    ),
    (_request({**X, "contents": {"int_contents": [1, 2, 3, 4]}}), "go in `contents.fp32"),
    (_request(X), "has no `contents`"),
    (_request(), "has no inputs"),
    (
        _request({**X, "datatype": "INT8", "contents": {"int_contents": [1, 2, 3, 300]}}),
        "not a regular INT8 tensor",
    ),
    (_request({**X, "datatype": "FP16", "contents": {}}), "FP16 values have no `contents`"),
    # A message quoting a huge name is cut, not dropped by the client for its size.
    (_request({**X, "name": "x" * 100_000}), "has no `contents`"),
]


@pytest.mark.parametrize(("request_message", "message"), HOSTILE)
def test_hostile_messages_are_invalid_argument(
    served: tuple[ServerProcess, str], request_message: Any, message: str
) -> None:
    channel, call = _infer_call(served[1])
    with channel, pytest.raises(grpc.RpcError) as info:
        call(request_message, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelMetadata", "ServerLive"])
def test_bytes_that_are_no_message_are_invalid_argument(
    served: tuple[ServerProcess, str], rpc: str
) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{rpc}")
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ir"):
            with pytest.raises(grpc.RpcError) as info:
                call(garbage, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"not a valid inference.{rpc}Request message" in info.value.details()
    assert "Traceback" not in served[0].output()


def test_contents_instead_of_raw_and_bad_parameters(served: tuple[ServerProcess, str]) -> None:
    channel, call = _infer_call(served[1])
    with channel:
        contents = _request({**X, "contents": {"fp32_contents": ROW.ravel()}})
        answer, rpc = call.with_call(contents, timeout=10)
        trailing = dict(rpc.trailing_metadata())
        assert trailing["gyre-model-version"] == "1"
        assert trailing["gyre-request-id"].startswith("iris~1~")
        assert [o.name for o in answer.outputs] == ["label", "probabilities"]
        assert np.frombuffer(answer.raw_output_contents[0], dtype=np.int64).tolist() == [0]
        request = _request(X, raw=[ROW.tobytes()])
        request.parameters["timeout"].bool_param = True
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameters.timeout must be a number of microseconds" in info.value.details()


def test_bytes_in_contents_are_text_as_raw_bytes_are(served: tuple[ServerProcess, str]) -> None:
    channel, call = _infer_call(served[1])
    with channel:
        text = {"name": "text", "datatype": "BYTES", "shape": [2]}
        request = _request({**text, "contents": {"bytes_contents": ["héllo".encode(), b"x"]}})
        request.model_name = "shout"
        answer = call(request, timeout=10)
        names = [o.name for o in answer.outputs]
        lengths = answer.raw_output_contents[names.index("length")]
        assert np.frombuffer(lengths, dtype=np.int64).tolist() == [5, 1]
        request = _request({**text, "contents": {"bytes_contents": [b"\xff"]}, "shape": [1]})
        request.model_name = "shout"
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not UTF-8" in info.value.details()


def test_a_message_past_max_body_bytes_is_resource_exhausted(
    served: tuple[ServerProcess, str],
) -> None:
    rows = MAX_BODY_BYTES // 16 + 1
    big = _request({**X, "shape": [rows, 4]}, raw=[np.zeros((rows, 4), np.float32).tobytes()])
    channel, call = _infer_call(served[1])
    with channel:
        with pytest.raises(grpc.RpcError) as info:
            call(big, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The server goes on answering.
        assert call(_request(X, raw=[ROW.tobytes()]), timeout=10).outputs


def test_rpcs_gyre_does_not_serve_are_unimplemented(client: triton.InferenceServerClient) -> None:
    with pytest.raises(triton.InferenceServerException) as info:
        client.get_model_repository_index()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert client.is_server_live()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_grpc_port_in_use_stops_the_server_with_the_reason(home: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = home.parent / f"taken-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gyre", "--home", str(home), "serve"),
                    *("--workers", workers, "--port", str(free_port()), "--grpc-port", str(port)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            assert process.wait(timeout=60) == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in log.read_text()


# -- consumers, over several server processes ------------------------------------------------


def test_api_keys_in_metadata_over_two_processes(home: Path) -> None:
    config = (
        "[serve]\nworkers = 2\n"
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key("k")}"\nmodels = ["iris", "scorer"]\n'
        f'[serve.consumers.slow]\nkey_sha256 = "{hash_key("s")}"\nrate_per_s = 1\nburst = 1\n'
    )
    server, address = _serve(home, config)
    try:
        client = triton.InferenceServerClient(address)
        try:
            assert client.is_server_live()  # open to anyone, as /v2/health/live
            with pytest.raises(triton.InferenceServerException, match="needs an API key") as info:
                client.infer("iris", [_iris_input(ROWS)])
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(triton.InferenceServerException, match="not valid") as info:
                client.infer("iris", [_iris_input(ROWS)], headers={"x-api-key": "wrong"})
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            for headers in ({"authorization": "Bearer k"}, {"x-api-key": "k"}):
                # Several calls: both processes answer, through one shared port.
                for _ in range(4):
                    result = client.infer("iris", [_iris_input(ROWS)], headers=headers)
                    assert result.as_numpy("label").shape == (3,)
            with pytest.raises(triton.InferenceServerException, match="may not call") as info:
                client.get_model_metadata("shout", headers={"x-api-key": "k"})
            assert info.value.status() == "StatusCode.PERMISSION_DENIED"
            # Over its rate: RESOURCE_EXHAUSTED, and when to retry.
            channel, call = _infer_call(address)
            with channel:
                codes = []
                for _ in range(3):
                    try:
                        call(_request(X, raw=[ROW.tobytes()]), metadata=(("x-api-key", "s"),))
                        codes.append(grpc.StatusCode.OK)
                    except grpc.RpcError as exc:
                        codes.append(exc.code())
                        limited = exc
                assert codes[0] == grpc.StatusCode.OK
                assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
                assert "over its rate" in limited.details()
                assert dict(limited.trailing_metadata())["retry-after"] == "1"
            # A call under way when the server is told to stop is answered first.
            slow = triton.InferInput("x", [1, 2], "FP32")
            slow.set_data_from_numpy(np.array([[1, 4]], dtype=np.float32))  # 0.2 s
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(client.infer, "scorer", [slow], headers={"x-api-key": "k"})
                time.sleep(0.1)
                server.process.send_signal(signal.SIGTERM)
                assert answer.result(timeout=30).as_numpy("score").tolist() == [8.0]
        finally:
            client.close()
    finally:
        assert server.stop() == 0
