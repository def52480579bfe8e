"""The adaptive batch-size policy on a fake clock with fake latencies."""

import pytest

from gyre.serve._batching import AdaptiveBatchPolicy


def drive(
    policy: AdaptiveBatchPolicy,
    latency_s: "callable",  # type: ignore[valid-type]
    slo_s: float,
    batches: int,
    now: float = 0.0,
) -> list[int]:
    """Always-full queue: each batch's earliest deadline is `slo_s` after it was formed."""
    sizes = []
    for _ in range(batches):
        size = policy.batch_size(now, now + slo_s)
        took = latency_s(size)
        policy.record(size, took, met_deadline=took <= slo_s, cap_limited=True)
        now += took
        sizes.append(size)
    return sizes


def test_grows_the_batch_while_there_is_headroom() -> None:
    policy = AdaptiveBatchPolicy(64, increase_rows=4)
    sizes = drive(policy, lambda rows: 0.001 + 0.0001 * rows, slo_s=0.05, batches=40)
    assert sizes[0] == 1
    assert sizes == sorted(sizes)
    assert sizes[-1] == 64  # 0.001 + 64 * 0.0001 s is well within 50 ms


def test_picks_the_largest_batch_that_meets_the_deadline() -> None:
    policy = AdaptiveBatchPolicy(1000, increase_rows=1000)
    sizes = drive(policy, lambda rows: 0.002 + 0.001 * rows, slo_s=0.05, batches=30)
    # 2 ms + 1 ms per row: 48 rows fit in 50 ms.
    assert sizes[-1] == 48
    assert policy.intercept_s == pytest.approx(0.002, rel=1e-6)
    assert policy.slope_s == pytest.approx(0.001, rel=1e-6)


def test_backs_off_when_the_slo_is_missed() -> None:
    policy = AdaptiveBatchPolicy(64, backoff_factor=0.5, increase_rows=64)
    drive(policy, lambda rows: 0.0001 * rows, slo_s=0.05, batches=5)
    assert policy.cap == 64
    policy.record(64, 0.2, met_deadline=False, cap_limited=True)
    assert policy.cap == 32
    policy.record(32, 0.2, met_deadline=False, cap_limited=True)
    assert policy.cap == 16


def test_adapts_when_the_model_gets_slower() -> None:
    policy = AdaptiveBatchPolicy(256, increase_rows=256, samples=16)
    fast = drive(policy, lambda rows: 0.0001 * rows, slo_s=0.01, batches=20)
    assert fast[-1] == 100
    slow = drive(policy, lambda rows: 0.0004 * rows, slo_s=0.01, batches=40)
    assert slow[-1] == 25


def test_does_not_grow_when_the_queue_not_the_cap_limits_batches() -> None:
    policy = AdaptiveBatchPolicy(64, increase_rows=4)
    for _ in range(10):
        policy.record(1, 0.001, met_deadline=True, cap_limited=False)
    assert policy.cap == 1


def test_without_adaptation_batches_are_max_size() -> None:
    policy = AdaptiveBatchPolicy(32, adaptive=False)
    assert policy.batch_size(0.0, 0.001) == 32
    policy.record(32, 1.0, met_deadline=False, cap_limited=True)
    assert policy.batch_size(0.0, 0.001) == 32


def test_drain_estimate_uses_the_fitted_latency() -> None:
    policy = AdaptiveBatchPolicy(10, adaptive=False)
    policy.record(10, 0.011, met_deadline=True, cap_limited=False)
    policy.record(2, 0.003, met_deadline=True, cap_limited=False)
    # intercept 1 ms, 1 ms per row: 25 rows = 10 + 10 + 5 rows.
    assert policy.drain_s(25) == pytest.approx(0.011 + 0.011 + 0.006)
    assert policy.drain_s(0) == 0.0
