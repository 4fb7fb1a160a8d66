"""Time series for forecasts and tariffs: CSV tables (periodic TMY/yearly data), constants, time-of-use.

Every series has ``unit`` and ``sample(t, tz) -> ndarray``: the value at unix times ``t`` (s) for a site in
time zone ``tz``. Output units (converted once at load):

- temperatures: degC (CSV units degC, K (absolute), degF);
- irradiance: W/m² (CSV units W/m², kW/m², or an energy per area such as Wh/m² per interval);
- prices: <currency>/kWh, kept as given (EUR/MWh is divided by 1000); energy cost = price × kWh. The
  currency is a label, never converted: an ISO 4217 code (USD, EUR, GBP, CHF, ...) or $ € £ for USD, EUR,
  GBP. A site's ``tariff:`` names it once (``currency: EUR``, see ``load_tariff``) and every price in it
  must be in that currency;
- power: W; dimensionless: fraction (``%`` is divided by 100).

CSV series (``{csv, column, unit, interpolation?, averaging?, periodic?, utc_offset?, time_offset?,
time_column?}``, paths relative to the config file):

- ``time_s`` (``time_column``) is seconds from 1 January 00:00 local *standard* time (no DST). The UTC
  offset of that reference is ``utc_offset`` (e.g. ``-6 h`` for the Chicago files); when omitted it is the
  site zone's standard offset (America/Chicago: −6 h). ``time_offset`` shifts the data's time axis.
- ``periodic: true`` (default): the table is one 365-day year and repeats. A unix time maps to its
  calendar position in its local-standard-time year; in leap years 29 February repeats 28 February and
  later dates keep their calendar date. Between the last row and the next year's first row the series
  interpolates across the year end. A row at exactly 365 d duplicates the year start and is dropped.
  ``periodic: false``: ``time_s`` is unix seconds and the series holds its first/last value outside.
- ``interpolation``: ``linear`` (default for weather and everything else) or ``hold`` (step; default
  for prices). ``hold`` keeps each value from its knot until the next knot.
- ``averaging``: what a row's value represents. ``instant`` (value at ``time_s``), ``preceding`` (mean over
  the interval ending at ``time_s``), ``following`` (mean over the interval starting at ``time_s``). The
  default is ``preceding`` for energy-per-area units (Wh/m²) and for ``*_wh_m2`` columns (TMY3 irradiance:
  Wh/m² over the hour *before* ``time_s``), else ``instant``. Interval means are converted to an average
  power (an hourly Wh/m² is the mean W/m² of that hour). With ``linear`` the knot is placed at the
  interval's midpoint: TMY3 irradiance stamped at 12:00 (the 11:00–12:00 sum) is a knot at 11:30 —
  the half-hour shift also applied by Modelica Buildings' TMY3 reader. With ``hold`` the mean is held
  over its own interval.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np

from models.errors import ConfigError
from models.schedules import WeeklySchedule, parse_days, parse_holidays, parse_time_of_day
from models.units import convert
from models.yamlio import Cursor

YEAR_S = 365 * 86400
_DAY_S = 86400
_PRICE_UNIT = re.compile(r"^([A-Z]{3}|[$€£])/(Wh|kWh|MWh)$")
_PRICE_FACTOR = {"Wh": 1000.0, "kWh": 1.0, "MWh": 1e-3}  # to <currency>/kWh
_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP"}
DEFAULT_CURRENCY = "USD"
_UNIT_HELP = ("degC, K, degF, W/m2, kW/m2, Wh/m2, kWh/m2, J/m2, W, kW, a price per Wh/kWh/MWh such as "
              "EUR/kWh or USD/MWh, 1 or %")


@runtime_checkable
class Series(Protocol):
    """A disturbance or price signal: ``sample(t, tz)`` gives values (in ``unit``) at unix times ``t``."""

    unit: str

    def sample(self, t: np.ndarray, tz: ZoneInfo) -> np.ndarray: ...


@dataclass(frozen=True)
class ConstantSeries:
    """A constant value (in ``unit``) at all times."""

    value: float
    unit: str = ""

    def sample(self, t: np.ndarray, tz: ZoneInfo | None = None) -> np.ndarray:
        """``value`` at every time in ``t`` (unix s)."""
        return np.full(np.shape(t), self.value, dtype=float)


@dataclass(frozen=True)
class TimeOfUseTariff:
    """A price table by local day and time (<currency>/kWh): periods on top of a default price.

    Holidays (if listed) are priced like Sundays.
    """

    schedule: WeeklySchedule
    unit: str = "USD/kWh"

    def sample(self, t: np.ndarray, tz: ZoneInfo) -> np.ndarray:
        """The price in force at each unix time ``t`` (s), by local time in ``tz``."""
        return self.schedule.values(t, tz)


@dataclass(frozen=True)
class TableSeries:
    """A tabulated series: knots ``times`` (s, increasing) and ``values`` (in ``unit``).

    For a periodic series the knots lie in [0, 365 d) and are seconds from 1 January 00:00 local standard
    time (``utc_offset_s`` east of UTC; ``None``: the standard offset of the site zone passed to
    ``sample``). Otherwise they are unix seconds.
    """

    times: np.ndarray
    values: np.ndarray
    unit: str
    interpolation: str = "linear"
    periodic: bool = True
    utc_offset_s: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for a in (self.times, self.values):
            a.flags.writeable = False

    def sample(self, t: np.ndarray, tz: ZoneInfo | None = None) -> np.ndarray:
        """Values at unix times ``t`` (s); ``tz`` is needed for periodic data without ``utc_offset_s``."""
        t = np.asarray(t, dtype=float)
        if t.size == 0:
            return np.zeros(t.shape)
        if not np.all(np.isfinite(t)):
            raise ValueError("sample times must be finite unix seconds")
        tt, vv = self.times, self.values
        if self.periodic:
            if self.utc_offset_s is not None:
                off = self.utc_offset_s
            elif tz is not None:
                off = standard_offset(tz, float(t.flat[0]))
            else:
                raise ValueError("a periodic series without utc_offset needs the site time zone")
            pos = year_position(t + off)
            # one knot of the neighbouring years on each side, so the year end interpolates and wraps
            tt = np.concatenate(([tt[-1] - YEAR_S], tt, [tt[0] + YEAR_S]))
            vv = np.concatenate(([vv[-1]], vv, [vv[0]]))
        else:
            pos = t
        if self.interpolation == "hold":
            idx = np.clip(np.searchsorted(tt, pos, side="right") - 1, 0, len(tt) - 1)
            return vv[idx]
        return np.interp(pos, tt, vv)


def standard_offset(tz: ZoneInfo, t_unix: float) -> float:
    """The zone's standard (non-DST) UTC offset in seconds at ``t_unix``, e.g. −21600 for Chicago."""
    local = _dt.datetime.fromtimestamp(t_unix, tz)
    off, dst = local.utcoffset(), local.dst()
    return (off.total_seconds() if off else 0.0) - (dst.total_seconds() if dst else 0.0)


