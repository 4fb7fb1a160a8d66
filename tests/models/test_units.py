"""The unit parser: numbers with units converted to the SI unit a field declares, mistakes refused."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import ConfigError
from models.units import convert, parse_quantity
from models.yamlio import Cursor


@pytest.mark.parametrize(("text", "unit", "want"), [
    ("4.5 kW", "W", 4500.0),
    ("4.5kW", "W", 4500.0),
    ("0.2 MW", "W", 2e5),
    ("1 kWh", "J", 3.6e6),
    ("2 Wh", "kJ", 7.2),
    ("15 min", "s", 900.0),
    ("2 h", "s", 7200.0),
    ("1 d", "h", 24.0),
    ("200 mm", "m", 0.2),
    ("1.5 cm", "m", 0.015),
    ("300 l", "m3", 0.3),
    ("300 L", "m3", 0.3),
    ("120 m2", "m2", 120.0),
    ("2300 kg/m3", "kg/m3", 2300.0),
    ("1 g/l", "kg/m3", 1.0),
    ("0.04 W/(m.K)", "W/(m.K)", 0.04),
    ("0.04 W/(m·K)", "W/(m.K)", 0.04),
    ("0.04 W/m.K", "W/(m.K)", 0.04),
    ("1.3 W/(m2.K)", "W/(m2.K)", 1.3),
    ("1.3 W/(m^2.K)", "W/(m2.K)", 1.3),
    ("1.3 W/(m2*K)", "W/(m2.K)", 1.3),
    ("0.88 kJ/(kg.K)", "J/(kg.K)", 880.0),
    ("3.6 m3/h", "m3/s", 0.001),
    ("0.25 kg/s", "kg/s", 0.25),
    ("900 g/s", "kg/s", 0.9),
    ("50 %", "", 0.5),
    ("50 %", "1", 0.5),
    ("3 K", "K", 3.0),
    ("3 degC", "K", 3.0),          # a temperature difference
    ("21 degC", "degC", 21.0),
    ("21 °C", "degC", 21.0),
    ("294.15 K", "degC", 21.0),     # an absolute temperature in kelvin
    ("1e3 W", "kW", 1.0),
    ("-2.5e-1 kW", "W", -250.0),
    ("7", "W", 7.0),                # a bare number is already in the field's unit
    (".5 m", "mm", 500.0),
])
def test_compatible_units_convert(text: str, unit: str, want: float):
    assert convert(text, unit) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("text", "unit", "message"), [
    ("4 kWh", "W", "not compatible"),          # energy where power is meant
    ("4 kW", "J", "not compatible"),
    ("3 m", "m2", "not compatible"),           # length where area is meant
    ("3 m2", "m3", "not compatible"),
    ("1 W/m2", "W/(m2.K)", "not compatible"),
    ("0.4 1/h", "1", "unknown unit"),          # per-hour rates are not a unit the parser knows
    ("2 kg", "kg/s", "not compatible"),
    ("21 degC", "W", "not compatible"),
    ("0.5 W", "", "not compatible"),           # a unit on a dimensionless field
    ("4 kQ", "W", "unknown unit"),
    ("4 Kw", "W", "unknown unit"),             # case matters: kW, not Kw
    ("1,5 kW", "W", "unknown unit"),           # decimal comma is not silently read as 1
    ("4 kW/", "W", "unknown unit"),
    ("four kW", "W", "cannot read a number"),
    ("", "W", "cannot read a number"),
    ("kW", "W", "cannot read a number"),
])
def test_incompatible_or_unknown_units_are_refused(text: str, unit: str, message: str):
    with pytest.raises(ValueError, match=message):
        convert(text, unit)


def test_non_finite_numbers_parse_but_are_refused_by_fields():
    assert math.isinf(convert("inf", "W")) and math.isnan(convert("nan kW", "W"))
    for value in ("inf", "-inf kW", float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="not finite"):
            Cursor(value, "f.yaml", "cap", 3).as_float(unit="W")


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_non_numbers_are_wrong_type(value):
    with pytest.raises(ConfigError, match="wrong type") as info:
        parse_quantity(Cursor(value, "f.yaml", "zones.z01.volume", 7), "m3")
    assert str(info.value).startswith("f.yaml:7: ") and "expected a number in m3" in str(info.value)


def test_unit_error_names_field_and_expected_unit():
    with pytest.raises(ConfigError) as info:
        Cursor("4 kWh", "b.yaml", "actuators.heater.heating_capacity", 12).as_float(unit="W", positive=True)
    msg = str(info.value)
    assert msg == ("b.yaml:12: unit 'kWh' is not compatible with 'W'; field 'actuators.heater.heating_capacity'; "
                   "expected a number with a unit like W; found '4 kWh'")


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
       st.sampled_from([("kW", "W", 1e3), ("mm", "m", 1e-3), ("min", "s", 60.0), ("l", "m3", 1e-3),
                        ("kJ/(kg.K)", "J/(kg.K)", 1e3), ("W/(m2.K)", "W/(m2.K)", 1.0)]))
def test_round_trip_scaling(x: float, case):
    given_unit, si, factor = case
    assert convert(f"{x!r} {given_unit}", si) == pytest.approx(x * factor, rel=1e-12, abs=1e-300)
