"""Weekly schedules in the site's local time, with holidays.

A schedule is a step function of local wall-clock time: for each day of the week a list of intervals
``[start, end)`` in local time ("HH:MM", "24:00" allowed as an end), each with a value (1 for binary
schedules such as occupancy). Outside the intervals the schedule has its ``default`` value (0). Listed
holidays (local dates) use the ``holiday`` pattern if given, otherwise the ``sun`` pattern.

Local time comes from the site's IANA zone through the stdlib ``zoneinfo``: on the 23-hour spring day
and the 25-hour autumn day an interval such as 07:00–19:00 still lasts exactly 12 h, and the wall-clock
hour that repeats in autumn counts twice (it is real time that passes).

Config syntax (see config/sites/office-20.yaml)::

    office_hours:
      weekly:                         # day names, ranges (mon-fri), weekdays, weekend, daily
        mon-fri: [["07:00", "19:00"]]
        sat: [["08:00", "12:00", 0.5]]  # optional third element: the value inside that interval
      holidays: ["2026-12-25"]        # local dates; they follow `holiday:` or else the `sun` pattern
      holiday: []                     # optional pattern for holidays
      value: 1.0                      # value inside intervals without their own (default 1)
      default: 0.0                    # value outside all intervals (default 0)
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from models.yamlio import Cursor

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_GROUPS: dict[str, tuple[int, ...]] = {
    "weekdays": (0, 1, 2, 3, 4),
    "weekend": (5, 6),
    "daily": (0, 1, 2, 3, 4, 5, 6),
    "all": (0, 1, 2, 3, 4, 5, 6),
}
_DAY_SPEC_HELP = "day names mon..sun, a range like mon-fri, a comma list like sat,sun, weekdays, weekend or daily"
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_EPOCH = _dt.date(1970, 1, 1)
_DAY_S = 86400
# Offsets are probed on this grid and transitions located to the second by bisection. Zones never change
# their offset twice within 6 h, so no transition is missed.
_PROBE_S = 6 * 3600


@dataclass(frozen=True)
class Interval:
    """One interval of a day pattern: ``[start_s, end_s)`` seconds after local midnight, and its value."""

    start_s: int
    end_s: int
    value: float


@dataclass(frozen=True)
class WeeklySchedule:
    """A weekly step function of local time with holidays.

    ``days`` holds seven interval tuples, Monday first. ``holidays`` are local dates as days since
    1970-01-01. ``holiday`` is the pattern used on holidays (``None``: the Sunday pattern).
    """

    days: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[int] = field(default_factory=frozenset)
    holiday: tuple[Interval, ...] | None = None
    default: float = 0.0

    def __post_init__(self) -> None:
        if len(self.days) != 7:
            raise ValueError("a weekly schedule needs seven day patterns (Monday first)")

    def values(self, t_unix: np.ndarray, tz: ZoneInfo) -> np.ndarray:
        """The schedule at unix times ``t_unix`` (s), evaluated in local time of ``tz``; float array.

        Each value is the schedule at that instant (intervals are closed at the start, open at the end).
        """
        t = np.asarray(t_unix, dtype=float)
        out = np.full(t.shape, self.default, dtype=float)
        if t.size == 0:
            return out
        day, weekday, sod = local_clock(t, tz)
        if self.holidays:
            is_holiday = np.isin(day, np.fromiter(self.holidays, dtype=np.int64))
        else:
            is_holiday = np.zeros(t.shape, dtype=bool)
        for w in range(7):
            _apply(out, (weekday == w) & ~is_holiday, sod, self.days[w])
        if is_holiday.any():
            _apply(out, is_holiday, sod, self.days[6] if self.holiday is None else self.holiday)
        return out

    def daily_hours(self, weekday: int) -> float:
        """Hours per day with a nonzero value on a normal (non-holiday) ``weekday`` (0 = Monday)."""
        return sum(iv.end_s - iv.start_s for iv in self.days[weekday] if iv.value != 0.0) / 3600.0


def _apply(out: np.ndarray, mask: np.ndarray, sod: np.ndarray, intervals: tuple[Interval, ...]) -> None:
    for iv in intervals:
        out[mask & (sod >= iv.start_s) & (sod < iv.end_s)] = iv.value


# -- local time ----------------------------------------------------------------------------------------
def _offset_at(tz: ZoneInfo, s: int) -> float:
    off = _dt.datetime.fromtimestamp(s, tz).utcoffset()
    return off.total_seconds() if off is not None else 0.0


def utc_offsets(t_unix: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """UTC offset (s, local − UTC) in force at each unix time; exact to the second at DST transitions.

    The zone is queried on a 6-hour grid over the span of ``t_unix`` and each change is bisected, so
    the cost is a few Python calls per day of span, independent of the number of samples.
    """
    t = np.asarray(t_unix, dtype=float)
    if t.size == 0:
        return np.zeros(t.shape)
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite unix seconds")
    lo = math.floor(float(t.min()))
    hi = math.ceil(float(t.max()))
    start = lo - lo % _PROBE_S
    grid = list(range(start, hi + _PROBE_S + 1, _PROBE_S))
    offs = [_offset_at(tz, g) for g in grid]
    breaks, vals = [grid[0]], [offs[0]]
    for i in range(len(grid) - 1):
        if offs[i + 1] != offs[i]:
            a, b = grid[i], grid[i + 1]  # offset(a) is old, offset(b) is new
            while b - a > 1:
                m = (a + b) // 2
                if _offset_at(tz, m) == offs[i]:
                    a = m
                else:
                    b = m
            breaks.append(b)
            vals.append(offs[i + 1])
    idx = np.searchsorted(np.asarray(breaks, dtype=float), t, side="right") - 1
    return np.asarray(vals)[idx]


def local_clock(t_unix: np.ndarray, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local calendar position of unix times: (local date as days since 1970-01-01 (int64),
    weekday (0 = Monday), seconds since local midnight (float, wall clock))."""
    t = np.asarray(t_unix, dtype=float)
    local = t + utc_offsets(t, tz)
    day = np.floor(local / _DAY_S).astype(np.int64)
    sod = local - day * float(_DAY_S)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    return day, weekday, sod


