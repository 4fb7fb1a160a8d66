"""Where each disturbance's values come from, read from a site file's ``forecasts:`` section.

This is the file-reading half of `controller.disturbances`: it parses each entry (a CSV column, a constant,
a schedule or MQTT only), loads the series it names, checks units against the model, and hands the pure
`DisturbanceBuilder` its sources. Every error names file, line and field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from controller.disturbances import DisturbanceBuilder, Source, _series_source
from models.schedules import WeeklySchedule, parse_schedules
from models.series import load_series
from models.yamlio import Cursor, MarkedDict

# Columns of the TMY3 files in config/data that a disturbance takes when its entry names only the CSV.
DEFAULT_WEATHER_COLUMNS: dict[str, tuple[str, str]] = {
    "outdoor_temperature": ("dry_bulb_c", "degC"),
    "solar_irradiance": ("ghi_wh_m2", "W/m2"),
}

_SERIES_UNIT = {"degC": "degC", "W/m2": "W/m2", "1": "1", "W": "W"}

_SOURCE_KEYS_HELP = ("{csv, column, unit, ...}, {constant: value}, {schedule: name, scale?}, "
                     "{mqtt: true, default: value} or a number")


def parse_source(cur: Cursor, unit: str, schedules: Mapping[str, WeeklySchedule], base_dir: Path, *,
                 default_name: str = "") -> Source:
    """One ``forecasts:`` entry for a disturbance of model unit ``unit`` (degC, W/m2, 1 or W)."""
    value = cur.value
    want = _SERIES_UNIT.get(unit, unit)
    as_unit = None if unit == "1" else unit
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Source("constant", value=cur.as_float(unit=as_unit), label="constant")
    if not isinstance(value, dict):
        raise cur.error("unknown forecast source", expected=_SOURCE_KEYS_HELP)
    if "schedule" in value:
        cur.only_keys({"schedule", "scale"})
        key_cur = cur.get("schedule")
        key = key_cur.as_str()
        if key not in schedules:
            raise key_cur.error(f"unknown schedule '{key}'",
                                expected="one of: " + (", ".join(schedules) or "(no schedules defined)"))
        scale = cur.get("scale", 1.0).as_float()
        return Source("schedule", schedule=schedules[key], scale=scale, label=f"schedule {key}")
    if "mqtt" in value:
        cur.only_keys({"mqtt", "default"})
        if not cur.get("mqtt").as_bool():
            raise cur.get("mqtt").error("an MQTT-only source must say mqtt: true",
                                        expected="true (or another source kind)")
        return Source("mqtt", value=cur.get("default").as_float(unit=as_unit), label="mqtt only")
    if "constant" in value and "unit" not in value:
        cur.only_keys({"constant"})
        # The model's own unit: "10 degC" is checked against it, a bare number is taken in it.
        return Source("constant", value=cur.get("constant").as_float(unit=as_unit), label="constant")
    if "csv" in value and "column" not in value and default_name in DEFAULT_WEATHER_COLUMNS:
        column, col_unit = DEFAULT_WEATHER_COLUMNS[default_name]
        filled = MarkedDict(copy.copy(dict(value)))
        filled.lines = dict(getattr(value, "lines", {}))
        filled.line = getattr(value, "line", cur.line)
        filled["column"] = column
        filled.setdefault("unit", col_unit)
        cur = Cursor(filled, cur.file, cur.field, cur.line)
    series = load_series(cur, base_dir)
    if series.unit != want and not (want == "1" and series.unit in ("", "1")):
        raise cur.error(f"the series is in {series.unit or '1'} but the model's disturbance is in {unit}",
                        expected=f"a series in {unit}", found=series.unit)
    return _series_source(series)


def builder_from_config(forecasts: Cursor, schedules: Mapping[str, WeeklySchedule], tz: ZoneInfo,
                base_dir: Path, disturbance_names: list[str], disturbance_units: list[str], *,
                comfort_schedule: str | None = None, samples_per_step: int = 4) -> DisturbanceBuilder:
    """Parse a site's ``forecasts:`` section against a model's disturbances (names and units)."""
    units = dict(zip(disturbance_names, disturbance_units, strict=True))
    mapping: dict[str, Source] = {}
    if forecasts.value is None:
        forecasts = Cursor(MarkedDict(), forecasts.file, forecasts.field, forecasts.line)
    for name, cur in forecasts.items():
        if name not in units:
            # A forecast the model does not use is harmless but usually a typo of a disturbance name.
            raise cur.error(f"'{name}' is not a disturbance of the model",
                            expected="one of " + ", ".join(disturbance_names), found=name)
        mapping[name] = parse_source(cur, units[name], schedules, base_dir, default_name=name)
    if comfort_schedule is not None and "occupancy" in units and "occupancy" not in mapping \
            and comfort_schedule not in schedules:
        raise forecasts.error(f"occupancy defaults to the comfort schedule '{comfort_schedule}', which is "
                              "not defined under 'schedules:'", field="comfort.schedule",
                              expected="a schedule name from 'schedules:'", found=comfort_schedule)
    for name in disturbance_names:
        if name not in mapping and name not in ("ground_temperature", "occupancy"):
            raise forecasts.error(f"model disturbance '{name}' has no source", field=f"forecasts.{name}",
                                  expected="an entry such as {csv: ..., column: ..., unit: ...}, "
                                           "{constant: ...}, {schedule: ...} or {mqtt: true, default: ...}",
                                  found=None)
        if name == "occupancy" and name not in mapping and comfort_schedule is None:
            raise forecasts.error("model disturbance 'occupancy' has no source and no comfort schedule",
                                  field="forecasts.occupancy", expected="{schedule: <name>}", found=None)
    return DisturbanceBuilder(disturbance_names, {}, schedules, tz, mapping, comfort_schedule=comfort_schedule,
               samples_per_step=samples_per_step)

def builder_from_site(site: Any, sim: Any, *, samples_per_step: int = 4) -> DisturbanceBuilder:
    """From a ``controller.daemon.settings.SiteConfig`` and a compiled model (``Simulator``) or ``Network``."""

    net = getattr(sim, "net", sim)
    schedules = parse_schedules(site.schedules) if site.schedules.value else {}
    return builder_from_config(site.forecasts, schedules, site.timezone, site.base_dir, list(net.disturbances),
                           list(net.disturbance_units), comfort_schedule=site.comfort.schedule,
                           samples_per_step=samples_per_step)
