"""Open Inference Protocol v2 (KServe / Triton / MLServer REST), with Triton's binary
tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes, then the
raw tensors in order, each sized by its `binary_data_size` parameter.

`V2Routes` answers the routes under `/v2`: the server's metadata and health (open to
anyone), each model's metadata, readiness and `infer`, and Triton's extensions
(`_triton.py`: config, statistics, the repository index). The codec below it decodes the
bodies into named tensors and encodes the answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

import gyre
from gyre._json import MALFORMED, reason
from gyre.errors import BadRequest, NotFound, UnknownFeatureView
from gyre.serve._answers import answer_headers, default_fields
from gyre.serve._core import Call, Core
from gyre.serve._http import (
    JSON_HEADERS,
    Receive,
    Response,
    Scope,
    byte_count,
    deadline_ms,
    json_response,
    positive_ms,
    version_number,
)
from gyre.serve._inference import sooner
from gyre.serve._runtime import Runtime, Tensors
from gyre.serve.protocols import _triton
from gyre.serve.protocols._tensors import (
    array_from_json,
    array_from_raw,
    check_output,
    dtype_named,
    raw_from_array,
    reshape,
)
from gyre.types import Signature, TensorSpec, datatype_of

# Triton's names for the v2 extensions gyre answers (see _triton.py).
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]

EXPECTED_BODY = (
    '{"id"?: str, "inputs": [{"name": str, "shape": [int], "datatype": "FP32"|…, '
    '"data": [...]}], "outputs"?: [{"name": str}], "parameters"?: {}}'
)


class RequestInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct):
    # empty when `parameters.entity` names what to predict for
    inputs: list[RequestInput] = []
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


_decoder = msgspec.json.Decoder(InferenceRequest)
_encoder = msgspec.json.Encoder()


@dataclass
class V2Call:
    request: InferenceRequest
    inputs: dict[str, np.ndarray]


def _binary_size(parameters: dict[str, Any] | None) -> int | None:
    if not parameters or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"binary_data_size must be a non-negative integer, got {size!r}")
    return size


def decode_request(body: bytes, header_length: int | None, runtime: Runtime) -> V2Call:
    """Parse a JSON (or JSON + binary) infer request into named arrays."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        request = _decoder.decode(header)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid infer request: {exc}; expected {EXPECTED_BODY}") from None
    except MALFORMED as exc:
        raise BadRequest(f"request body is not valid JSON: {reason(exc)}") from None
    offset = 0
    arrays: dict[str, np.ndarray] = {}
    for item in request.inputs:
        where = f"input `{item.name}`"
        dtype_named(item.datatype, where)
        if item.name in arrays:
            raise BadRequest(f"{where} is given twice")
        size = _binary_size(item.parameters)
        if size is not None:
            if offset + size > len(binary):
                raise BadRequest(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            array = array_from_raw(bytes(binary[offset : offset + size]), item.datatype, where)
            offset += size
        elif item.data is None:
            raise BadRequest(f"{where} has no `data` and no binary_data_size parameter")
        else:
            # JSON data is parsed as the datatype the request declares; the runtime then
            # casts it to the model's datatype when that keeps values.
            declared = TensorSpec(name=item.name, datatype=item.datatype, shape=tuple(item.shape))
            array = array_from_json(item.data, declared, where)
        arrays[item.name] = reshape(array, item.shape, where)
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    if request.outputs is not None:
        for wanted in request.outputs:
            check_output(runtime, wanted.name)
    return V2Call(request=request, inputs=arrays)


def requested_deadline_ms(parameters: dict[str, Any]) -> float | None:
    """`parameters.timeout` (microseconds, as tritonclient sends it) in milliseconds, by
    the rule the `Gyre-Deadline-Ms` header follows (`positive_ms`); None when not given."""
    timeout_us = parameters.get("timeout")
    if timeout_us is None:
        return None
    if not isinstance(timeout_us, (int, float)) or isinstance(timeout_us, bool):
        raise BadRequest("parameters.timeout must be a number of microseconds")
    try:
        ms = float(timeout_us) / 1000.0
    except OverflowError:  # an integer too large for a float
        ms = math.inf if timeout_us > 0 else -math.inf
    return positive_ms(ms, "parameters.timeout", "microseconds", timeout_us)


def _wants_binary(request: InferenceRequest, output: RequestOutput | None) -> bool:
    if output is not None and output.parameters and "binary_data" in output.parameters:
        return bool(output.parameters["binary_data"])
    return bool(request.parameters and request.parameters.get("binary_data_output"))


def encode_response(
    call: V2Call, runtime: Runtime, outputs: Tensors, parameters: dict[str, Any] | None = None
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    request = call.request
    chosen = request.outputs or [RequestOutput(name=s.name) for s in runtime.signature.outputs]
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for wanted in chosen:
        array = outputs[wanted.name]
        entry: dict[str, Any] = {
            "name": wanted.name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if _wants_binary(request, wanted if request.outputs else None):
            blob = raw_from_array(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == object:
            entry["data"] = [
                v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.ravel()
            ]
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    body: dict[str, Any] = {
        "model_name": runtime.model,
        "model_version": str(runtime.version),
        "outputs": described,
    }
    if request.id is not None:
        body["id"] = request.id
    if parameters:
        body["parameters"] = parameters
    header = _encoder.encode(body)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def model_metadata(name: str, versions: list[int], signature: Signature) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
            for s in signature.inputs
        ],
        "outputs": [
            {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
            for s in signature.outputs
        ],
    }


class V2Routes:
    """The v2 REST routes of one server process."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def open_route(self, method: str, path: str, parts: list[str]) -> Response | None:
        """The server's metadata and health: open to anyone (load balancers, tritonclient's
        server checks), and about no model."""
        if parts == ["v2"]:
            return json_response(
                {"name": "gyre", "version": gyre.__version__, "extensions": EXTENSIONS}
            )
        if method != "GET":
            return None
        if path == "/v2/health/live":
            return json_response({"live": True})
        if path == "/v2/health/ready":
            ready = self.core.repository.ready
            return json_response({"ready": ready}, 200 if ready else 503)
        return None

    async def route(
        self, call: Call, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> Response:
        """`method /v2/{parts}` for an admitted caller."""
        core, snapshot = self.core, call.snapshot
        if parts == ["models", "stats"] and method == "GET":
            # Triton's route for every model's statistics: a model named `stats` is asked
            # for its own with a version, /v2/models/stats/versions/N/stats.
            every = [
                (model, version)
                for model in sorted(snapshot.versions)
                if call.may_see(model)
                for version in sorted(snapshot.versions[model])
            ]
            return json_response(_triton.model_stats(core.metrics.families(), every))
        if parts == ["repository", "index"] and method == "POST":
            ready = _triton.ready_only(await core.body(scope, receive))
            return json_response(_triton.repository_index(snapshot, call.may_see, ready))
        if parts[0] == "models" and len(parts) >= 2:
            model = parts[1]
            core.authorize(call, model)
            rest = parts[2:]
            version: int | None = None
            if len(rest) >= 2 and rest[0] == "versions":
                version = version_number(rest[1])
                call.labels.version = rest[1]
                rest = rest[2:]
            if rest == ["infer"] and method == "POST":
                return await self._infer(call, scope, receive, model, version)
            if method == "GET" and rest in ([], ["ready"]):
                loaded = core.decide(call, model, version).loaded
                if rest == ["ready"]:
                    return json_response({"name": model, "ready": True})
                versions = snapshot.model_versions(model)
                listed = sorted(versions) if version is None else [loaded.version]
                return json_response(model_metadata(model, listed, loaded.runtime.signature))
            if method == "GET" and rest == ["config"]:
                return json_response(_triton.model_config(core.decide(call, model, version).loaded))
            if method == "GET" and rest == ["stats"]:
                if version is None:
                    numbers = sorted(snapshot.model_versions(model))
                else:
                    numbers = [snapshot.resolve(model, version).version]
                stats = _triton.model_stats(core.metrics.families(), [(model, v) for v in numbers])
                return json_response(stats)
        raise NotFound(f"no v2 route {method} /v2/{'/'.join(parts)}; see docs/protocols.md")

    async def _infer(
        self, call: Call, scope: Scope, receive: Receive, model: str, version: int | None
    ) -> Response:
        core = self.core
        decision = core.decide(call, model, version, inference=True)
        runtime = decision.loaded.runtime
        body = await core.body(scope, receive)
        length = byte_count(scope, b"inference-header-content-length")
        decoded = decode_request(body, length, runtime)
        parameters = decoded.request.parameters or {}
        inputs, vectors = decoded.inputs, None
        if "entity" in parameters:
            if inputs:
                raise BadRequest("send either `inputs` or `parameters.entity`, not both")
            if core.features is None:
                raise UnknownFeatureView(
                    f"{runtime.what} cannot be called with an entity: this server "
                    "declares no feature views ([features.views])"
                )
            inputs, vectors = core.features.inputs(decision.loaded, parameters)
        elif not inputs:
            raise BadRequest(
                f"the request has no inputs; expected {EXPECTED_BODY}, or "
                "`parameters.entity` for a model published with a feature view"
            )
        requested = requested_deadline_ms(parameters)
        deadline = sooner(deadline_ms(scope), requested)
        prediction = await core.infer(call, decision, inputs, deadline, vectors=vectors)
        payload, json_length = encode_response(
            decoded, runtime, prediction.outputs, default_fields(prediction)
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
