"""MQTT lockstep emulator: a virtual building that drives the daemon in simulated time.

Per control step at simulated time t:

1. publish each sensor reading on ``<root>/sensor/<id>`` as ``{"value": v, "ts": t}`` (dropped readings
   are not published, so the daemon sees them age);
2. publish ``{"ts": t}`` on ``<root>/clock``;
3. wait for the daemon's ack on ``<root>/cycle`` carrying this t (``{"ts": t, ...}``); with ``resend_s``
   set, the readings and the clock are published again every ``resend_s`` without an ack (a broker restart
   or a reconnecting daemon may have lost them; the daemon re-acks a repeated clock); after
   ``ack_timeout_s`` the step counts as a miss and the emulator goes on with what it has;
4. take the latest setpoint per input from ``<root>/setpoint/<input>``: one whose ``valid_until`` < t is
   dropped (a QoS 1 message queued through an outage arrives late); ``value: null`` is "relinquish"; an
   input without a valid setpoint (relinquished, stale, missing or in a unit that does not convert) is
   driven by the local fallback thermostat, as the building's own controllers would;
5. step the building by one control step and repeat.

All messages go out with QoS 1 from one client, so the broker delivers them in order: the daemon sees
every sensor reading before the clock message that triggers its cycle, and the emulator sees every
setpoint of a cycle before that cycle's ack (the daemon publishes the ack last).

Command line, for hardware-in-the-loop and co-simulation against a running daemon::

    python -m controller.tools.emulator --site config/sites/office-20.yaml --days 3 --start 2026-01-12 --out run.csv

The CSV it writes is in the calibration format (``time_s``, inputs, disturbances, sensors as read at each
row's time) plus the true zone temperatures and powers, so an emulated run can also be calibrated against.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from drivers.bus import Bus
from drivers.payloads import PayloadError, Setpoint, encode_clock, encode_json, parse_cycle_ack, parse_setpoint
from drivers.topics import Topics
from drivers.virtual_building import PlantLog, VirtualBuilding
from models.schedules import WeeklySchedule

log = logging.getLogger("edge_mpc.emulator")

SOURCES = ("mpc", "relinquish", "stale", "missing", "bad_unit")


# -- local fallback ------------------------------------------------------------------------------------------
class LocalThermostat:
    """What the building's own controllers do when edge-mpc relinquishes or goes silent.

    Inputs that heat or cool a zone directly (unit W, e.g. ``ideal_hvac``) get a Guideline-36-style PI
    thermostat (``controller.tools.baseline``) on the true zone temperature (it has its own sensor), with setpoints
    from the comfort schedule. Its gain is capped at C_air/dt so the loop stays stable at the control step.
    Any other input (pump flows, supply temperatures, heat pumps charging a tank) goes to its "off" value,
    0 clipped into its bounds: a local controller that has lost its supervisor fails safe.
    """

    def __init__(self, plant: VirtualBuilding, *, schedule: WeeklySchedule | None = None, tz: ZoneInfo | None = None,
                 occupied: tuple[float, float] = (21.0, 24.0), unoccupied: tuple[float, float] = (16.0, 28.0)) -> None:
        from controller.tools.baseline import Guideline36Thermostat

        sim = plant.sim
        zone_of_node = {z.node: i for i, z in enumerate(sim.net.zones)}
        self.zone_of_input: dict[int, int] = {}
        for node, j, _fn in sim.net.input_heat:
            if sim.input_units[j] == "W" and node in zone_of_node:
                self.zone_of_input[j] = zone_of_node[node]
        self.off = np.clip(0.0, plant.u_min, plant.u_max)
        self.plant = plant
        self.schedule = schedule
        self.tz = tz or ZoneInfo("UTC")
        self._thermostat = None
        if self.zone_of_input:
            zones = sorted(set(self.zone_of_input.values()))
            heat = np.zeros(len(sim.zone_names))
            cool = np.zeros(len(sim.zone_names))
            for j, z in self.zone_of_input.items():
                heat[z] += max(plant.u_max[j], 0.0)
                cool[z] += max(-plant.u_min[j], 0.0)
            caps = np.asarray(sim.mats["caps"], dtype=float)
            c_air = np.array([caps[z.node] for z in sim.net.zones])
            kp = np.minimum(np.maximum(np.maximum(heat, cool), 1.0) / 1.5, c_air / plant.dt)
            self._zones = zones
            self._thermostat = Guideline36Thermostat(list(sim.zone_names), np.maximum(heat, 0), np.maximum(cool, 0),
                                                     plant.dt, occupied=occupied, unoccupied=unoccupied,
                                                     kp_w_per_k=kp)

    def __call__(self, t: float) -> np.ndarray:
        """Fallback values for every input at time t (the caller uses those it needs)."""
        u = self.off.copy()
        if self._thermostat is None:
            return u
        temps = np.array(list(self.plant.zone_temperatures().values()))
        if self.schedule is not None:
            cmd = self._thermostat.step_schedule(temps, self.schedule, t, self.tz)
        else:
            cmd = self._thermostat.step(temps, True, True)
        for j, z in self.zone_of_input.items():
            u[j] = cmd[z]
        return np.clip(u, self.plant.u_min, self.plant.u_max)


# -- results -----------------------------------------------------------------------------------------------
@dataclass
class EmulatorResult:
    """A lockstep run: per step the applied inputs, where each came from, acks, and the plant's log."""

    t: np.ndarray                 # (K,) step start, unix s
    dt: float
    u: np.ndarray                 # (K, nu) applied (after clipping by the plant)
    u_source: np.ndarray          # (K, nu) str, one of SOURCES
    published: np.ndarray         # (K, ns) sensor readings published at t (NaN = dropped)
    acked: np.ndarray             # (K,) bool
    ack_wait_s: np.ndarray        # (K,) wall seconds from clock publish to ack (NaN on miss)
    plant: PlantLog
    misses: int = 0
    stale_dropped: int = 0
    resends: int = 0
    bad_messages: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def write_csv(self, path: str | Path) -> None:
        """Calibration-format CSV plus true zone temperatures (``<zone>.true``) and total powers."""
        lg = self.plant
        header = ["time_s", *lg.input_names, *lg.disturbance_names, *lg.sensor_names,
                  *(f"{z}.true" for z in lg.zone_names), "p_el_w", "p_gas_w", *(f"{n}.source" for n in lg.input_names)]
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for k in range(self.t.size):
                sens = ["" if not np.isfinite(v) else f"{v:.6g}" for v in self.published[k]]
                w.writerow([f"{self.t[k]:.0f}", *(f"{v:.6g}" for v in self.u[k]), *(f"{v:.6g}" for v in lg.d[k]),
                            *sens, *(f"{v:.4f}" for v in lg.zones_start[k]), f"{lg.p_el[k].sum():.6g}",
                            f"{lg.p_gas[k].sum():.6g}", *self.u_source[k]])


