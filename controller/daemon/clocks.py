"""When cycles run: `WallClock` (aligned real-time ticks) and `LockstepClock` (simulated time over MQTT).

Neither reads a clock itself; the service injects `time.time` / an Event's wait, so the logic is testable
without sleeping.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tick:
    t: float                     # cycle time (unix s, wall or simulated)
    skipped: int = 0             # aligned ticks dropped because we were late (wall clock only)
    sensors: dict | None = None  # lockstep: sensor snapshot taken when the clock message arrived
    meta: dict = field(default_factory=dict)


class WallClock:
    """Ticks at multiples of `period_s` (so 15-min cycles land on :00, :15, …), first one immediately.

    After a stall (suspended VM, a long GC, a slow cycle) missed ticks are dropped, not replayed: a burst of
    back-to-back cycles would only republish setpoints computed on the same sensor data. A tick missed by
    less than `grace_s` still runs late rather than waiting a whole period.
    """

    def __init__(self, period_s: float, now: Callable[[], float], *, grace_s: float | None = None,
                 immediate_first: bool = True) -> None:
        if not period_s > 0:
            raise ValueError("period must be positive")
        self.period = float(period_s)
        self._now = now
        self.grace = min(0.1 * self.period, 30.0) if grace_s is None else grace_s
        self._last: float | None = None
        self._immediate = immediate_first

    def next_tick(self) -> Tick:
        """The next tick to run (possibly in the future); call `wait_until` with it, then run the cycle."""
        now = self._now()
        if self._last is None:
            if self._immediate:
                tick = Tick(now)
                self._last = math.floor(now / self.period) * self.period
                return tick
            self._last = math.ceil(now / self.period) * self.period - self.period
        due = self._last + self.period
        skipped = 0
        if now - due > self.grace:
            latest = math.floor(now / self.period) * self.period  # the aligned tick we are late for
            if now - latest <= self.grace:
                skipped = round((latest - due) / self.period)
                due = latest
            else:
                skipped = round((latest - due) / self.period) + 1
                due = latest + self.period
        self._last = due
        return Tick(due, skipped=skipped)

    def wait_until(self, t: float, wait: Callable[[float], bool]) -> bool:
        """Sleep until wall time `t` using `wait(seconds) -> stop_requested`; True if asked to stop.

        Waits in slices of at most 1 s so a wall-clock step (NTP, manual change) is noticed promptly.
        """
        while True:
            remaining = t - self._now()
            if remaining <= 0:
                return False
            if wait(min(remaining, 1.0)):
                return True


_INTERRUPT = Tick(math.nan)


class LockstepClock:
    """Cycles triggered by `clock` messages carrying simulated time (co-simulation, HIL).

    `on_clock` is called from the bus thread with the simulated time and a snapshot of the sensors taken at
    that moment, so the cycle for time t sees exactly the readings published before the clock message.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[Tick] = queue.Queue()
        self._last_t: float | None = None
        self._lock = threading.Lock()

    def on_clock(self, t: float, sensors: dict) -> bool:
        """Queue a cycle at simulated time t; False (ignored) for a repeat or time going backwards."""
        if not math.isfinite(t):
            return False
        with self._lock:
            if self._last_t is not None and t <= self._last_t:
                return False
            self._last_t = t
        self._q.put(Tick(t, sensors=sensors))
        return True

    def next_tick(self, timeout: float) -> Tick | None:
        """The next queued tick, or None after `timeout` or when `interrupt` was called."""
        try:
            tick = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if tick is _INTERRUPT else tick

    def interrupt(self) -> None:
        """Wake a waiting `next_tick` now (shutdown) instead of at its timeout."""
        self._q.put(_INTERRUPT)

    @property
    def last_t(self) -> float | None:
        return self._last_t
