"""Occupancy as it really happens, around the schedule that the controllers know (for the demo's plant).

The site's comfort schedule says when people are expected. Real people differ, drawn per day and per
occupied block of the schedule, seeded and reproducible:

- absent days: with probability ``p_absent`` (0.1) nobody comes on a calendar day (local time);
- attendance: on the other days the occupancy level is the schedule's times a factor drawn uniformly from
  ``attendance`` (0.6–1.0: people on leave, working from home);
- late arrivals and early leaves: each occupied block starts up to ``max_late_s`` (60 min) later and ends
  up to ``max_early_s`` (60 min) earlier than scheduled, uniformly.

So real occupancy never exceeds the schedule: the comfort band (which follows the schedule) is still
right, and only the internal gains that the model attributes to occupancy are off. Each day's draws come
from a generator seeded with (seed, day), each block's with (seed, block start), so a day does not change
when the simulated window does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

_GRID_S = 60.0  # schedules change on whole minutes


class RealOccupancy:
    """``values(t, tz)`` like a ``WeeklySchedule`` (so it can be a disturbance ``Source``), precomputed on a
    1-minute grid over ``[t_start, t_end)``; outside that window it is the schedule itself.

    Args:
        schedule: the comfort schedule (``values(t, tz)``).
        tz: the site's time zone (days and the schedule are local).
        t_start, t_end: the window to draw (unix s).
        seed: random seed.
    """

    def __init__(self, schedule: Any, tz: ZoneInfo, t_start: float, t_end: float, seed: int, *,
                 p_absent: float = 0.1, attendance: tuple[float, float] = (0.6, 1.0),
                 max_late_s: float = 3600.0, max_early_s: float = 3600.0) -> None:
        if not t_end > t_start:
            raise ValueError("t_end must be after t_start")
        if not (0.0 <= p_absent <= 1.0 and 0.0 <= attendance[0] <= attendance[1] <= 1.0):
            raise ValueError("p_absent and the attendance range must lie within [0, 1]")
        self.schedule, self.tz, self.seed = schedule, tz, int(seed)
        self.params = {"p_absent": p_absent, "attendance": list(attendance), "max_late_min": max_late_s / 60,
                       "max_early_min": max_early_s / 60}
        self.t0 = np.floor(t_start / _GRID_S) * _GRID_S
        grid = np.arange(self.t0, t_end + _GRID_S, _GRID_S)
        planned = np.asarray(schedule.values(grid, tz), dtype=float)
        real = np.zeros_like(planned)
        days: dict[int, tuple[bool, float]] = {}
        on = planned > 0
        edges = np.flatnonzero(np.diff(np.concatenate(([False], on, [False])).astype(int)))
        self.absent_days: list[str] = []
        for i0, i1 in zip(edges[::2], edges[1::2], strict=True):  # occupied blocks [i0, i1) of the grid
            day = datetime.fromtimestamp(grid[i0], tz).date()
            if day.toordinal() not in days:
                g = np.random.default_rng([self.seed, day.toordinal()])
                absent = bool(g.random() < p_absent)
                days[day.toordinal()] = (absent, float(g.uniform(*attendance)))
                if absent:
                    self.absent_days.append(day.isoformat())
            absent, level = days[day.toordinal()]
            if absent:
                continue
            b = np.random.default_rng([self.seed, int(grid[i0] // _GRID_S)])
            late, early = b.uniform(0.0, max_late_s), b.uniform(0.0, max_early_s)
            g, end = grid[i0:i1], grid[i1 - 1] + _GRID_S  # minutes of the block, its scheduled end
            keep = (g >= grid[i0] + late) & (g + _GRID_S <= end - early)
            real[i0:i1] = np.where(keep, planned[i0:i1] * level, 0.0)
        self._grid, self._real = grid, real

    def values(self, t: np.ndarray, tz: ZoneInfo | None = None) -> np.ndarray:
        """Real occupancy at unix times ``t`` (s) (``tz`` is the site's, fixed at construction)."""
        t = np.asarray(t, dtype=float)
        i = np.floor((t - self.t0) / _GRID_S).astype(np.int64)
        inside = (i >= 0) & (i < self._grid.size)
        out = np.asarray(self.schedule.values(t, self.tz), dtype=float).copy()
        out[inside] = self._real[i[inside]]
        return out

    def describe(self) -> dict[str, Any]:
        """The model's parameters and what was drawn (for report.json)."""
        planned = np.asarray(self.schedule.values(self._grid, self.tz), dtype=float)
        total = float(planned.sum())
        return {**self.params, "seed": self.seed, "absent_days": self.absent_days,
                "real_over_scheduled": float(self._real.sum()) / total if total > 0 else 1.0}
