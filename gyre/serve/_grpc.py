"""The Open Inference Protocol v2 over gRPC (KServe / Triton `GRPCInferenceService`).

A grpc.aio server on the event loop of the server process's HTTP server, on its own port
(`serve.grpc_port`): it calls the same `Core` the HTTP routes do, so both share the
process's models, batch queues, cache, consumers, body budget, metrics and logs. Each rule
is the HTTP side's, called from where it lives: version selection (`Core.decide`, one
decision per request on the snapshot read once), the deadline (the gRPC deadline and
v2's `parameters.timeout`, capped by the model's SLO in `Predictor.predict`), tensors and
BYTES (`protocols/_tensors.py`), keys and scopes (`Gatekeeper`, with the key in the
`authorization: Bearer KEY` or `x-api-key` metadata), errors (`_errors.py`: the same
message, the gRPC status of the HTTP one).

The server binds its port once the app's models are loaded (as the HTTP socket listens
only then), and stops before the app shuts down: RPCs under way are finished within
`serve.shutdown_timeout_s`, then the batch queues drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

import gyre
from gyre.auth import Consumer, key_of
from gyre.config import ServeConfig
from gyre.errors import (
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    GyreError,
    NotFound,
    Overloaded,
    RateLimited,
    StoreUnavailable,
    Unavailable,
    http_status,
)
from gyre.serve._answers import Labels, access, answer_headers, count_answer
from gyre.serve._core import Call, Core
from gyre.serve._errors import grpc_code_of
from gyre.serve._http import encode_json, version_number
from gyre.serve._inference import sooner
from gyre.serve.protocols import _v2, _v2_grpc
from gyre.serve.protocols import grpc_predict_v2_pb2 as pb

log = logging.getLogger("gyre.serve")

SERVICE = "inference.GRPCInferenceService"
# A status message travels in a trailer, which grpc clients drop past 8 KiB by default,
# percent-encoded (up to 3 bytes a byte): a longer one keeps its start and its end (where
# the reason is when a huge value is quoted), this many bytes of each.
DETAILS_PART_BYTES = 1024
# The status an RPC is counted with when its client cancelled it or its deadline passed
# before the answer (as nginx counts a client that closed its request).
CANCELLED_STATUS = 499

# An RPC: the request, its context, its labels, and when it arrived (perf_counter).
Handler = Callable[[Any, aio.ServicerContext[Any, Any], Labels, float], Awaitable[Any]]


class GrpcService:
    """The RPCs of `GRPCInferenceService` over one server process's core."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def handler(self) -> grpc.GenericRpcHandler:
        rpcs: dict[str, tuple[Handler, Any]] = {
            "ServerLive": (self._server_live, pb.ServerLiveRequest),
            "ServerReady": (self._server_ready, pb.ServerReadyRequest),
            "ServerMetadata": (self._server_metadata, pb.ServerMetadataRequest),
            "ModelReady": (self._model_ready, pb.ModelReadyRequest),
            "ModelMetadata": (self._model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self._model_infer, pb.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                # The request arrives as bytes and is parsed in `_answering`: grpc would
                # answer UNKNOWN to bytes that are not a message, and log a traceback.
                name: grpc.unary_unary_rpc_method_handler(
                    self._answering(name, handler, message), response_serializer=_serialize
                )
                for name, (handler, message) in rpcs.items()
            },
        )

    def _answering(
        self, name: str, handler: Handler, message: Any
    ) -> Callable[[bytes, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        """`handler` on the request parsed as `message`, with gyre's errors turned into
        gRPC statuses, and the request counted (with the HTTP status it stands for, as the
        HTTP protocols count theirs)."""

        async def answer(data: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            labels = Labels("grpc")
            try:
                try:
                    request = message.FromString(data)
                except DecodeError as exc:
                    raise BadRequest(
                        f"the request is not a valid {message.DESCRIPTOR.full_name} message "
                        f"({exc}); send one of grpc_predict_v2.proto"
                    ) from None
                response = await handler(request, context, labels, start)
            except GyreError as exc:
                error = exc
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                self._finished(name, labels, CANCELLED_STATUS, start)
                raise
            except Exception as exc:  # a bug, not bad input: log it, answer INTERNAL
                log.exception("unexpected error in gRPC %s", name)
                error = GyreError(f"internal error: {exc}")
            else:
                self._finished(name, labels, 200, start)
                return response
            status = http_status(error)
            self._finished(name, labels, status, start)
            await self._abort(context, error, status, labels)

        return answer

    async def _abort(
        self, context: aio.ServicerContext[Any, Any], exc: GyreError, status: int, labels: Labels
    ) -> None:
        if isinstance(exc, Overloaded):
            self.core.metrics.shed_request(labels.model)
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, (Overloaded, RateLimited, StoreUnavailable)):
            trailing = (("retry-after", str(exc.retry_after_s)),)
        # Raises, ending the RPC with this status.
        await context.abort(grpc.StatusCode[grpc_code_of(status)], _details(str(exc)), trailing)

    def _finished(self, name: str, labels: Labels, status: int, start: float) -> None:
        elapsed = time.perf_counter() - start
        if self.core.config.access_log:
            access.info(
                encode_json(
                    {
                        "rpc": name,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "model": labels.model or None,
                        "version": labels.version or None,
                        "consumer": labels.consumer or None,
                    }
                ).decode()
            )
        count_answer(self.core.metrics, labels, status, elapsed)

    def _admit(self, context: aio.ServicerContext[Any, Any], labels: Labels) -> Consumer | None:
        """Who calls (UNAUTHENTICATED, RESOURCE_EXHAUSTED), as `GyreApp._admit` for HTTP."""
        gatekeeper = self.core.gatekeeper
        if not gatekeeper.enabled:
            return None
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        authorization, api_key = metadata.get("authorization"), metadata.get("x-api-key")
        consumer = gatekeeper.admit(
            key_of(
                authorization if isinstance(authorization, str) else None,
                api_key if isinstance(api_key, str) else None,
            )
        )
        if consumer is not None:
            labels.consumer = consumer.name
        return consumer

    def _model(
        self,
        context: aio.ServicerContext[Any, Any],
        labels: Labels,
        model: str,
        version: str,
        start: float,
    ) -> tuple[Call, int | None]:
        """Admit and authorize a call about `model`; the call, and its version number if
        named."""
        call = self.core.call(self._admit(context, labels), labels, start)
        self.core.authorize(call, model)
        # The version label is set once a version answers.
        return call, version_number(version) if version else None

    # -- the RPCs ----------------------------------------------------------------------------

    async def _server_live(self, request: Any, context: Any, labels: Labels, start: float) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any, context: Any, labels: Labels, start: float) -> Any:
        return pb.ServerReadyResponse(ready=self.core.repository.ready)

    async def _server_metadata(
        self, request: Any, context: Any, labels: Labels, start: float
    ) -> Any:
        return pb.ServerMetadataResponse(name="gyre", version=gyre.__version__)

    async def _model_ready(self, request: Any, context: Any, labels: Labels, start: float) -> Any:
        call, version = self._model(context, labels, request.name, request.version, start)
        try:
            self.core.decide(call, request.name, version)
        except (NotFound, Unavailable):
            # The answer to "is it ready?" (as HTTP clients read a 404 or 503): no.
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def _model_metadata(
        self, request: Any, context: Any, labels: Labels, start: float
    ) -> Any:
        call, version = self._model(context, labels, request.name, request.version, start)
        loaded = self.core.decide(call, request.name, version).loaded
        listed = (
            sorted(call.snapshot.model_versions(request.name))
            if version is None
            else [loaded.version]
        )
        return _v2_grpc.model_metadata(
            _v2.model_metadata(request.name, listed, loaded.runtime.signature)
        )

    async def _model_infer(
        self, request: Any, context: aio.ServicerContext[Any, Any], labels: Labels, start: float
    ) -> Any:
        core = self.core
        call, version = self._model(
            context, labels, request.model_name, request.model_version, start
        )
        decision = core.decide(call, request.model_name, version, inference=True)
        runtime = decision.loaded.runtime
        # The message is read already (grpc bounds it by serve.max_body_bytes); while it is
        # decoded and answered it counts in the process's body budget, as an HTTP body does.
        held: dict[str, Any] = {}
        core.bodies.reserve(held, request.ByteSize())
        try:
            parameters = _v2_grpc.parameter_values(request.parameters)
            if "entity" in parameters:
                raise BadRequest(
                    "calling a model by entity is offered over HTTP only (POST "
                    "/v2/models/NAME/infer with `parameters.entity`); over gRPC send its inputs"
                )
            inputs = _v2_grpc.decode_request(request, runtime)
            deadline_ms = sooner(_deadline_ms(context), _v2.requested_deadline_ms(parameters))
            prediction = await core.infer(call, decision, inputs, deadline_ms)
        finally:
            core.bodies.release(held)
        context.set_trailing_metadata(
            tuple((key.decode(), value.decode()) for key, value in answer_headers(prediction))
        )
        extra: dict[str, bool | str] = {}
        if prediction.default_reason is not None:
            extra = {"default": True, "default_reason": prediction.default_reason}
        return _v2_grpc.encode_response(request, runtime, prediction.outputs, extra)


def _details(message: str) -> str:
    data = message.encode()
    if len(data) <= 2 * DETAILS_PART_BYTES:
        return message
    head = data[:DETAILS_PART_BYTES].decode(errors="ignore")
    tail = data[-DETAILS_PART_BYTES:].decode(errors="ignore")
    return f"{head} …({len(data) - 2 * DETAILS_PART_BYTES} bytes cut)… {tail}"


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _deadline_ms(context: aio.ServicerContext[Any, Any]) -> float | None:
    """What is left of the client's gRPC deadline, in ms; None when it set none."""
    remaining_s = context.time_remaining()
    if remaining_s is None:
        return None
    if remaining_s <= 0:
        raise DeadlineExceeded("the request's gRPC deadline passed before it was read")
    return float(remaining_s) * 1000.0


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_unusable(address: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"cannot listen for gRPC on {address} ({exc}); is another server using the "
        "port? Choose another with --grpc-port (serve.grpc_port), or 0 for no gRPC"
    )


class GrpcServer:
    """The gRPC server of one server process: started once the app is, stopped before."""

    def __init__(self, core: Core, config: ServeConfig, *, shared_port: bool) -> None:
        """`shared_port`: several processes listen on the port (SO_REUSEPORT), as they do on
        the HTTP one; otherwise a port in use is an error, not a port shared by accident."""
        self.core = core
        self.config = config
        self.shared_port = shared_port
        self._server: aio.Server | None = None

    async def start(self) -> None:
        server = aio.server(
            options=[
                ("grpc.so_reuseport", 1 if self.shared_port else 0),
                # Larger messages are refused by grpc itself, with RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", self.config.max_body_bytes),
            ]
        )
        server.add_generic_rpc_handlers((GrpcService(self.core).handler(),))
        address = grpc_address(self.config.host, self.config.grpc_port)
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:
            raise port_unusable(address, exc) from None
        await server.start()
        self._server = server
        log.info("gRPC (v2 GRPCInferenceService) on %s", address)

    async def stop(self) -> None:
        """Refuse new RPCs, finish those under way within the shutdown timeout."""
        if self._server is not None:
            await self._server.stop(self.config.shutdown_timeout_s)
            self._server = None
