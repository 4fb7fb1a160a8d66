"""Numbers with units, converted to SI once at load.

A field declares the SI unit it wants (for example "W", "J/K", "W/(m.K)"). The user may write a bare
number (taken as already in that unit) or a number with a unit of the same dimension ("4.5 kW",
"21 degC" for a temperature stays in °C, "15 min"). A unit of the wrong dimension is an error that says
which unit was expected: that catches "capacity: 4.5 kWh" where power was meant.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.yamlio import Cursor

# Each unit: (factor to SI, dimension signature). Dimensions are a tuple of exponents (kg, m, s, K).
_BASE: dict[str, tuple[float, tuple[int, int, int, int]]] = {
    "": (1.0, (0, 0, 0, 0)),
    "1": (1.0, (0, 0, 0, 0)),
    "%": (0.01, (0, 0, 0, 0)),
    "W": (1.0, (1, 2, -3, 0)),
    "kW": (1e3, (1, 2, -3, 0)),
    "MW": (1e6, (1, 2, -3, 0)),
    "J": (1.0, (1, 2, -2, 0)),
    "kJ": (1e3, (1, 2, -2, 0)),
    "MJ": (1e6, (1, 2, -2, 0)),
    "Wh": (3600.0, (1, 2, -2, 0)),
    "kWh": (3.6e6, (1, 2, -2, 0)),
    "m": (1.0, (0, 1, 0, 0)),
    "cm": (0.01, (0, 1, 0, 0)),
    "mm": (0.001, (0, 1, 0, 0)),
    "m2": (1.0, (0, 2, 0, 0)),
    "m3": (1.0, (0, 3, 0, 0)),
    "l": (1e-3, (0, 3, 0, 0)),
    "L": (1e-3, (0, 3, 0, 0)),
    "kg": (1.0, (1, 0, 0, 0)),
    "g": (1e-3, (1, 0, 0, 0)),
    "s": (1.0, (0, 0, 1, 0)),
    "min": (60.0, (0, 0, 1, 0)),
    "h": (3600.0, (0, 0, 1, 0)),
    "d": (86400.0, (0, 0, 1, 0)),
    "K": (1.0, (0, 0, 0, 1)),
    "degC": (1.0, (0, 0, 0, 1)),
    "°C": (1.0, (0, 0, 0, 1)),
}
# Units of flow inputs (circulators, fans): besides the flow itself their devices take a speed (0..1).
FLOW_UNITS = ("kg/s",)

_CELSIUS = ("degC", "°C")  # absolute temperatures; "K" in such a field is converted with the offset
# Dimensions by exponent (kg, m, s, K) for products of base units.
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)\s*(.*?)\s*$")


def _parse_unit(text: str) -> tuple[float, tuple[int, ...]]:
    """Parse products and quotients such as 'W/(m2.K)', 'kg/s', 'J/(kg.K)', 'W/m2', 'm3/h'."""
    text = text.replace(" ", "").replace("·", ".").replace("*", ".")
    if text in _BASE:
        return _BASE[text]
    num, slash, den = text.partition("/")
    den = den.strip("()")
    if slash and not den:
        raise KeyError(text)  # "kW/": a quotient with nothing below the line
    factor, dims = 1.0, [0, 0, 0, 0]
    for part, sign in ((num, 1), (den, -1)):
        if not part:
            continue
        for token in part.split("."):
            m = re.fullmatch(r"([A-Za-z°%]+)(\^?-?\d+)?", token)
            if not m or (m.group(1) not in _BASE and not (m.group(1)[:-1] in _BASE and m.group(1)[-1].isdigit())):
                raise KeyError(token)
            name, power = m.group(1), int((m.group(2) or "1").lstrip("^"))
            f, d = _BASE[name]
            factor *= f ** (sign * power)
            dims = [a + sign * power * b for a, b in zip(dims, d, strict=True)]
    return factor, tuple(dims)


def convert(text: str, unit: str) -> float:
    """Convert '4.5 kW' to the SI value in `unit` (raises ValueError with a human message)."""
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"cannot read a number in {text!r}")
    value = float(m.group(1))
    given = m.group(2)
    if not given:
        return value
    try:
        f_given, d_given = _parse_unit(given)
    except KeyError:
        raise ValueError(f"unknown unit {given!r}") from None
    f_want, d_want = _parse_unit(unit)
    if d_given != d_want:
        raise ValueError(f"unit {given!r} is not compatible with {unit!r}")
    if unit in _CELSIUS and given.strip() == "K":
        # An absolute temperature written in kelvin ("294.15 K") is 21 °C, not 294.15 °C. Temperature
        # differences ("supply_offset: 3 K") are fields in K and keep their value.
        return value - 273.15
    return value * f_given / f_want


def parse_quantity(cur: Cursor, unit: str | None) -> float:
    """The cursor's value as a float in SI `unit` (or dimensionless when unit is None)."""
    value = cur.value
    if isinstance(value, bool) or value is None:
        raise cur.error("wrong type", expected=f"a number{f' in {unit}' if unit else ''}")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer of 309+ digits: the caller reports it as not finite
            return math.inf
    if isinstance(value, str):
        try:
            return convert(value, unit or "")
        except ValueError as exc:
            raise cur.error(str(exc), expected=f"a number{f' with a unit like {unit}' if unit else ''}") from None
    raise cur.error("wrong type", expected=f"a number{f' in {unit}' if unit else ''}")


def is_finite(x: float) -> bool:
    return math.isfinite(x)
