"""Site configuration for the daemon: the YAML file plus `--set` and `EDGE_MPC__…` overrides, validated.

Everything except the physics model is read here; the model path is resolved relative to the site file and
left to `models/`. Sections the MPC core interprets itself (schedules, tariff, forecasts, weights, mqtt) stay
`Cursor`s so its errors can still point at file:line; sections the daemon acts on are parsed dataclasses.

Override order: file < environment (`EDGE_MPC__MQTT__PORT=18830`) < command line (`--set mqtt.port=18830`).
An override of a field that does not exist is an error with a did-you-mean, exactly like a typo in the file.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.site_config import (
    Band,
    ClockSettings,
    ComfortSettings,
    Config,
    ControlSettings,
    FallbackSettings,
    MetricsSettings,
    SensorSettings,
    SiteConfig,
    StateSettings,
)
from drivers.mqtt_settings import SETTINGS_KEYS as MQTT_KEYS
from drivers.mqtt_settings import MqttSettings
from models.errors import ConfigError
from models.yamlio import Cursor, MarkedDict, _closest, load_yaml, loads_yaml

log = logging.getLogger(__name__)

ENV_PREFIX = "EDGE_MPC__"

# Known keys per section. `None` = an open mapping whose keys are names chosen by the user.
_ACTUATOR_KEYS = frozenset({"min", "max", "rate_limit", "safe_min", "safe_max", "signal", "emitter_ua"})
_SCHEMA: dict[str, frozenset[str] | None] = {
    "site": frozenset(),
    "timezone": frozenset(),
    "model": frozenset(),
    "control": frozenset({"step", "horizon", "move_blocking", "backend", "dtype", "deadline"}),
    "comfort": frozenset({"schedule", "occupied", "unoccupied", "zones", "margin"}),
    "schedules": None,
    "tariff": None,
    "weights": frozenset({"energy_cost", "comfort_quadratic", "comfort_linear", "peak_demand", "move"}),
    "actuators": None,
    "forecasts": None,
    "sensors": frozenset({"max_age"}),
    # Owned by drivers.mqtt_settings.MqttSettings, which validates the values; its key list checks overrides.
    "mqtt": MQTT_KEYS,
    "clock": frozenset({"mode"}),
    "metrics": frozenset({"enabled", "address", "port"}),
    "fallback": frozenset({"max_plan_age", "schedule_setpoints", "max_innovation", "setpoint_validity",
                           "proportional_band"}),
    "state": frozenset({"max_age", "dir"}),
}
_REQUIRED_TOP = ("site", "timezone", "model", "control", "comfort")
_MULTI_KEYS = frozenset({"sites", "metrics"})


# -- overrides -----------------------------------------------------------------------------------------
def parse_overrides(overrides: Iterable[str], environ: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """(key path, value, origin) in application order: environment first, then `--set` in given order."""
    out: list[tuple[list[str], Any, str]] = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
            out.append((keys, _scalar(environ[name], f"environment {name}"), f"environment {name}"))
    for item in overrides:
        key, sep, value = item.partition("=")
        origin = f"--set {key.strip()}"
        if not sep or not key.strip():
            raise ConfigError("override must look like key.path=value", file="--set", found=item,
                              expected="for example mqtt.port=1884")
        keys = [k.strip() for k in key.strip().split(".")]
        if any(not k for k in keys):
            raise ConfigError("empty key in override path", file=origin, found=item)
        out.append((keys, _scalar(value, origin), origin))
    return out


def _scalar(text: str, origin: str) -> Any:
    # Through the project's loader: the same depth, size and node limits as a site file (a value nested
    # thousands deep in an environment variable must be a clear error, not a RecursionError).
    if not text.strip():
        return None
    try:
        return loads_yaml(text, origin)
    except ConfigError as exc:
        raise ConfigError(f"cannot parse override value ({exc.message})", file=origin, found=_short(text),
                          expected="a YAML value such as 1884, 15 min, true, [1, 2]") from None


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _apply_override(doc: dict, keys: list[str], value: Any, origin: str) -> str:
    """Set doc[k1][k2]… = value after checking every key against the schema; returns the dotted path."""
    dotted = ".".join(keys)
    allowed = _SCHEMA.keys()
    if keys[0] not in _SCHEMA:
        raise _unknown(keys[0], frozenset(_SCHEMA), origin, dotted)
    node = doc
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if depth == 1:
            allowed = _SCHEMA[keys[0]]
            if allowed is not None and key not in allowed and key not in node:
                raise _unknown(key, allowed, origin, dotted)
        if depth == 2 and keys[0] == "actuators" and key not in _ACTUATOR_KEYS:
            raise _unknown(key, _ACTUATOR_KEYS, origin, dotted)
        if depth >= 1 and not isinstance(node, dict):
            raise ConfigError("cannot set a field inside a non-mapping value", file=origin, field=dotted,
                              found=node, expected="a mapping at " + ".".join(keys[:depth]))
        if last:
            node[key] = value
            if hasattr(node, "lines"):
                node.lines[key] = None
        else:
            child = node.get(key)
            if child is None:
                child = MarkedDict()
                child.lines, child.line = {}, None
                node[key] = child
            node = child
    return dotted


def _did_you_mean(key: str, allowed: frozenset[str]) -> str | None:
    # A transposition ('prot') is the commonest typo; difflib alone would rank 'root' above 'port'.
    for cand in sorted(allowed):
        if sorted(cand) == sorted(key):
            return cand
    return _closest(key, set(allowed))


def _unknown(key: str, allowed: frozenset[str], origin: str, dotted: str) -> ConfigError:
    close = _did_you_mean(key, allowed)
    hint = f" (did you mean '{close}'?)" if close else ""
    return ConfigError(f"unknown field '{key}'{hint}", file=origin, field=dotted,
                       expected="one of " + ", ".join(sorted(allowed)) if allowed else "no sub-fields",
                       found=key)


# -- loading -------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, overrides: Iterable[str] = (),
                environ: Mapping[str, str] = os.environ) -> Config:
    """Load a site file, or a multi-site file (`sites: [path, ...]`, optional `metrics:`)."""
    path = Path(path)
    _warn_if_world_writable(path)
    raw = load_yaml(path)
    cur = Cursor(raw, str(path))
    if isinstance(raw, dict) and "sites" in raw:
        cur.only_keys(_MULTI_KEYS)
        sites = []
        for item in cur.get("sites"):
            sub = (path.parent / item.as_str()).resolve()
            sites.append(load_site(sub, overrides, environ))
        if not sites:
            raise cur.get("sites").error("no sites listed", expected="at least one site file")
        names = [s.site for s in sites]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise cur.get("sites").error(f"site names must be unique; repeated: {', '.join(sorted(dup))}")
        metrics = _metrics(cur.get("metrics")) if cur.has("metrics") else sites[0].metrics
        return Config(path, sites, metrics)
    site = load_site(path, overrides, environ, _raw=raw)
    return Config(path, [site], site.metrics)


def load_site(path: str | os.PathLike, overrides: Iterable[str] = (),
              environ: Mapping[str, str] = os.environ, *, _raw: Any = None) -> SiteConfig:
    """Parse and validate one site file; raises `ConfigError` naming file/line/field/expected/found."""
    path = Path(path)
    if _raw is None:
        _warn_if_world_writable(path)
        _raw = load_yaml(path)
    cur = Cursor(_raw, str(path))
    cur.expect_mapping()
    if "sites" in _raw:
        raise cur.get("sites").error("a multi-site file cannot be loaded as one site",
                                     expected="a site file (use load_config)")
    origins: dict[str, str] = {}
    for keys, value, origin in parse_overrides(overrides, environ):
        origins[_apply_override(_raw, keys, value, origin)] = origin
    try:
        return _parse_site(cur, path, environ, origins)
    except ConfigError as exc:
        origin = _origin_of(exc.field, origins)
        if origin is None:
            raise
        raise ConfigError(exc.message, file=origin, field=exc.field, expected=exc.expected,
                          found=exc.found) from None


def _origin_of(field_path: str | None, origins: dict[str, str]) -> str | None:
    if not field_path:
        return None
    for dotted, origin in origins.items():
        if field_path == dotted or field_path.startswith(dotted + ".") or field_path.startswith(dotted + "["):
            return origin
    return None


def _parse_site(cur: Cursor, path: Path, environ: Mapping[str, str], origins: dict[str, str]) -> SiteConfig:
    cur.only_keys(frozenset(_SCHEMA))
    for key in _REQUIRED_TOP:
        cur.get(key)
    for name, allowed in _SCHEMA.items():
        if allowed and cur.has(name) and name != "mqtt":  # mqtt is validated by drivers.mqtt_settings
            cur.get(name).only_keys(allowed)
    site = cur.get("site").as_str()
    try:
        from drivers.topics import check_id
        check_id(site, "site name")
    except ImportError:  # pragma: no cover - drivers are part of the package
        pass
    except ValueError as exc:
        raise cur.get("site").error(str(exc), expected="a name usable as one MQTT topic level") from None
    tz_cur = cur.get("timezone")
    try:
        tz = ZoneInfo(tz_cur.as_str())
    except (ZoneInfoNotFoundError, ValueError):
        raise tz_cur.error("unknown time zone", expected="an IANA name such as Europe/Berlin") from None
    model_cur = cur.get("model")
    model_path = (path.parent / model_cur.as_str()).resolve()
    _warn_if_world_writable(model_path)  # the model decides how the plant is driven as much as the site file

    control = _control(cur.get("control"))
    comfort = _comfort(cur.get("comfort"))
    for name in ("schedules", "tariff", "forecasts", "actuators", "weights", "mqtt"):
        if cur.has(name):
            cur.get(name).expect_mapping()
    for _name, act in cur.get("actuators", {}).items():
        act.only_keys(_ACTUATOR_KEYS)  # values carry the actuator's own unit; the core converts them
    for _key, w in cur.get("weights", {}).items():
        w.as_float(nonnegative=True)
    sensors = SensorSettings(max_age_s=cur.get("sensors", {}).get("max_age", "30 min").as_float(
        unit="s", positive=True))
    mode = cur.get("clock", {}).get("mode", "wall")
    if mode.as_str() not in ("wall", "lockstep"):
        raise mode.error("unknown clock mode", expected="wall or lockstep")
    clock = ClockSettings(mode=mode.value)
    metrics = _metrics(cur.get("metrics", {}))
    fallback = _fallback(cur.get("fallback", {}), control, comfort)
    state = _state(cur.get("state", {}), path, environ)
    if cur.has("mqtt"):
        _check_mqtt(cur.get("mqtt"))
    return SiteConfig(path=path.resolve(), site=site, timezone=tz, model_path=model_path, control=control,
                      comfort=comfort, sensors=sensors, clock=clock, metrics=metrics, fallback=fallback,
                      state=state, doc=cur, overrides=origins)


def _control(cur: Cursor) -> ControlSettings:
    step = cur.get("step").as_float(unit="s", positive=True)
    horizon = cur.get("horizon").as_int(minimum=1)
    blocks = tuple(b.as_int(minimum=1) for b in cur.get("move_blocking", []))
    if blocks and sum(blocks) > horizon:
        raise cur.get("move_blocking").error("move blocks are longer than the horizon",
                                             expected=f"block lengths summing to at most {horizon}",
                                             found=sum(blocks))
    backend = cur.get("backend", "numpy")
    if backend.as_str() not in ("numpy", "cupy"):
        raise backend.error("unknown backend", expected="numpy or cupy")
    dtype = cur.get("dtype", "float64")
    if dtype.as_str() not in ("float64", "float32"):
        raise dtype.error("unknown dtype", expected="float64 or float32")
    deadline = cur.get("deadline", "20 s")
    deadline_s = deadline.as_float(unit="s", positive=True)
    if deadline_s >= step:
        raise deadline.error("the solve deadline must be shorter than the control step",
                             expected=f"less than {step:g} s")
    return ControlSettings(step, horizon, blocks, backend.value, dtype.value, deadline_s)


def _band(cur: Cursor) -> Band:
    cur.only_keys(frozenset({"low", "high"}))
    low = cur.get("low").as_float(unit="K")
    high = cur.get("high").as_float(unit="K")
    if not low <= high:
        raise cur.error("comfort band is inverted", expected="low <= high", found={"low": low, "high": high})
    return Band(low, high)


def _comfort(cur: Cursor) -> ComfortSettings:
    zones_cur = cur.get("zones", "all")
    if zones_cur.value == "all":
        zones: str | tuple[str, ...] = "all"
    else:
        zones = tuple(z.as_str() for z in zones_cur)
    return ComfortSettings(schedule=cur.get("schedule").as_str(), occupied=_band(cur.get("occupied")),
                           unoccupied=_band(cur.get("unoccupied")), zones=zones,
                           margin=cur.get("margin", 0.3).as_float(unit="K", nonnegative=True, high=2.0))


def _metrics(cur: Cursor) -> MetricsSettings:
    cur.only_keys(_SCHEMA["metrics"] or frozenset())
    address = cur.get("address", "127.0.0.1").as_str()
    port = cur.get("port", 9108).as_int(minimum=0)
    if port > 65535:
        raise cur.get("port").error("out of range", expected="a TCP port 0..65535")
    return MetricsSettings(enabled=cur.get("enabled", True).as_bool(), address=address, port=port)


def _fallback(cur: Cursor, control: ControlSettings, comfort: ComfortSettings) -> FallbackSettings:
    sp = cur.get("schedule_setpoints", {"occupied": comfort.occupied.low + 0.5,
                                        "unoccupied": comfort.unoccupied.low + 0.5})
    sp.only_keys(frozenset({"occupied", "unoccupied"}))
    occ = sp.get("occupied").as_float(unit="K")
    unocc = sp.get("unoccupied").as_float(unit="K")
    validity = cur.get("setpoint_validity", 2 * control.step_s)
    validity_s = validity.as_float(unit="s", positive=True)
    if validity_s < control.step_s:
        raise validity.error("setpoints would expire before the next cycle",
                             expected=f"at least one control step ({control.step_s:g} s)")
    return FallbackSettings(
        max_plan_age_s=cur.get("max_plan_age", "2 h").as_float(unit="s", nonnegative=True),
        occupied_setpoint=occ, unoccupied_setpoint=unocc,
        max_innovation_k=cur.get("max_innovation", "5 K").as_float(unit="K", positive=True),
        setpoint_validity_s=validity_s,
        proportional_band_k=cur.get("proportional_band", "2 K").as_float(unit="K", positive=True))


def _state(cur: Cursor, path: Path, environ: Mapping[str, str]) -> StateSettings:
    max_age = cur.get("max_age", "2 h").as_float(unit="s", nonnegative=True)
    # systemd's StateDirectory= wins: the unit knows where the service may write (ProtectSystem=strict).
    env_dir = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if env_dir:
        return StateSettings(Path(env_dir), max_age)
    if cur.has("dir"):
        return StateSettings((path.parent / cur.get("dir").as_str()).resolve(), max_age)
    return StateSettings(Path("state").resolve(), max_age)


def _check_mqtt(cur: Cursor) -> None:
    """Validate the mqtt section with the driver's own parser."""
    MqttSettings.from_cursor(cur)


def _warn_if_world_writable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # load_yaml reports the missing file with its own message
    if mode & stat.S_IWOTH:
        log.warning("config file %s is world-writable (mode %o): anyone on this machine can change how "
                    "the plant is driven; run chmod o-w on it", path, stat.S_IMODE(mode))