# -- the emulator -----------------------------------------------------------------------------------------------
class LockstepEmulator:
    """Drives a daemon in lockstep over ``bus``; see the module docstring.

    Args:
        bus: a connected ``Bus`` (``MqttBus`` for a real broker, ``MemoryBus`` in tests).
        topics: the site's topics (the daemon's root).
        plant: the virtual building.
        ack_timeout_s: wall seconds to wait for each cycle ack.
        fallback: ``f(t) -> (nu,)`` values for inputs without a valid setpoint; default ``LocalThermostat``.
        qos: QoS of sensor and clock messages (1 keeps them ordered and delivered).
        resend_s: re-publish the readings and the clock after this many wall seconds without an ack
            (None: never).
    """

    def __init__(self, bus: Bus, topics: Topics, plant: VirtualBuilding, *, ack_timeout_s: float = 30.0,
                 fallback: Callable[[float], np.ndarray] | None = None, qos: int = 1,
                 wall: Callable[[], float] = time.monotonic, resend_s: float | None = None) -> None:
        self.bus = bus
        self.topics = topics
        self.plant = plant
        self.ack_timeout_s = float(ack_timeout_s)
        self.fallback = fallback or LocalThermostat(plant)
        self.qos = qos
        self.resend_s = resend_s
        self.resends = 0
        self._wall = wall
        self._cond = threading.Condition()
        self._acked_t: float | None = None
        self._latest: dict[str, Setpoint] = {}
        self._bad = 0
        self._input_index = {n: i for i, n in enumerate(plant.input_names)}
        bus.subscribe(topics.cycle, self._on_cycle)
        bus.subscribe(topics.setpoint_filter, self._on_setpoint)

    # -- bus handlers (network thread): never raise -----------------------------------------------------------
    def _on_cycle(self, topic: str, payload: bytes) -> None:
        try:
            t = parse_cycle_ack(payload)
        except PayloadError as exc:  # any bad ack is counted, never fatal
            with self._cond:
                self._bad += 1
            log.warning("bad cycle ack %r: %s", payload[:80], exc)
            return
        with self._cond:
            if self._acked_t is None or t > self._acked_t:
                self._acked_t = t
            self._cond.notify_all()

    def _on_setpoint(self, topic: str, payload: bytes) -> None:
        try:
            name = self.topics.actuator(topic)
            if name not in self._input_index:
                raise PayloadError("setpoint", f"unknown input {name!r}")
            sp = parse_setpoint(payload)
        except Exception as exc:
            with self._cond:
                self._bad += 1
            log.warning("bad setpoint on %s: %s", topic, exc)
            return
        with self._cond:
            prev = self._latest.get(name)
            # Keep the newest: a late QoS 1 redelivery must not replace a newer setpoint.
            if prev is None or (sp.ts, sp.seq) >= (prev.ts, prev.seq):
                self._latest[name] = sp

    # -- stepping ------------------------------------------------------------------------------------------------
    def _publish_sensors(self, readings: dict[str, float | None], t: float) -> None:
        for sid, value in readings.items():
            if value is not None:
                self.bus.publish(self.topics.sensor(sid), encode_json({"value": value, "ts": t}), qos=self.qos)

    def _wait_ack(self, t: float, resend: Callable[[], None] | None = None) -> tuple[bool, float]:
        start = self._wall()
        end = start + self.ack_timeout_s
        while True:
            remaining = end - self._wall()
            slice_s = remaining if self.resend_s is None or resend is None else min(remaining, self.resend_s)
            with self._cond:
                ok = self._cond.wait_for(lambda: self._acked_t is not None and self._acked_t >= t,
                                         timeout=max(0.0, slice_s))
            if ok or slice_s >= remaining:
                return ok, self._wall() - start
            assert resend is not None
            self.resends += 1
            log.info("no cycle ack for t=%s after %.1f s; publishing the readings and the clock again", t,
                     self._wall() - start)
            resend()  # outside the lock: the bus thread needs it to deliver the ack

    def _commands(self, t: float) -> tuple[np.ndarray, list[str], int]:
        from controller.device_signals import UNITS as DEVICE_UNITS
        from models.units import convert

        names = self.plant.input_names
        units = self.plant.sim.input_units
        u = np.full(len(names), np.nan)
        src = ["missing"] * len(names)
        stale = 0
        with self._cond:
            for i, name in enumerate(names):
                sp = self._latest.get(name)
                if sp is None:
                    continue
                if sp.valid_until < t:
                    del self._latest[name]  # dropped: it was meant for an earlier time
                    src[i] = "stale"
                    stale += 1
                elif sp.value is None:
                    src[i] = "relinquish"
                else:
                    # A plant input told a device signal (VirtualBuilding.signals) takes that signal's unit.
                    kind = getattr(self.plant, "signals", {}).get(name, "power")
                    want = units[i] if kind == "power" else DEVICE_UNITS[kind]
                    try:
                        u[i] = sp.value if sp.unit == want else convert(f"{sp.value!r} {sp.unit}", want)
                        src[i] = "mpc"
                    except ValueError:
                        src[i] = "bad_unit"
        if np.isnan(u).any():
            fb = np.asarray(self.fallback(t), dtype=float)
            u = np.where(np.isnan(u), fb, u)
        return u, src, stale

    def run(self, days: float | None = None, start: float = 0.0, *, steps: int | None = None,
            on_step: Callable[[int, float], None] | None = None) -> EmulatorResult:
        """Run ``days`` (or ``steps`` control steps) from unix time ``start``; returns the logged run."""
        if steps is None:
            if days is None or not days > 0:
                raise ValueError("give days > 0 or steps")
            steps = round(days * 86400.0 / self.plant.dt)
        dt = self.plant.dt
        nu, ns = len(self.plant.input_names), len(self.plant.sensor_names)
        ts = start + dt * np.arange(steps)
        U = np.zeros((steps, nu))
        SRC = np.empty((steps, nu), dtype=object)
        PUB = np.full((steps, ns), np.nan)
        ACK = np.zeros(steps, bool)
        WAIT = np.full(steps, np.nan)
        stale_total = 0
        readings = self.plant.sensors()
        for k, t in enumerate(ts):
            t = float(t)
            PUB[k] = [np.nan if readings[s] is None else readings[s] for s in self.plant.sensor_names]
            def send(readings: dict[str, float | None] = readings, t: float = t) -> None:
                self._publish_sensors(readings, t)
                self.bus.publish(self.topics.clock, encode_clock(t), qos=self.qos)

            send()
            ok, waited = self._wait_ack(t, send)
            ACK[k] = ok
            if ok:
                WAIT[k] = waited
            else:
                log.warning("no cycle ack for t=%s within %.1f s", t, self.ack_timeout_s)
            u, src, stale = self._commands(t)
            stale_total += stale
            readings = self.plant.step(u, t)
            U[k] = np.clip(u, self.plant.u_min, self.plant.u_max)
            SRC[k] = src
            if on_step is not None:
                on_step(k, t)
        counts = {s: int((SRC == s).sum()) for s in SOURCES}
        return EmulatorResult(t=ts, dt=dt, u=U, u_source=SRC.astype(str), published=PUB, acked=ACK, ack_wait_s=WAIT,
                              plant=self.plant.log(), misses=int((~ACK).sum()), stale_dropped=stale_total,
                              bad_messages=self._bad, counts=counts, resends=self.resends)


