import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uvloop
from sklearn.pipeline import Pipeline

from gyre.config import ModelServeConfig
from gyre.errors import BadRequest, DeadlineExceeded, Overloaded
from gyre.registry import Registry
from gyre.serve import Batcher, ModelRuntime
from gyre.serve._batcher import FLUSH_BUDGET_S
from gyre.serve._runtime import SignatureRuntime
from gyre.types import Signature, TensorSpec


class CountingRuntime(ModelRuntime):
    """The real runtime, recording the rows of each call, optionally slowed down."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[int] = []
        self.delay_s = 0.0

    def run(self, feeds: dict) -> dict:
        self.calls.append(len(feeds["X"]))
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().run(feeds)


@pytest.fixture
def runtime(registry: Registry, iris_classifier: Pipeline, iris: tuple) -> CountingRuntime:
    mv = registry.publish("iris", iris_classifier, iris[0])
    return CountingRuntime("iris", 1, registry.artifact(mv), mv.signature)


def _batcher(runtime: ModelRuntime, inline_us: float = 1e9, **settings: object) -> Batcher:
    options: dict[str, object] = {"max_batch_size": 64, "adaptive_batching": False}
    options.update(settings)
    return Batcher(
        runtime,
        ModelServeConfig(**options),  # type: ignore[arg-type]
        inline_inference_max_us=inline_us,
        executor=ThreadPoolExecutor(1),
    )


def _feeds(rows: np.ndarray) -> dict:
    return {"X": rows.astype(np.float32)}


def _submit(batcher: Batcher, rows: np.ndarray, deadline_s: float = 10.0) -> asyncio.Future:
    deadline = asyncio.get_running_loop().time() + deadline_s
    return batcher.submit(_feeds(rows), len(rows), deadline)


async def _submit_all(batcher: Batcher, chunks: list[np.ndarray]) -> list[dict]:
    return list(await asyncio.gather(*(_submit(batcher, c) for c in chunks)))


@pytest.mark.parametrize("inline_us", [1e9, 0.0], ids=["inline", "thread"])
def test_concurrent_requests_merge_and_split_back_in_order(
    runtime: CountingRuntime, iris: tuple, inline_us: float
) -> None:
    chunks = [iris[0][i : i + 1 + i % 3] for i in range(0, 60, 4)]
    results = asyncio.run(_submit_all(_batcher(runtime, inline_us), chunks))
    assert runtime.calls == [sum(len(c) for c in chunks)]
    for chunk, result in zip(chunks, results, strict=True):
        expected = runtime.run(_feeds(chunk))
        np.testing.assert_array_equal(result["label"], expected["label"])
        np.testing.assert_allclose(result["probabilities"], expected["probabilities"], atol=1e-6)


def test_batches_never_exceed_max_batch_size(runtime: CountingRuntime, iris: tuple) -> None:
    chunks = [iris[0][i : i + 3] for i in range(0, 30, 3)]
    asyncio.run(_submit_all(_batcher(runtime, max_batch_size=7), chunks))
    assert runtime.calls == [6, 6, 6, 6, 6]


def test_a_request_larger_than_max_batch_size_runs_alone(
    runtime: CountingRuntime, iris: tuple
) -> None:
    chunks = [iris[0][:1], iris[0][:20], iris[0][:1]]
    asyncio.run(_submit_all(_batcher(runtime, max_batch_size=8), chunks))
    assert sorted(runtime.calls) == [1, 1, 20]


class RowSums(SignatureRuntime):
    """A model of any row width: each row's sum; it records each call's input shape."""

    def __init__(self) -> None:
        x = TensorSpec(name="X", datatype="FP32", shape=(-1, -1))
        y = TensorSpec(name="Y", datatype="FP32", shape=(-1,))
        super().__init__("sums", 1, Signature(inputs=(x,), outputs=(y,)))
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: dict) -> dict:
        self.shapes.append(feeds["X"].shape)
        return {"Y": feeds["X"].sum(axis=1)}


def test_only_requests_of_one_row_shape_share_a_batch() -> None:
    runtime = RowSums()
    chunks = [np.ones((1, 3)), np.ones((2, 5)), np.ones((2, 3)), np.ones((1, 5))]

    async def scenario() -> list[dict]:
        batcher = _batcher(runtime)
        loop = asyncio.get_running_loop()
        futures = [batcher.submit(*runtime.validate(_feeds(c)), loop.time() + 10) for c in chunks]
        return list(await asyncio.wait_for(asyncio.gather(*futures), 5))

    results = asyncio.run(scenario())
    assert sorted(runtime.shapes) == [(3, 3), (3, 5)]
    assert [list(r["Y"]) for r in results] == [[3.0], [5.0, 5.0], [3.0, 3.0], [5.0]]


def test_requests_arriving_while_a_batch_runs_form_the_next_batch(
    runtime: CountingRuntime, iris: tuple
) -> None:
    async def scenario() -> None:
        batcher = _batcher(runtime, inline_us=0.0)  # thread: the loop stays free
        first = _submit(batcher, iris[0][:1])
        await asyncio.sleep(0)  # the first batch (1 row) starts
        later = [_submit(batcher, iris[0][:2]) for _ in range(5)]
        await asyncio.gather(first, *later)

    asyncio.run(scenario())
    assert runtime.calls == [1, 10]


def _done_after_one_turn(batcher: Batcher, chunks: list[np.ndarray]) -> list[bool]:
    """Which requests are answered after one turn of the loop, then wait for the rest."""

    async def scenario() -> list[bool]:
        futures = [_submit(batcher, chunk) for chunk in chunks]
        await asyncio.sleep(0)  # the flush runs in this turn
        done = [future.done() for future in futures]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        return done

    return asyncio.run(scenario())


def test_waiting_inline_batches_run_back_to_back(runtime: CountingRuntime, iris: tuple) -> None:
    chunks = [iris[0][i : i + 3] for i in range(0, 15, 3)]
    done = _done_after_one_turn(_batcher(runtime, max_batch_size=6), chunks)
    assert done == [True] * 5
    assert runtime.calls == [6, 6, 3]


def test_a_flush_gives_the_loop_back_after_its_budget(
    runtime: CountingRuntime, iris: tuple
) -> None:
    runtime.delay_s = 2 * FLUSH_BUDGET_S
    chunks = [iris[0][i : i + 3] for i in range(0, 15, 3)]
    done = _done_after_one_turn(_batcher(runtime, max_batch_size=6), chunks)
    assert done == [True, True, False, False, False]
    assert runtime.calls == [6, 6, 3]


def test_with_a_delay_a_partial_batch_still_waits_to_fill(
    runtime: CountingRuntime, iris: tuple
) -> None:
    chunks = [iris[0][i : i + 3] for i in range(0, 9, 3)]
    batcher = _batcher(runtime, max_batch_size=6, max_batch_delay_ms=50)
    assert _done_after_one_turn(batcher, chunks) == [True, True, False]
    assert runtime.calls == [6, 3]


def test_batch_durations_are_learned_finer_than_the_loop_clock(
    runtime: CountingRuntime, iris: tuple
) -> None:
    async def scenario() -> Batcher:
        batcher = _batcher(runtime)
        for _ in range(10):
            await _submit(batcher, iris[0][:1])
        return batcher

    # uvloop's clock ticks in milliseconds; a 1-row batch takes microseconds, which that
    # clock reads as 0 nearly every time.
    batcher = uvloop.run(scenario())
    assert 0 < batcher.policy.predict_s(1) < 0.01


def test_delay_waits_for_a_batch_to_fill(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> None:
        batcher = _batcher(runtime, max_batch_delay_ms=50.0)
        first = _submit(batcher, iris[0][:1])
        await asyncio.sleep(0.01)
        await asyncio.gather(first, _submit(batcher, iris[0][:1]))

    asyncio.run(scenario())
    assert runtime.calls == [2]


def test_a_full_batch_does_not_wait_for_the_delay(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> float:
        batcher = _batcher(runtime, max_batch_delay_ms=10_000.0, max_batch_size=2)
        start = time.monotonic()
        await asyncio.gather(*(_submit(batcher, iris[0][:1]) for _ in range(2)))
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 5.0
    assert runtime.calls == [2]


def test_a_failing_request_fails_alone(runtime: CountingRuntime, iris: tuple) -> None:
    class Picky(CountingRuntime):
        def run(self, feeds: dict) -> dict:
            if np.any(feeds["X"] < 0):
                raise RuntimeError("negative values")
            return super().run(feeds)

    runtime.__class__ = Picky

    async def scenario() -> list:
        batcher = _batcher(runtime)
        futures = [_submit(batcher, iris[0][:2]), _submit(batcher, -iris[0][:1])]
        return await asyncio.gather(*futures, return_exceptions=True)

    ok, failed = asyncio.run(scenario())
    assert len(ok["label"]) == 2
    assert isinstance(failed, BadRequest)
    assert "could not compute this input: negative values" in str(failed)


def test_a_request_past_its_deadline_is_answered_by_the_deadline(
    runtime: CountingRuntime, iris: tuple
) -> None:
    runtime.delay_s = 0.3

    order: list[str] = []

    async def scenario() -> list[object]:
        batcher = _batcher(runtime, inline_us=0.0)
        slow = _submit(batcher, iris[0][:1], deadline_s=5.0)  # occupies the model 0.3 s
        await asyncio.sleep(0)
        # Admitted: the policy has no timings yet, so it cannot predict the wait.
        hurried = _submit(batcher, iris[0][:1], deadline_s=0.05)
        slow.add_done_callback(lambda _: order.append("slow"))
        hurried.add_done_callback(lambda _: order.append("hurried"))
        return await asyncio.gather(slow, hurried, return_exceptions=True)

    slow, hurried = asyncio.run(scenario())
    assert isinstance(slow, dict)
    assert isinstance(hurried, DeadlineExceeded)
    assert order == ["hurried", "slow"]  # answered at its deadline, not when the model got free
    assert runtime.calls == [1]  # the expired request was never computed


def test_queue_serves_the_earliest_deadline_first(runtime: CountingRuntime, iris: tuple) -> None:
    runtime.delay_s = 0.05
    order: list[str] = []

    async def scenario() -> None:
        batcher = _batcher(runtime, inline_us=0.0, max_batch_size=1)
        first = _submit(batcher, iris[0][:1])
        await asyncio.sleep(0)
        late = _submit(batcher, iris[0][:1], deadline_s=9.0)
        soon = _submit(batcher, iris[0][:1], deadline_s=3.0)
        late.add_done_callback(lambda _: order.append("late"))
        soon.add_done_callback(lambda _: order.append("soon"))
        await asyncio.gather(first, late, soon)

    asyncio.run(scenario())
    assert order == ["soon", "late"]


def test_admission_control_sheds_what_the_queue_cannot_serve_in_time(
    runtime: CountingRuntime, iris: tuple
) -> None:
    runtime.delay_s = 0.05

    async def scenario() -> tuple[int, list[BaseException]]:
        batcher = _batcher(runtime, inline_us=0.0, max_batch_size=1)
        await _submit(batcher, iris[0][:1])  # calibrates: ~50 ms per 1-row batch
        accepted, shed = [], []
        for _ in range(20):
            try:
                accepted.append(_submit(batcher, iris[0][:1], deadline_s=0.3))
            except Overloaded as exc:
                shed.append(exc)
        results = await asyncio.gather(*accepted, return_exceptions=True)
        return sum(isinstance(r, dict) for r in results), shed

    answered, shed = asyncio.run(scenario())
    assert 3 <= answered <= 7  # about 0.3 s / 50 ms were admitted and answered
    assert len(shed) >= 12
    assert shed[0].retry_after_s >= 1
    assert "predicted wait" in str(shed[0])


def test_a_lone_request_larger_than_the_cap_is_admitted(
    runtime: CountingRuntime, iris: tuple
) -> None:
    async def scenario() -> dict:
        batcher = _batcher(runtime, adaptive_batching=True)
        # A model with a large fixed cost per call: 10 ms, plus 0.1 ms a row. Nothing has
        # waited yet, so the cap is still 1 row.
        batcher.policy.record(1, 0.0101, met_deadline=True, cap_limited=False)
        batcher.policy.record(2, 0.0102, met_deadline=True, cap_limited=False)
        assert batcher.policy.cap == 1
        # Alone, 32 rows take ~13 ms; in 1-row batches they would take ~320 ms.
        return await _submit(batcher, iris[0][:32], deadline_s=0.1)

    assert len(asyncio.run(scenario())["label"]) == 32


def test_drain_waits_for_queued_requests(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> list[bool]:
        batcher = _batcher(runtime, inline_us=0.0)
        futures = [_submit(batcher, iris[0][:1]) for _ in range(5)]
        await batcher.drain()
        return [f.done() for f in futures]

    assert asyncio.run(scenario()) == [True] * 5
