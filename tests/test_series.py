"""Forecast and tariff series: CSV loading and errors, yearly wrap, units, irradiance shift, TOU."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from models.errors import ConfigError
from models.series import (
    YEAR_S,
    ConstantSeries,
    TableSeries,
    TimeOfUseTariff,
    load_named_series,
    load_series,
    load_tariff,
    year_position,
)
from models.yamlio import Cursor, load_yaml, loads_yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "config" / "sites" / "office-20.yaml"
TMY = ROOT / "config" / "data" / "chicago_ohare_tmy3.csv"
PRICES = ROOT / "config" / "data" / "chicago_comed_2019.csv"
CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")


def cfg(text: str, field: str = "forecasts.x") -> Cursor:
    return Cursor(loads_yaml(text, "site.yaml"), "site.yaml", field)


def csv_rows(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.genfromtxt(path, delimiter=",", names=True)
    return data["time_s"], data[column]


def unix(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: dt.tzinfo = CHICAGO) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


CST = dt.timezone(dt.timedelta(hours=-6))


@pytest.fixture(scope="module")
def site_series() -> dict:
    doc = Cursor(load_yaml(SITE), str(SITE))
    out = load_named_series(doc.get("forecasts"), SITE.parent)
    out.update(load_tariff(doc.get("tariff"), SITE.parent)[1])
    return out


def test_office_20_forecasts_and_tariff_load(site_series: dict) -> None:
    assert set(site_series) == {"outdoor_temperature", "solar_irradiance", "electricity", "gas"}
    assert site_series["outdoor_temperature"].unit == "degC"
    assert site_series["solar_irradiance"].unit == "W/m2"
    assert site_series["electricity"].unit == "USD/kWh"
    assert site_series["electricity"].interpolation == "hold"
    assert site_series["outdoor_temperature"].interpolation == "linear"


def test_temperature_hits_the_rows_at_local_standard_time(site_series: dict) -> None:
    times, temp = csv_rows(TMY, "dry_bulb_c")
    s = site_series["outdoor_temperature"]
    # row k is at k hours after 1 Jan 00:00 CST, in any year; in summer that is one hour later on the
    # (daylight) wall clock
    for year in (2019, 2026):
        for k in (0, 17, 4000, 8759):
            t = unix(year, 1, 1, tz=CST) + times[k]
            assert s.sample(np.array([t]), CHICAGO)[0] == pytest.approx(temp[k])
    # halfway between rows: linear
    t = unix(2026, 1, 1, tz=CST) + 0.5 * (times[10] + times[11])
    assert s.sample(np.array([t]), CHICAGO)[0] == pytest.approx(0.5 * (temp[10] + temp[11]))


def test_year_wraps_and_interpolates_across_new_year(site_series: dict) -> None:
    _, temp = csv_rows(TMY, "dry_bulb_c")
    s = site_series["outdoor_temperature"]
    t_last = unix(2026, 12, 31, 23, 0, tz=CST)  # last row, 8759 h
    t_mid = t_last + 1800
    got = s.sample(np.array([t_last, t_mid, t_last + 3600]), CHICAGO)
    assert got == pytest.approx([temp[-1], 0.5 * (temp[-1] + temp[0]), temp[0]])
    # same value one year (365 d) later in a non-leap year; and a week-long trace is continuous
    t = unix(2026, 12, 28, tz=CST) + np.arange(0, 7 * 86400, 900.0)
    v = s.sample(t, CHICAGO)
    assert np.max(np.abs(np.diff(v))) < 3.0


def test_leap_year_feb_29_repeats_feb_28_and_march_keeps_its_date(site_series: dict) -> None:
    s = site_series["outdoor_temperature"]
    feb28 = s.sample(np.array([unix(2028, 2, 28, 12, tz=CST)]), CHICAGO)
    feb29 = s.sample(np.array([unix(2028, 2, 29, 12, tz=CST)]), CHICAGO)
    mar1_leap = s.sample(np.array([unix(2028, 3, 1, 12, tz=CST)]), CHICAGO)
    mar1 = s.sample(np.array([unix(2026, 3, 1, 12, tz=CST)]), CHICAGO)
    dec31_leap = s.sample(np.array([unix(2028, 12, 31, 12, tz=CST)]), CHICAGO)
    dec31 = s.sample(np.array([unix(2026, 12, 31, 12, tz=CST)]), CHICAGO)
    assert feb29 == feb28
    assert mar1_leap == mar1
    assert dec31_leap == dec31
    pos = year_position(np.array([unix(2028, 12, 31, 23, 59, tz=dt.UTC)]))
    assert 0 <= pos[0] < YEAR_S


def test_irradiance_hour_sum_becomes_mean_at_mid_hour(site_series: dict) -> None:
    times, ghi = csv_rows(TMY, "ghi_wh_m2")
    s = site_series["solar_irradiance"]
    k = int(np.argmax(ghi))  # the sum over the hour before times[k]
    t0 = unix(2026, 1, 1, tz=CST)
    # the knot is half an hour before the stamp
    assert s.sample(np.array([t0 + times[k] - 1800]), CHICAGO)[0] == pytest.approx(ghi[k])
    # the mean of the interpolated series over that hour is close to the hourly sum (Wh/m² -> W/m²)
    t = t0 + times[k] - 3600 + np.arange(0.5, 3600, 1.0)
    assert np.mean(s.sample(t, CHICAGO)) == pytest.approx(ghi[k], rel=0.1)
    # daily energy is preserved (piecewise-linear through interval means)
    day = t0 + 180 * 86400 + np.arange(0.0, 86400, 60.0)
    day_k = (times > 180 * 86400) & (times <= 181 * 86400)
    assert s.sample(day, CHICAGO).sum() * 60 / 3600 == pytest.approx(ghi[day_k].sum(), rel=0.02)
    # night stays at zero
    assert s.sample(np.array([t0 + 2 * 3600]), CHICAGO)[0] == 0.0


def test_price_holds_from_its_stamp(site_series: dict) -> None:
    times, price = csv_rows(PRICES, "PriceElectricPowerDynamic")
    s = site_series["electricity"]
    t0 = unix(2026, 1, 1, tz=CST)
    k = int(np.argmax(np.diff(price) != 0)) + 1  # first price change
    got = s.sample(np.array([t0 + times[k] - 1, t0 + times[k], t0 + times[k] + 3599]), CHICAGO)
    assert got.tolist() == [price[k - 1], price[k], price[k]]
    # the 8761st row (= next year's start) is dropped, not used at year end
    assert s.sample(np.array([unix(2027, 1, 1, tz=CST) - 1]), CHICAGO)[0] == price[-2]


def test_utc_offset_default_and_explicit() -> None:
    text = f"{{csv: {TMY}, column: dry_bulb_c, unit: degC}}"
    default = load_series(cfg(text), ROOT)
    explicit = load_series(cfg(f"{{csv: {TMY}, column: dry_bulb_c, unit: degC, utc_offset: -6 h}}"), ROOT)
    t = unix(2026, 7, 1) + np.arange(0, 86400, 3600.0)
    assert np.array_equal(default.sample(t, CHICAGO), explicit.sample(t, CHICAGO))
    # in Berlin the default reference is CET (+1 h): the same local standard clock position
    assert default.sample(np.array([unix(2026, 1, 5, 6, tz=BERLIN)]), BERLIN)[0] == pytest.approx(
        explicit.sample(np.array([unix(2026, 1, 5, 6, tz=CST)]), CHICAGO)[0])


def write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_units_kelvin_price_per_mwh_energy_per_area(tmp_path: Path) -> None:
    write(tmp_path, "time_s,T,p,q\n0,273.15,50,7200\n3600,283.15,100,3600\n7200,293.15,50,0\n")
    T = load_series(cfg("{csv: d.csv, column: T, unit: K, periodic: false}"), tmp_path)
    assert T.unit == "degC"
    assert T.sample(np.array([0.0, 1800.0]))[:].tolist() == pytest.approx([0.0, 5.0])
    p = load_series(cfg("{csv: d.csv, column: p, unit: USD/MWh, periodic: false}"), tmp_path)
    assert p.unit == "USD/kWh" and p.interpolation == "hold"
    assert p.sample(np.array([3599.0, 3600.0])).tolist() == pytest.approx([0.05, 0.1])
    q = load_series(cfg("{csv: d.csv, column: q, unit: J/m2, interpolation: hold, periodic: false}"), tmp_path)
    assert q.unit == "W/m2"
    # 3600 J/m2 over the hour ending at 3600 s -> 1 W/m2 held over [0, 3600)
    assert q.sample(np.array([100.0, 3700.0])).tolist() == pytest.approx([1.0, 0.0])
    assert isinstance(q, TableSeries)


def test_time_offset_shifts_the_axis(tmp_path: Path) -> None:
    write(tmp_path, "time_s,x\n0,0\n3600,1\n")
    s = load_series(cfg("{csv: d.csv, column: x, unit: '1', periodic: false, time_offset: 30 min}"), tmp_path)
    assert s.sample(np.array([1800.0, 3600.0])).tolist() == pytest.approx([0.0, 0.5])


@pytest.mark.parametrize(
    ("csv", "spec", "words"),
    [
        ("time_s,x\n0,1\n3600,abc\n", "column: x", ["d.csv:3 column 'x'", "not a number", "'abc'"]),
        ("time_s,x\n0,1\n3600,nan\n", "column: x", ["d.csv:3 column 'x'", "not finite"]),
        ("time_s,x\n0,1\n3600,2\n", "column: y", ["d.csv:1", "column 'y' not in CSV header", "time_s, x"]),
        ("time_s,x\n0,1\n3600,2\n3600,3\n", "column: x", ["time does not increase", "data row 3"]),
        ("time_s,x\n0,1\n3600\n", "column: x", ["d.csv:3", "too short"]),
        ("time_s,x\n0,1\n", "column: x", ["too few rows"]),
        ("time_s,x\n0,1\n40000000,2\n", "column: x", ["outside one year", "periodic: false"]),
    ],
)
def test_csv_errors_name_config_and_csv_spot(tmp_path: Path, csv: str, spec: str, words: list[str]) -> None:
    write(tmp_path, csv)
    text = f"forecasts:\n  x: {{csv: d.csv, {spec}, unit: degC}}\n"
    doc = Cursor(loads_yaml(text, "site.yaml"), "site.yaml")
    with pytest.raises(ConfigError) as info:
        load_named_series(doc.get("forecasts"), tmp_path)
    err = info.value
    assert (err.file, err.line, err.field) == ("site.yaml", 2, "forecasts.x")
    for w in words:
        assert w in str(err)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("{csv: missing.csv, column: x, unit: degC}", "forecasts.x", "CSV file not found"),
        ("{csv: d.csv, column: x, unit: furlong}", "forecasts.x.unit", "unsupported unit"),
        ("{csv: d.csv, column: x, unit: degC, interpolation: cubic}", "forecasts.x.interpolation", "linear or hold"),
        ("{csv: d.csv, column: x, unit: degC, interpolaton: hold}", "forecasts.x.interpolaton", "did you mean"),
        ("{csv: d.csv, column: x, unit: Wh/m2, averaging: instant}", "forecasts.x.averaging", "interval"),
        ("{column: x, unit: degC}", "forecasts.x", "unknown series"),
        ("{periods: [{days: mon-fry, from: '12:00', to: '18:00', price: 0.2}], default: 0.1}",
         "forecasts.x.periods[0].days", "unknown day"),
        ("{periods: [{days: mon, from: '12:00', to: '18:00', price: 0.2},"
         " {days: mon-fri, from: '17:00', to: '19:00', price: 0.3}], default: 0.1}",
         "forecasts.x.periods[1]", "overlap"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, field: str, words: str) -> None:
    write(tmp_path, "time_s,x\n0,1\n3600,2\n")
    with pytest.raises(ConfigError) as info:
        load_series(cfg(text), tmp_path)
    assert info.value.field == field
    assert info.value.file == "site.yaml"
    assert words in str(info.value)


def test_time_of_use_tariff_by_local_time_across_dst() -> None:
    s = load_series(cfg("""
