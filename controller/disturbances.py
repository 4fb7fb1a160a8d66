"""The (K, nd) disturbance matrix a model needs, from site forecasts, MQTT forecasts and schedules.

Each model disturbance (``sim.disturbance_names``) gets one configured *source*:

- a series (``models.series``): a CSV column (TMY3 weather, ...), a constant or a time-of-use table;
- a schedule (``schedules:`` of the site), e.g. occupancy from the comfort schedule;
- a constant, in the model's unit for that disturbance;
- MQTT only, with a default used until the first forecast arrives.

A fresh MQTT forecast (``drivers.payloads.Forecast``) passed to ``build`` overrides the configured source
where it covers the horizon (between its first and last value, linearly interpolated); outside it the
configured CSV/constant/schedule is used, and where nothing covers a time the last known value is held
(persistence). ``build_report`` says which source gave each step.

Step convention (the simulator's zero-order hold): row k is the value *held over* ``[t0 + k dt,
t0 + (k+1) dt)``. It is the mean over that interval, taken by the midpoint rule on ``samples_per_step``
sub-intervals: hourly irradiance knots, a schedule edge inside a step or a forecast ending mid-step all
then enter with the right weight instead of whatever value happens to sit at the step start.

Default mapping (when the site's ``forecasts:`` section does not name a disturbance):

- ``ground_temperature``: constant 10 °C;
- ``occupancy``: the comfort schedule (``comfort.schedule``);
- any disturbance named under ``forecasts:`` uses that entry.

Site config syntax, extending ``models.series`` (every error names file, line and field)::

    forecasts:
      outdoor_temperature: {csv: ../data/chicago_ohare_tmy3.csv, column: dry_bulb_c, unit: degC}
      solar_irradiance: {csv: ../data/chicago_ohare_tmy3.csv}   # column/unit default: ghi_wh_m2, W/m2
      ground_temperature: {constant: 10 degC}                    # in the model's unit; units checked
      occupancy: {schedule: office_hours, scale: 1.0}            # a schedule from `schedules:`
      wind: {mqtt: true, default: 3}                             # MQTT only; default until one arrives
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from models.schedules import WeeklySchedule
from models.series import ConstantSeries, Series, TableSeries, TimeOfUseTariff


class Forecast(Protocol):
    """What an MQTT forecast (``drivers.payloads.Forecast``) offers the builder."""

    start: float
    end: float
    times: np.ndarray
    values: np.ndarray


SOURCES: tuple[str, ...] = ("mqtt", "csv", "persistence", "schedule", "constant")
_MQTT, _CSV, _PERSIST, _SCHEDULE, _CONSTANT = range(5)

DEFAULT_GROUND_TEMPERATURE_C = 10.0
# The SI units models.building accepts for disturbances, as models.series reports its outputs.


@dataclass(frozen=True)
class Source:
    """Where one disturbance comes from when no MQTT forecast covers a time.

    kind: ``series`` (``series``), ``schedule`` (``schedule`` times ``scale``), ``constant`` (``value``) or
    ``mqtt`` (MQTT forecasts only; ``value`` until the first one arrives).
    """

    kind: str
    series: Series | None = None
    schedule: WeeklySchedule | None = None
    value: float = 0.0
    scale: float = 1.0
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("series", "schedule", "constant", "mqtt"):
            raise ValueError(f"unknown source kind {self.kind!r}")
        if self.kind == "series" and self.series is None:
            raise ValueError("a series source needs a series")
        if self.kind == "schedule" and self.schedule is None:
            raise ValueError("a schedule source needs a schedule")


@dataclass(frozen=True)
class DisturbanceMatrix:
    """``values`` (K, nd) held over each step, and per disturbance the source that gave each step."""

    values: np.ndarray
    names: tuple[str, ...]
    step_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def counts(self, name: str) -> dict[str, int]:
        """Steps per source for one disturbance, e.g. ``{"mqtt": 48, "csv": 48}``."""
        out: dict[str, int] = {}
        for s in self.step_sources[name]:
            out[s] = out.get(s, 0) + 1
        return out

    def summary(self) -> dict[str, dict[str, int]]:
        return {n: self.counts(n) for n in self.names}


class DisturbanceBuilder:
    """Builds the disturbance matrix for one model from the site's sources (see module docstring).

    Args:
        sim_disturbance_names: the model's disturbance names, in its column order.
        site_forecasts: name -> series (e.g. ``models.series.load_named_series`` of ``forecasts:``).
        schedules: name -> weekly schedule (the site's ``schedules:``).
        tz: the site's time zone (schedules and periodic CSV data are in local time).
        mapping: disturbance name -> ``Source`` (or the name of a series in ``site_forecasts``, or of a
            schedule prefixed ``schedule:``); overrides the defaults.
        comfort_schedule: the schedule occupancy defaults to.
        samples_per_step: sub-samples per step for the step mean.
    """

    def __init__(self, sim_disturbance_names: list[str] | tuple[str, ...], site_forecasts: Mapping[str, Series],
                 schedules: Mapping[str, WeeklySchedule], tz: ZoneInfo | str,
                 mapping: Mapping[str, Source | str] | None = None, *, comfort_schedule: str | None = None,
                 samples_per_step: int = 4) -> None:
        self.names = tuple(sim_disturbance_names)
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        if samples_per_step < 1:
            raise ValueError("samples_per_step must be >= 1")
        self.samples_per_step = int(samples_per_step)
        self.sources: dict[str, Source] = {}
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - set(self.names))
        if unknown:
            raise ValueError(f"mapping names disturbance(s) the model does not have: {', '.join(unknown)}; "
                             f"the model has {', '.join(self.names)}")
        for name in self.names:
            spec = mapping.get(name)
            if isinstance(spec, Source):
                self.sources[name] = spec
            elif isinstance(spec, str):
                self.sources[name] = self._named(name, spec, site_forecasts, schedules)
            elif name in site_forecasts:
                self.sources[name] = _series_source(site_forecasts[name])
            elif name == "ground_temperature":
                self.sources[name] = Source("constant", value=DEFAULT_GROUND_TEMPERATURE_C, label="default 10 degC")
            elif name == "occupancy" and comfort_schedule is not None:
                if comfort_schedule not in schedules:
                    raise ValueError(f"comfort schedule {comfort_schedule!r} is not among the schedules "
                                     f"({', '.join(schedules) or 'none'})")
                self.sources[name] = Source("schedule", schedule=schedules[comfort_schedule],
                                            label=f"schedule {comfort_schedule}")
            else:
                raise ValueError(f"no source for model disturbance {name!r}: add it under the site's "
                                 "'forecasts:' (a CSV column, {constant: ...}, {schedule: ...} or {mqtt: true, "
                                 "default: ...})")

    @staticmethod
    def _named(name: str, spec: str, forecasts: Mapping[str, Series],
               schedules: Mapping[str, WeeklySchedule]) -> Source:
        if spec.startswith("schedule:"):
            key = spec.split(":", 1)[1]
            if key not in schedules:
                raise ValueError(f"{name}: unknown schedule {key!r} ({', '.join(schedules) or 'none defined'})")
            return Source("schedule", schedule=schedules[key], label=f"schedule {key}")
        if spec not in forecasts:
            raise ValueError(f"{name}: unknown forecast series {spec!r} ({', '.join(forecasts) or 'none'})")
        return _series_source(forecasts[spec])

    # -- building ------------------------------------------------------------------------------------------
    def build(self, t0: float, K: int, dt: float, overrides: Mapping[str, Forecast] | None = None) -> np.ndarray:
        """(K, nd) values held over ``[t0 + k dt, t0 + (k+1) dt)``, columns in the model's order."""
        return self.build_report(t0, K, dt, overrides).values

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """Values held over steps starting at the equally spaced times ``t`` (the plant's callable form)."""
        t = np.asarray(t, dtype=float)
        dt = float(t[1] - t[0]) if t.size > 1 else 0.0
        return self.build(float(t[0]), int(t.size), dt)

    def build_report(self, t0: float, K: int, dt: float,
                     overrides: Mapping[str, Forecast] | None = None) -> DisturbanceMatrix:
        """``build`` plus, per disturbance, the source of each step (``SOURCES``; majority of sub-samples)."""
        if K < 0 or not np.isfinite(t0) or not dt >= 0:
            raise ValueError(f"bad horizon: t0={t0}, K={K}, dt={dt}")
        overrides = dict(overrides or {})
        extra = sorted(set(overrides) - set(self.names))
        if extra:
            raise ValueError(f"forecast(s) for unknown disturbance(s): {', '.join(extra)}")
        S = self.samples_per_step if dt > 0 else 1
        ts = t0 + dt * (np.arange(K)[:, None] + (np.arange(S)[None, :] + 0.5) / S)  # (K, S) midpoints
        values = np.empty((K, len(self.names)))
        step_sources: dict[str, tuple[str, ...]] = {}
        for j, name in enumerate(self.names):
            v, lab = self._sample(name, ts.ravel(), overrides.get(name))
            values[:, j] = v.reshape(K, S).mean(axis=1)
            counts = np.stack([(lab.reshape(K, S) == s).sum(axis=1) for s in range(len(SOURCES))], axis=1)
            step_sources[name] = tuple(SOURCES[i] for i in counts.argmax(axis=1)) if K else ()
        return DisturbanceMatrix(values, self.names, step_sources)

    def _sample(self, name: str, t: np.ndarray, fc: Forecast | None) -> tuple[np.ndarray, np.ndarray]:
        src = self.sources[name]
        values = np.full(t.shape, np.nan)
        labels = np.full(t.shape, _PERSIST, dtype=np.int8)
        if fc is not None and fc.values.size:
            # Covered: between its first and last value (one value covers exactly one instant, so a
            # single-value forecast acts through persistence below only when nothing else covers).
            inside = (t >= fc.start) & (t <= fc.end)
            if fc.values.size == 1:
                inside = t == fc.start
            values[inside] = np.interp(t[inside], fc.times, fc.values)
            labels[inside] = _MQTT
        rest = np.isnan(values)
        if rest.any():
            v, lab, covered = self._configured(src, t[rest])
            idx = np.flatnonzero(rest)
            values[idx[covered]] = v[covered]
            labels[idx[covered]] = lab
        missing = np.isnan(values)
        if missing.any():
            values[missing] = self._persist(t, values, missing, src, fc, name)
            labels[missing] = _PERSIST
        return values, labels

    def _configured(self, src: Source, t: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """Values of the configured source, its label, and where it really covers (non-periodic tables end)."""
        if src.kind == "constant":
            return np.full(t.shape, src.value), _CONSTANT, np.ones(t.shape, bool)
        if src.kind == "schedule":
            assert src.schedule is not None
            return src.scale * src.schedule.values(t, self.tz), _SCHEDULE, np.ones(t.shape, bool)
        if src.kind == "mqtt":
            return np.full(t.shape, np.nan), _PERSIST, np.zeros(t.shape, bool)
        series = src.series
        values = np.asarray(series.sample(t, self.tz), dtype=float)
        if isinstance(series, TableSeries):
            covered = np.ones(t.shape, bool)
            if not series.periodic:
                covered = (t >= series.times[0]) & (t <= series.times[-1])
            return values, _CSV, covered
        if isinstance(series, ConstantSeries):
            return values, _CONSTANT, np.ones(t.shape, bool)
        if isinstance(series, TimeOfUseTariff):
            return values, _SCHEDULE, np.ones(t.shape, bool)
        return values, _CSV, np.ones(t.shape, bool)

    def _persist(self, t: np.ndarray, values: np.ndarray, missing: np.ndarray, src: Source,
                 fc: Forecast | None, name: str) -> np.ndarray:
        """Hold the last value of whichever information ends later: the MQTT forecast (its last value after
        it, its first before it) or a non-periodic table (models.series holds its end values)."""
        tm = t[missing]
        table_end = -np.inf
        if src.kind == "series" and isinstance(src.series, TableSeries) and not src.series.periodic:
            table_end = float(src.series.times[-1])
        if fc is not None and fc.values.size and fc.end >= table_end:
            return np.where(tm > fc.end, fc.values[-1], fc.values[0])
        if src.kind == "series":
            return np.asarray(src.series.sample(tm, self.tz), dtype=float)
        if src.kind == "mqtt":
            return np.full(tm.shape, src.value)
        raise ValueError(f"no value for disturbance {name!r}")  # pragma: no cover - other sources cover all


def _series_source(series: Series) -> Source:
    if isinstance(series, ConstantSeries):
        return Source("constant", value=series.value, label="constant")
    return Source("series", series=series, label=getattr(series, "source", "") or type(series).__name__)


DisturbanceFn = Callable[[np.ndarray], np.ndarray]


# -- prices ------------------------------------------------------------------------------------------------
# MQTT forecast topics that carry prices, by tariff carrier (`forecast/price_electricity`, ...).
PRICE_FORECASTS: dict[str, str] = {"electricity": "price_electricity", "gas": "price_gas"}


def prices_over(tariff: Series, t: np.ndarray, tz: ZoneInfo, fc: object | None) -> tuple[np.ndarray, float]:
    """Prices at unix times ``t``: an MQTT price forecast where it covers them, the configured tariff elsewhere.

    A price forecast is a step function, as tariffs are: value i holds over ``[start + i step,
    start + (i+1) step)`` (not interpolated like weather). It is in the tariff's currency per kWh: a label,
    never converted. Returns the prices and the fraction of ``t`` the forecast covered.
    """
    t = np.asarray(t, dtype=float)
    values = np.array(np.broadcast_to(tariff.sample(t, tz), t.shape), dtype=float)
    fc_values = getattr(fc, "values", None)
    if fc is None or fc_values is None or not np.size(fc_values):
        return values, 0.0
    i = np.floor((t - float(fc.start)) / float(fc.step)).astype(np.int64)  # type: ignore[attr-defined]
    inside = (i >= 0) & (i < np.size(fc_values))
    values[inside] = np.asarray(fc_values, dtype=float)[i[inside]]
    return values, float(inside.mean()) if t.size else 0.0