def local_midnight(date: _dt.date, tz: ZoneInfo) -> float:
    """Unix time (s) of local midnight starting ``date`` in ``tz``."""
    return _dt.datetime(date.year, date.month, date.day, tzinfo=tz).timestamp()


def date_to_day(date: _dt.date) -> int:
    """Days since 1970-01-01 of a calendar date (the day numbers used for holidays)."""
    return (date - _EPOCH).days


# -- parsing -------------------------------------------------------------------------------------------
def parse_time_of_day(cur: Cursor, *, allow_24: bool) -> int:
    """A local time "HH:MM" as seconds after midnight; "24:00" only where ``allow_24``."""
    value = cur.value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 19:00 as the sexagesimal number 1140.
        raise cur.error("time of day must be a quoted string (YAML read an unquoted HH:MM as a number)",
                        expected='a quoted time like "07:00"')
    if not isinstance(value, str):
        raise cur.error("wrong type", expected='a quoted time like "07:00"')
    m = _TIME.match(value.strip())
    if not m:
        raise cur.error("bad time of day", expected='HH:MM, e.g. "07:00"')
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour == 24 and minute == 0 and allow_24:
        return _DAY_S
    if hour > 23 or minute > 59:
        raise cur.error("bad time of day", expected='00:00..23:59' + (' or "24:00" as an end' if allow_24 else ""))
    return hour * 3600 + minute * 60


def parse_days(cur: Cursor) -> tuple[int, ...]:
    """A day specification ("mon", "mon-fri", "sat,sun", "weekdays", "weekend", "daily", or a list of
    those) as sorted weekday numbers (0 = Monday)."""
    if isinstance(cur.value, list):
        days: set[int] = set()
        for item in cur:
            days.update(parse_days(item))
        if not days:
            raise cur.error("empty day list", expected=_DAY_SPEC_HELP)
        return tuple(sorted(days))
    if not isinstance(cur.value, str):
        raise cur.error("wrong type", expected=_DAY_SPEC_HELP)
    days = set()
    for part in cur.value.lower().replace(" ", "").split(","):
        if part in _DAY_GROUPS:
            days.update(_DAY_GROUPS[part])
        elif part in DAY_NAMES:
            days.add(DAY_NAMES.index(part))
        elif "-" in part and all(p in DAY_NAMES for p in part.split("-", 1)):
            a, b = (DAY_NAMES.index(p) for p in part.split("-", 1))
            if b < a:
                raise cur.error("day range runs backwards", expected="a range like mon-fri", found=part)
            days.update(range(a, b + 1))
        else:
            raise cur.error("unknown day", expected=_DAY_SPEC_HELP, found=part)
    return tuple(sorted(days))


