"""One model version in onnxruntime: input validation against the signature, inference."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from gyre.errors import BadRequest
from gyre.types import DATATYPE_TO_NUMPY, Signature, TensorSpec, zeros_for

Tensors = dict[str, np.ndarray]

log = logging.getLogger("gyre.serve")


class Runtime(Protocol):
    """What a batcher needs of a model: ONNX sessions and Python workers both provide it."""

    model: str
    version: int
    signature: Signature
    batchable: bool
    inline_allowed: bool
    mean_call_us: float

    @property
    def what(self) -> str: ...

    def validate(self, inputs: dict[str, np.ndarray]) -> tuple[Tensors, int]: ...

    def run(self, feeds: Tensors) -> Tensors: ...


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class SignatureRuntime:
    """What every runtime shares: the checks against the version's signature, and timing.
    Subclasses implement `run`."""

    inline_allowed = True

    def __init__(self, model: str, version: int, signature: Signature) -> None:
        self.model = model
        self.version = version
        self.signature = signature
        self.batchable = all(s.batched for s in signature.inputs) and all(
            s.batched for s in signature.outputs
        )
        # Exponentially weighted mean of one inference call, in microseconds.
        self.mean_call_us = 0.0
        self._input_names = frozenset(spec.name for spec in signature.inputs)
        # Per input: its spec, the dtype requests are cast to, and the dimensions that
        # must match exactly (index, size); -1 dimensions take any size.
        self._checks = [
            (
                spec,
                DATATYPE_TO_NUMPY[spec.datatype],
                [(i, d) for i, d in enumerate(spec.shape) if d != -1],
            )
            for spec in signature.inputs
        ]

    @property
    def what(self) -> str:
        return f"model `{self.model}` version {self.version}"

    def expected(self, spec: TensorSpec) -> str:
        return f"{spec.datatype} {_shape_text(spec.shape)}"

    def _expected_inputs(self) -> str:
        return ", ".join(f"`{s.name}` {self.expected(s)}" for s in self.signature.inputs)

    def validate(self, inputs: Mapping[str, np.ndarray]) -> tuple[Tensors, int]:
        """Check names, datatypes and shapes; returns the inputs cast to the model's dtypes
        and the number of rows (batch size; 1 for an unbatched model)."""
        if not self._input_names.issuperset(inputs):
            unknown = sorted(set(inputs) - self._input_names)
            raise BadRequest(
                f"{self.what} has no input {', '.join(f'`{n}`' for n in unknown)}; "
                f"it expects {self._expected_inputs()}"
            )
        feeds: Tensors = {}
        rows: int | None = None
        for spec, want, fixed in self._checks:
            array = inputs.get(spec.name)
            if array is None:
                raise BadRequest(
                    f"{self.what} needs input `{spec.name}`; it expects {self._expected_inputs()}"
                )
            if array.dtype != want or spec.datatype == "BYTES":
                array = self._cast(spec, array)
            feeds[spec.name] = array
            shape = array.shape
            if len(shape) != len(spec.shape) or any(shape[i] != d for i, d in fixed):
                raise BadRequest(
                    f"input `{spec.name}` has shape {_shape_text(shape)}; {self.what} "
                    f"expects {self.expected(spec)} (-1: any size)"
                )
            if spec.batched:
                if rows is not None and shape[0] != rows:
                    raise BadRequest(
                        f"inputs of {self.what} must have the same number of rows; "
                        f"`{spec.name}` has {shape[0]}, another has {rows}"
                    )
                rows = shape[0]
        return feeds, rows if rows is not None else 1

    def _cast(self, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
        want = DATATYPE_TO_NUMPY[spec.datatype]
        if array.dtype == want and spec.datatype != "BYTES":
            return array
        if spec.datatype == "BYTES":
            if array.dtype.kind in "OUS":
                return _as_text(array, spec.name)
        elif array.dtype.kind in "iuf" and np.can_cast(array.dtype, want, casting="same_kind"):
            # Numbers of the same kind or a safer one (FP64 -> FP32, INT32 -> FP32) are cast;
            # narrowing across kinds (FP32 -> INT64) would change values and is refused.
            if want.kind in "iu" and not np.can_cast(array.dtype, want, casting="safe"):
                # Integers to a narrower or signed type (UINT64 -> INT64, INT64 -> INT32)
                # wrap around without a word: their values must fit.
                limits = np.iinfo(want.type)  # type: ignore[type-var]
                if array.size and (array.min() < limits.min or array.max() > limits.max):
                    raise BadRequest(
                        f"input `{spec.name}` has values beyond the range of {spec.datatype}"
                    )
            try:
                with np.errstate(over="raise"):
                    return array.astype(want)
            except FloatingPointError:
                raise BadRequest(
                    f"input `{spec.name}` has values beyond the range of {spec.datatype}"
                ) from None
        raise BadRequest(
            f"input `{spec.name}` has datatype {_datatype_name(array)}; {self.what} expects "
            f"{self.expected(spec)}, and {_datatype_name(array)} cannot be converted to "
            f"{spec.datatype} without changing values"
        )

    def run(self, feeds: Tensors) -> Tensors:
        raise NotImplementedError

    def _timed(self, started: float) -> None:
        elapsed_us = (time.perf_counter() - started) * 1e6
        self.mean_call_us = (
            elapsed_us if self.mean_call_us == 0.0 else 0.9 * self.mean_call_us + 0.1 * elapsed_us
        )

    def warm_up(self, calls: int = 3) -> None:
        """Run a few calls on zeros so the first request does not pay for lazy setup."""
        feeds = zeros_for(self.signature)
        for _ in range(calls):
            self.run(feeds)


class ModelRuntime(SignatureRuntime):
    """An onnxruntime session for one version."""

    def __init__(
        self,
        model: str,
        version: int,
        onnx_bytes: bytes,
        signature: Signature,
        *,
        intra_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        super().__init__(model, version, signature)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning threads would steal the cores the HTTP event loop runs on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [spec.name for spec in signature.outputs]

    def warm_up(self, calls: int = 3) -> None:
        """Warm up on zeros, if the graph takes them. Some refuse them by design (a
        OneHotEncoder that raises on an unknown category refuses the empty string): such
        a version is served cold, its first request paying the setup, rather than not at
        all; a request's own values it refuses are a 400 (`Batcher._fail`)."""
        try:
            super().warm_up(calls)
        except Exception as exc:  # onnxruntime's errors derive from Exception alone
            log.info("%s is served without warm-up: it refuses a row of zeros (%s)", self.what, exc)

    def run(self, feeds: Tensors) -> Tensors:
        start = time.perf_counter()
        outputs = self._session.run(self._output_names, feeds)
        self._timed(start)
        return dict(zip(self._output_names, outputs, strict=True))


def _datatype_name(array: np.ndarray) -> str:
    from gyre.types import datatype_of

    try:
        return datatype_of(array)
    except KeyError:
        return str(array.dtype)


def _as_text(array: np.ndarray, name: str) -> np.ndarray:
    """onnxruntime's string tensors hold `str`; BYTES elements arrive as UTF-8 `bytes`."""
    try:
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"input `{name}`: a BYTES element is not UTF-8 text ({exc})") from None
    return np.array(flat, dtype=object).reshape(array.shape)
