"""Clock logic with injected time: alignment, stall recovery without bursts, lockstep ordering."""

from __future__ import annotations

from controller.daemon.clocks import LockstepClock, WallClock


class FakeTime:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_first_tick_immediate_then_aligned():
    now = FakeTime(1000.0 * 900 + 123.0)
    clock = WallClock(900, now)
    first = clock.next_tick()
    assert first.t == now.t and first.skipped == 0
    second = clock.next_tick()
    assert second.t == 1001 * 900.0
    now.t = second.t + 0.5
    assert clock.next_tick().t == 1002 * 900.0


def test_stall_skips_to_next_aligned_tick_without_burst():
    now = FakeTime(0.0)
    clock = WallClock(900, now, immediate_first=False)
    assert clock.next_tick().t == 0.0
    now.t = 900 * 5 + 300  # stalled through several ticks, 300 s past the latest one
    tick = clock.next_tick()
    assert tick.t == 900 * 6  # the next aligned tick in the future, not a replay of 1..5
    assert tick.skipped == 5
    now.t = tick.t
    assert clock.next_tick().t == 900 * 7


def test_slightly_late_tick_still_runs():
    now = FakeTime(0.0)
    clock = WallClock(900, now, immediate_first=False)
    clock.next_tick()
    now.t = 900 * 3 + 5  # 5 s late for tick 3, ticks 1 and 2 missed entirely
    tick = clock.next_tick()
    assert tick.t == 900 * 3 and tick.skipped == 2


def test_ticks_are_strictly_increasing_under_random_stalls():
    import random
    rng = random.Random(7)
    now = FakeTime(12345.0)
    clock = WallClock(60, now)
    last = -1.0
    for _ in range(500):
        tick = clock.next_tick()
        assert tick.t > last
        assert tick.t == now.t or tick.t % 60 == 0
        last = tick.t
        now.t = max(now.t, tick.t) + rng.choice([0.0, 1.0, 59.0, 61.0, 500.0])


def test_wait_until_stops_on_request():
    now = FakeTime(0.0)
    clock = WallClock(10, now)
    waits = []

    def wait(s: float) -> bool:
        waits.append(s)
        now.t += s
        return len(waits) == 3

    assert clock.wait_until(100.0, wait) is True
    assert waits == [1.0, 1.0, 1.0]
    assert clock.wait_until(2.0, lambda s: False) is False  # already past


def test_lockstep_order_and_duplicates():
    clock = LockstepClock()
    assert clock.on_clock(100.0, {"a": (1.0, 99.0)})
    assert not clock.on_clock(100.0, {})  # QoS 1 redelivery of the same tick
    assert not clock.on_clock(50.0, {})
    assert not clock.on_clock(float("nan"), {})
    assert clock.on_clock(200.0, {})
    first = clock.next_tick(0.1)
    assert first is not None and first.t == 100.0 and first.sensors == {"a": (1.0, 99.0)}
    second = clock.next_tick(0.1)
    assert second is not None and second.t == 200.0
    assert clock.next_tick(0.01) is None
