"""TensorFlow SavedModels (and Keras 3 `.keras` files) to ONNX with tf2onnx.

What is converted is the SavedModel's `serving_default` signature, the function TF Serving
answers with: its input and output names become the ONNX graph's, so a client's request
names stay the same. The parity check runs that same signature function in TensorFlow on
the sample rows and compares every output with onnxruntime's.

A `.keras` file is loaded with Keras (safe mode: no arbitrary code), exported as a
SavedModel by Keras itself (`model.export`) into a temporary folder, and then goes the same
way; Keras 3 files need the TensorFlow backend for that export.

TensorFlow and tf2onnx come with the `tensorflow` extra; they are imported only here, only
when such a model is published.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gyre.errors import ExportError, InvalidModel
from gyre.registry._names import check_name

if TYPE_CHECKING:
    from gyre.registry._metadata import ModelVersion
    from gyre.registry._parity import ParityResult
    from gyre.registry._registry import Registry

EXTRA = "pip install 'gyre[tensorflow]'"
SIGNATURE = "serving_default"
#: The newest default-domain opset tf2onnx 1.17 writes.
OPSET = 18


def is_tensorflow(path: Path) -> bool:
    """A SavedModel folder or a `.keras` file: what `publish_file` hands to this module."""
    return path.is_dir() or path.suffix.lower() == ".keras"


def _require_tensorflow() -> Any:
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise InvalidModel(
            f"publishing a TensorFlow model needs TensorFlow and tf2onnx ({exc.name} is not "
            f"installed); install them with: {EXTRA}"
        ) from None
    return tf


def publish(
    registry: Registry,
    name: str,
    path: Path,
    rows: np.ndarray | None,
    *,
    alias: str | None,
    lineage: dict[str, Any] | None,
    force_new: bool = False,
    force_alias: str | None = None,
) -> ModelVersion:
    """Convert the SavedModel folder or `.keras` file at `path`, check parity, record it
    (or return the live version with the same content, unless `force_new`)."""
    check_name("model", name)
    if rows is None:
        raise InvalidModel(
            f"publishing TensorFlow model {path} needs sample input rows for the parity check; "
            "pass --sample ROWS.npy or ROWS.csv with a few hundred rows like the training data"
        )
    if not isinstance(rows, np.ndarray):  # a CSV sample with text columns
        raise InvalidModel(
            f"TensorFlow model {path} takes one tensor of numbers, but the sample has text "
            "columns; pass --sample with numbers only (.npy, or .csv of numbers)"
        )
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InvalidModel(
                f"{path} is a folder without saved_model.pb; publish a TensorFlow SavedModel "
                "folder (tf.saved_model.save or, for Keras, model.export(folder))"
            )
        return _publish_saved_model(
            registry, name, path, rows, alias, lineage, "saved_model", force_new, force_alias
        )
    if not path.is_file():
        raise InvalidModel(f"model file {path} does not exist")
    keras = _require_keras()
    try:
        model = keras.saving.load_model(path)
    except Exception as exc:
        raise InvalidModel(f"could not load {path} with Keras: {_first_line(exc)}") from None
    with tempfile.TemporaryDirectory(prefix="gyre-keras-") as folder:
        exported = Path(folder) / "saved_model"
        try:
            model.export(str(exported), format="tf_saved_model", verbose=False)
        except Exception as exc:
            raise ExportError(
                f"could not export Keras model {path.name} as a SavedModel: {_first_line(exc)}; "
                "export it yourself with model.export(folder) and publish the folder"
            ) from None
        return _publish_saved_model(
            registry, name, exported, rows, alias, lineage, "keras", force_new, force_alias
        )


def _require_keras() -> Any:
    _require_tensorflow()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise InvalidModel(
            f"Keras runs on the {keras.backend.backend()} backend here; a .keras file is "
            "converted through TensorFlow: set KERAS_BACKEND=tensorflow, or export a SavedModel "
            "with model.export(folder) and publish the folder"
        )
    return keras


def _publish_saved_model(
    registry: Registry,
    name: str,
    folder: Path,
    rows: np.ndarray,
    alias: str | None,
    lineage: dict[str, Any] | None,
    source: str,
    force_new: bool,
    force_alias: str | None,
) -> ModelVersion:
    from gyre.registry._signature import make_canonical, make_outputs_batched, signature_of

    onnx_model, function, input_name, dtype = _convert(folder)
    make_outputs_batched(onnx_model)
    make_canonical(onnx_model)
    onnx_bytes = onnx_model.SerializeToString()
    rows = np.asarray(rows[: registry.config.parity_max_rows]).astype(dtype)
    _check_width(name, function, input_name, rows)
    onnx_outputs = registry._run_onnx(name, onnx_bytes, {input_name: rows})
    parity = _check_parity(registry, name, onnx_model, onnx_outputs, function, input_name, rows)
    return registry._record(
        name,
        flavor="tensorflow",
        artifact=onnx_bytes,
        native_bytes=None,
        signature=signature_of(onnx_model),
        parity=parity.as_record(),
        alias=alias,
        lineage={
            **(lineage or {}),
            "source": source,
            "tensorflow_signature": SIGNATURE,
            "saved_model_sha256": _folder_sha256(folder) if source == "saved_model" else None,
            "sample_sha256": hashlib.sha256(rows.tobytes()).hexdigest(),
        },
        force_new=force_new,
        force_alias=force_alias,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tf2onnx and TensorFlow log a page of deprecation notes per conversion (TF1 APIs
    tf2onnx uses inside); errors still show. TensorFlow's C++ start-up lines are its own
    (TF_CPP_MIN_LOG_LEVEL=2 hides them)."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _convert(folder: Path) -> tuple[Any, Any, str, Any]:
    """(ONNX model, the serving signature function, its one input's name, its dtype)."""
    _require_tensorflow()
    from tf2onnx import convert, tf_loader

    with _quiet():
        return _convert_quietly(folder, convert, tf_loader)


def _convert_quietly(folder: Path, convert: Any, tf_loader: Any) -> tuple[Any, Any, str, Any]:
    try:
        graph_def, inputs, outputs, function, _imported, _tables, renames = (
            tf_loader.from_saved_model(
                str(folder),
                None,
                None,
                tag=["serve"],
                signatures=[SIGNATURE],
                return_concrete_func=True,
                return_initialized_tables=True,
                return_tensors_to_rename=True,
            )
        )
    except Exception as exc:
        if "signature not in model" in str(exc):
            raise InvalidModel(
                f"SavedModel {folder} has no `{SIGNATURE}` signature, which TF Serving and "
                f"gyre answer with; save it with tf.saved_model.save(module, folder, "
                f"signatures={{'{SIGNATURE}': module.serve}}) or, for Keras, model.export(folder)"
            ) from None
        raise InvalidModel(
            f"could not load the `{SIGNATURE}` signature of SavedModel {folder}: {_first_line(exc)}"
        ) from None
    specs = function.structured_input_signature[1]
    if len(specs) != 1:
        raise ExportError(
            f"the `{SIGNATURE}` signature of {folder} takes {len(specs)} inputs "
            f"({', '.join(sorted(specs))}); gyre publishes TensorFlow models with one input, "
            "fed by the --sample rows; export it yourself and publish the .onnx file"
        )
    [(input_name, spec)] = specs.items()
    # tf2onnx names the nodes it adds from a counter of the process, and would name the
    # graph after the folder (a temporary one for .keras files): both reset, one model
    # converts to the same bytes every time, which idempotent publishing compares.
    from tf2onnx import utils

    utils.INTERNAL_NAME = 1
    try:
        onnx_model, _ = convert.from_graph_def(
            graph_def,
            name=SIGNATURE,
            input_names=inputs,
            output_names=outputs,
            opset=OPSET,
            tensors_to_rename=renames,
        )
    except Exception as exc:
        raise ExportError(
            f"could not convert SavedModel {folder} to ONNX with tf2onnx: {_first_line(exc)}; "
            "export it yourself and publish the .onnx file"
        ) from None
    return onnx_model, function, input_name, spec.dtype.as_numpy_dtype


def _check_width(name: str, function: Any, input_name: str, rows: np.ndarray) -> None:
    spec = function.structured_input_signature[1][input_name]
    expected = [None if d is None else int(d) for d in spec.shape.as_list()]
    if len(expected) != rows.ndim or any(
        want is not None and want != got
        for want, got in zip(expected[1:], rows.shape[1:], strict=True)
    ):
        shape = ", ".join("N" if d is None else str(d) for d in expected)
        raise InvalidModel(
            f"sample rows have shape {rows.shape}; model `{name}` takes `{input_name}` of "
            f"shape [{shape}]"
        )


def _check_parity(
    registry: Registry,
    name: str,
    onnx_model: Any,
    onnx_outputs: list[np.ndarray],
    function: Any,
    input_name: str,
    rows: np.ndarray,
) -> ParityResult:
    """Every output of the serving signature against the ONNX output of the same name;
    the result is the worst of them."""
    import tensorflow as tf

    from gyre.registry._parity import check_parity

    answered = function(**{input_name: tf.constant(rows)})
    native = {key: np.asarray(value) for key, value in answered.items()}
    names = [output.name for output in onnx_model.graph.output]
    if sorted(names) != sorted(native):
        raise ExportError(
            f"model `{name}`: the ONNX graph answers {', '.join(names)} but the `{SIGNATURE}` "
            f"signature {', '.join(sorted(native))}; export it yourself and publish the .onnx file"
        )
    results = [
        check_parity(
            [output],
            [native[key]],
            tolerance=registry.config.parity_tolerance,
            classifier=False,
            what=f"model `{name}` output `{key}`",
        )
        for key, output in zip(names, onnx_outputs, strict=True)
    ]
    return max(results, key=lambda result: result.max_abs_diff)


def _folder_sha256(folder: Path) -> str:
    """One hash over the SavedModel's files (their relative paths and bytes, in order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:200] + " …"
