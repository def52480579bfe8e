"""The ASGI application: routing for the three protocols, body limits, metrics.

A plain ASGI callable rather than a framework: the request path is a handful of string
comparisons, one msgspec decode, one batched inference and one encode.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

import gyre
from gyre.config import ServeConfig
from gyre.errors import BadRequest, GyreError, NotFound, PayloadTooLarge
from gyre.registry import parse_ref
from gyre.serve._errors import error_body, status_of
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import LoadedVersion, ModelRepository
from gyre.serve._runtime import Tensors
from gyre.serve.protocols import _mlflow, _tfserving, _v2

log = logging.getLogger("gyre.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder().encode


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def _json(payload: Any, status: int = 200) -> _Response:
    return _Response(status, _encode(payload), _JSON)


class _Labels:
    """Metric labels of one request, filled in as routing learns them."""

    __slots__ = ("model", "protocol", "version")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.model = ""
        self.version = ""


class GyreApp:
    """Serves every model version in the repository over v2, TF Serving and MLflow."""

    def __init__(
        self, config: ServeConfig, repository: ModelRepository, metrics: ServerMetrics
    ) -> None:
        self.config = config
        self.repository = repository
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.repository.start()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.repository.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        protocol = (
            "v2"
            if path.startswith("/v2")
            else "tf"
            if path.startswith("/v1")
            else ("mlflow" if path in ("/invocations", "/ping", "/health") else "other")
        )
        labels = _Labels(protocol)
        try:
            response = await self._route(scope, receive, path, labels)
        except GyreError as exc:
            status = status_of(exc)
            response = _json(error_body(protocol, status, str(exc)), status)
        except Exception as exc:  # a bug, not bad input: log it, answer 500
            log.exception("unexpected error on %s %s", scope["method"], path)
            response = _json(error_body(protocol, 500, f"internal error: {exc}"), 500)
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": response.body})
        if labels.model:
            self.metrics.observe_request(
                labels.model,
                labels.version,
                protocol,
                response.status,
                time.perf_counter() - start,
            )

    async def _route(self, scope: Scope, receive: Receive, path: str, labels: _Labels) -> _Response:
        method: str = scope["method"]
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            return await self._v2(method, parts[1:], scope, receive, labels)
        if parts[0] == "v1" and len(parts) >= 3 and parts[1] == "models":
            return await self._tf(method, parts[2:], scope, receive, labels)
        if path == "/invocations" and method == "POST":
            return await self._mlflow(scope, receive, labels)
        if path in ("/ping", "/health") and method == "GET":
            return _json(
                {"status": "ok"} if self.repository.ready else {"status": "loading"},
                200 if self.repository.ready else 503,
            )
        if path == "/metrics" and method == "GET":
            return _Response(
                200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        raise NotFound(f"no route {method} {path}; see docs/protocols.md for the endpoints")

    # -- Open Inference Protocol v2 ----------------------------------------------------------

    async def _v2(
        self, method: str, parts: list[str], scope: Scope, receive: Receive, labels: _Labels
    ) -> _Response:
        snapshot = self.repository.snapshot
        if not parts or parts == [""]:
            return _json(
                {"name": "gyre", "version": gyre.__version__, "extensions": ["binary_tensor_data"]}
            )
        if parts[0] == "health" and len(parts) == 2 and method == "GET":
            if parts[1] == "live":
                return _json({"live": True})
            if parts[1] == "ready":
                ready = self.repository.ready
                return _json({"ready": ready}, 200 if ready else 503)
        if parts[0] == "models" and len(parts) >= 2:
            model = labels.model = parts[1]
            rest = parts[2:]
            version: int | None = None
            if len(rest) >= 2 and rest[0] == "versions":
                version = _version_number(rest[1])
                labels.version = rest[1]
                rest = rest[2:]
            if rest == ["infer"] and method == "POST":
                loaded = snapshot.resolve(model, version)
                labels.version = str(loaded.version)
                body = await self._body(scope, receive)
                header = _header(scope, b"inference-header-content-length")
                header_length = None
                if header is not None:
                    if not header.isdigit():
                        raise BadRequest("Inference-Header-Content-Length must be an integer")
                    header_length = int(header)
                call = _v2.decode_request(body, header_length, loaded.runtime)
                outputs = await self._predict(loaded, call.inputs)
                payload, json_length = _v2.encode_response(call, loaded.runtime, outputs)
                if json_length is None:
                    return _Response(200, payload, _JSON)
                return _Response(
                    200,
                    payload,
                    [
                        (b"content-type", b"application/octet-stream"),
                        (b"inference-header-content-length", str(json_length).encode()),
                    ],
                )
            if method == "GET" and rest in ([], ["ready"]):
                if rest == ["ready"]:
                    loaded = snapshot.resolve(model, version)
                    return _json({"name": model, "ready": True})
                versions = snapshot.model_versions(model)
                loaded = snapshot.resolve(model, version)
                listed = sorted(versions) if version is None else [loaded.version]
                return _json(_v2.model_metadata(model, listed, loaded.runtime.signature))
        raise NotFound(f"no v2 route {method} /v2/{'/'.join(parts)}; see docs/protocols.md")

    # -- TensorFlow Serving REST -------------------------------------------------------------

    async def _tf(
        self, method: str, parts: list[str], scope: Scope, receive: Receive, labels: _Labels
    ) -> _Response:
        verb = None
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        model = labels.model = parts[0]
        rest = parts[1:]
        version: int | None = None
        label: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version = _version_number(rest[1])
            rest = rest[2:]
        elif len(rest) >= 2 and rest[0] == "labels":
            label = rest[1]
            rest = rest[2:]
        snapshot = self.repository.snapshot
        if verb == "predict" and method == "POST" and not rest:
            loaded = snapshot.resolve(model, version, label)
            labels.version = str(loaded.version)
            inputs, rows = _tfserving.decode_request(
                await self._body(scope, receive), loaded.runtime
            )
            outputs = await self._predict(loaded, inputs)
            return _json(_tfserving.encode_response(outputs, rows))
        if verb is None and method == "GET" and rest in ([], ["metadata"]):
            loaded = snapshot.resolve(model, version, label)
            labels.version = str(loaded.version)
            if rest == ["metadata"]:
                return _json(_tfserving.metadata(model, loaded.version, loaded.runtime.signature))
            listed = (
                sorted(snapshot.model_versions(model))
                if version is None and label is None
                else [loaded.version]
            )
            return _json(_tfserving.version_status(listed))
        raise NotFound(
            f"no TF Serving route {method} /v1/models/{'/'.join(parts)}"
            + (f":{verb}" if verb else "")
            + "; use GET /v1/models/NAME[/versions/N|/labels/L][/metadata] or POST …:predict"
        )

    # -- MLflow scoring ----------------------------------------------------------------------

    async def _mlflow(self, scope: Scope, receive: Receive, labels: _Labels) -> _Response:
        snapshot = self.repository.snapshot
        ref = _header(scope, b"gyre-model") or self.config.default_model
        if ref is None:
            if len(snapshot.versions) != 1:
                raise BadRequest(
                    "several models are served; choose one with the `Gyre-Model: NAME` header "
                    "(or NAME:VERSION, NAME@ALIAS) or set serve.default_model"
                )
            ref = next(iter(snapshot.versions))
        model, version, label = parse_ref(ref)
        labels.model = model
        loaded = snapshot.resolve(model, version, label)
        labels.version = str(loaded.version)
        content_type = (_header(scope, b"content-type") or "application/json").split(";")[0]
        if content_type.strip() != "application/json":
            raise BadRequest(
                f"content type {content_type!r} is not supported; send application/json"
            )
        inputs = _mlflow.decode_request(await self._body(scope, receive), loaded.runtime)
        outputs = await self._predict(loaded, inputs)
        return _json(_mlflow.encode_response(outputs))

    # -- shared ------------------------------------------------------------------------------

    async def _predict(self, loaded: LoadedVersion, inputs: Tensors) -> Tensors:
        feeds, rows = loaded.runtime.validate(inputs)
        return await loaded.batcher.submit(feeds, rows)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is over the limit of {limit} bytes "
                "(serve.max_body_bytes); send fewer rows per request"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"request body is over the limit of {limit} bytes (serve.max_body_bytes); "
                    "send fewer rows per request"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = _header(scope, b"content-encoding")
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding, limit)
        return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        data = inflater.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise BadRequest(f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"decompressed body is over the limit of {limit} bytes (serve.max_body_bytes)"
        )
    return data


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _version_number(text: str) -> int:
    if not text.isdigit():
        raise BadRequest(f"version {text!r} must be a positive integer")
    return int(text)
