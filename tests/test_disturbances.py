"""DisturbanceBuilder: site config -> (K, nd) matrix with per-step sources; MQTT overrides; errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.daemon.forecast_sources import builder_from_config, builder_from_site
from controller.disturbances import DisturbanceBuilder, Source
from drivers.payloads import Forecast
from models import load_building
from models.errors import ConfigError
from models.schedules import parse_schedules
from models.series import TableSeries
from models.yamlio import Cursor, loads_yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "config/data"
TZ = ZoneInfo("America/Chicago")
NAMES = ["outdoor_temperature", "solar_irradiance", "ground_temperature", "occupancy"]
UNITS = ["degC", "W/m2", "degC", "1"]
SCHED = """
office_hours:
  weekly:
    mon-fri: [["07:00", "19:00"]]
  holidays: ["2026-12-25"]
"""


def builder(forecasts: str, **kw: object) -> DisturbanceBuilder:
    sched = parse_schedules(Cursor(loads_yaml(SCHED, "site.yaml"), "site.yaml", "schedules"))
    cur = Cursor(loads_yaml(forecasts, "site.yaml"), "site.yaml", "forecasts")
    return builder_from_config(cur, sched, TZ, DATA, NAMES, UNITS, comfort_schedule="office_hours", **kw)


WEATHER = """
outdoor_temperature: {csv: chicago_ohare_tmy3.csv, column: dry_bulb_c, unit: degC}
solar_irradiance: {csv: chicago_ohare_tmy3.csv}
"""


def midnight(y: int, m: int, d: int) -> float:
    return dt.datetime(y, m, d, tzinfo=TZ).timestamp()


def test_office_site_defaults_and_shapes() -> None:
    from controller.daemon.settings import load_site

    site = load_site(ROOT / "config/sites/office-20.yaml")
    net = load_building(site.model_path)
    b = builder_from_site(site, net)
    rep = b.build_report(midnight(2026, 1, 12), 96, 900.0)  # a Monday
    assert rep.values.shape == (96, 4) and np.all(np.isfinite(rep.values))
    assert rep.summary() == {"outdoor_temperature": {"csv": 96}, "solar_irradiance": {"csv": 96},
                             "ground_temperature": {"constant": 96}, "occupancy": {"schedule": 96}}
    occ = rep.values[:, 3]
    assert occ[28:76].min() == 1.0 and occ[:28].max() == 0.0 and occ[76:].max() == 0.0  # 07:00-19:00
    assert np.all(rep.values[:, 2] == 10.0)
    ghi = rep.values[:, 1]
    assert ghi[:24].max() == 0.0 and ghi[40:60].max() > 50.0  # dark at night, sun around noon in January


def test_step_value_is_the_mean_over_the_step() -> None:
    b = builder(WEATHER, samples_per_step=8)
    t0 = midnight(2026, 6, 1) + 10 * 3600
    series = b.sources["solar_irradiance"].series
    assert isinstance(series, TableSeries)
    v = b.build(t0, 4, 900.0)[:, 1]
    fine = series.sample(t0 + 900.0 * (np.arange(32) + 0.5) / 8, TZ).reshape(4, 8).mean(axis=1)
    np.testing.assert_allclose(v, fine)
    # a schedule edge inside a step gives the occupied fraction of that step
    half = b.build(midnight(2026, 6, 1) + 6.5 * 3600 + 450.0, 1, 900.0)  # 06:37:30..06:52:30 then 07:00 edge
    assert half[0, 3] == 0.0
    edge = b.build(midnight(2026, 6, 1) + 7 * 3600 - 450.0, 1, 900.0)
    assert edge[0, 3] == pytest.approx(0.5)


def test_mqtt_forecast_overrides_where_it_covers_then_csv() -> None:
    b = builder(WEATHER)
    t0 = midnight(2026, 1, 12)
    fc = Forecast(t0 + 3600.0, 900.0, np.linspace(-20.0, -15.0, 9))  # covers 01:00..03:00
    rep = b.build_report(t0, 16, 900.0, {"outdoor_temperature": fc})
    plain = b.build(t0, 16, 900.0)
    src = rep.step_sources["outdoor_temperature"]
    assert src[:4] == ("csv",) * 4 and src[4:12] == ("mqtt",) * 8 and src[12:] == ("csv",) * 4
    np.testing.assert_allclose(rep.values[4:12, 0], np.interp(t0 + 900.0 * (np.arange(4, 12) + 0.5), fc.times,
                                                                fc.values))
    np.testing.assert_array_equal(rep.values[12:, 0], plain[12:, 0])
    np.testing.assert_array_equal(rep.values[:, 1:], plain[:, 1:])


def test_mqtt_only_source_persists_last_value_and_defaults_before_first() -> None:
    b = builder(WEATHER + "ground_temperature: {mqtt: true, default: 8 degC}\n")
    t0 = midnight(2026, 1, 12)
    rep = b.build_report(t0, 8, 900.0)
    assert np.all(rep.values[:, 2] == 8.0) and set(rep.step_sources["ground_temperature"]) == {"persistence"}
    fc = Forecast(t0, 900.0, np.array([5.0, 6.0, 7.0]))
    rep = b.build_report(t0, 8, 900.0, {"ground_temperature": fc})
    assert rep.values[-1, 2] == 7.0 and rep.step_sources["ground_temperature"][-1] == "persistence"
    assert rep.step_sources["ground_temperature"][0] == "mqtt"


def test_non_periodic_table_beyond_its_data_is_persistence() -> None:
    t0 = midnight(2026, 1, 12)
    table = TableSeries(np.array([t0, t0 + 3600.0]), np.array([1.0, 3.0]), "degC", periodic=False)
    b = DisturbanceBuilder(NAMES, {"outdoor_temperature": table, "solar_irradiance": table}, {}, TZ,
                           {"occupancy": Source("constant", value=0.5)})
    rep = b.build_report(t0, 8, 900.0)
    assert rep.step_sources["outdoor_temperature"][:4] == ("csv",) * 4
    assert rep.step_sources["outdoor_temperature"][4:] == ("persistence",) * 4
    assert np.all(rep.values[4:, 0] == 3.0) and np.all(rep.values[:, 3] == 0.5)


def test_dst_days_have_the_right_number_of_occupied_steps() -> None:
    b = builder(WEATHER)
    for day in ((2026, 3, 9), (2026, 11, 2)):  # the Mondays after the spring and autumn changes
        occ = b.build(midnight(*day), 96, 900.0)[:, 3]
        assert occ.sum() == 48  # 12 h occupied, in local time
    spring = midnight(2026, 3, 8)  # Sunday, 23 h long: 92 quarter hours to the next local midnight
    assert (midnight(2026, 3, 9) - spring) / 900 == 92


@pytest.mark.parametrize(("text", "message"), [
    ("ground_temperature: {constant: 10 W/m2}\n", "not compatible"),
    ("occupancy: {schedule: nope}\n", "unknown schedule 'nope'"),
    ("outdor_temperature: 3\n", "not a disturbance of the model"),
    ("ground_temperature: {mqtt: true}\n", "missing required field 'default'"),
])
def test_config_errors_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        builder(WEATHER + text)
    assert err.value.file == "site.yaml" and err.value.line == 4


def test_series_unit_must_match_the_model() -> None:
    text = "outdoor_temperature: 3\nsolar_irradiance: {csv: chicago_ohare_tmy3.csv, column: dry_bulb_c, unit: degC}\n"
    with pytest.raises(ConfigError, match="model's disturbance is in W/m2") as err:
        builder(text)
    assert err.value.line == 2


def test_missing_source_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'solar_irradiance' has no source"):
        builder("outdoor_temperature: 3\n")


def test_forecast_for_unknown_disturbance_refused() -> None:
    b = builder(WEATHER)
    with pytest.raises(ValueError, match="unknown disturbance"):
        b.build(0.0, 2, 900.0, {"wind": Forecast(0.0, 900.0, np.ones(3))})
