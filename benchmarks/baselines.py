"""The servers gyre is measured against, run by benchmarks/serve.py as separate processes.

- `fastapi_app`: a plain FastAPI + uvicorn app calling onnxruntime once per request, written
  the way FastAPI's documentation suggests (pydantic request model, dict response).
- `ceiling_app`: gyre's HTTP stack (uvicorn with uvloop + httptools, a bare ASGI callable)
  answering a constant: no model, no JSON parsing. No server on that stack can be faster.
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


async def ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _CONSTANT})


def __getattr__(name: str) -> Any:
    # uvicorn imports `baselines:fastapi_app`; build it only then, in the server process.
    if name == "fastapi_app":
        return _fastapi_app()
    raise AttributeError(name)