def parse_intervals(cur: Cursor, value: float) -> tuple[Interval, ...]:
    """A day pattern: a list of ``[start, end]`` or ``[start, end, value]``; sorted, non-overlapping."""
    if cur.value is None:
        return ()
    cur.expect_list()
    out: list[tuple[Interval, Cursor]] = []
    for item in cur:
        seq = item.expect_list()
        if len(seq) not in (2, 3):
            raise item.error("an interval has a start, an end and optionally a value",
                             expected='["HH:MM", "HH:MM"] or ["HH:MM", "HH:MM", value]')
        parts = list(item)
        start = parse_time_of_day(parts[0], allow_24=False)
        end = parse_time_of_day(parts[1], allow_24=True)
        if not end > start:
            raise item.error("interval must end after it starts (split intervals that cross midnight)",
                             expected="start < end within one day")
        v = parts[2].as_float() if len(parts) == 3 else value
        out.append((Interval(start, end, v), item))
    out.sort(key=lambda p: p[0].start_s)
    for (prev, _), (nxt, cur_n) in itertools.pairwise(out):
        if nxt.start_s < prev.end_s:
            raise cur_n.error("intervals overlap", expected="non-overlapping intervals within a day")
    return tuple(iv for iv, _ in out)


def parse_date(cur: Cursor) -> _dt.date:
    """A calendar date: YAML date or "YYYY-MM-DD" string."""
    value = cur.value
    if isinstance(value, _dt.datetime):
        raise cur.error("expected a date without a time", expected="YYYY-MM-DD")
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise cur.error("bad date", expected="a date YYYY-MM-DD")


def parse_holidays(cur: Cursor) -> frozenset[int]:
    """A list of local dates as day numbers (days since 1970-01-01)."""
    return frozenset(date_to_day(parse_date(item)) for item in cur)


def parse_weekly(cur: Cursor, value: float) -> tuple[tuple[Interval, ...], ...]:
    """The ``weekly:`` mapping: day specs to interval lists; each day may be given once only."""
    days: list[tuple[Interval, ...] | None] = [None] * 7
    for key, child in cur.items():
        spec = Cursor(key, cur.file, child.field, child.line)
        intervals = parse_intervals(child, value)
        for d in parse_days(spec):
            if days[d] is not None:
                raise child.error(f"day '{DAY_NAMES[d]}' is given more than once",
                                  expected="each day at most once", found=key)
            days[d] = intervals
    return tuple(d if d is not None else () for d in days)


def parse_schedule(cur: Cursor) -> WeeklySchedule:
    """One schedule (``weekly``, optional ``holidays``, ``holiday``, ``value``, ``default``)."""
    cur.only_keys({"weekly", "holidays", "holiday", "value", "default"})
    value = cur.get("value", 1.0).as_float()
    default = cur.get("default", 0.0).as_float()
    days = parse_weekly(cur.get("weekly"), value)
    holidays = parse_holidays(cur.get("holidays")) if cur.has("holidays") else frozenset()
    holiday = parse_intervals(cur.get("holiday"), value) if cur.has("holiday") else None
    return WeeklySchedule(days=days, holidays=holidays, holiday=holiday, default=default)


def parse_schedules(cur: Cursor) -> dict[str, WeeklySchedule]:
    """The site's ``schedules:`` mapping: name -> schedule."""
    out: dict[str, WeeklySchedule] = {}
    for name, child in cur.items():
        if not isinstance(name, str) or not name:
            raise child.error("schedule names must be strings", expected="a name", found=name)
        out[name] = parse_schedule(child)
    return out
