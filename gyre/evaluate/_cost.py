"""What a registry version costs to serve, measured on the server's own runtime.

A candidate is judged on its predictions and on what serving it takes. The cost is
measured by loading the version's ONNX graph exactly as the model server does: the same
`ModelRuntime` (`gyre.serve._runtime`: onnxruntime's session options, one intra-op thread
by default, no spinning, the CPU provider), the same input checks (`validate`), and the
version's decision threshold applied to its label when it has one. Then, on one thread:

1. warm-up: the server's own warm-up, then `WARM_UP_CALLS` calls on the measured rows
   (a graph that refuses them fails here, with onnxruntime's reason, before any timing);
2. single rows, for half of `seconds` (and at least `MIN_SINGLE_CALLS` calls): each call
   (validate, run, label) timed alone with `time.perf_counter_ns`; p50 and p99 are
   percentiles of those samples (linear interpolation, numpy's default);
3. batches of 32 rows, for the other half (at least `MIN_BATCH_CALLS` calls):
   rows per second = rows answered / the phase's wall time. A version whose signature
   has no batch dimension is answered one row a call by the server; so it is here.

The rows: the registry keeps no sample rows (a version records only their sha256,
`lineage.sample_sha256`), so they are `sample` when given (rows of the single input, or a
mapping of input name to rows; the first `MAX_ROWS`), else rows of zeros (empty strings
for BYTES). Rows are cycled: call i uses row i mod n, and a batch takes 32 consecutive
rows (wrapping around). Every input is prepared before the clock starts.

The numbers depend on the machine and on what else runs on it: compare candidates measured
on the same machine in one process, and never assert on them in a test. Only ONNX versions
are measured; a Python model runs in worker processes whose cost this does not see.

`gyre.serve` is imported when a measurement runs, not when this module is imported: the
evaluation side need not load the server's HTTP and gRPC stack to be imported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gyre.config import ServeConfig
from gyre.errors import InvalidModel
from gyre.registry import ModelVersion, Registry, decision_of
from gyre.types import DATATYPE_TO_NUMPY, Signature, zeros_for

if TYPE_CHECKING:
    from gyre.serve import ModelRuntime

BATCH_ROWS = 32
WARM_UP_CALLS = 10
MIN_SINGLE_CALLS = 20
MIN_BATCH_CALLS = 5
# Rows of `sample` used at most (the first ones): enough to vary the inputs.
MAX_ROWS = 1024

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ServingCost:
    """One version's serving cost: single-row latency percentiles (ms), throughput at
    batches of 32 (rows/s), the ONNX file's size (bytes), and how many single-row calls
    the percentiles come from."""

    p50_ms: float
    p99_ms: float
    rows_per_s_batch32: float
    file_bytes: int
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_serving_cost(
    registry: Registry,
    model: str,
    version: int,
    *,
    sample: np.ndarray | Mapping[str, np.ndarray] | None = None,
    seconds: float = 2.0,
    serve_config: ServeConfig | None = None,
) -> ServingCost:
    """Measure `model` version `version` as the server would serve it (see the module
    docstring), for about `seconds` in all. `serve_config`: the server's settings (its
    `onnx_intra_op_threads`); the defaults when None.

    `ModelNotFound` for a missing or deleted version, `ArtifactCorrupted` for an artifact
    that fails its hash check, `InvalidModel` for a Python model, a graph onnxruntime
    cannot load, or rows the version refuses."""
    if isinstance(seconds, bool) or not (
        isinstance(seconds, int | float) and 0 < seconds < float("inf")
    ):
        raise InvalidModel(f"seconds must be a positive number of seconds, not {seconds!r}")
    record = registry.metadata.version(model, version)
    if record.flavor == "python":
        raise InvalidModel(
            f"{record.what} is a Python model, served by worker processes: only ONNX "
            "versions have their serving cost measured"
        )
    data = registry.artifact(record)
    runtime = _runtime(record, data, serve_config or ServeConfig())
    single, batches, rows_per_batch = _inputs(record, runtime, sample)
    decision, _ = decision_of(record)  # one the server cannot use, it does not apply

    def answer(inputs: Feeds) -> None:
        feeds, _ = runtime.validate(inputs)
        outputs = runtime.run(feeds)
        if decision is not None:
            decision.apply(outputs)

    runtime.warm_up()
    try:
        for i in range(WARM_UP_CALLS):
            answer(single[i % len(single)])
            answer(batches[i % len(batches)])
    except Exception as exc:  # onnxruntime's errors, and gyre's BadRequest for the rows
        raise InvalidModel(
            f"{record.what} refuses the rows its serving cost is measured on ({exc}); "
            "pass `sample` rows like the ones it is served"
        ) from None
    half_ns = int(seconds / 2 * 1e9)
    samples = _timed_calls(answer, single, half_ns)
    rows, elapsed_ns = _batched_rows(answer, batches, rows_per_batch, half_ns)
    p50, p99 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 99]) / 1e6
    return ServingCost(
        p50_ms=float(p50),
        p99_ms=float(p99),
        rows_per_s_batch32=rows / (elapsed_ns / 1e9),
        file_bytes=len(data),
        runs=len(samples),
    )


def _runtime(record: ModelVersion, data: bytes, config: ServeConfig) -> ModelRuntime:
    """The server's runtime for the version (`ModelRepository._runtime` makes the same)."""
    from gyre.serve._runtime import ModelRuntime

    try:
        return ModelRuntime(
            record.model,
            record.version,
            data,
            record.signature,
            intra_op_threads=config.onnx_intra_op_threads,
        )
    except Exception as exc:  # onnxruntime's errors derive from Exception alone
        raise InvalidModel(
            f"{record.what}: onnxruntime cannot load its ONNX graph ({exc}); the server "
            "would not serve it either"
        ) from None


