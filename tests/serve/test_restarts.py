"""The restart policy of one worker slot, on a fake clock."""

from __future__ import annotations

from gyre.serve._restarts import WINDOW_S, RestartPolicy


def test_a_process_that_was_ready_is_replaced_at_once_however_many_died_before() -> None:
    policy = RestartPolicy(restarts_per_min=3, backoff_s=1.0, backoff_max_s=60.0)
    now = 0.0
    policy.started(now)
    for _ in range(100):  # one death every 30 s for 50 minutes: never a wait
        now += 30.0
        at = policy.died(now, was_ready=True)
        assert at == now
        policy.started(at)


def test_deaths_after_readiness_are_restarted_at_most_at_the_rate() -> None:
    policy = RestartPolicy(restarts_per_min=3, backoff_s=1.0, backoff_max_s=60.0)
    policy.started(0.0)
    starts = [0.0]
    now = 0.0
    for _ in range(9):  # each replacement dies 1 s after its start, once ready
        now = starts[-1] + 1.0
        starts.append(policy.died(now, was_ready=True))
        policy.started(starts[-1])
    assert starts[:3] == [0.0, 1.0, 2.0]  # within the budget: at once
    assert starts[3] == 0.0 + WINDOW_S  # then when the oldest leaves the minute
    for i in range(3, len(starts)):  # never more than 3 starts in any 60 s
        assert starts[i] - starts[i - 3] >= WINDOW_S


def test_failed_starts_back_off_doubling_up_to_the_max_and_readiness_resets_it() -> None:
    policy = RestartPolicy(restarts_per_min=1000, backoff_s=1.0, backoff_max_s=10.0)
    now = 0.0
    waits = []
    for _ in range(6):
        policy.started(now)
        at = policy.died(now + 0.5, was_ready=False)
        waits.append(at - (now + 0.5))
        now = at
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.failed_starts == 6
    policy.started(now)
    assert policy.died(now + 100.0, was_ready=True) == now + 100.0
    assert policy.failed_starts == 0
    policy.started(now + 100.0)
    assert policy.died(now + 101.0, was_ready=False) == now + 102.0  # from 1 s again


def test_the_backoff_never_overflows_after_very_many_failed_starts() -> None:
    policy = RestartPolicy(restarts_per_min=10**9, backoff_s=0.5, backoff_max_s=30.0)
    for i in range(5000):
        policy.started(float(i))
        at = policy.died(float(i), was_ready=False)
    assert at == 4999.0 + 30.0
