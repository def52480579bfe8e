"""The real `gyre serve` process, called over loopback by httpx and by tritonclient."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.registry import CHAMPION, Registry
from tests.conftest import ServerProcess, start_server
from tests.forced import UNBLESSED

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


def _iris_home(root: Path, iris_classifier: Pipeline, iris: tuple) -> Path:
    """A gyre home under `root` with the iris classifier published as champion."""
    home = root / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.close()
    return home


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, iris_classifier: Pipeline, iris: tuple
) -> Iterator[ServerProcess]:
    server = start_server(_iris_home(tmp_path_factory.mktemp("served"), iris_classifier, iris))
    yield server
    assert server.stop() == 0


def test_tritonclient_talks_to_gyre(served: ServerProcess, iris_classifier: Pipeline) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("iris")
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    rows = np.array([ROW, [6.7, 3.0, 5.2, 2.3]])
    expected_labels = iris_classifier.predict(rows)
    expected_proba = iris_classifier.predict_proba(rows)
    for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64)):
        for binary in (True, False):
            tensor = triton.InferInput("X", list(rows.shape), datatype)
            tensor.set_data_from_numpy(rows.astype(dtype), binary_data=binary)
            outputs = [
                triton.InferRequestedOutput("label", binary_data=binary),
                triton.InferRequestedOutput("probabilities", binary_data=binary),
            ]
            result = client.infer("iris", [tensor], outputs=outputs, request_id="t-1")
            np.testing.assert_array_equal(result.as_numpy("label"), expected_labels)
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected_proba, atol=1e-5)
            assert result.get_response()["id"] == "t-1"
        # No outputs named: tritonclient asks for every output in binary.
        result = client.infer("iris", [tensor])
        np.testing.assert_array_equal(result.as_numpy("label"), expected_labels)
    with pytest.raises(triton.InferenceServerException, match="unknown model `nope`"):
        client.infer("nope", [tensor])
    client.close()


def test_tf_serving_and_mlflow_bodies_over_http(served: ServerProcess) -> None:
    tf = httpx.post(f"{served.url}/v1/models/iris:predict", json={"instances": [ROW]})
    assert tf.status_code == 200
    assert tf.json()["predictions"][0]["label"] == 0
    mlflow = httpx.post(f"{served.url}/invocations", json={"dataframe_split": {"data": [ROW]}})
    assert mlflow.status_code == 200  # the only model is the default
    assert mlflow.json()["predictions"][0]["label"] == 0


def test_oversized_chunked_body_is_413(served: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 1024 * 1024

    response = httpx.post(f"{served.url}/v2/models/iris/infer", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert "serve.max_body_bytes" in response.json()["error"]


def test_garbage_on_the_socket_does_not_hurt_the_server(served: ServerProcess) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        sock.recv(1024)
    assert httpx.get(f"{served.url}/v2/health/live").status_code == 200


def test_a_head_over_the_limit_in_one_read_gets_431(served: ServerProcess) -> None:
    # Counted only when a head did not end in the piece read: 100 kB sent at once passed.
    host, port = served.url.removeprefix("http://").split(":")
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert httpx.get(f"{served.url}/v2/health/live").status_code == 200


def _rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the server's workers)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss + sum(_rss_kib(int(child)) for child in children)


def test_endless_headers_get_431_and_bounded_memory(served: ServerProcess) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    before = _rss_kib(served.process.pid)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
        with pytest.raises(OSError):  # the server closes the connection; sending fails
            while sent < 64 * 1024 * 1024:
                sock.sendall(line)
                sent += len(line)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert b"serve.max_header_bytes" in answer
    assert sent < 16 * 1024 * 1024  # the head limit, plus what the socket buffers held
    assert _rss_kib(served.process.pid) - before < 16 * 1024
    # Long headers under the limit, one request after another on the same connection.
    big = {f"x-pad-{i}": "b" * 1000 for i in range(40)}
    with httpx.Client() as client:
        for _ in range(3):
            response = client.post(
                f"{served.url}/v2/models/iris/infer",
                json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]},
                headers=big,
            )
            assert response.status_code == 200


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        received = sock.recv(65536)
        assert received, f"the connection closed after {data!r}"
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(v for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                      if k.lower() == b"content-length"))  # fmt: skip
    while len(body) < length:
        received = sock.recv(65536)
        assert received, "the connection closed inside a body"
        body += received
    assert len(body) == length
    return head + b"\r\n\r\n" + body


def test_a_request_without_a_key_is_refused_before_its_body_comes(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = _iris_home(tmp_path, iris_classifier, iris)
    config = tmp_path / "gyre.toml"
    config.write_text(
        f'[serve]\nworkers = 1\n[serve.consumers.app]\nkey_sha256 = "{hash_key("k")}"\n'
    )
    server = start_server(home, config=config)
    sixteen_mib = 16 * 1024 * 1024
    head = (
        b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % sixteen_mib
    )
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + b"\r\n")
            # Not a byte of the body was sent: the answer did not wait for it.
            refused = _read_response(sock)
            assert refused.startswith(b"HTTP/1.1 401 "), refused
            assert b"connection: close" not in refused.lower()
            # A client that sends the body anyway: it is read and dropped, and the
            # connection serves the next request.
            sock.sendall(b" " * sixteen_mib)
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # Drained, then idle: closed by the keep-alive timeout (5 s) as any idle
            # connection is, not held open (the drain once left no timer at all).
            sock.sendall(head + b"\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 401 ")
            sock.sendall(b" " * sixteen_mib)
            sock.settimeout(20)
            assert sock.recv(4096) == b""
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # A client that waits for "100 Continue" may never send the body: the
            # connection closes after the answer, so no later bytes are misread.
            sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
            refused = _read_response(sock)
            assert refused.startswith(b"HTTP/1.1 401 ") and b"connection: close" in refused
            assert sock.recv(4096) == b""
    finally:
        assert server.stop() == 0


def test_a_request_that_trickles_in_or_never_comes_gets_408(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = _iris_home(tmp_path, iris_classifier, iris)
    config = tmp_path / "gyre.toml"
    config.write_text(
        "[serve]\nworkers = 1\n"
        "header_timeout_s = 1.0\nbody_idle_timeout_s = 1.0\nmax_header_bytes = 4096\n"
    )
    server = start_server(home, config=config)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        body = json.dumps(
            {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
        ).encode()
        head = (
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        with (
            socket.create_connection((host, int(port)), timeout=10) as silent,
            socket.create_connection((host, int(port)), timeout=10) as trickle,
            socket.create_connection((host, int(port)), timeout=10) as stalled,
        ):
            start = time.monotonic()
            stalled.sendall(head + body[:10])
            trickle.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            for _ in range(2):  # then nothing: the head never completes
                time.sleep(0.2)
                trickle.sendall(b"X-Slow: 1\r\n")
            for sock, setting in (
                (silent, b"serve.header_timeout_s"),
                (trickle, b"serve.header_timeout_s"),
                (stalled, b"serve.body_idle_timeout_s"),
            ):
                answer = sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 408 "), answer
                assert setting in answer
                assert sock.recv(4096) == b""  # closed
            assert time.monotonic() - start < 5
        # Whole requests with pauses between them, and a body whose pieces come with pauses
        # shorter than the limit, are served.
        with socket.create_connection((host, int(port)), timeout=10) as patient:
            for _ in range(2):
                patient.sendall(head)
                for piece in (body[:10], body[10:20], body[20:]):
                    time.sleep(0.2)
                    patient.sendall(piece)
                assert _read_response(patient).startswith(b"HTTP/1.1 200 ")
                time.sleep(0.2)
            # Requests bigger than max_header_bytes that arrive whole: only heads count.
            rows = [ROW] * 400
            large = json.dumps(
                {"inputs": [{"name": "X", "shape": [400, 4], "datatype": "FP32", "data": rows}]}
            ).encode()
            request = (
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(large), large)
            )
            for _ in range(2):
                patient.sendall(request)
                assert _read_response(patient).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.1)
            patient.setblocking(False)
            with pytest.raises(BlockingIOError):  # nothing more was sent: no 431, no close
                patient.recv(4096)
        assert "Traceback" not in server.output()
    finally:
        assert server.stop() == 0


def test_graceful_shutdown_answers_accepted_requests_and_exits_zero(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    Registry(home).publish("iris", iris_classifier, iris[0])
    config = tmp_path / "gyre.toml"
    # Requests wait up to 1.5 s for their batch to fill, so they are in flight at SIGTERM.
    config.write_text(
        "[serve.model_defaults]\nmax_batch_size = 1000\nmax_batch_delay_ms = 1500\n"
        "adaptive_batching = false\nlatency_slo_ms = 10000\n"
    )
    server = start_server(home, config=config)
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(httpx.post, f"{server.url}/v2/models/iris/infer", json=body, timeout=30)
            for _ in range(8)
        ]
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 8
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")


def test_hot_reload_under_steady_traffic_fails_no_request(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    server = start_server(home)
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                response = http.post("/v2/models/iris/infer", json=body)
                version = (
                    response.json().get("model_version", "") if response.status_code == 200 else ""
                )
                answers.append((time.monotonic(), response.status_code, version))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        registry.publish("iris", iris_classifier, iris[0], force_new=True)
        time.sleep(1.0)
        moved_at = time.monotonic()
        registry.set_alias("iris", CHAMPION, 2, reason="hot reload test", force=True)
        deadline = moved_at + 10
        while time.monotonic() < deadline and not any(
            v == "2" and t > moved_at for t, _, v in answers[-20:]
        ):
            time.sleep(0.05)
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert server.stop() == 0
    statuses = {status for _, status, _ in answers}
    assert statuses == {200}, f"failed requests during reload: {statuses}"
    assert len(answers) > 100
    first_v2 = min(t for t, _, v in answers if v == "2")
    assert first_v2 - moved_at < 5.0  # reload_interval_ms (500) + load; 2 s in practice
    assert all(v == "1" for t, _, v in answers if t < moved_at)
    # Each worker process (one per core) polls the registry on its own: the last one
    # switches within one reload interval (0.5 s) and a load of the first.
    after = [v for t, _, v in answers if t > first_v2 + 1.0]
    assert after and all(v == "2" for v in after)
