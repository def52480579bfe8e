"""Python models: a class with `load()` and `predict(batch)`, published with its code.

```python
class Model:
    signature = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "length", "datatype": "INT64", "shape": [-1]}],
    }

    def load(self) -> None:          # once per worker process: read files, warm caches
        ...

    def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"length": np.array([len(t) for t in batch["text"]], dtype=np.int64)}
```

Such code never runs in the server process: the server runs it in supervised worker
processes, and publishing runs its test inference in a child process too.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gyre.errors import InvalidModel
from gyre.types import DATATYPE_TO_NUMPY, Signature, zeros_for


def signature_from(declared: Any, where: str) -> Signature:
    """A `signature` class attribute as a Signature, with a clear error when malformed."""
    try:
        signature = msgspec.convert(declared, Signature)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidModel(
            f"{where}: `signature` must be {{'inputs': [{{'name', 'datatype', 'shape'}}], "
            f"'outputs': [...]}}: {exc}"
        ) from None
    for spec in (*signature.inputs, *signature.outputs):
        if spec.datatype not in DATATYPE_TO_NUMPY:
            raise InvalidModel(
                f"{where}: tensor `{spec.name}` has unknown datatype {spec.datatype}"
            )
    if not signature.inputs or not signature.outputs:
        raise InvalidModel(f"{where}: the signature needs at least one input and one output")
    return signature


def load_class(code_path: Path, class_name: str, module_name: str) -> Any:
    """Import the code file and instantiate its class (not yet `load()`ed)."""
    spec = importlib.util.spec_from_file_location(module_name, code_path)
    if spec is None or spec.loader is None:
        raise InvalidModel(f"cannot import {code_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InvalidModel(f"{code_path} has no class `{class_name}`")
    for method in ("load", "predict"):
        if not callable(getattr(cls, method, None)):
            raise InvalidModel(f"class `{class_name}` needs a `{method}` method")
    return cls()


def check_outputs(outputs: Any, signature: Signature, rows: int, where: str) -> None:
    if not isinstance(outputs, dict):
        raise InvalidModel(f"{where}: predict must return a dict of output name -> array")
    for spec in signature.outputs:
        value = outputs.get(spec.name)
        if not isinstance(value, np.ndarray):
            raise InvalidModel(f"{where}: predict returned no array for output `{spec.name}`")
        if spec.batched and value.shape[:1] != (rows,):
            raise InvalidModel(
                f"{where}: output `{spec.name}` has {value.shape[:1]} rows for {rows} input rows"
            )


def _probe(code_path: str, class_name: str, conn: Any) -> None:
    """Child process: load the class, run one test batch, report the signature."""
    where = f"class `{class_name}`"
    try:
        instance = load_class(Path(code_path), class_name, "gyre_user_probe")
        signature = signature_from(getattr(type(instance), "signature", None), where)
        instance.load()
        check_outputs(instance.predict(zeros_for(signature)), signature, 1, where)
        conn.send(("ok", msgspec.json.encode(signature)))
    except BaseException as exc:  # report anything the user's code raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def probe_python_model(code_path: Path, class_name: str, timeout_s: float = 120.0) -> Signature:
    """Check a Python model in a child process; its signature, or `InvalidModel`."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_probe, args=(str(code_path), class_name, child), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise InvalidModel(
                f"class `{class_name}` did not load and predict within {timeout_s:g} s"
            )
        status, payload = parent.recv()
    except EOFError:
        raise InvalidModel(
            f"class `{class_name}` crashed its process while loading or predicting"
        ) from None
    finally:
        process.kill()
        process.join()
    if status != "ok":
        raise InvalidModel(f"class `{class_name}` failed its test inference: {payload}")
    return msgspec.json.decode(payload, type=Signature)
