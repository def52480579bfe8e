"""Turning decoded JSON values into validated numpy tensors, and back: shared by protocols."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from gyre._numbers import is_int64
from gyre.errors import BadRequest, shown
from gyre.serve._runtime import Runtime, Tensors
from gyre.types import DATATYPE_TO_NUMPY, TensorSpec


def dtype_named(datatype: str, where: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype name, or BadRequest listing the names."""
    dtype = DATATYPE_TO_NUMPY.get(datatype)
    if dtype is None:
        raise BadRequest(
            f"{where}: unknown datatype {shown(datatype)}; use one of "
            + ", ".join(DATATYPE_TO_NUMPY)
        )
    return dtype


def array_from_raw(raw: bytes, datatype: str, where: str) -> np.ndarray:
    """A flat array from a tensor's raw bytes (v2's binary extension, gRPC's raw contents):
    little-endian values, or BYTES elements each as a 4-byte little-endian length and then
    the bytes."""
    dtype = dtype_named(datatype, where)
    if datatype == "BYTES":
        return _bytes_elements(raw, where)
    if len(raw) % dtype.itemsize:
        raise BadRequest(f"{where}: {len(raw)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(raw, dtype=dtype)


def raw_from_array(array: np.ndarray) -> bytes:
    """A tensor's raw bytes, as `array_from_raw` reads them."""
    if array.dtype != object:
        return np.ascontiguousarray(array).tobytes()
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _bytes_elements(raw: bytes, where: str) -> np.ndarray:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"{where}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"{where}: BYTES element overruns the binary data")
        items.append(raw[offset : offset + length])
        offset += length
    return np.array(items, dtype=object)


def check_output(runtime: Runtime, name: str) -> None:
    """BadRequest unless the model has an output called `name`."""
    if runtime.signature.output(name) is None:
        names = ", ".join(f"`{s.name}`" for s in runtime.signature.outputs)
        raise BadRequest(f"{runtime.what} has no output `{name}`; outputs: {names}")


def array_from_json(values: Any, spec: TensorSpec, where: str) -> np.ndarray:
    """JSON values (nested or flat lists) as an array of the spec's dtype.

    Text and numbers are not converted into each other: a JSON string where a number is
    expected ("52000") is refused, and so is a number or null where text (BYTES) is: its
    text would be a guess ("31" or "31.0"), and the model would silently see another value.
    """
    dtype = DATATYPE_TO_NUMPY[spec.datatype]
    try:
        if spec.datatype == "BYTES":
            array = np.array(values, dtype=object)
            other = next((v for v in array.ravel() if not isinstance(v, str)), _TEXT)
            if other is not _TEXT:
                raise ValueError(
                    f"expected strings, got {shown(other, 40)}; send text as JSON strings"
                )
            return array
        if spec.datatype == "BOOL":
            array = np.array(values)
            if array.dtype != np.bool_:
                raise ValueError("expected true/false values")
            return array
        probe = _numbers(values, whole=dtype.kind in "iu")
        with np.errstate(over="raise", invalid="raise"):
            if dtype.kind == "f" and probe.dtype.kind in "biuf":
                # The probe cast: one conversion from the JSON lists, not two.
                array = probe.astype(dtype)
            else:
                array = np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise BadRequest(
            f"{where}: values are not a regular {spec.datatype} tensor ({exc}); "
            f"expected shape {list(spec.shape)} (-1: any size)"
        ) from None
    return array


_TEXT = object()  # a marker: no element is anything but text


def _first_text(values: Any) -> str | None:
    """The first string in nested JSON lists (numpy would have turned the numbers beside
    it into strings too)."""
    if isinstance(values, str):
        return values
    if isinstance(values, list):
        for value in values:
            text = _first_text(value)
            if text is not None:
                return text
    return None


def _numbers(values: Any, *, whole: bool) -> np.ndarray:
    """`values` as numpy reads them, after refusing what numpy would misread into numbers:
    it parses "1.5" into 1.5, and truncates 1.5 to 1 when it builds an integer array."""
    probe = np.array(values)
    if probe.dtype.kind in "USO":
        text = _first_text(values)
        if text is not None:
            raise ValueError(f"expected numbers, got the string {shown(text, 40)}")
    if probe.dtype.kind == "b":
        # JSON true/false for a number input: numpy reads them as 1 and 0.
        raise ValueError("expected numbers, got true/false; send 1 and 0 if that is meant")
    if whole and probe.dtype.kind == "f":
        fractional = probe[np.isfinite(probe) & (probe != np.trunc(probe))]
        if fractional.size:
            raise ValueError(f"{float(fractional[0])} is not a whole number")
    return probe


# numpy builds arrays of at most this many dimensions.
MAX_DIMENSIONS = 64


def reshape(array: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    """`array` in the request's `shape`; a shape numpy cannot build (too many dimensions,
    dimensions past 64 bits, or a size too large even with no values) is a bad request.
    The dimensions are counted first: multiplying 100,000 of them took a minute."""
    expected = check_shape(shape, where)
    if array.size != expected:
        raise BadRequest(
            f"{where}: {array.size} values do not fill shape {shown(shape, 80)} "
            f"({shown(expected, 80)} values expected)"
        )
    try:
        return array.reshape(shape)
    except (ValueError, OverflowError) as exc:  # [0, 2**62, 2**62]
        raise BadRequest(f"{where}: shape {shown(shape, 80)} cannot be built: {exc}") from None


def per_row(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The one rule for values given per row (TF Serving and MLflow rows and columns,
    dataframes): an input of shape [-1, 1] takes one value per row, so a row may give it as
    a scalar; N scalars are then the [N, 1] batch."""
    if array.ndim == 1 and len(spec.shape) == 2 and spec.shape[1] == 1 and spec.batched:
        return array.reshape(-1, 1)
    return array


def check_shape(shape: list[int], where: str) -> int:
    """The number of values `shape` holds; BadRequest for a shape no tensor can have."""
    if len(shape) > MAX_DIMENSIONS:
        raise BadRequest(
            f"{where}: shape has {len(shape)} dimensions; a tensor has at most {MAX_DIMENSIONS}"
        )
    if not all(is_int64(dim) for dim in shape):
        raise BadRequest(f"{where}: a dimension of shape {shown(shape, 80)} is past 64 bits")
    if any(dim < 0 for dim in shape):
        raise BadRequest(f"{where}: shape {shown(shape, 80)} has a negative dimension")
    return math.prod(shape)


def stack_rows(rows: Any, runtime: Runtime, where: str) -> Tensors:
    """Row-format instances (TF Serving `instances`, MLflow `instances`) as input tensors.

    With one input, each instance is that input's value for one row; with several, each
    instance is an object naming every input (`{"city": "Oslo", "age": 31}`). Either way a
    value of an input of shape [-1, 1] may be a scalar (`per_row`).
    """
    if not isinstance(rows, list) or not rows:
        raise BadRequest(f"{where} must be a non-empty list of rows")
    specs = runtime.signature.inputs
    if len(specs) == 1 and not isinstance(rows[0], dict):
        return {specs[0].name: per_row(array_from_json(rows, specs[0], where), specs[0])}
    names = ", ".join(spec.name for spec in specs)
    if not all(isinstance(row, dict) for row in rows):
        raise BadRequest(
            f"{where}: {runtime.what} has several inputs ({names}); "
            "each row must be an object naming them"
        )
    known = {spec.name for spec in specs}
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - known)
        if unknown:
            raise BadRequest(
                f"{where}: row {i} names {', '.join(unknown)}, which {runtime.what} does not "
                f"take; its inputs: {names}"
            )
        absent = [spec.name for spec in specs if spec.name not in row]
        if absent:
            raise BadRequest(
                f"{where}: row {i} lacks {', '.join(absent)}; {runtime.what} needs every row "
                f"to name each of its inputs: {names}"
            )
    return {
        spec.name: per_row(
            array_from_json([row[spec.name] for row in rows], spec, f"{where} `{spec.name}`"),
            spec,
        )
        for spec in specs
    }


def columns(values: Any, runtime: Runtime, where: str) -> Tensors:
    """Columnar inputs (TF Serving / MLflow `inputs`): one tensor, or an object of them."""
    specs = runtime.signature.inputs
    if isinstance(values, dict):
        unknown = sorted(set(values) - {spec.name for spec in specs})
        if unknown:
            raise BadRequest(
                f"{where}: {runtime.what} has no input {', '.join(unknown)}; inputs: "
                + ", ".join(spec.name for spec in specs)
            )
        return {
            spec.name: per_row(
                array_from_json(values[spec.name], spec, f"{where} `{spec.name}`"), spec
            )
            for spec in specs
            if spec.name in values
        }
    if len(specs) != 1:
        raise BadRequest(
            f"{where}: {runtime.what} has several inputs; send an object naming them: "
            + ", ".join(spec.name for spec in specs)
        )
    return {specs[0].name: per_row(array_from_json(values, specs[0], where), specs[0])}


def to_json_value(array: np.ndarray) -> Any:
    """Nested lists; BYTES elements as text."""
    if array.dtype == object:
        flat = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def prediction_rows(outputs: Tensors) -> list[Any]:
    """Row format answers: one value per row, or one object per row with several outputs."""
    if len(outputs) == 1:
        (only,) = outputs.values()
        return list(to_json_value(only))
    lists = {name: to_json_value(array) for name, array in outputs.items()}
    count = len(next(iter(lists.values())))
    return [{name: values[i] for name, values in lists.items()} for i in range(count)]
