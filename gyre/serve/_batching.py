"""Per-version request batching: concurrent requests merge into one inference call.

The loop is greedy, like TensorFlow Serving's and Clipper's: while one batch runs, arriving
requests queue; when it finishes, everything queued (up to `max_batch_size` rows) becomes
the next batch. `max_batch_delay_ms` > 0 additionally waits up to that long for a batch to
fill when the model is idle. A batch whose measured inference time is under
`inline_inference_max_us` runs on the event loop (a thread hand-off would cost more than
the model); slower ones run on a worker thread, where onnxruntime releases the GIL.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from gyre.errors import BadRequest
from gyre.serve._runtime import ModelRuntime, Tensors


class _Pending:
    __slots__ = ("alone", "feeds", "future", "key", "rows")

    def __init__(
        self, feeds: Tensors, rows: int, key: tuple[object, ...], future: asyncio.Future[Tensors]
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.future = future
        self.alone = False


class Batcher:
    """Queues requests for one model version and runs them in merged batches."""

    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        max_batch_size: int,
        max_batch_delay_ms: float,
        inline_inference_max_us: float,
        executor: Executor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_delay_s = max(0.0, max_batch_delay_ms) / 1000.0
        self.inline_inference_max_us = inline_inference_max_us
        self._executor = executor
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._busy = False
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def submit(self, feeds: Tensors, rows: int) -> asyncio.Future[Tensors]:
        """Queue validated inputs; the future resolves to this request's outputs."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()
        key = tuple((name, array.shape[1:], array.dtype) for name, array in feeds.items())
        self._queue.append(_Pending(feeds, rows, key, future))
        self._queued_rows += rows
        self._idle.clear()
        if not self._busy:
            self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        full = self._queued_rows >= self.max_batch_size
        if self._scheduled is not None:
            if full and isinstance(self._scheduled, asyncio.TimerHandle):
                self._scheduled.cancel()
                self._scheduled = loop.call_soon(self._flush)
            return
        if full or self.max_batch_delay_s == 0.0:
            self._scheduled = loop.call_soon(self._flush)
        else:
            self._scheduled = loop.call_later(self.max_batch_delay_s, self._flush)

    def _take(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch = [first]
        rows = first.rows
        if self.runtime.batchable and not first.alone:
            while self._queue:
                nxt = self._queue[0]
                if nxt.alone or nxt.key != first.key or rows + nxt.rows > self.max_batch_size:
                    break
                batch.append(self._queue.popleft())
                rows += nxt.rows
        self._queued_rows -= rows
        return batch

    def _flush(self) -> None:
        self._scheduled = None
        # Requests whose caller went away (disconnect, timeout) are not computed.
        while self._queue and self._queue[0].future.done():
            self._queued_rows -= self._queue.popleft().rows
        if not self._queue:
            self._idle.set()
            return
        batch = self._take()
        feeds = (
            batch[0].feeds
            if len(batch) == 1
            else {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}
        )
        if self._on_batch is not None:
            self._on_batch(sum(p.rows for p in batch))
        loop = asyncio.get_running_loop()
        if self.runtime.mean_call_us <= self.inline_inference_max_us:
            try:
                outputs = self.runtime.run(feeds)
            except Exception as exc:
                self._fail(batch, exc)
            else:
                self._complete(batch, outputs)
            self._next(loop)
            return
        self._busy = True
        done = loop.run_in_executor(self._executor, self.runtime.run, feeds)
        done.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(self, batch: list[_Pending], done: asyncio.Future[Tensors]) -> None:
        self._busy = False
        exc = done.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._complete(batch, done.result())
        self._next(asyncio.get_running_loop())

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue:
            self._schedule(loop)
        else:
            self._idle.set()

    def _complete(self, batch: list[_Pending], outputs: Tensors) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({name: out[start:end] for name, out in outputs.items()})
            start = end

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        if len(batch) > 1:
            # One request's values may have broken the whole batch: run each alone, so
            # only that request fails.
            for pending in reversed(batch):
                pending.alone = True
                self._queue.appendleft(pending)
                self._queued_rows += pending.rows
            return
        pending = batch[0]
        if not pending.future.done():
            pending.future.set_exception(
                BadRequest(f"{self.runtime.what} could not compute this input: {exc}")
            )

    async def drain(self) -> None:
        """Wait until every queued request has been answered."""
        await self._idle.wait()
