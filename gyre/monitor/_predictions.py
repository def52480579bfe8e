"""The prediction log: what each answered prediction request was asked and answered, in
`predictions.db` under the home (its format: `_prediction_chunks.py`).

One record per answered request (a model's own answer or its default), sampled per model
(`prediction_log_sample`): its request id, when (seconds since the epoch), the consumer
("" when none are declared), the model, the version that answered and how it was chosen
(`route`: pinned, alias, champion, latest, split, shadow, bandit), the protocol, the
input (its tensors, or the feature vectors of an entity request), the output tensors,
the latency (from the request's arrival to its answer) and, for a default answer, why.
Requests that got no answer (a 4xx, a 504 without a default) are not predictions.

The request path only appends the record, a tuple holding references to its (never
mutated) arrays: no encoding, no I/O, no lock. Records wait in memory, up to
`buffer_bytes` of tensors together with those being written; a record past that is
dropped and counted (`on_drop`), so a slow or stuck disk costs records, never a
request's time. Every `flush_interval_s` the waiting records go to the log's one
thread, which encodes them a chunk at a time and writes them in one transaction.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gyre.features import ServedVector
from gyre.monitor._prediction_chunks import (
    CHUNK_RECORDS,
    connect,
    encode_chunk,
    prepare,
    write_chunks,
)

log = logging.getLogger("gyre.monitor")

# What a record costs besides its tensors' bytes, about (ids, names, the tuple)…
_RECORD_BYTES = 512
# …and per feature vector, in place of the input tensors.
_VECTOR_BYTES = 512
# A chunk holds at most this many bytes of records (and CHUNK_RECORDS records).
_CHUNK_BYTES = 8 * 1024 * 1024

Tensors = Mapping[str, np.ndarray]
# Told of records dropped: the model, how many, and why ("full" or "error").
Dropped = Callable[[str, int, str], None]


class PredictionLog:
    """The prediction log of one server process (several may share the file)."""

    def __init__(
        self,
        path: Path,
        *,
        max_records: int,
        buffer_bytes: int,
        on_drop: Dropped | None = None,
        flush_interval_s: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path
        self.max_records = max_records
        self.buffer_bytes = buffer_bytes
        self.flush_interval_s = flush_interval_s
        self._on_drop = on_drop
        self._rng = rng or random.Random()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gyre-prediction-log")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Any, ...]] = []
        # Bytes of the records waiting and of those being written (event-loop thread only).
        self._held_bytes = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, **options: Any) -> PredictionLog:
        """The log in `path`, its tables made (or a later gyre's file refused)."""
        prepare(path)
        return cls(path, **options)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="gyre-prediction-log")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a bug: say so, and keep the log going
                log.exception("could not hand prediction log records to the writer")

    async def close(self) -> None:
        """Write what waits, then stop."""
        if self._task is not None:
            self._task.cancel()
        await self.flush()
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)

    # -- the request path ----------------------------------------------------------------

    def sampled(self, share: float) -> bool:
        """Whether to log this request, for a model that logs `share` of them."""
        return share >= 1.0 or (share > 0.0 and self._rng.random() < share)

    def record(
        self,
        request_id: str,
        model: str,
        version: int,
        route: str,
        protocol: str,
        consumer: str,
        inputs: Tensors,
        outputs: Tensors,
        latency_s: float,
        default_reason: str | None = None,
        vectors: Sequence[ServedVector] | None = None,
    ) -> None:
        """Keep one answered request for the log (`vectors`: the feature vectors it was
        built from, logged instead of `inputs`); dropped when the buffer is full."""
        size = _RECORD_BYTES
        for array in outputs.values():
            size += array.nbytes
        if vectors is None:
            for array in inputs.values():
                size += array.nbytes
        else:
            size += _VECTOR_BYTES * len(vectors)
        if self._held_bytes + size > self.buffer_bytes:
            if self._on_drop is not None:
                self._on_drop(model, 1, "full")
            return
        self._held_bytes += size
        # In the order of _prediction_chunks.COLUMNS, then the size.
        self._waiting.append(
            (request_id, time.time(), consumer, model, version, route, protocol,
             "tensors" if vectors is None else "features",
             inputs if vectors is None else vectors, outputs, latency_s, default_reason, size)
        )  # fmt: skip

    # -- the log's thread ----------------------------------------------------------------

    async def flush(self) -> None:
        """Write the records waiting now; returns once every record made before the call
        is written (or dropped), those handed to the thread by earlier flushes too."""
        batch, self._waiting = self._waiting, []
        writing = asyncio.get_running_loop().run_in_executor(self._thread, self._write, batch)
        try:
            # Shielded: a flush cancelled at shutdown still writes its batch (`close` then
            # waits for the thread).
            failed: collections.Counter[str] = await asyncio.shield(writing)
        finally:
            self._held_bytes -= sum(record[-1] for record in batch)
        if self._on_drop is not None:
            for model, count in failed.items():
                self._on_drop(model, count, "error")

    def _write(self, batch: list[tuple[Any, ...]]) -> collections.Counter[str]:
        """Encode `batch` in chunks of one model each and store them in one transaction;
        returns what was dropped, by model (on a storage error: the batch, and the log
        goes on)."""
        if not batch:
            return collections.Counter()
        by_model: dict[str, list[tuple[Any, ...]]] = {}
        for record in batch:
            by_model.setdefault(record[3], []).append(record)
        chunks = []
        failed: collections.Counter[str] = collections.Counter()
        for model, records in by_model.items():
            for part in _parts(records):
                try:
                    chunks.append((model, len(part), encode_chunk(part)))
                except Exception as exc:  # a bug, which must not cost the other records
                    failed[model] += len(part)
                    log.error("could not encode %d prediction log records of %s (%s); they "
                              "are dropped", len(part), model, exc)  # fmt: skip
        if not chunks:
            return failed
        try:
            if self._conn is None:
                self._conn = connect(self.path)
            write_chunks(self._conn, chunks, self.max_records)
        except (sqlite3.Error, OSError):
            # Observability data: a full disk or a locked file must not stop serving.
            log.exception("could not write %d prediction log records; they are dropped",
                          len(batch))  # fmt: skip
            return collections.Counter(record[3] for record in batch)
        return failed


def _parts(records: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """`records` cut into chunks of at most CHUNK_RECORDS records and about _CHUNK_BYTES."""
    parts: list[list[tuple[Any, ...]]] = [[]]
    size = 0
    for record in records:
        if parts[-1] and (len(parts[-1]) == CHUNK_RECORDS or size + record[-1] > _CHUNK_BYTES):
            parts.append([])
            size = 0
        parts[-1].append(record)
        size += record[-1]
    return parts