periods:
  - {days: mon-fri, from: "12:00", to: "18:00", price: 0.25}
  - {days: sat, from: "09:00", to: "12:00", price: 15 USD/MWh}
default: 0.08
"""), ROOT)
    assert isinstance(s, TimeOfUseTariff) and s.unit == "USD/kWh"
    t = np.array([unix(2026, 3, 9, 11, 59), unix(2026, 3, 9, 12), unix(2026, 3, 9, 17, 59),
                  unix(2026, 3, 9, 18), unix(2026, 3, 14, 10), unix(2026, 3, 15, 13)])
    assert s.sample(t, CHICAGO).tolist() == pytest.approx([0.08, 0.25, 0.25, 0.08, 0.015, 0.08])
    # energy cost = price (USD/kWh) x kWh: 1 kW for one weekday = 6 h peak + 18 h off-peak
    day = np.arange(unix(2026, 3, 10), unix(2026, 3, 11), 900.0)
    assert np.sum(s.sample(day, CHICAGO) * 1.0 * 0.25) == pytest.approx(6 * 0.25 + 18 * 0.08)


def test_constants() -> None:
    assert load_series(cfg("0.024"), ROOT).sample(np.zeros(3), CHICAGO).tolist() == [0.024] * 3
    c = load_series(cfg("{constant: 20 USD/MWh, unit: USD/MWh}"), ROOT)
    assert isinstance(c, ConstantSeries)
    assert (c.value, c.unit) == (pytest.approx(0.02), "USD/kWh")
    c = load_series(cfg("{constant: 21 degC, unit: degC}"), ROOT)
    assert (c.value, c.unit) == (21.0, "degC")
    with pytest.raises(ConfigError):
        load_series(cfg("{constant: 3, unit: USD/MWh, extra: 1}"), ROOT)


# -- currencies: a label, never a conversion -------------------------------------------------------------
def test_tariff_in_euros_keeps_its_numbers_and_label(tmp_path: Path) -> None:
    from models.series import load_tariff

    write(tmp_path, "time_s,p\n0,80\n3600,95\n")
    currency, tariff = load_tariff(cfg("""