def year_position(t_local_std: np.ndarray) -> np.ndarray:
    """Seconds since 1 January 00:00 of the calendar year of ``t_local_std`` (local standard seconds
    since the epoch), on a 365-day year: in leap years 29 February maps onto 28 February and later days
    keep their calendar date. Result in [0, 365 d)."""
    t = np.asarray(t_local_std, dtype=float)
    sec = np.floor(t).astype(np.int64).astype("datetime64[s]")
    years = sec.astype("datetime64[Y]")
    start = years.astype("datetime64[s]").astype(np.int64).astype(float)
    pos = t - start
    y = years.astype(np.int64) + 1970
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    pos = np.where(leap & (pos >= 59 * _DAY_S), pos - _DAY_S, pos)
    return pos


# -- loading -------------------------------------------------------------------------------------------
def _unit_conversion(cur: Cursor, unit: str) -> tuple[str, float, float, bool, bool]:
    """(output unit, factor, offset, is_energy_per_area, is_price) so that out = raw * factor + offset."""
    u = unit.strip()
    if u in ("degC", "°C", "C"):
        return "degC", 1.0, 0.0, False, False
    if u == "K":
        return "degC", 1.0, -273.15, False, False
    if u in ("degF", "°F", "F"):
        return "degC", 5.0 / 9.0, -32.0 * 5.0 / 9.0, False, False
    m = _PRICE_UNIT.match(u.replace(" ", ""))
    if m:
        return f"{_currency(m.group(1))}/kWh", _PRICE_FACTOR[m.group(2)], 0.0, False, True
    if u in ("", "1"):
        return "1", 1.0, 0.0, False, False
    if u == "%":
        return "1", 0.01, 0.0, False, False
    for target, out, energy in (("W/m2", "W/m2", False), ("J/m2", "W/m2", True), ("W", "W", False)):
        try:
            return out, convert(f"1 {u}", target), 0.0, energy, False
        except ValueError:
            continue
    raise cur.error("unsupported unit", expected=_UNIT_HELP, found=unit)


