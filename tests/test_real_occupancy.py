"""The demo plant's real occupancy: never more than the schedule, late arrivals and early leaves within their
limits, absent days at their rate, partial attendance, seeded and reproducible."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.tools.real_occupancy import RealOccupancy
from models.schedules import parse_schedules
from models.yamlio import Cursor, MarkedDict

TZ = ZoneInfo("America/Chicago")
T0 = datetime(2026, 1, 12, tzinfo=TZ).timestamp()


def office():
    days = {d: [["07:00", "19:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
    return parse_schedules(Cursor(MarkedDict({"office": MarkedDict({"weekly": MarkedDict(days)})}), "site.yaml",
                                  "schedules", 1))["office"]


def test_real_occupancy_stays_within_the_schedule_and_varies_around_it() -> None:
    sched = office()
    days = 112  # Monday 2026-11-09 to 2027-03-01: no DST change, so day d starts at t0 + d·86400
    t0 = datetime(2026, 11, 9, tzinfo=TZ).timestamp()
    occ = RealOccupancy(sched, TZ, t0, t0 + days * 86400, seed=3)
    t = t0 + 60.0 * np.arange(days * 1440)
    planned, real = sched.values(t, TZ), occ.values(t)
    assert np.all(real <= planned + 1e-12) and np.all(real >= 0)
    assert np.all(real[planned == 0] == 0)
    weekdays = days // 7 * 5
    absent = len(occ.absent_days)
    assert 0.03 * weekdays < absent < 0.2 * weekdays  # p_absent = 0.1: 8 expected, binomial sd 2.7
    ratio = occ.describe()["real_over_scheduled"]
    assert 0.6 < ratio < 0.75  # expected 0.9 present x 0.8 attendance x 11/12 h (late/early) = 0.66
    for d in range(days):
        if d % 7 >= 5:
            continue
        day = slice(d * 1440, (d + 1) * 1440)
        on = np.flatnonzero(real[day] > 0)
        if on.size == 0:
            continue
        start, end = on[0], on[-1] + 1  # minutes of the day
        assert 7 * 60 <= start <= 8 * 60 and 18 * 60 <= end <= 19 * 60
        assert 0.6 - 1e-9 <= real[day][on].max() <= 1.0
    lates = [np.flatnonzero(real[d * 1440:(d + 1) * 1440] > 0)[0] - 420 for d in range(days)
             if d % 7 < 5 and (real[d * 1440:(d + 1) * 1440] > 0).any()]
    assert np.mean(lates) == pytest.approx(30, abs=8)  # uniform 0-60 min


def test_reproducible_and_the_schedule_outside_its_window() -> None:
    sched = office()
    a = RealOccupancy(sched, TZ, T0, T0 + 14 * 86400, seed=1)
    b = RealOccupancy(sched, TZ, T0 - 86400 * 3, T0 + 20 * 86400, seed=1)  # another window: same days
    c = RealOccupancy(sched, TZ, T0, T0 + 14 * 86400, seed=2)
    t = T0 + 60.0 * np.arange(14 * 1440)
    np.testing.assert_array_equal(a.values(t), b.values(t))
    assert not np.array_equal(a.values(t), c.values(t))
    later = T0 + 30 * 86400 + 60.0 * np.arange(1440)
    np.testing.assert_array_equal(a.values(later), sched.values(later, TZ))
    with pytest.raises(ValueError):
        RealOccupancy(sched, TZ, T0, T0, seed=1)
