"""The servers gyre is measured against, run by benchmarks/serve.py as separate processes.

- `fastapi_app`: a plain FastAPI + uvicorn app calling onnxruntime once per request, written
  the way FastAPI's documentation suggests (pydantic request model, dict response).
- `ceiling_app`: gyre's HTTP stack (uvicorn with uvloop + httptools, a bare ASGI callable)
  answering a constant: no model, no JSON parsing. No server on that stack can be faster.
- `parse_ceiling_app`: the same, but it also parses each body into tensors with gyre's own
  v2 decoder (msgspec, then numpy) before answering the constant: no JSON-speaking server
  on this stack can beat it, whatever its model costs.
"""

import os
from typing import Any

ONNX_PATH_ENV = "GYRE_BENCH_ONNX"


def _fastapi_app() -> Any:
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI
    from pydantic import BaseModel

    session = ort.InferenceSession(os.environ[ONNX_PATH_ENV], providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]

    class Tensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        data: list[Any]

    class InferRequest(BaseModel):
        inputs: list[Tensor]

    app = FastAPI()

    @app.post("/v2/models/{model}/infer")
    def infer(model: str, request: InferRequest) -> dict[str, Any]:
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


class _NoOutputs:
    """Just enough of a runtime for the decoder: the request names no outputs."""

    what = "ceiling"


_RUNTIME: Any = _NoOutputs()


def __getattr__(name: str) -> Any:
    # uvicorn imports `baselines:fastapi_app`; build it only then, in the server process.
    if name == "fastapi_app":
        return _fastapi_app()
    raise AttributeError(name)
