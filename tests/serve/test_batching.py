import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from gyre.errors import BadRequest
from gyre.registry import Registry
from gyre.serve import Batcher, ModelRuntime


class CountingRuntime(ModelRuntime):
    """The real runtime, recording the rows of each inference call."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[int] = []

    def run(self, feeds: dict) -> dict:
        self.calls.append(len(feeds["X"]))
        return super().run(feeds)


@pytest.fixture
def runtime(registry: Registry, iris_classifier: Pipeline, iris: tuple) -> CountingRuntime:
    mv = registry.publish("iris", iris_classifier, iris[0])
    return CountingRuntime("iris", 1, registry.onnx_bytes(mv), mv.signature)


def _batcher(runtime: ModelRuntime, **settings: float) -> Batcher:
    options = {"max_batch_size": 64, "max_batch_delay_ms": 0.0, "inline_inference_max_us": 1e9}
    options.update(settings)
    return Batcher(runtime, executor=ThreadPoolExecutor(1), **options)  # type: ignore[arg-type]


def _feeds(rows: np.ndarray) -> dict:
    return {"X": rows.astype(np.float32)}


async def _submit_all(batcher: Batcher, chunks: list[np.ndarray]) -> list[dict]:
    futures = [batcher.submit(_feeds(chunk), len(chunk)) for chunk in chunks]
    return list(await asyncio.gather(*futures))


@pytest.mark.parametrize("inline_us", [1e9, 0.0], ids=["inline", "thread"])
def test_concurrent_requests_merge_and_split_back_in_order(
    runtime: CountingRuntime, iris: tuple, inline_us: float
) -> None:
    x = iris[0]
    chunks = [x[i : i + 1 + i % 3] for i in range(0, 60, 4)]
    batcher = _batcher(runtime, inline_inference_max_us=inline_us)
    results = asyncio.run(_submit_all(batcher, chunks))
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
    assert runtime.calls == [1, 20, 1]


def test_requests_arriving_while_a_batch_runs_form_the_next_batch(
    runtime: CountingRuntime, iris: tuple
) -> None:
    async def scenario() -> None:
        batcher = _batcher(runtime, inline_inference_max_us=0.0)  # thread: the loop stays free
        first = batcher.submit(_feeds(iris[0][:1]), 1)
        await asyncio.sleep(0)  # the first batch (1 row) starts
        later = [batcher.submit(_feeds(iris[0][:2]), 2) for _ in range(5)]
        await asyncio.gather(first, *later)

    asyncio.run(scenario())
    assert runtime.calls == [1, 10]


def test_delay_waits_for_a_batch_to_fill(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> None:
        batcher = _batcher(runtime, max_batch_delay_ms=50.0)
        first = batcher.submit(_feeds(iris[0][:1]), 1)
        await asyncio.sleep(0.01)
        second = batcher.submit(_feeds(iris[0][:1]), 1)
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert runtime.calls == [2]


def test_a_full_batch_does_not_wait_for_the_delay(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> float:
        batcher = _batcher(runtime, max_batch_delay_ms=10_000.0, max_batch_size=2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(batcher.submit(_feeds(iris[0][:1]), 1) for _ in range(2)))
        return loop.time() - start

    assert asyncio.run(scenario()) < 5.0
    assert runtime.calls == [2]


def test_a_failing_request_fails_alone(runtime: CountingRuntime, iris: tuple) -> None:
    class Picky(CountingRuntime):
        def run(self, feeds: dict) -> dict:
            if np.any(feeds["X"] < 0):
                self.calls.append(len(feeds["X"]))
                raise RuntimeError("negative values")
            return super().run(feeds)

    runtime.__class__ = Picky
    good, bad = iris[0][:2], -iris[0][:1]

    async def scenario() -> list:
        batcher = _batcher(runtime)
        futures = [batcher.submit(_feeds(good), 2), batcher.submit(_feeds(bad), 1)]
        return await asyncio.gather(*futures, return_exceptions=True)

    ok, failed = asyncio.run(scenario())
    assert isinstance(ok, dict)
    assert len(ok["label"]) == 2
    assert isinstance(failed, BadRequest)
    assert "could not compute this input: negative values" in str(failed)


def test_drain_waits_for_queued_requests(runtime: CountingRuntime, iris: tuple) -> None:
    async def scenario() -> list[bool]:
        batcher = _batcher(runtime, inline_inference_max_us=0.0)
        futures = [batcher.submit(_feeds(iris[0][:1]), 1) for _ in range(5)]
        await batcher.drain()
        return [f.done() for f in futures]

    assert asyncio.run(scenario()) == [True] * 5
