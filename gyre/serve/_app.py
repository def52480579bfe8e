"""The ASGI application: routing for the three protocols, feedback and admin.

A plain ASGI callable rather than a framework: the request path is a handful of string
comparisons, one msgspec decode, one batched inference and one encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gyre
from gyre.auth import Consumer, Gatekeeper, key_of
from gyre.collect import Collector, parse_events
from gyre.config import ServeConfig
from gyre.errors import (
    BadRequest,
    GyreError,
    NotFound,
    Overloaded,
    UnknownEventType,
    UnknownFeatureView,
)
from gyre.registry import parse_ref
from gyre.serve._admin import Admin
from gyre.serve._answers import (
    Labels,
    answer_headers,
    count_answer,
    default_fields,
    label_model,
    log_access,
)
from gyre.serve._features import EntityFeatures
from gyre.serve._http import (
    JSON_HEADERS,
    BodyBudget,
    Receive,
    Response,
    Scope,
    Send,
    body_was_read,
    byte_count,
    deadline_ms,
    error_response,
    expects_continue,
    header,
    json_response,
    read_body,
    version_number,
)
from gyre.serve._inference import Prediction, Predictor, sooner
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import ModelRepository
from gyre.serve._snapshot import LoadedVersion
from gyre.serve.protocols import _mlflow, _tfserving, _triton, _v2
from gyre.types import FeatureBinding

log = logging.getLogger("gyre.serve")

# How often a server process that shares its metrics with others publishes its tallies.
METRICS_FLUSH_S = 0.1

# Triton's names for the v2 extensions gyre answers (see protocols/_triton.py).
V2_EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]


class GyreApp:
    """Serves every model version in the repository over v2, TF Serving and MLflow."""

    def __init__(
        self,
        config: ServeConfig,
        repository: ModelRepository,
        metrics: ServerMetrics,
        predictor: Predictor,
        admin: Admin,
        gatekeeper: Gatekeeper,
        collector: Collector | None = None,
        features: EntityFeatures | None = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.metrics = metrics
        self.predictor = predictor
        self.admin = admin
        self.gatekeeper = gatekeeper
        self.collector = collector
        self.features = features
        # Ingestion waits on durable commits: enough threads that concurrent callers can
        # share one (only when event types are declared).
        self._ingest_threads = (
            ThreadPoolExecutor(32, thread_name_prefix="gyre-ingest") if collector else None
        )
        self._metrics_flusher: asyncio.Task[None] | None = None
        self.bodies = BodyBudget(config.inflight_body_budget_bytes)

    def _admit(self, scope: Scope, labels: Labels) -> Consumer | None:
        """Who calls (401, 429), before anything of the request is read or looked up."""
        if not self.gatekeeper.enabled:
            return None
        key = key_of(header(scope, b"authorization"), header(scope, b"x-api-key"))
        consumer = self.gatekeeper.admit(key)
        if consumer is not None:
            labels.consumer = consumer.name
        return consumer

    def _authorize(self, consumer: Consumer | None, labels: Labels, model: str) -> None:
        label_model(labels, model, self.repository.snapshot.versions)
        self.gatekeeper.authorize(consumer, model=model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.bodies.attach(scope)
            try:
                await self._http(scope, receive, send)
            finally:
                self.bodies.release(scope)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Load the models and the online features; the server is ready after this."""
        await self.repository.start()
        if self.features is not None:
            await asyncio.to_thread(self.features.start)
        if self.metrics.multiprocess_dir is not None:
            # Another process's /metrics reads this one's values from its files.
            self._metrics_flusher = asyncio.create_task(self._flush_metrics())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.metrics.flush()

    async def shutdown(self) -> None:
        """Finish what was accepted, then release models, the fact log and the logs."""
        await self.predictor.drain()
        if self._metrics_flusher is not None:
            self._metrics_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_flusher
        self.metrics.flush()
        await self.repository.stop()
        if self._ingest_threads is not None:
            self._ingest_threads.shutdown(wait=True)
        if self.collector is not None:
            self.collector.close()
        if self.features is not None:
            self.features.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        protocol = (
            "v2"
            if path.startswith("/v2")
            else "tf"
            if path.startswith("/v1/models")
            else "mlflow"
            if path in ("/invocations", "/ping", "/health", "/version")
            else "gyre"
        )
        labels = Labels(protocol)
        try:
            response = await self._route(scope, receive, path, labels)
        except GyreError as exc:
            if isinstance(exc, Overloaded):
                self.metrics.shed_request(labels.model)
            response = error_response(protocol, exc)
            if not body_was_read(scope) and expects_continue(scope):
                # The client waits for "100 Continue" before it sends the body, and may
                # never send it: on this connection the next bytes could be either.
                response.headers.append((b"connection", b"close"))
        except Exception as exc:  # a bug, not bad input: log it, answer 500
            log.exception("unexpected error on %s %s", scope["method"], path)
            response = error_response(protocol, GyreError(f"internal error: {exc}"))
        # With its length known up front the body goes out in one piece, not chunked.
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        if self.config.access_log:
            log_access(scope, response, labels, start)
        count_answer(self.metrics, labels, response.status, time.perf_counter() - start)

    async def _route(self, scope: Scope, receive: Receive, path: str, labels: Labels) -> Response:
        method: str = scope["method"]
        parts = path.strip("/").split("/")
        answer = self._open_route(method, path, parts)
        if answer is not None:
            return answer
        # Every other route needs a key once consumers are declared: without one the
        # answer is 401 before any model, event type or request id is looked up, and
        # before the body is read.
        consumer = self._admit(scope, labels)
        if parts[0] == "v2":
            return await self._v2(method, parts[1:], scope, receive, labels, consumer)
        if parts[0] == "v1" and len(parts) >= 3 and parts[1] == "models":
            return await self._tf(method, parts[2:], scope, receive, labels, consumer)
        if path == "/invocations" and method == "POST":
            return await self._mlflow(scope, receive, labels, consumer)
        if parts[0] == "v1" and len(parts) == 3 and parts[1] == "events" and method == "POST":
            return await self._events(scope, receive, parts[2], consumer)
        if parts[0] == "v1" and len(parts) >= 2 and parts[1] in ("feedback", "admin"):

            def body() -> Awaitable[bytes]:
                return read_body(scope, receive, self.config.max_body_bytes)

            return await self.admin.handle(method, parts[1:], consumer, body)
        raise NotFound(f"no route {method} {path}; see docs/protocols.md for the endpoints")

    def _open_route(self, method: str, path: str, parts: list[str]) -> Response | None:
        """Health, readiness, the v2 server metadata and metrics: open to anyone (load
        balancers, scrapers, tritonclient's server checks), and about no model."""
        if parts == ["v2"]:
            return json_response(
                {"name": "gyre", "version": gyre.__version__, "extensions": V2_EXTENSIONS}
            )
        if method != "GET":
            return None
        if path == "/v2/health/live":
            return json_response({"live": True})
        if path == "/v2/health/ready":
            ready = self.repository.ready
            return json_response({"ready": ready}, 200 if ready else 503)
        if path in ("/ping", "/health"):
            ready = self.repository.ready
            return json_response({"status": "ok" if ready else "loading"}, 200 if ready else 503)
        if path == "/version":  # MLflow's scoring server answers its version as text
            return Response(200, gyre.__version__.encode(), [(b"content-type", b"text/plain")])
        if path == "/metrics":
            return Response(
                200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        return None

    async def _predict(
        self,
        scope: Scope,
        loaded: LoadedVersion,
        inputs: Any,
        routed: bool,
        requested_deadline_ms: float | None = None,
        *,
        features: FeatureBinding | None = None,
    ) -> Prediction:
        return await self.predictor.predict(
            self.repository.snapshot,
            loaded,
            inputs,
            deadline_ms=sooner(deadline_ms(scope), requested_deadline_ms),
            routed=routed,
            features=features,
        )

    # -- Open Inference Protocol v2 ----------------------------------------------------------

    async def _v2(
        self,
        method: str,
        parts: list[str],
        scope: Scope,
        receive: Receive,
        labels: Labels,
        consumer: Consumer | None,
    ) -> Response:
        snapshot = self.repository.snapshot

        def may_see(model: str) -> bool:
            return consumer is None or consumer.may_call(model)

        if parts == ["models", "stats"] and method == "GET":
            # Triton's route for every model's statistics: a model named `stats` is asked
            # for its own with a version, /v2/models/stats/versions/N/stats.
            every = [
                (model, version)
                for model in sorted(snapshot.versions)
                if may_see(model)
                for version in sorted(snapshot.versions[model])
            ]
            return json_response(_triton.model_stats(self.metrics.families(), every))
        if parts == ["repository", "index"] and method == "POST":
            body = await read_body(scope, receive, self.config.max_body_bytes)
            ready = _triton.ready_only(body)
            return json_response(_triton.repository_index(snapshot, may_see, ready))
        if parts[0] == "models" and len(parts) >= 2:
            model = parts[1]
            self._authorize(consumer, labels, model)
            rest = parts[2:]
            version: int | None = None
            if len(rest) >= 2 and rest[0] == "versions":
                version = version_number(rest[1])
                labels.version = rest[1]
                rest = rest[2:]
            if rest == ["infer"] and method == "POST":
                return await self._v2_infer(scope, receive, labels, model, version)
            if method == "GET" and rest in ([], ["ready"]):
                loaded = snapshot.resolve(model, version)
                labels.version = str(loaded.version)
                if rest == ["ready"]:
                    return json_response({"name": model, "ready": True})
                versions = snapshot.model_versions(model)
                listed = sorted(versions) if version is None else [loaded.version]
                return json_response(_v2.model_metadata(model, listed, loaded.runtime.signature))
            if method == "GET" and rest == ["config"]:
                loaded = snapshot.resolve(model, version)
                labels.version = str(loaded.version)
                return json_response(_triton.model_config(loaded))
            if method == "GET" and rest == ["stats"]:
                if version is None:
                    numbers = sorted(snapshot.model_versions(model))
                else:
                    numbers = [snapshot.resolve(model, version).version]
                stats = _triton.model_stats(self.metrics.families(), [(model, v) for v in numbers])
                return json_response(stats)
        raise NotFound(f"no v2 route {method} /v2/{'/'.join(parts)}; see docs/protocols.md")

    async def _v2_infer(
        self, scope: Scope, receive: Receive, labels: Labels, model: str, version: int | None
    ) -> Response:
        loaded = self.repository.snapshot.resolve(model, version)
        labels.version = str(loaded.version)
        labels.inference = loaded.version
        body = await read_body(scope, receive, self.config.max_body_bytes)
        length = byte_count(scope, b"inference-header-content-length")
        call = _v2.decode_request(body, length, loaded.runtime)
        parameters = call.request.parameters or {}
        inputs, vectors = call.inputs, None
        if "entity" in parameters:
            if inputs:
                raise BadRequest("send either `inputs` or `parameters.entity`, not both")
            if self.features is None:
                raise UnknownFeatureView(
                    f"{loaded.runtime.what} cannot be called with an entity: this server "
                    "declares no feature views ([features.views])"
                )
            inputs, vectors = self.features.inputs(loaded, parameters)
        elif not inputs:
            raise BadRequest(
                f"the request has no inputs; expected {_v2.EXPECTED_BODY}, or "
                "`parameters.entity` for a model published with a feature view"
            )
        requested = _v2.requested_deadline_ms(parameters)
        binding = loaded.runtime.signature.features if vectors is not None else None
        prediction = await self._predict(
            scope, loaded, inputs, version is None, requested, features=binding
        )
        if vectors is not None and self.features is not None:
            self.features.record(prediction.request_id, prediction.loaded, vectors)
        payload, json_length = _v2.encode_response(
            call, loaded.runtime, prediction.outputs, default_fields(prediction)
        )
        headers = answer_headers(prediction)
        if json_length is None:
            return Response(200, payload, JSON_HEADERS + headers)
        return Response(
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
                *headers,
            ],
        )

    # -- TensorFlow Serving REST -------------------------------------------------------------

    async def _tf(
        self,
        method: str,
        parts: list[str],
        scope: Scope,
        receive: Receive,
        labels: Labels,
        consumer: Consumer | None,
    ) -> Response:
        verb = None
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        model = parts[0]
        self._authorize(consumer, labels, model)
        rest = parts[1:]
        version: int | None = None
        label: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version = version_number(rest[1])
            rest = rest[2:]
        elif len(rest) >= 2 and rest[0] == "labels":
            label = rest[1]
            rest = rest[2:]
        snapshot = self.repository.snapshot
        if verb == "predict" and method == "POST" and not rest:
            loaded = snapshot.resolve(model, version, label)
            labels.version = str(loaded.version)
            labels.inference = loaded.version
            body = await read_body(scope, receive, self.config.max_body_bytes)
            inputs, rows = _tfserving.decode_request(body, loaded.runtime)
            routed = version is None and label is None
            prediction = await self._predict(scope, loaded, inputs, routed)
            answer = _tfserving.encode_response(prediction.outputs, rows)
            return json_response(
                {**answer, **default_fields(prediction)}, headers=answer_headers(prediction)
            )
        if verb is None and method == "GET" and rest in ([], ["metadata"]):
            loaded = snapshot.resolve(model, version, label)
            labels.version = str(loaded.version)
            if rest == ["metadata"]:
                return json_response(
                    _tfserving.metadata(model, loaded.version, loaded.runtime.signature)
                )
            everything = version is None and label is None
            listed = sorted(snapshot.model_versions(model)) if everything else [loaded.version]
            return json_response(_tfserving.version_status(listed))
        raise NotFound(
            f"no TF Serving route {method} /v1/models/{'/'.join(parts)}"
            + (f":{verb}" if verb else "")
            + "; use GET /v1/models/NAME[/versions/N|/labels/L][/metadata] or POST …:predict"
        )

    # -- event ingestion ---------------------------------------------------------------------

    async def _events(
        self, scope: Scope, receive: Receive, type_name: str, consumer: Consumer | None
    ) -> Response:
        # The scope first: a consumer that may not send this type learns nothing of the
        # declared ones.
        self.gatekeeper.authorize(consumer, event_type=type_name)
        if self.collector is None or self._ingest_threads is None:
            raise UnknownEventType(
                f"unknown event type `{type_name}`: no event types are declared "
                "([collect.events.NAME] in gyre.toml)"
            )
        self.collector.event_type(type_name)
        body = await read_body(scope, receive, self.config.max_body_bytes)
        collector = self.collector
        # Validation and the durable commit block: they run on the ingestion threads, where
        # concurrent calls share one commit.
        result = await asyncio.get_running_loop().run_in_executor(
            self._ingest_threads, lambda: collector.ingest(type_name, parse_events(body))
        )
        return json_response(result.as_json())

    # -- MLflow scoring ----------------------------------------------------------------------

    async def _mlflow(
        self, scope: Scope, receive: Receive, labels: Labels, consumer: Consumer | None
    ) -> Response:
        snapshot = self.repository.snapshot
        ref = header(scope, b"gyre-model") or self.config.default_model
        if ref is None:
            if len(snapshot.versions) != 1:
                raise BadRequest(
                    "several models are served; choose one with the `Gyre-Model: NAME` header "
                    "(or NAME:VERSION, NAME@ALIAS) or set serve.default_model"
                )
            ref = next(iter(snapshot.versions))
        model, version, label = parse_ref(ref)
        self._authorize(consumer, labels, model)
        loaded = snapshot.resolve(model, version, label)
        labels.version = str(loaded.version)
        labels.inference = loaded.version
        content_type = header(scope, b"content-type") or "application/json"
        media = content_type.split(";")[0].strip().lower()
        if media not in ("application/json", "text/csv"):
            raise BadRequest(
                f"content type {media!r} is not supported; send application/json or text/csv"
            )
        body = await read_body(scope, receive, self.config.max_body_bytes)
        if media == "text/csv":
            inputs = _mlflow.decode_csv(body, content_type, loaded.runtime)
        else:
            inputs = _mlflow.decode_request(body, loaded.runtime)
        routed = version is None and label is None
        prediction = await self._predict(scope, loaded, inputs, routed)
        answer = _mlflow.encode_response(prediction.outputs)
        return json_response(
            {**answer, **default_fields(prediction)}, headers=answer_headers(prediction)
        )