# -- command line ------------------------------------------------------------------------------------------------
def _parse_start(text: str | None, tz: ZoneInfo) -> float:
    """Unix seconds, or an ISO date/time in the site's zone; default: today's local midnight."""
    if text is None:
        today = _dt.datetime.now(tz).date()
        return _dt.datetime(today.year, today.month, today.day, tzinfo=tz).timestamp()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--start {text!r}: expected YYYY-MM-DD[THH:MM] (site local time) or unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def _param_scale(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--param-scale {item!r}: expected NAME=FACTOR") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m controller.tools.emulator --site SITE --days N ...``: 0 ok, 1 run failed, 2 bad input."""
    p = argparse.ArgumentParser(prog="python -m controller.tools.emulator", description=(
        "Lockstep MQTT emulator: a virtual building (the site's model, real weather) that drives a daemon "
        "running with clock.mode=lockstep through the broker of the site config."))
    p.add_argument("--site", required=True, help="site config YAML (model, timezone, forecasts, mqtt)")
    p.add_argument("--days", type=float, default=1.0, help="simulated days (default 1)")
    p.add_argument("--start", help="YYYY-MM-DD[THH:MM] local time or unix seconds (default: today 00:00)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="site config override, as for the daemon (e.g. mqtt.port=18830)")
    p.add_argument("--param-scale", action="append", default=[], metavar="NAME=FACTOR",
                   help="scale a model parameter in the emulated building (plant/model mismatch)")
    p.add_argument("--noise", type=float, default=0.1, help="sensor noise standard deviation, K (default 0.1)")
    p.add_argument("--quantisation", type=float, default=0.1, help="sensor resolution, K (default 0.1)")
    p.add_argument("--dropout", type=float, default=0.0, help="probability of a dropped reading (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--substeps", type=int, default=3, help="plant sub-steps per control step (default 3)")
    p.add_argument("--ack-timeout", type=float, default=30.0, help="seconds to wait for each cycle ack")
    p.add_argument("--wait-daemon", type=float, default=60.0,
                   help="seconds to wait for the daemon's retained 'online' status (0: do not wait)")
    p.add_argument("--out", help="write the run as CSV (calibration format plus true temperatures)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from controller.daemon.forecast_sources import builder_from_site
    from controller.daemon.settings import load_site
    from drivers.mqtt import MqttBus
    from drivers.mqtt_settings import MqttSettings
    from models import load_building
    from models.errors import ConfigError
    from models.schedules import parse_schedules

    try:
        site = load_site(args.site, args.set)
        net = load_building(site.model_path)
        dist = builder_from_site(site, net)
        plant = VirtualBuilding(net, dt=site.control.step_s, disturbances=dist,
                                param_scale=_param_scale(args.param_scale), noise_k=args.noise,
                                quantisation_k=args.quantisation, dropout_prob=args.dropout, seed=args.seed,
                                substeps=args.substeps)
        schedules = parse_schedules(site.schedules) if site.schedules.value else {}
        comfort = site.comfort
        fallback = LocalThermostat(plant, schedule=schedules.get(comfort.schedule), tz=site.timezone,
                                   occupied=(comfort.occupied.low, comfort.occupied.high),
                                   unoccupied=(comfort.unoccupied.low, comfort.unoccupied.high))
        settings = MqttSettings.from_cursor(site.mqtt) if site.mqtt.value else MqttSettings()
        topics = settings.topics(site.site)
        start = _parse_start(args.start, site.timezone)
        if not args.days > 0:
            raise ValueError("--days must be > 0")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    bus = MqttBus(settings, client_id=f"edge-mpc-emulator-{site.site}", status_topic=f"{topics.root}/emulator/status")
    try:
        online = threading.Event()
        if args.wait_daemon > 0:
            bus.subscribe(topics.status, lambda _t, payload: online.set() if payload == b"online" else None)
        emu = LockstepEmulator(bus, topics, plant, ack_timeout_s=args.ack_timeout, fallback=fallback)
        if not bus.wait_subscribed(30.0):
            print(f"error: cannot reach the broker at {settings.host}:{settings.port}", file=sys.stderr)
            return 1
        if args.wait_daemon > 0 and not online.wait(args.wait_daemon):
            print(f"error: no daemon online on {topics.status} within {args.wait_daemon:g} s", file=sys.stderr)
            return 1
        steps = round(args.days * 86400 / plant.dt)
        report_every = max(1, steps // 20)
        result = emu.run(args.days, start, on_step=lambda k, t: log.info(
            "step %d/%d t=%s", k + 1, steps, _dt.datetime.fromtimestamp(t, site.timezone).isoformat())
            if (k + 1) % report_every == 0 else None)
    finally:
        bus.close()
    if args.out:
        result.write_csv(args.out)
    print(_summary(result, site, plant))
    return 0


def _summary(result: EmulatorResult, cfg: Any, plant: VirtualBuilding) -> str:
    """Counts and BOPTEST KPIs of a run, scored on the plant's sub-steps (what happens inside a control step
    counts); ``cfg`` is the ``controller.daemon.settings.SiteConfig``."""
    from controller.tools.kpi import comfort_band, compute_kpis
    from drivers.virtual_building import kpi_inputs
    from models.series import DEFAULT_CURRENCY, load_tariff

    lg = plant.fine_log()
    low, high = comfort_band(cfg, lg.t)
    currency, tariff = load_tariff(cfg.tariff, cfg.base_dir) if cfg.tariff.value else (DEFAULT_CURRENCY, {})
    price_el = tariff["electricity"].sample(lg.t, cfg.timezone) if "electricity" in tariff else 0.0
    price_gas = tariff["gas"].sample(lg.t, cfg.timezone) if "gas" in tariff else 0.0
    kpis = compute_kpis(band_low=low, band_high=high, price_el=price_el, price_gas=price_gas, currency=currency,
                        **kpi_inputs(lg, plant.sim.floor_area))
    lines = [f"steps {result.t.size}, acked {int(result.acked.sum())}, missed {result.misses}, "
             f"stale setpoints dropped {result.stale_dropped}, bad messages {result.bad_messages}",
             "inputs by source: " + ", ".join(f"{k} {v}" for k, v in result.counts.items() if v),
             f"discomfort {kpis.tdis_tot:.3f} K·h/zone, energy {kpis.ener_tot:.3f} kWh/m², "
             f"cost {kpis.cost_tot:.4f} {currency}/m², peak {kpis.peak_el_kw:.2f} kW"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
