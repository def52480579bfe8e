"""The ASGI application: a server process's lifespan, and the dispatch of each request to
the routes that own it.

A plain ASGI callable rather than a framework: the request path is a handful of string
comparisons, one msgspec decode, one batched inference and one encode. Each protocol owns
its routes and their parameters (`protocols/_v2.py`, `_tfserving.py`, `_mlflow.py`; gRPC
in `_grpc.py`); events (`_events.py`), feedback and admin (`_admin.py`) theirs. What they
share, one rule in one place each, is the `Core` (`_core.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from gyre.auth import Consumer, Gatekeeper, key_of
from gyre.collect import Collector
from gyre.config import ServeConfig
from gyre.errors import GyreError, NotFound, Overloaded
from gyre.monitor import PredictionLog
from gyre.serve._admin import Admin
from gyre.serve._answers import Labels, count_answer, log_access
from gyre.serve._core import Core
from gyre.serve._events import EventRoutes
from gyre.serve._features import EntityFeatures
from gyre.serve._http import (
    BodyBudget,
    Receive,
    Response,
    Scope,
    Send,
    body_was_read,
    error_response,
    expects_continue,
    header,
    read_body,
)
from gyre.serve._inference import Predictor
from gyre.serve._metrics import ServerMetrics
from gyre.serve._prediction_reads import PredictionReads
from gyre.serve._repository import ModelRepository
from gyre.serve.protocols._mlflow import MlflowRoutes
from gyre.serve.protocols._tfserving import TfRoutes
from gyre.serve.protocols._v2 import V2Routes

log = logging.getLogger("gyre.serve")

# How often a server process that shares its metrics with others publishes its tallies.
METRICS_FLUSH_S = 0.1

_MLFLOW_PATHS = ("/invocations", "/ping", "/health", "/version")


def protocol_of(path: str) -> str:
    """The protocol whose error format a request's answer takes."""
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1/models"):
        return "tf"
    return "mlflow" if path in _MLFLOW_PATHS else "gyre"


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
        predictions: PredictionLog | None = None,
    ) -> None:
        self.config = config
        self.core = Core(config, repository, metrics, predictor, gatekeeper, features, predictions)
        self.admin = admin
        self.prediction_reads = PredictionReads(gatekeeper, predictions)
        self.events = EventRoutes(gatekeeper, collector, config.max_body_bytes)
        self.v2 = V2Routes(self.core)
        self.tf = TfRoutes(self.core)
        self.mlflow = MlflowRoutes(self.core)
        self._metrics_flusher: asyncio.Task[None] | None = None

    @property
    def repository(self) -> ModelRepository:
        return self.core.repository

    @property
    def predictor(self) -> Predictor:
        return self.core.predictor

    @property
    def metrics(self) -> ServerMetrics:
        return self.core.metrics

    @property
    def bodies(self) -> BodyBudget:
        return self.core.bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bodies = self.core.bodies
            bodies.attach(scope)
            try:
                await self._http(scope, receive, send)
            finally:
                bodies.release(scope)
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
        if self.core.predictions is not None:
            self.core.predictions.start()
        features = self.core.features
        if features is not None:
            await asyncio.to_thread(features.start)
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
        if self.core.predictions is not None:
            await self.core.predictions.close()
        self.events.close()
        if self.core.features is not None:
            self.core.features.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        protocol = protocol_of(path)
        labels = Labels(protocol)
        try:
            response = await self._route(scope, receive, path, labels, start)
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

    async def _route(
        self, scope: Scope, receive: Receive, path: str, labels: Labels, start: float
    ) -> Response:
        method: str = scope["method"]
        parts = path.strip("/").split("/")
        answer = self._open_route(method, path, parts)
        if answer is not None:
            return answer
        # Every other route needs a key once consumers are declared: without one the
        # answer is 401 before any model, event type or request id is looked up, and
        # before the body is read.
        call = self.core.call(self._admit(scope, labels), labels, start)
        if parts[0] == "v2":
            return await self.v2.route(call, method, parts[1:], scope, receive)
        if parts[0] == "v1" and len(parts) >= 3 and parts[1] == "models":
            return await self.tf.route(call, method, parts[2:], scope, receive)
        if path == "/invocations" and method == "POST":
            return await self.mlflow.invocations(call, scope, receive)
        if parts[0] == "v1" and len(parts) == 3 and parts[1] == "events" and method == "POST":
            return await self.events.ingest(call.consumer, parts[2], scope, receive)
        if (
            method == "GET"
            and parts[:3] == ["v1", "admin", "models"]
            and parts[4:] == ["predictions"]
        ):
            return await self.prediction_reads.handle(call.consumer, parts[3], scope)
        if parts[0] == "v1" and len(parts) >= 2 and parts[1] in ("feedback", "admin"):

            def body() -> Awaitable[bytes]:
                return read_body(scope, receive, self.config.max_body_bytes)

            return await self.admin.handle(method, parts[1:], call.consumer, body)
        raise NotFound(f"no route {method} {path}; see docs/protocols.md for the endpoints")

    def _admit(self, scope: Scope, labels: Labels) -> Consumer | None:
        """Who calls (401, 429), before anything of the request is read or looked up."""
        gatekeeper = self.core.gatekeeper
        if not gatekeeper.enabled:
            return None
        consumer = gatekeeper.admit(
            key_of(header(scope, b"authorization"), header(scope, b"x-api-key"))
        )
        if consumer is not None:
            labels.consumer = consumer.name
        return consumer

    def _open_route(self, method: str, path: str, parts: list[str]) -> Response | None:
        """Health, readiness, server metadata and metrics: open to anyone (load balancers,
        scrapers, tritonclient's server checks), and about no model."""
        if parts[0] == "v2":
            return self.v2.open_route(method, path, parts)
        if path == "/metrics" and method == "GET":
            return Response(
                200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        return self.mlflow.open_route(method, path)
