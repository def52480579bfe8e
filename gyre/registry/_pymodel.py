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

A model published with files (`gyre registry publish NAME model.py --artifacts DIR`)
takes them as the argument of `load`: a read-only folder holding DIR's files under their
relative paths, materialized from the artifact store and verified (`gyre.registry._files`):

```python
    def load(self, artifacts: Path) -> None:
        self.coef = np.load(artifacts / "coef.npy")
```

A `load` with no parameter takes no files; publishing refuses files for it, and refuses a
`load` that requires the folder when no files are given.

Such code never runs in the server process: the server runs it in supervised worker
processes, and publishing runs its test inference in a child process too.
"""

from __future__ import annotations

import importlib.util
import inspect
import multiprocessing
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gyre.errors import InvalidModel
from gyre.registry._names import check_name
from gyre.types import DATATYPE_TO_NUMPY, Signature, zeros_for

if TYPE_CHECKING:
    from gyre.registry._files import ArtifactFile
    from gyre.registry._metadata import ModelVersion
    from gyre.registry._registry import Registry


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


def call_load(instance: Any, artifacts: Path | None, where: str) -> None:
    """`instance.load(artifacts)` when `load` takes a positional parameter and there are
    files, `instance.load()` when neither; `InvalidModel` when only one side has them."""
    try:
        parameters = list(inspect.signature(instance.load).parameters.values())
    except (TypeError, ValueError):  # a builtin or C method: assume no parameter
        parameters = []
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY,
                  p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]  # fmt: skip
    if artifacts is not None:
        if not positional:
            raise InvalidModel(
                f"{where} was given files (--artifacts) but its `load()` takes no parameter; "
                "write `def load(self, artifacts: Path)` and read the files from that folder"
            )
        instance.load(artifacts)
        return
    first = positional[0] if positional else None
    if first is not None and first.kind != first.VAR_POSITIONAL and first.default is first.empty:
        raise InvalidModel(
            f"{where}: `load({first.name})` needs a folder of files; publish it with "
            "--artifacts DIR (the folder that holds them)"
        )
    instance.load()


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


def _probe(code_path: str, class_name: str, artifacts: str | None, conn: Any) -> None:
    """Child process: load the class, run one test batch, report the signature."""
    where = f"class `{class_name}`"
    try:
        instance = load_class(Path(code_path), class_name, "gyre_user_probe")
        signature = signature_from(getattr(type(instance), "signature", None), where)
        call_load(instance, Path(artifacts) if artifacts is not None else None, where)
        check_outputs(instance.predict(zeros_for(signature)), signature, 1, where)
        conn.send(("ok", msgspec.json.encode(signature)))
    except BaseException as exc:  # report anything the user's code raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def probe_python_model(
    code_path: Path, class_name: str, artifacts: Path | None = None, timeout_s: float = 120.0
) -> Signature:
    """Check a Python model (given the folder of its files, if any) in a child process;
    its signature, or `InvalidModel`."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    folder = str(artifacts) if artifacts is not None else None
    process = ctx.Process(
        target=_probe, args=(str(code_path), class_name, folder, child), daemon=True
    )
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


def publish_python(
    registry: Registry,
    name: str,
    code: bytes,
    class_name: str,
    *,
    artifacts: Path | None,
    alias: str | None,
    lineage: dict[str, Any] | None,
    force_new: bool,
    force_alias: str | None = None,
) -> ModelVersion:
    """`Registry.publish_python`: the code, its files, a test inference in a child process."""
    import tempfile

    from gyre.registry._files import collect_files, write_files

    check_name("model", name)
    if not class_name.isidentifier():
        raise InvalidModel(f"{class_name!r} is not a Python class name")
    files: tuple[ArtifactFile, ...] = ()
    if artifacts is not None:
        files = collect_files(
            artifacts,
            registry.artifacts,
            max_bytes=registry.config.artifacts_max_bytes,
            max_files=registry.config.artifacts_max_files,
        )
    with tempfile.TemporaryDirectory(prefix="gyre-probe-") as folder:
        code_path = Path(folder) / "model.py"
        code_path.write_bytes(code)
        probe_files = None
        if files:  # the probe reads the files as stored, as the server will
            probe_files = Path(folder) / "artifacts"
            write_files(registry.artifacts, files, probe_files, f"model `{name}`")
        signature = probe_python_model(code_path, class_name, probe_files)
    return registry._record(
        name,
        flavor="python",
        artifact=code,
        native_bytes=None,
        signature=signature,
        parity={"checked": False, "reason": "Python model: served as published"},
        alias=alias,
        lineage=lineage or {},
        entrypoint=class_name,
        force_new=force_new,
        files=files,
        force_alias=force_alias,
    )
