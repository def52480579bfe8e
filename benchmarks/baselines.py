"""The servers gyre is measured against, run by benchmarks/serve.py as separate processes.

- `fastapi_app`: a plain FastAPI + uvicorn app calling onnxruntime once per request, in its
  strongest reasonable form: pydantic request model and dict response as FastAPI's
  documentation suggests, an `async def` endpoint that calls onnxruntime inline (a 20 us
  call gains nothing from a threadpool hop), and one onnxruntime intra-op thread per process
  without spinning (with N processes on N cores, the default thread count per process
  oversubscribes the cores). Measured side by side here, this form answered about twice the
  requests of the one below at a tenth of its p99.
- `fastapi_sync_app`: the shape most FastAPI model servers are written in: a sync `def`
  endpoint (each call hops to the threadpool) and onnxruntime's default thread count. Kept
  as a second row, so the reader sees what the first one's tuning is worth.
- `ceiling_app`: gyre's HTTP stack (uvicorn with uvloop + httptools, a bare ASGI callable)
  answering a constant: no model, no JSON parsing. No server on that stack can be faster.
- `parse_ceiling_app`: the same, but it also parses each body into tensors with gyre's own
  v2 decoder (msgspec, then numpy) before answering the constant: no JSON-speaking server
  on this stack can beat it, whatever its model costs.
- `model_ceiling_app`: the parse ceiling plus one onnxruntime call per request (the
  session as gyre configures it) and gyre's v2 encoder: what JSON serving of this model
  costs on this stack with no batching, metrics, deadlines or routing at all.
- `grpc_ceiling_app`: gyre's gRPC stack (grpc.aio on uvloop) answering every v2
  ModelInfer with a constant, unparsed: no gRPC server on that stack can be faster, and
  with the benchmark's Python gRPC load generator it also shows what that client can send.

Run one baseline process with `python baselines.py APP --port P`: it binds its own socket
with SO_REUSEPORT, as each of gyre's worker processes does, so that when the benchmark
starts N of them the kernel spreads connections over them the way it does over gyre's.
(`uvicorn --workers N` shares one listening socket instead; the first process to wake
often accepts every connection wrk opens, and then one process serves all the load while
the others idle. That made the baselines' rates swing by 2x between runs.)
"""

import argparse
import os
import socket
from typing import Any

ONNX_PATH_ENV = "GYRE_BENCH_ONNX"


def _fastapi_app(tuned: bool) -> Any:
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI
    from pydantic import BaseModel

    options = ort.SessionOptions()
    if tuned:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        os.environ[ONNX_PATH_ENV], sess_options=options, providers=["CPUExecutionProvider"]
    )
    output_names = [o.name for o in session.get_outputs()]

    class Tensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        data: list[Any]

    class InferRequest(BaseModel):
        inputs: list[Tensor]

    def answer(model: str, request: InferRequest) -> dict[str, Any]:
        tensor = request.inputs[0]
        rows = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        outputs = session.run(output_names, {tensor.name: rows})
        return {
            "model_name": model,
            "outputs": [
                {"name": n, "datatype": "FP32", "shape": list(o.shape), "data": o.ravel().tolist()}
                for n, o in zip(output_names, outputs, strict=True)
            ],
        }

    app = FastAPI()
    if tuned:

        @app.post("/v2/models/{model}/infer")
        async def infer(model: str, request: InferRequest) -> dict[str, Any]:
            return answer(model, request)

    else:

        @app.post("/v2/models/{model}/infer")
        def infer_sync(model: str, request: InferRequest) -> dict[str, Any]:
            return answer(model, request)

    return app


_CONSTANT = (
    b'{"model_name":"gbdt","model_version":"1","outputs":[{"name":"label","datatype":"INT64",'
    b'"shape":[1],"data":[1]}]}'
)


async def _answer_constant(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _CONSTANT})


async def _read_body(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await _read_body(receive)
    await _answer_constant(send)


async def parse_ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from gyre.serve.protocols._v2 import decode_request

    if scope["type"] != "http":
        return
    decode_request(await _read_body(receive), None, _RUNTIME)
    await _answer_constant(send)


_MODEL: Any = None  # loaded by main() for model_ceiling_app


async def model_ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from gyre.serve.protocols._v2 import decode_request, encode_response

    if scope["type"] != "http":
        return
    call = decode_request(await _read_body(receive), None, _MODEL)
    feeds, _ = _MODEL.validate(call.inputs)
    body, _ = encode_response(call, _MODEL, _MODEL.run(feeds))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _runtime() -> Any:
    """The benchmark's model as gyre runs it: one onnxruntime thread, no spinning."""
    import onnx

    from gyre.registry._signature import signature_of
    from gyre.serve._runtime import ModelRuntime

    with open(os.environ[ONNX_PATH_ENV], "rb") as artifact:
        onnx_bytes = artifact.read()
    signature = signature_of(onnx.load_from_string(onnx_bytes), None)
    return ModelRuntime("gbdt", 1, onnx_bytes, signature)


class _NoOutputs:
    """Just enough of a runtime for the decoder: the request names no outputs."""

    what = "ceiling"


_RUNTIME: Any = _NoOutputs()


def _grpc_ceiling(port: int) -> None:
    import asyncio

    import grpc
    import uvloop
    from grpc import aio

    from gyre.serve.protocols import grpc_predict_v2_pb2 as pb

    answer = pb.ModelInferResponse(model_name="gbdt", model_version="1").SerializeToString()

    async def infer(request: bytes, context: Any) -> bytes:
        return answer

    async def serve() -> None:
        server = aio.server(options=[("grpc.so_reuseport", 1)])
        handler = grpc.unary_unary_rpc_method_handler(infer)  # bytes in, bytes out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
                                                  {"ModelInfer": handler}),)
        )  # fmt: skip
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await asyncio.Event().wait()  # until SIGTERM ends the process

    uvloop.run(serve())


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Run one baseline server process.")
    parser.add_argument("app", choices=["fastapi_app", "fastapi_sync_app", "ceiling_app",
                                        "parse_ceiling_app", "model_ceiling_app",
                                        "grpc_ceiling_app"])  # fmt: skip
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.app == "grpc_ceiling_app":
        _grpc_ceiling(args.port)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    global _MODEL
    if args.app == "model_ceiling_app":
        _MODEL = _runtime()
    if args.app in ("fastapi_app", "fastapi_sync_app"):
        app = _fastapi_app(tuned=args.app == "fastapi_app")
    else:
        app = globals()[args.app]
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
