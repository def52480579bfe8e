"""The retrain policy on a fake clock: never two at once, a daily limit, a cool-down, the
schedule, and a resumed policy that keeps its limits."""

from __future__ import annotations

import pytest

from gyre.errors import MonitorError, http_status
from gyre.monitor import RetrainLimits, RetrainPolicy, Trigger

DRIFT = Trigger("drift", "3 of 4 features drifted")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_never_two_at_once_then_a_cool_down() -> None:
    clock = Clock()
    policy = RetrainPolicy(RetrainLimits(per_day=10, cool_down_s=600), clock)
    first = policy.consider(DRIFT)
    assert first.start and first.reason == "drift: 3 of 4 features drifted"
    clock.now += 5
    assert not policy.consider(DRIFT).start  # the first still runs
    policy.finished()
    clock.now += 599
    cooling = policy.consider(DRIFT)
    assert not cooling.start and "cooling down" in cooling.reason and "1 s left" in cooling.reason
    clock.now += 1
    assert policy.consider(DRIFT).start


def test_at_most_per_day_retrains_in_any_24_hours() -> None:
    clock = Clock()
    policy = RetrainPolicy(RetrainLimits(per_day=2, cool_down_s=0), clock)
    for _ in range(2):
        assert policy.consider(DRIFT).start
        clock.now += 3_600
        policy.finished()
    refused = policy.consider(DRIFT)
    assert not refused.start and "2 retrains in the last 24 h" in refused.reason
    clock.now = 1_000.0 + 86_400  # the first start leaves the window
    assert policy.consider(DRIFT).start


def test_the_schedule_is_due_every_so_often_after_the_last_start() -> None:
    clock = Clock()
    policy = RetrainPolicy(RetrainLimits(every_s=3_600, cool_down_s=0), clock)
    assert policy.due() is None
    clock.now += 3_600
    due = policy.due()
    assert due is not None and due.kind == "schedule"
    assert policy.consider(due).start
    policy.finished()
    clock.now += 1_800
    assert policy.due() is None  # counted from the last start
    assert RetrainPolicy(RetrainLimits(), clock).due() is None  # no schedule


def test_a_resumed_policy_keeps_its_limits() -> None:
    clock = Clock()
    policy = RetrainPolicy(RetrainLimits(per_day=2, cool_down_s=600), clock)
    made = [policy.consider(DRIFT)]
    clock.now += 100
    policy.finished()
    ended = clock.now
    clock.now += 700
    made.append(policy.consider(DRIFT))  # running, never finished
    again = RetrainPolicy.resume(policy.limits, clock, made, finished=[ended])
    assert "running" in again.consider(DRIFT).reason
    again.finished()
    clock.now += 700
    assert "2 retrains" in again.consider(DRIFT).reason
    cooled = RetrainPolicy.resume(policy.limits, clock, made[:1], finished=[ended])
    assert cooled.consider(DRIFT).start  # 1 start that day, finished long ago


def test_what_the_policy_cannot_take_is_refused_with_a_typed_400() -> None:
    cases = [
        (lambda: Trigger("whim", "x"), "one of drift, quality"),
        (lambda: RetrainLimits(per_day=0), "per_day"),
        (lambda: RetrainLimits(cool_down_s=-1), "cool_down_s"),
        (lambda: RetrainLimits(every_s=0), "every_s"),
        (lambda: RetrainPolicy(RetrainLimits(), Clock()).finished(), "no retrain is running"),
    ]
    for make, message in cases:
        with pytest.raises(MonitorError, match=message) as caught:
            make()
        assert http_status(caught.value) == 400
