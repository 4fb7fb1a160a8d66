"""Weekly schedules in local time: syntax, validation, DST days, holidays."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ConfigError
from models.schedules import (
    local_clock,
    local_midnight,
    parse_schedule,
    parse_schedules,
    utc_offsets,
)
from models.yamlio import Cursor, load_yaml, loads_yaml

ROOT = Path(__file__).resolve().parents[1]
CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")


def sched(text: str):
    return parse_schedule(Cursor(loads_yaml(text, "site.yaml"), "site.yaml", "schedules.s"))


def day_grid(date: dt.date, tz: ZoneInfo, step: float = 900.0) -> np.ndarray:
    a = local_midnight(date, tz)
    b = local_midnight(date + dt.timedelta(days=1), tz)
    return np.arange(a, b, step)


DAILY = sched('weekly: {daily: [["07:00", "19:00"]]}')


@pytest.mark.parametrize(
    ("tz", "date", "hours"),
    [
        (CHICAGO, dt.date(2026, 3, 8), 23),
        (CHICAGO, dt.date(2026, 11, 1), 25),
        (BERLIN, dt.date(2026, 3, 29), 23),
        (BERLIN, dt.date(2026, 10, 25), 25),
        (CHICAGO, dt.date(2026, 3, 9), 24),
    ],
)
def test_dst_days_occupancy_is_exactly_12_h(tz: ZoneInfo, date: dt.date, hours: int) -> None:
    t = day_grid(date, tz)
    assert len(t) == hours * 4  # 92 on the spring day, 100 on the autumn day
    occ = DAILY.values(t, tz)
    assert occ.sum() * 0.25 == 12.0
    # occupancy starts at 07:00 and ends at 19:00 local wall clock
    first, last = t[occ > 0][0], t[occ > 0][-1]
    assert dt.datetime.fromtimestamp(first, tz).strftime("%H:%M") == "07:00"
    assert dt.datetime.fromtimestamp(last + 900, tz).strftime("%H:%M") == "19:00"


def test_interval_covering_the_repeated_autumn_hour_counts_it_twice() -> None:
    s = sched('weekly: {daily: [["00:00", "03:00"]]}')
    t = day_grid(dt.date(2026, 11, 1), CHICAGO, 60.0)
    assert s.values(t, CHICAGO).sum() * 60 == 4 * 3600  # 00:00-01:00, 01:00-02:00 twice, 02:00-03:00
    t = day_grid(dt.date(2026, 3, 8), CHICAGO, 60.0)
    assert s.values(t, CHICAGO).sum() * 60 == 2 * 3600  # 02:00-03:00 does not exist


def test_utc_offsets_switch_at_the_exact_second() -> None:
    # 2026-03-08 02:00 CST = 08:00 UTC
    t_switch = dt.datetime(2026, 3, 8, 8, 0, tzinfo=dt.UTC).timestamp()
    off = utc_offsets(np.array([t_switch - 1, t_switch - 0.5, t_switch, t_switch + 1]), CHICAGO)
    assert off.tolist() == [-21600, -21600, -18000, -18000]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=4_000_000_000),
       st.sampled_from(["America/Chicago", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]))
def test_local_clock_matches_zoneinfo(t: int, name: str) -> None:
    tz = ZoneInfo(name)
    day, weekday, sod = local_clock(np.array([float(t)]), tz)
    local = dt.datetime.fromtimestamp(t, tz)
    assert day[0] == (local.date() - dt.date(1970, 1, 1)).days
    assert weekday[0] == local.weekday()
    assert sod[0] == local.hour * 3600 + local.minute * 60 + local.second


def test_office_20_schedule_weekdays_weekend_holiday() -> None:
    path = ROOT / "config" / "sites" / "office-20.yaml"
    doc = Cursor(load_yaml(path), str(path))
    schedules = parse_schedules(doc.get("schedules"))
    office = schedules["office_hours"]
    week = np.concatenate([day_grid(dt.date(2026, 12, 21) + dt.timedelta(days=i), CHICAGO) for i in range(7)])
    v = office.values(week, CHICAGO).reshape(7, 96).sum(axis=1) / 4
    # Mon 21 .. Sun 27 December 2026; Friday 25th is a holiday (Sunday pattern: empty)
    assert v.tolist() == [12, 12, 12, 12, 0, 0, 0]
    assert office.daily_hours(0) == 12.0


def test_levels_default_value_and_holiday_pattern() -> None:
    s = sched("""
weekly:
  mon-fri: [["07:00", "12:00", 0.8], ["12:00", "24:00"]]
  sat,sun: []
holidays: [2026-01-01, "2026-01-02"]
holiday: [["10:00", "11:00", 0.3]]
value: 0.6
default: 0.1
""")
    tz = BERLIN
    def at(date: dt.date, hhmm: str) -> float:
        h, m = map(int, hhmm.split(":"))
        return float(s.values(np.array([dt.datetime(date.year, date.month, date.day, h, m,
                                                         tzinfo=tz).timestamp()]), tz)[0])
    mon = dt.date(2026, 1, 5)
    assert at(mon, "06:59") == 0.1
    assert at(mon, "07:00") == 0.8
    assert at(mon, "12:00") == 0.6
    assert at(mon, "23:59") == 0.6
    assert at(dt.date(2026, 1, 3), "10:30") == 0.1  # Saturday
    assert at(dt.date(2026, 1, 1), "10:30") == 0.3  # holiday pattern
    assert at(dt.date(2026, 1, 2), "12:30") == 0.1


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ('weekly: {mon: [["07:00", "25:00"]]}', 1, "schedules.s.weekly.mon[0][1]", "bad time"),
        ('weekly: {mon: [["19:00", "07:00"]]}', 1, "schedules.s.weekly.mon[0]", "end after it starts"),
        ('weekly: {mon: [["24:00", "24:00"]]}', 1, "schedules.s.weekly.mon[0][0]", "bad time"),
        ('weekly: {mon: [[7:00, "19:00"]]}', 1, "schedules.s.weekly.mon[0][0]", "quoted"),
        ('weekly:\n  mon: [["07:00", "19:00"]]\n  mondy: []', 3, "schedules.s.weekly.mondy", "unknown day"),
        ('weekly: {mon: [["07:00", "12:00"], ["11:00", "13:00"]]}', 1, "schedules.s.weekly.mon[1]", "overlap"),
        ('weekly:\n  mon-fri: []\n  fri: []', 3, "schedules.s.weekly.fri", "more than once"),
        ('weekly: {mon: [["07:00"]]}', 1, "schedules.s.weekly.mon[0]", "start, an end"),
        ('weekly: {}\nholidays: ["2026-13-01"]', 2, "schedules.s.holidays[0]", "bad date"),
        ('weekly: {}\nvalue: high', 2, "schedules.s.value", "number"),
        ('wekly: {}', 1, "schedules.s.wekly", "did you mean 'weekly'"),
        ('holidays: []', 1, "schedules.s.weekly", "missing"),
    ],
)
def test_errors_name_file_line_field(text: str, line: int, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        sched(text)
    err = info.value
    assert err.file == "site.yaml"
    assert err.line == line
    assert err.field == field
    assert err.expected
    assert words in str(err)
