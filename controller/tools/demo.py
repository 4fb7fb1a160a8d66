"""`edge-mpc demo`: MPC against a Guideline-36 thermostat on a virtual building, with KPIs and a figure.

Both controllers run on the same virtual building (the site's model with deliberately mismatched
parameters, sensor noise and quantisation) over the same days of real Chicago TMY3 weather and real ComEd
prices. The thermostat acts every minute, as a real one would; MPC plans 24 h ahead every 15 minutes
through exactly the daemon's controller core and final clamp. KPIs follow BOPTEST's definitions.
Needs no broker and no configuration; everything is written to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.forecast_sources import builder_from_site
from controller.daemon.settings import load_site
from controller.fallback import SetpointGate
from controller.tools import paths
from controller.tools.baseline import Guideline36Thermostat, HysteresisThermostat, occupancy_flags
from controller.tools.kpi import compute_kpis, format_comparison
from drivers.virtual_building import VirtualBuilding

SITES = {name: paths.SITES / f"{name}.yaml" for name in ("office-20", "house-1", "radiant")}
SEASONS = {"winter": (1, 12), "shoulder": (4, 6), "summer": (7, 13)}   # month, day: a Monday-ish start
PRICES = {"dynamic": "PriceElectricPowerDynamic", "highly-dynamic": "PriceElectricPowerHighlyDynamic",
          "constant": "PriceElectricPowerConstant"}
# The plant is the model with its physics off by realistic amounts (what calibration never fully removes).
MISMATCH = {"air_capacity": 1.15, "infiltration.ach": 1.2, "mass.area": 0.9}
THERMOSTAT_STEP_S = 60.0


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.tty = total, label, sys.stderr.isatty()
        self.last = -1

    def update(self, done: int) -> None:
        pct = int(100 * done / max(1, self.total))
        if self.tty and pct != self.last:
            bar = "#" * (pct // 4)
            print(f"\r{self.label:<10} [{bar:<25}] {pct:3d}%", end="", file=sys.stderr, flush=True)
            self.last = pct

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _mismatch(net: Any) -> dict[str, float]:
    out = {}
    for name in net.params.names:
        for suffix, factor in MISMATCH.items():
            if name.endswith(suffix):
                out[name] = factor
    return out


def _start_time(season: str, year: int, tz: Any) -> float:
    month, day = SEASONS[season]
    d = date(year, month, day)
    d -= timedelta(days=d.weekday())  # start on a Monday
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def run_mpc(site: Any, plant: VirtualBuilding, t0: float, steps: int) -> tuple[np.ndarray, Any]:
    ctrl = build_site_controller(site)
    ctrl.estimator.reset(plant.state)
    plant.set_signals({a.name: a.signal for a in ctrl.actuators},  # the plant takes what the devices take
                      {a.name: a.emitter_ua for a in ctrl.actuators})
    gate = SetpointGate(ctrl.actuators)
    compute = np.zeros(steps)
    prog = Progress(steps, "MPC")
    sensors = plant.sensors()
    names = list(ctrl.sim.input_names)
    for k in range(steps):
        t = t0 + k * site.control.step_s
        readings = {s: (float(v), t) for s, v in sensors.items() if v is not None and math.isfinite(v)}
        c0 = time.perf_counter()
        out = ctrl.cycle(CycleInputs(t, readings, {}), time.perf_counter, site.control.deadline_s)
        values = out.setpoints if out.ok else {}
        clamped = gate.apply({a: values.get(a) for a in names}, {a: "mpc" for a in names})
        compute[k] = time.perf_counter() - c0
        sensors = plant.step(np.array([clamped.values[a] for a in names]), t)
        prog.update(k + 1)
    prog.close()
    return compute, plant.log()


def run_thermostat(site: Any, plant: VirtualBuilding, t0: float, steps: int, sim: Any,
                   hysteresis: bool = False) -> tuple[np.ndarray, Any]:
    caps_heat = np.clip(sim.u_max, 0, None)
    caps_cool = np.clip(-sim.u_min, 0, None)
    cs = site.comfort
    if hysteresis:  # on/off at full output: a duty of 1 for thermal-power inputs (heating only)
        plant.set_signals(dict.fromkeys([n for n, u in zip(sim.input_names, sim.input_units, strict=True)
                                         if u == "W"], "duty"))
        stat = HysteresisThermostat(list(sim.zone_names), THERMOSTAT_STEP_S, occupied=(cs.occupied.low,
                                    cs.occupied.high), unoccupied=(cs.unoccupied.low, cs.unoccupied.high),
                                    min_on_s=300.0, min_off_s=300.0)
    else:
        stat = Guideline36Thermostat(list(sim.zone_names), caps_heat, caps_cool, THERMOSTAT_STEP_S,
                                     occupied=(cs.occupied.low, cs.occupied.high),
                                     unoccupied=(cs.unoccupied.low, cs.unoccupied.high))
    from models.schedules import parse_schedules

    schedule = parse_schedules(site.schedules)[cs.schedule]
    ts = t0 + THERMOSTAT_STEP_S * np.arange(steps)
    now, soon = occupancy_flags(schedule, ts, site.timezone, stat.warmup_s)
    zone_idx = [list(sim.sensor_names).index(f"{z}_temperature") if f"{z}_temperature" in sim.sensor_names
                else None for z in sim.zone_names]
    compute = np.zeros(steps)
    prog = Progress(steps, "thermostat")
    temps = np.array(list(plant.zone_temperatures().values()))
    readings = plant.sensors()
    for k in range(steps):
        vals = list(readings.values())
        meas = np.array([vals[i] if i is not None and vals[i] is not None else temps[j]
                         for j, i in enumerate(zone_idx)], dtype=float)
        c0 = time.perf_counter()
        u = stat.step(meas, bool(now[k]), bool(soon[k]))
        compute[k] = time.perf_counter() - c0
        readings = plant.step(u, ts[k])
        temps = meas
        if k % 50 == 0:
            prog.update(k + 1)
    prog.update(steps)
    prog.close()
    return compute, plant.log()


def kpis_of(log: Any, site: Any, compute: np.ndarray, control_step: float, price_el: Any, price_gas: Any,
            area: float) -> Any:
    from models.schedules import parse_schedules

    schedule = parse_schedules(site.schedules)[site.comfort.schedule]
    occ = schedule.values(log.t, site.timezone) > 0.5
    cs = site.comfort
    low = np.where(occ, cs.occupied.low, cs.unoccupied.low)
    high = np.where(occ, cs.occupied.high, cs.unoccupied.high)
    tm = log.t + log.dt / 2
    return compute_kpis(log.dt, log.zones_start, low, high, np.clip(log.p_el, 0, None), np.clip(log.p_gas, 0, None),
                        price_el.sample(tm, site.timezone),
                        price_gas.sample(tm, site.timezone) if price_gas is not None else 0.0,
                        area, compute, control_step_s=control_step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-mpc demo", description=__doc__.split("\n")[0])
    ap.add_argument("--building", default="office-20", choices=sorted(SITES))
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--season", default="winter", choices=sorted(SEASONS))
    ap.add_argument("--price", default="dynamic", choices=sorted(PRICES), help="ComEd 2019 price series")
    ap.add_argument("--year", type=int, default=2026, help="calendar year of the simulated days (weather is TMY)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--out", default="demo-out", help="folder for report.json and demo.png")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not 0 < args.days <= 60:
        ap.error("--days must be in (0, 60]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    site = load_site(SITES[args.building], [f"tariff.electricity.column={PRICES[args.price]}",
                                           f"control.backend={args.backend}"])
    t0 = _start_time(args.season, args.year, site.timezone)
    step = site.control.step_s
    n_mpc = round(args.days * 86400 / step)
    n_tstat = round(args.days * 86400 / THERMOSTAT_STEP_S)
    from models import load_building
    from models.series import load_named_series

    net = load_building(site.model_path)
    sim = net.compile(step)
    dist = builder_from_site(site, sim)
    scale = _mismatch(net)
    x_init = sim.x_initial.copy()
    x_init[:] = 21.0
    print(f"edge-mpc demo: {args.building}, {args.days:g} days of {args.season} from "
          f"{datetime.fromtimestamp(t0, site.timezone):%Y-%m-%d}, {args.price} prices, backend {args.backend}")
    print(f"virtual building: {len(sim.zone_names)} zones, {sim.n} states; plant/model mismatch on "
          f"{len(scale)} parameters; sensor noise 0.05 K, 0.1 K resolution")
    w0 = time.perf_counter()
    plant_mpc = VirtualBuilding(net, dt=step, disturbances=dist, param_scale=scale, noise_k=0.05,
                                quantisation_k=0.1, seed=args.seed, substeps=int(step // THERMOSTAT_STEP_S), x0=x_init)
    c_mpc, log_mpc = run_mpc(site, plant_mpc, t0, n_mpc)
    w1 = time.perf_counter()
    plant_ts = VirtualBuilding(net, dt=THERMOSTAT_STEP_S, disturbances=dist, param_scale=scale, noise_k=0.05,
                               quantisation_k=0.1, seed=args.seed, x0=x_init)
    c_ts, log_ts = run_thermostat(site, plant_ts, t0, n_tstat, sim)
    plant_hy = VirtualBuilding(net, dt=THERMOSTAT_STEP_S, disturbances=dist, param_scale=scale, noise_k=0.05,
                               quantisation_k=0.1, seed=args.seed, x0=x_init)
    c_hy, log_hy = run_thermostat(site, plant_hy, t0, n_tstat, sim, hysteresis=True)
    w2 = time.perf_counter()
    series = load_named_series(site.tariff, site.base_dir)
    area = sim.floor_area
    k_mpc = kpis_of(log_mpc, site, c_mpc, step, series["electricity"], series.get("gas"), area)
    k_ts = kpis_of(log_ts, site, c_ts, THERMOSTAT_STEP_S, series["electricity"], series.get("gas"), area)
    k_hy = kpis_of(log_hy, site, c_hy, THERMOSTAT_STEP_S, series["electricity"], series.get("gas"), area)
    print()
    print(format_comparison(k_mpc, k_ts, ("MPC", "thermostat")))
    print()
    print(format_comparison(k_mpc, k_hy, ("MPC", "on/off")))
    saving_hy = 1 - k_mpc.cost_tot / k_hy.cost_tot if k_hy.cost_tot > 0 else float("nan")
    saving = 1 - k_mpc.cost_tot / k_ts.cost_tot if k_ts.cost_tot > 0 else float("nan")
    print(f"\nMPC saves {saving:.1%} of the energy cost of the thermostat "
          f"(discomfort {k_mpc.tdis_tot:.2f} vs {k_ts.tdis_tot:.2f} K·h/zone), {saving_hy:.1%} of the on/off "
          f"thermostat's (discomfort {k_hy.tdis_tot:.2f} K·h/zone); "
          f"simulated {args.days:g} days in {w2 - w0:.1f} s (MPC {w1 - w0:.1f} s, thermostat {w2 - w1:.1f} s)")
    scenario = {"building": args.building, "days": args.days, "season": args.season, "price": args.price,
                "start": datetime.fromtimestamp(t0, site.timezone).isoformat(), "backend": args.backend,
                "weather": "Chicago O'Hare TMY3", "prices": f"ComEd 2019 {PRICES[args.price]}",
                "mismatch": scale, "control_step_s": step, "thermostat_step_s": THERMOSTAT_STEP_S,
                "wall_s": w2 - w0}
    report = {"scenario": scenario, "mpc": k_mpc.as_dict(), "baseline": k_ts.as_dict(),
              "cost_saving": saving, "hysteresis": k_hy.as_dict(), "cost_saving_vs_hysteresis": saving_hy}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out / 'report.json'}")
    try:
        from controller.tools.demo_plot import plot

        plot(out / "demo.png", log_mpc, log_ts, site, series["electricity"], args)
        print(f"wrote {out / 'demo.png'}")
    except ImportError:
        print("matplotlib is not installed, so no figure: pip install 'edge-mpc[plot]' (or bash deploy/dev.sh demo)")
    return 0
