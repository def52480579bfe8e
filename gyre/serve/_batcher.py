"""Per-version request batching under deadlines (Clipper's model queue).

Requests wait in a deadline-ordered queue. When the model is idle, the batch-size policy
(`_batching.AdaptiveBatchPolicy`) picks how many rows the earliest deadline allows, and the
queue yields that many compatible requests as one inference call. While a batch runs,
arrivals queue and form the next one. `max_batch_delay_ms` > 0 additionally waits up to
that long for a batch to fill when the model is idle.

Every request carries a timer at its deadline: if no answer exists by then, its future
fails with `DeadlineExceeded` (the server answers the model's default, or 504) and the
request is skipped if still queued. A request predicted to miss its deadline even alone is
answered at once rather than wasting inference. Admission control refuses a request with
`Overloaded` when the measured service times say the queue cannot meet its deadline.

A batch whose measured inference time is under `inline_inference_max_us` runs on the event
loop (a thread hand-off would cost more than the model); slower ones run on a worker
thread, where onnxruntime releases the GIL. When whole batches wait, inline ones run back to
back for up to FLUSH_BUDGET_S before the loop gets a turn. Batch durations, which the
policy learns from, are measured with perf_counter: uvloop's clock ticks in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from gyre.config import ModelServeConfig
from gyre.errors import BadRequest, DeadlineExceeded, GyreError, Overloaded
from gyre.serve._batching import AdaptiveBatchPolicy
from gyre.serve._queue import DeadlineQueue
from gyre.serve._runtime import Runtime, Tensors

# The longest one flush runs inline batches back to back before it lets the event loop read
# and answer again. Back to back rather than one per loop turn, a server process spent 15%
# less CPU per 32-row request on the serving benchmark (requests queued batches deep).
FLUSH_BUDGET_S = 0.001


# Told of each batch computed: requests, rows, the requests' summed queueing time, and the
# batch's input merging, model and output splitting times (seconds).
Executed = Callable[[int, int, float, float, float, float], None]


class _Pending:
    __slots__ = ("alone", "arrived", "deadline", "feeds", "future", "key", "rows", "timer")

    def __init__(
        self,
        feeds: Tensors,
        rows: int,
        key: tuple[object, ...],
        future: asyncio.Future[Tensors],
        deadline: float,
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.future = future
        self.deadline = deadline
        self.alone = False
        self.timer: asyncio.TimerHandle | None = None
        self.arrived = time.perf_counter()


def _expire(pending: _Pending, reason: str) -> None:
    if not pending.future.done():
        pending.future.set_exception(DeadlineExceeded(reason))


class Batcher:
    """Queues requests for one model version and runs them in merged batches."""

    def __init__(
        self,
        runtime: Runtime,
        settings: ModelServeConfig,
        *,
        inline_inference_max_us: float,
        executor: Executor,
        max_queue_rows: int = 100_000,
        on_batch: Callable[[int], None] | None = None,
        on_executed: Executed | None = None,
    ) -> None:
        self.runtime = runtime
        self.policy = AdaptiveBatchPolicy(
            settings.max_batch_size,
            backoff_factor=settings.batch_backoff_factor,
            increase_rows=settings.batch_increase_rows,
            samples=settings.latency_samples,
            adaptive=settings.adaptive_batching,
        )
        self.max_batch_delay_s = max(0.0, settings.max_batch_delay_ms) / 1000.0
        self.inline_inference_max_us = inline_inference_max_us
        self.max_queue_rows = max_queue_rows
        self._executor = executor
        self._on_batch = on_batch
        self._on_executed = on_executed
        self._queue: DeadlineQueue[_Pending] = DeadlineQueue()
        self._busy = False
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Validated inputs of a signature without free dimensions past the first all have
        # the same row shape and dtype: any two requests can then share a batch.
        self._uniform = all(-1 not in spec.shape[1:] for spec in runtime.signature.inputs)

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def submit(self, feeds: Tensors, rows: int, deadline: float) -> asyncio.Future[Tensors]:
        """Queue validated inputs to be answered by `deadline` (event-loop time); the future
        resolves to this request's outputs or fails with `DeadlineExceeded`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._admit(now, rows, deadline)
        future: asyncio.Future[Tensors] = loop.create_future()
        key = (
            ()
            if self._uniform
            else tuple((name, array.shape[1:], array.dtype) for name, array in feeds.items())
        )
        pending = _Pending(feeds, rows, key, future, deadline)
        # A request answered within this turn of the event loop (an idle model that runs
        # inline) needs no deadline timer; one that may wait on anything else gets one.
        if self._busy or self.max_batch_delay_s > 0.0 or not self._inline():
            self._arm(loop, pending)
        self._queue.push(deadline, rows, pending)
        self._idle.clear()
        if not self._busy:
            self._schedule(loop)
        return future

    def _inline(self) -> bool:
        runtime = self.runtime
        return runtime.inline_allowed and runtime.mean_call_us < self.inline_inference_max_us

    def _arm(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        if pending.timer is None:
            pending.timer = loop.call_at(
                pending.deadline,
                _expire,
                pending,
                f"deadline of {self.runtime.what} passed before an answer",
            )

    def _admit(self, now: float, rows: int, deadline: float) -> None:
        # Shedding is for a queue that cannot keep up. A request that fits in the next
        # batch is admitted: if even that would miss its deadline, it gets the default
        # (or 504) instead. Into an empty queue, any request is the next batch.
        queued = self._queue.rows + rows
        fits_next_batch = not self._queue or queued <= self.policy.cap or not self.policy.calibrated
        if fits_next_batch and queued <= self.max_queue_rows:
            return
        wait_s = self.policy.drain_s(queued)
        if queued > self.max_queue_rows or now + wait_s > deadline:
            raise Overloaded(
                f"{self.runtime.what} is overloaded: {queued} rows queued, predicted wait "
                f"{wait_s * 1000:.0f} ms exceeds the request's deadline; retry later",
                retry_after_s=max(1, math.ceil(wait_s)),
            )

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        full = self._queue.rows >= self.policy.max_batch_size
        if self._scheduled is not None:
            if full and isinstance(self._scheduled, asyncio.TimerHandle):
                self._scheduled.cancel()
                self._scheduled = loop.call_soon(self._flush)
            return
        if full or self.max_batch_delay_s == 0.0:
            self._scheduled = loop.call_soon(self._flush)
        else:
            # Wait for the batch to fill, but never so long that the earliest request
            # could no longer be computed in time.
            latest = self._queue.earliest_deadline() - self.policy.predict_s(self._queue.rows)
            when = min(loop.time() + self.max_batch_delay_s, latest)
            self._scheduled = loop.call_at(when, self._flush)

    def _fits(self, first: _Pending, other: _Pending) -> bool:
        return (
            self.runtime.batchable
            and not first.alone
            and not other.alone
            and (other.key == first.key)
        )

    def _flush(self) -> None:
        """Run batches while the model answers inline and whole batches are waiting, for up
        to FLUSH_BUDGET_S; then give the event loop back (or leave a batch on a thread)."""
        self._scheduled = None
        loop = asyncio.get_running_loop()
        until = time.perf_counter() + FLUSH_BUDGET_S
        while self._run_batch(loop):
            more = self._queue and (
                self.max_batch_delay_s == 0.0 or self._queue.rows >= self.policy.max_batch_size
            )
            if not more or time.perf_counter() >= until:
                break
        if not self._busy:
            self._next(loop)

    def _run_batch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take the next batch and run it: True when it ran inline (another may follow),
        False when nothing was left to run or the batch went to a thread."""
        now = loop.time()
        # Requests already answered (deadline passed, caller gone) need no work; requests
        # that cannot finish in time even alone are answered now instead of computed late.
        queue = self._queue
        while queue:
            head = queue.peek()
            if head.future.done():
                queue.pop()
            elif self.policy.calibrated and now + self.policy.predict_s(head.rows) > head.deadline:
                _expire(queue.pop(), f"{self.runtime.what} cannot answer before the deadline")
            else:
                break
        if not queue:
            return False
        size = self.policy.batch_size(now, queue.earliest_deadline())
        batch = queue.take(size, self._fits)
        rows = sum(p.rows for p in batch)
        # The cap held this batch back if the next waiting request did not fit in it.
        cap_limited = bool(queue) and rows + queue.peek().rows > size
        if self._on_batch is not None:
            self._on_batch(rows)
        earliest = batch[0].deadline  # the queue hands requests out in deadline order
        merging = time.perf_counter()
        try:
            feeds = (
                batch[0].feeds
                if len(batch) == 1
                else {
                    name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds
                }
            )
        except Exception as exc:  # requests that cannot be merged run alone; none is left waiting
            self._fail(batch, exc)
            return True
        started = time.perf_counter()
        if self._inline():
            try:
                outputs = self.runtime.run(feeds)
            except Exception as exc:
                self._fail(batch, exc)
            else:
                ran = time.perf_counter()
                self._learn(rows, started, ran, earliest, cap_limited)
                self._complete(batch, outputs, merging, started, ran)
            return True
        self._busy = True
        # From now on requests wait on a thread: every one of them needs its timer.
        for pending in batch:
            self._arm(loop, pending)
        for pending in queue:
            self._arm(loop, pending)
        done = loop.run_in_executor(self._executor, self.runtime.run, feeds)
        done.add_done_callback(
            lambda f: self._finished(batch, f, rows, merging, started, earliest, cap_limited)
        )
        return False

    def _learn(
        self, rows: int, started: float, ran: float, earliest: float, cap_limited: bool
    ) -> None:
        # Durations by perf_counter: uvloop's loop clock ticks in whole milliseconds.
        seconds = ran - started
        met_deadline = asyncio.get_running_loop().time() <= earliest
        self.policy.record(rows, seconds, met_deadline=met_deadline, cap_limited=cap_limited)

    def _finished(
        self,
        batch: list[_Pending],
        done: asyncio.Future[Tensors],
        rows: int,
        merging: float,
        started: float,
        earliest: float,
        cap_limited: bool,
    ) -> None:
        self._busy = False
        exc = done.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            # When the thread finished is not known here: the call's end as the loop sees it.
            ran = time.perf_counter()
            self._learn(rows, started, ran, earliest, cap_limited)
            self._complete(batch, done.result(), merging, started, ran)
        self._next(asyncio.get_running_loop())

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue:
            self._schedule(loop)
        else:
            self._idle.set()

    @staticmethod
    def _resolve(pending: _Pending, outputs: Tensors) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_result(outputs)

    def _complete(
        self, batch: list[_Pending], outputs: Tensors, merging: float, started: float, ran: float
    ) -> None:
        """Answer each request of the batch with its rows of `outputs`; `merging`, `started`
        and `ran`: when the batch's inputs began to be merged, the model to run, and when
        it returned."""
        if len(batch) == 1:
            self._resolve(batch[0], outputs)
        else:
            start = 0
            for pending in batch:
                end = start + pending.rows
                self._resolve(pending, {name: out[start:end] for name, out in outputs.items()})
                start = end
        if self._on_executed is not None:
            self._on_executed(
                len(batch),
                sum(p.rows for p in batch),
                sum(merging - p.arrived for p in batch),
                started - merging,
                ran - started,
                time.perf_counter() - ran,
            )

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        if isinstance(exc, GyreError):  # the model as a whole failed (e.g. worker died)
            for pending in batch:
                if pending.timer is not None:
                    pending.timer.cancel()
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if len(batch) > 1:
            # One request's values may have broken the whole batch: run each alone, so
            # only that request fails.
            for pending in batch:
                pending.alone = True
                self._queue.push(pending.deadline, pending.rows, pending)
            return
        pending = batch[0]
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_exception(
                BadRequest(f"{self.runtime.what} could not compute this input: {exc}")
            )

    async def drain(self) -> None:
        """Wait until every queued request has been answered."""
        await self._idle.wait()