def _timed_calls(answer: Any, inputs: list[Feeds], budget_ns: int) -> list[int]:
    samples: list[int] = []
    clock = time.perf_counter_ns
    stop = clock() + budget_ns
    i = 0
    while i < MIN_SINGLE_CALLS or clock() < stop:
        started = clock()
        answer(inputs[i % len(inputs)])
        samples.append(clock() - started)
        i += 1
    return samples


def _batched_rows(
    answer: Any, batches: list[Feeds], rows_per_call: int, budget_ns: int
) -> tuple[int, int]:
    """Rows answered in batches, and the nanoseconds they took."""
    clock = time.perf_counter_ns
    started = clock()
    stop = started + budget_ns
    rows = calls = 0
    while calls < MIN_BATCH_CALLS or clock() < stop:
        batch = batches[calls % len(batches)]
        answer(batch)
        rows += rows_per_call
        calls += 1
    return rows, clock() - started


def _rows_of(feeds: Feeds) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 0


def _inputs(
    record: ModelVersion,
    runtime: ModelRuntime,
    sample: np.ndarray | Mapping[str, np.ndarray] | None,
) -> tuple[list[Feeds], list[Feeds], int]:
    """Single-row feeds, feeds of `BATCH_ROWS` rows and the rows in each, prepared before
    any timing. A version the server cannot batch (no batch dimension) gets the whole
    sample, or its one row of zeros, as its one request, in both phases."""
    if not runtime.batchable:
        whole = _table(record, sample) if sample is not None else zeros_for(record.signature)
        return [whole], [whole], 1
    table = _table(record, sample) if sample is not None else _zeros(record.signature)
    n = _rows_of(table)
    if n == 0:
        raise InvalidModel(f"the sample rows for {record.what} hold no row")
    kept = min(n, MAX_ROWS)
    single = [
        {k: np.ascontiguousarray(v[i : i + 1]) for k, v in table.items()} for i in range(kept)
    ]
    batches = []
    for b in range(max(1, kept // BATCH_ROWS)):
        take = np.arange(b * BATCH_ROWS, (b + 1) * BATCH_ROWS) % n
        batches.append({k: np.ascontiguousarray(v[take]) for k, v in table.items()})
    return single, batches, BATCH_ROWS


def _table(record: ModelVersion, sample: np.ndarray | Mapping[str, np.ndarray]) -> Feeds:
    """`sample` as rows per input name, in each input's datatype where it casts."""
    inputs = record.signature.inputs
    if isinstance(sample, Mapping):
        table = {name: np.asarray(rows) for name, rows in sample.items()}
    elif len(inputs) == 1:
        table = {inputs[0].name: np.asarray(sample)}
    else:
        raise InvalidModel(
            f"{record.what} takes {len(inputs)} inputs "
            f"({', '.join(s.name for s in inputs)}): give `sample` as a mapping of input "
            "name to rows"
        )
    lengths = {name: rows.shape[0] if rows.ndim else 0 for name, rows in table.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidModel(
            f"sample inputs for {record.what} must have the same number of rows, got {lengths}"
        )
    for spec in inputs:  # as a client sends them: the runtime casts what it would cast
        rows = table.get(spec.name)
        want = DATATYPE_TO_NUMPY[spec.datatype]
        if rows is not None and rows.dtype.kind == "f" and want.kind == "f":
            table[spec.name] = rows.astype(want)
    return table


def _zeros(signature: Signature) -> Feeds:
    """`BATCH_ROWS` rows of zeros (empty strings for BYTES) per input; dimensions of any
    size other than the first are 1, as the server's warm-up has them."""
    table = {}
    for spec in signature.inputs:
        dims = [1 if d < 0 else d for d in spec.shape]
        if spec.batched:
            dims[0] = BATCH_ROWS
        if spec.datatype == "BYTES":
            table[spec.name] = np.full(dims, "", dtype=object)
        else:
            table[spec.name] = np.zeros(dims, dtype=DATATYPE_TO_NUMPY[spec.datatype])
    return table
