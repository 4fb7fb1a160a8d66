"""A validated site, as plain data: what the pure core and the daemon read from a site file.

`controller.daemon.settings` builds these from the YAML file and its overrides; nothing here reads files.
Sections the core interprets itself (schedules, tariff, forecasts, weights, actuators, mqtt) stay `Cursor`s
so their errors can still point at file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from models.yamlio import Cursor, MarkedDict


# -- parsed sections -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlSettings:
    step_s: float
    horizon: int
    move_blocking: tuple[int, ...]
    backend: str
    dtype: str
    deadline_s: float


@dataclass(frozen=True)
class Band:
    low: float
    high: float


@dataclass(frozen=True)
class ComfortSettings:
    schedule: str
    occupied: Band
    unoccupied: Band
    zones: str | tuple[str, ...]  # "all" or names
    margin: float = 0.3  # K the plan keeps inside the band (model error and sensor noise eat the rest)


@dataclass(frozen=True)
class SensorSettings:
    max_age_s: float


@dataclass(frozen=True)
class ClockSettings:
    mode: str  # wall | lockstep


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class FallbackSettings:
    max_plan_age_s: float
    occupied_setpoint: float
    unoccupied_setpoint: float
    max_innovation_k: float
    setpoint_validity_s: float
    proportional_band_k: float


@dataclass(frozen=True)
class StateSettings:
    dir: Path
    max_age_s: float


@dataclass
class SiteConfig:
    """One site, validated. `doc` is the whole document after overrides (for sections not parsed here)."""

    path: Path
    site: str
    timezone: ZoneInfo
    model_path: Path
    control: ControlSettings
    comfort: ComfortSettings
    sensors: SensorSettings
    clock: ClockSettings
    metrics: MetricsSettings
    fallback: FallbackSettings
    state: StateSettings
    doc: Cursor
    overrides: dict[str, str] = field(default_factory=dict)  # field path -> where it came from

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section(self, name: str) -> Cursor:
        """Any top-level section as a Cursor (empty mapping if absent), e.g. `schedules`, `tariff`."""
        return self.doc.get(name, MarkedDict())

    # Cursors for the sections the MPC core and its helpers parse themselves.
    @property
    def schedules(self) -> Cursor:
        return self.section("schedules")

    @property
    def tariff(self) -> Cursor:
        return self.section("tariff")

    @property
    def weights(self) -> Cursor:
        return self.section("weights")

    @property
    def actuators(self) -> Cursor:
        return self.section("actuators")

    @property
    def forecasts(self) -> Cursor:
        return self.section("forecasts")

    @property
    def mqtt(self) -> Cursor:
        return self.section("mqtt")

    @property
    def comfort_cursor(self) -> Cursor:
        return self.section("comfort")

    @property
    def control_cursor(self) -> Cursor:
        return self.section("control")


@dataclass
class Config:
    """What `edge-mpc run CONFIG` hosts: one or more sites and the process-wide metrics endpoint."""

    path: Path
    sites: list[SiteConfig]
    metrics: MetricsSettings