def _value_in(cur: Cursor, out_unit: str, factor: float, shift: float, price: bool) -> float:
    """A bare number in the series' declared unit, or a number with its own unit ("15 USD/MWh",
    "21 degC"); returned in ``out_unit``."""
    if price and isinstance(cur.value, str):
        m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S+)\s*", cur.value)
        unit = _PRICE_UNIT.match(m.group(2)) if m else None
        want = out_unit.split("/")[0]
        if m is None or unit is None:
            raise cur.error("bad price", expected=f"a number or a price like '0.25 {want}/kWh' or '15 {want}/MWh'")
        if _currency(unit.group(1)) != want:
            raise cur.error(f"price in {_currency(unit.group(1))}, but this tariff is in {want}",
                            expected=f"a price in {want} (currencies are labels, never converted)")
        return float(m.group(1)) * _PRICE_FACTOR[unit.group(2)]
    if isinstance(cur.value, str) and out_unit != "1":
        return cur.as_float(unit=out_unit)
    return cur.as_float() * factor + shift


def _csv_error(cur: Cursor, where: str, message: str, *, expected: str, found: object = None) -> ConfigError:
    return ConfigError(f"{where}: {message}", file=cur.file, line=cur.line, field=cur.field or None,
                       expected=expected, found=found)


def read_csv_columns(path: Path, columns: list[str], cur: Cursor) -> dict[str, np.ndarray]:
    """Read numeric ``columns`` of a CSV file with a header row. Errors name the config spot (``cur``)
    and the CSV file, line and column."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise cur.error(f"CSV file not found: {path}", expected="an existing CSV file (relative to the config)",
                        found=str(path)) from None
    except OSError as exc:
        raise cur.error(f"cannot read CSV file {path} ({exc.strerror})", expected="a readable CSV file") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise _csv_error(cur, f"{path}", "CSV file is empty", expected="a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _csv_error(cur, f"{path}:1", f"unreadable CSV ({exc})", expected="a CSV header") from None
        index = {}
        for col in columns:
            if col not in header:
                raise _csv_error(cur, f"{path}:1", f"column '{col}' not in CSV header",
                                 expected="one of " + ", ".join(header), found=col)
            index[col] = header.index(col)
        data: dict[str, list[float]] = {c: [] for c in columns}
        try:
            for row in reader:
                if not row or all(not x.strip() for x in row):
                    continue
                for col, j in index.items():
                    where = f"{path}:{reader.line_num} column '{col}'"
                    if j >= len(row):
                        raise _csv_error(cur, where, "row is too short", expected=f"{len(header)} fields",
                                         found=len(row))
                    text = row[j].strip()
                    try:
                        x = float(text)
                    except ValueError:
                        raise _csv_error(cur, where, "not a number", expected="a number",
                                         found=text) from None
                    if not math.isfinite(x):
                        raise _csv_error(cur, where, "number is not finite", expected="a finite number",
                                         found=text)
                    data[col].append(x)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _csv_error(cur, f"{path}:{reader.line_num}", f"unreadable CSV ({exc})",
                             expected="valid CSV") from None
    return {c: np.asarray(v, dtype=float) for c, v in data.items()}


_CSV_KEYS = frozenset({"csv", "column", "unit", "interpolation", "averaging", "periodic", "utc_offset",
                       "time_offset", "time_column"})


def _load_table(cur: Cursor, base_dir: Path, cache: dict | None) -> TableSeries:
    cur.only_keys(_CSV_KEYS)
    path = (base_dir / cur.get("csv").as_str()).resolve()
    column = cur.get("column").as_str()
    unit_cur = cur.get("unit")
    out_unit, factor, shift, energy, price = _unit_conversion(unit_cur, unit_cur.as_str())
    time_col = cur.get("time_column", "time_s").as_str()
    interp_cur = cur.get("interpolation", "hold" if price else "linear")
    interpolation = interp_cur.as_str()
    if interpolation not in ("linear", "hold"):
        raise interp_cur.error("unknown interpolation", expected="linear or hold")
    default_avg = "preceding" if energy or column.lower().endswith("_wh_m2") else "instant"
    avg_cur = cur.get("averaging", default_avg)
    averaging = avg_cur.as_str()
    if averaging not in ("instant", "preceding", "following"):
        raise avg_cur.error("unknown averaging", expected="instant, preceding or following")
    if energy and averaging == "instant":
        raise avg_cur.error("an energy per area is a sum over an interval",
                            expected="averaging: preceding or following")
    periodic = cur.get("periodic", True).as_bool()
    utc_offset = cur.get("utc_offset").as_float(unit="s") if cur.has("utc_offset") else None
    time_offset = cur.get("time_offset", 0.0).as_float(unit="s")

    key = (path, time_col, column)
    cols = cache.get(key) if cache is not None else None
    if cols is None:
        cols = read_csv_columns(path, [time_col, column], cur)
        if cache is not None:
            cache[key] = cols
    times, raw = cols[time_col], cols[column]
    where = f"{path} column '{time_col}'"
    if len(times) < 2:
        raise _csv_error(cur, where, "too few rows", expected="at least 2 data rows", found=len(times))
    steps = np.diff(times)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0)) + 1
        raise _csv_error(cur, f"{where}, data row {k + 1}", "time does not increase",
                         expected=f"a time > {times[k - 1]:g}", found=float(times[k]))
    if periodic and (times[0] < 0 or times[-1] > YEAR_S):
        raise _csv_error(cur, where, "times outside one year for a periodic series",
                         expected=f"0 <= {time_col} <= {YEAR_S} (or periodic: false for unix times)",
                         found=f"{times[0]:g}..{times[-1]:g}")
    if periodic and times[-1] == YEAR_S:  # duplicate of the next year's start
        times, raw = times[:-1], raw[:-1]
    values = raw * factor + shift
    # interval lengths: the one before each row (first row: the first step), the one after (last: last)
    steps = np.diff(times)
    before = np.concatenate(([steps[0]], steps))
    after = np.concatenate((steps, [steps[-1]]))
    if energy:
        values = values / (before if averaging == "preceding" else after)
    knots = times + time_offset
    if averaging == "preceding":
        knots = knots - (before if interpolation == "hold" else before / 2)
    elif averaging == "following" and interpolation == "linear":
        knots = knots + after / 2
    if periodic:
        wrapped = np.mod(knots, YEAR_S)
        outside = (knots < 0) | (knots >= YEAR_S)
        order = np.lexsort((outside, wrapped))  # by position; on ties the in-year row first
        wrapped, values = wrapped[order], values[order]
        keep = np.concatenate(([True], np.diff(wrapped) > 0))
        knots, values = wrapped[keep], values[keep]
    return TableSeries(times=knots, values=values, unit=out_unit, interpolation=interpolation,
                       periodic=periodic, utc_offset_s=utc_offset, source=f"{path}:{column}")


def _load_tou(cur: Cursor, price_unit: str) -> TimeOfUseTariff:
    from models.schedules import Interval

    cur.only_keys({"periods", "default", "unit", "holidays"})
    unit_cur = cur.get("unit", price_unit)
    out_unit, factor, shift, energy, price = _unit_conversion(unit_cur, unit_cur.as_str())
    if energy:
        raise unit_cur.error("a tariff cannot be an energy per interval", expected=f"a price unit like {price_unit}")
    default = _value_in(cur.get("default"), out_unit, factor, shift, price)
    days: list[list[tuple[Interval, Cursor]]] = [[] for _ in range(7)]
    for period in cur.get("periods"):
        period.only_keys({"days", "from", "to", "price"})
        weekdays = parse_days(period.get("days", "daily"))
        start = parse_time_of_day(period.get("from"), allow_24=False)
        end = parse_time_of_day(period.get("to"), allow_24=True)
        if not end > start:
            raise period.error("period must end after it starts (split periods that cross midnight)",
                               expected="from < to within one day")
        value = _value_in(period.get("price"), out_unit, factor, shift, price)
        for d in weekdays:
            for other, _ in days[d]:
                if start < other.end_s and other.start_s < end:
                    raise period.error("periods overlap on the same day",
                                       expected="non-overlapping periods", found=period.value)
            days[d].append((Interval(start, end, value), period))
    holidays = parse_holidays(cur.get("holidays")) if cur.has("holidays") else frozenset()
    schedule = WeeklySchedule(
        days=tuple(tuple(sorted((iv for iv, _ in d), key=lambda iv: iv.start_s)) for d in days),
        holidays=holidays, default=default)
    return TimeOfUseTariff(schedule=schedule, unit=out_unit)


def _load(cur: Cursor, base_dir: Path, cache: dict | None, price_unit: str = f"{DEFAULT_CURRENCY}/kWh") -> Series:
    value = cur.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ConstantSeries(float(value))
    if isinstance(value, dict):
        if "csv" in value:
            return _load_table(cur, base_dir, cache)
        if "periods" in value:
            return _load_tou(cur, price_unit)
        if "constant" in value:
            cur.only_keys({"constant", "unit"})
            unit_cur = cur.get("unit", "1")
            out_unit, factor, shift, energy, price = _unit_conversion(unit_cur, unit_cur.as_str())
            if energy:
                raise unit_cur.error("a constant cannot be an energy per interval", expected="a rate unit")
            return ConstantSeries(_value_in(cur.get("constant"), out_unit, factor, shift, price), out_unit)
    raise cur.error("unknown series", expected="a number, {constant, unit}, {csv, column, unit, ...} "
                    "or {periods, default}")


def load_series(cur: Cursor, base_dir: Path) -> Series:
    """A series from config: a CSV table, ``{constant, unit}`` (or a bare number) or a time-of-use table.

    CSV paths are relative to ``base_dir`` (the config file's folder). Reads the CSV file.
    """
    return _load(cur, Path(base_dir), None)


def load_named_series(cur: Cursor, base_dir: Path) -> dict[str, Series]:
    """A ``forecasts:`` mapping -> {name: series}; each CSV column is read once. (Tariffs: ``load_tariff``.)"""
    cache: dict = {}
    out: dict[str, Series] = {}
    for name, child in cur.items():
        out[str(name)] = _load(child, Path(base_dir), cache)
    return out


def _currency(symbol: str) -> str:
    return _CURRENCY_SYMBOLS.get(symbol, symbol)


def currency_of(unit: str) -> str:
    """The currency label of a price unit ('EUR/kWh' -> 'EUR'); the default currency for a bare number."""
    m = _PRICE_UNIT.match(unit.replace(" ", ""))
    return _currency(m.group(1)) if m else DEFAULT_CURRENCY


def load_tariff(cur: Cursor, base_dir: Path) -> tuple[str, dict[str, Series]]:
    """A site's ``tariff:`` section -> (currency, {carrier: price series in <currency>/kWh}).

    ``currency:`` (optional) is an ISO 4217 code or $ € £. Without it the currency is that of the first
    price unit given, else USD. It is a label: every price must be in it (a price in another currency is an
    error naming its field), bare numbers are taken in it, and reports, metrics help and the plan carry it.
    """
    cur.expect_mapping()
    currency = None
    if cur.has("currency"):
        ccur = cur.get("currency")
        currency = _currency(ccur.as_str().strip())
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ccur.error("unknown currency", expected="an ISO 4217 code such as EUR, USD, GBP or CHF, or $ € £")
    series_items = [(str(name), child) for name, child in cur.items() if name != "currency"]
    if currency is None:
        for _name, child in series_items:
            unit = child.value.get("unit") if isinstance(child.value, dict) else None
            if isinstance(unit, str) and _PRICE_UNIT.match(unit.replace(" ", "")):
                currency = currency_of(unit)
                break
        else:
            currency = DEFAULT_CURRENCY
    price_unit = f"{currency}/kWh"
    cache: dict = {}
    out: dict[str, Series] = {}
    for name, child in series_items:
        series = _load(child, Path(base_dir), cache, price_unit)
        if series.unit in ("", "1"):  # a bare number or unitless constant: a price in the tariff's currency
            series = dataclasses.replace(series, unit=price_unit)
        if series.unit != price_unit:
            where = child.get("unit") if isinstance(child.value, dict) and child.has("unit") else child
            raise where.error(f"a tariff in {currency} cannot hold a series in {series.unit}",
                              expected=f"a price in {currency} (per Wh, kWh or MWh; currencies are labels, "
                                       "never converted)", found=series.unit)
        out[name] = series
    return currency, out