currency: EUR
electricity: {csv: d.csv, column: p, unit: EUR/MWh, periodic: false}
gas: {constant: 0.07}
""", "tariff"), tmp_path)
    assert currency == "EUR"
    assert tariff["electricity"].unit == "EUR/kWh" and tariff["gas"].unit == "EUR/kWh"
    assert tariff["electricity"].sample(np.array([0.0]), BERLIN).tolist() == pytest.approx([0.08])  # no FX
    assert tariff["gas"].sample(np.zeros(2), BERLIN).tolist() == [0.07, 0.07]
    # Without `currency:` it is the first price unit's; symbols are codes; a time-of-use table takes it too.
    currency, tariff = load_tariff(cfg("""
electricity:
  periods: [{days: mon-fri, from: "12:00", to: "18:00", price: 250 £/MWh}]
  default: 0.1
  unit: £/kWh
""", "tariff"), tmp_path)
    assert currency == "GBP" and tariff["electricity"].unit == "GBP/kWh"
    currency, tariff = load_tariff(cfg("electricity: {periods: [], default: 0.3}\ncurrency: CHF", "tariff"), ROOT)
    assert currency == "CHF" and tariff["electricity"].unit == "CHF/kWh"
    assert load_tariff(cfg("electricity: 0.2", "tariff"), ROOT)[0] == "USD"


@pytest.mark.parametrize(("text", "field", "words"), [
    ("currency: EUR\nelectricity: {constant: 0.2, unit: USD/kWh}", "tariff.electricity.unit",
     "a tariff in EUR cannot hold a series in USD/kWh"),
    ("electricity: {constant: 0.2, unit: EUR/kWh}\ngas: {constant: 0.1, unit: USD/kWh}", "tariff.gas.unit",
     "a tariff in EUR cannot hold"),
    ("currency: EUR\nelectricity: {periods: [{days: sat, from: '09:00', to: '12:00', price: 15 USD/MWh}], "
     "default: 0.1}", "tariff.electricity.periods[0].price", "price in USD, but this tariff is in EUR"),
    ("currency: euros\nelectricity: 0.2", "tariff.currency", "unknown currency"),
    ("currency: EUR\nelectricity: {constant: 21, unit: degC}", "tariff.electricity.unit", "in degC"),
])
def test_tariff_currency_errors(text: str, field: str, words: str) -> None:
    from models.series import load_tariff

    with pytest.raises(ConfigError) as info:
        load_tariff(cfg(text, "tariff"), ROOT)
    assert info.value.field == field and words in str(info.value), str(info.value)
