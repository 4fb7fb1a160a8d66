"""`edge-mpc demo`: MPC against a Guideline-36 thermostat on a virtual building, with KPIs and a figure.

Both controllers run on the same virtual building (the site's model with deliberately mismatched
parameters, sensor noise and quantisation) over the same days of real Chicago TMY3 weather and real ComEd
prices, with the same real occupancy, which differs from the schedule (`controller.tools.real_occupancy`).
The thermostat acts every minute, as a real one would; MPC plans 24 h ahead every 15 minutes through
exactly the daemon's controller core, fallback chain (`controller.fallback`) and final clamp.

What each controller knows (also written to report.json):

- MPC: weather forecasts with error growing with lead time (`controller.tools.forecast_error`), the
  occupancy schedule (not the real occupancy), the tariff, and the model; its estimator starts from the
  model's default initial state and learns the rest from the noisy readings. `--perfect-forecasts` gives
  it the plant's own weather and real occupancy instead.
- Thermostat: its zone readings every minute and the occupancy schedule (modes, 2 h warm-up).

Both keep the same comfort margin inside the band (the site's `comfort.margin`, or `--margin`); the
thermostat at Guideline 36's usual 0.5 K is reported as well. KPIs follow BOPTEST's definitions and are
scored for both from the plant's 1-minute trajectory. Needs no broker and no configuration; everything is
written to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.forecast_sources import builder_from_site
from controller.daemon.settings import load_site
from controller.disturbances import DisturbanceBuilder, Source
from controller.fallback import FallbackPolicy, HeldPlan, SetpointGate, classify
from controller.tools import paths
from controller.tools.baseline import Guideline36Thermostat, HysteresisThermostat, LoopThermostat, occupancy_flags
from controller.tools.emulator import LocalThermostat
from controller.tools.forecast_error import NoisyForecaster
from controller.tools.kpi import comfort_band, compute_kpis, format_comparison
from controller.tools.real_occupancy import RealOccupancy
from drivers.payloads import Forecast
from drivers.virtual_building import VirtualBuilding, mismatch_scale
from models.series import currency_of

SITES = {name: paths.SITES / f"{name}.yaml" for name in ("office-20", "house-1", "radiant", "radiant-loop")}
SEASONS = {"winter": (1, 12), "shoulder": (4, 6), "summer": (7, 13)}   # month, day: a Monday-ish start
PRICES = {"dynamic": "PriceElectricPowerDynamic", "highly-dynamic": "PriceElectricPowerHighlyDynamic",
          "constant": "PriceElectricPowerConstant"}
THERMOSTAT_STEP_S = 60.0  # also the step both controllers are scored at (the plant's sub-step)
G36_MARGIN_K = 0.5  # where commissioning engineers put a G36 thermostat's setpoints inside the band
OUTCOMES = ("mpc", "hold", "schedule", "relinquish")


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


def _start_time(season: str, year: int, tz: Any) -> float:
    month, day = SEASONS[season]
    d = date(year, month, day)
    d -= timedelta(days=d.weekday())  # start on a Monday
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def comfort_margin(site: Any) -> float:
    """The margin (K) the MPC keeps inside the band: the site's, capped as `controller.core` caps it."""
    cs = site.comfort
    return min(cs.margin, 0.25 * (cs.occupied.high - cs.occupied.low))


@dataclass
class MpcRun:
    """What the MPC loop did: compute time per cycle and the fallback chain's outcomes."""

    compute: np.ndarray
    outcomes: dict[str, int]
    reasons: dict[str, int] = field(default_factory=dict)  # "outcome: reason" -> cycles

    def summary(self) -> str:
        parts = ", ".join(f"{o} {self.outcomes.get(o, 0)}" for o in OUTCOMES)
        why = "; ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        return f"MPC cycles by outcome: {parts} (fallback reasons: {why})"


ForecastsAt = Callable[[float], dict[str, Forecast]]


def run_mpc(site: Any, plant: VirtualBuilding, t0: float, steps: int, forecasts_at: ForecastsAt,
            ctrl: Any | None = None) -> MpcRun:
    """The daemon's cycle without MQTT: controller core, `classify`, `FallbackPolicy`, `SetpointGate`.

    The estimator starts from the model's default initial state (as in the daemon), not from the plant's.
    Relinquished inputs go to the building's local controller (`LocalThermostat`), as on a real site. The
    demo's sensors never drop out, so the service's sensor-age checks (stale/missing) have nothing to catch.
    """
    from models.schedules import parse_schedules

    ctrl = build_site_controller(site) if ctrl is None else ctrl
    plant.set_signals({a.name: a.signal for a in ctrl.actuators},  # the plant takes what the devices take
                      {a.name: a.emitter_ua for a in ctrl.actuators})
    names = [a.name for a in ctrl.actuators]
    policy = FallbackPolicy(ctrl.actuators, site.fallback, site.comfort, list(ctrl.zone_names))
    gate = SetpointGate(ctrl.actuators)
    cs = site.comfort
    schedule = parse_schedules(site.schedules)[cs.schedule]
    local = LocalThermostat(plant, schedule=schedule, tz=site.timezone, occupied=(cs.occupied.low, cs.occupied.high),
                            unoccupied=(cs.unoccupied.low, cs.unoccupied.high))
    col = [plant.input_names.index(n) for n in names]
    held: HeldPlan | None = None
    compute = np.zeros(steps)
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    prog = Progress(steps, "MPC")
    sensors = plant.sensors()
    for k in range(steps):
        t = t0 + k * site.control.step_s
        readings = {s: (float(v), t) for s, v in sensors.items() if v is not None and math.isfinite(v)}
        c0 = time.perf_counter()
        out, error = None, None
        try:
            out = ctrl.cycle(CycleInputs(t, readings, forecasts_at(t)), time.perf_counter, site.control.deadline_s)
        except Exception as exc:  # the daemon reports this as a fallback reason; so does the demo
            error = f"{type(exc).__name__}: {exc}"
        reason, detail = classify(out, error=error, max_innovation_k=site.fallback.max_innovation_k,
                                  actuators=names)
        diag = (out.diagnostics or {}) if out is not None else {}
        zone_temps = {z: float(v) for z, v in (diag.get("zone_temps") or {}).items()
                      if isinstance(v, int | float) and math.isfinite(v)}
        trusted = {} if reason in ("nonfinite", "divergence", "stale_sensor", "missing_sensor") else zone_temps
        occupied = bool(schedule.values(np.array([t]), site.timezone)[0] > 0.5)
        decision = policy.decide(t, out, reason, detail, occupied=occupied, zone_temps=trusted, held=held)
        if decision.outcome == "mpc" and out is not None and out.plan_setpoints is not None:
            held = HeldPlan(t, site.control.step_s, names, np.asarray(out.plan_setpoints, dtype=float))
        clamped = gate.apply(decision.values, decision.sources)
        # As the service does: the estimator predicts with what was published (None: relinquished, unknown).
        ctrl.record_applied(t, clamped.values, valid_until=t + site.fallback.setpoint_validity_s)
        compute[k] = time.perf_counter() - c0
        outcomes[decision.outcome] += 1
        if decision.reason is not None:
            reasons[f"{decision.outcome}: {decision.reason}"] += 1
        u = local(t) if any(v is None for v in clamped.values.values()) else np.zeros(len(plant.input_names))
        for j, n in zip(col, names, strict=True):
            v = clamped.values[n]
            if v is not None:
                u[j] = v
        sensors = plant.step(u, t)
        prog.update(k + 1)
    prog.close()
    return MpcRun(compute, {o: outcomes.get(o, 0) for o in OUTCOMES}, dict(reasons))


def run_thermostat(site: Any, plant: VirtualBuilding, t0: float, steps: int, sim: Any,
                   margin_k: float = G36_MARGIN_K, hysteresis: bool = False) -> np.ndarray:
    """The G36 thermostat on ``plant`` every minute, setpoints ``margin_k`` inside the band, or with
    ``hysteresis`` an on/off thermostat at full output (the strong baseline for heat pumps); compute times."""
    caps_heat = np.clip(sim.u_max, 0, None)
    caps_cool = np.clip(-sim.u_min, 0, None)
    cs = site.comfort
    loop = bool(sim.net.flows)  # a hydronic loop: the zone demand drives the pumps, the tank is kept charged
    if loop:
        zone_stat = (HysteresisThermostat(list(sim.zone_names), THERMOSTAT_STEP_S, occupied=(cs.occupied.low,
                                          cs.occupied.high), unoccupied=(cs.unoccupied.low, cs.unoccupied.high),
                                          min_on_s=300.0, min_off_s=300.0) if hysteresis else
                     Guideline36Thermostat(list(sim.zone_names), 1.0, 0.0, THERMOSTAT_STEP_S,
                                           occupied=(cs.occupied.low, cs.occupied.high),
                                           unoccupied=(cs.unoccupied.low, cs.unoccupied.high), margin_k=margin_k))
        stat = LoopThermostat(sim, zone_stat, THERMOSTAT_STEP_S)
    elif hysteresis:  # on/off at full output: a duty of 1 for thermal-power inputs (heating only)
        plant.set_signals(dict.fromkeys([n for n, u in zip(sim.input_names, sim.input_units, strict=True)
                                         if u == "W"], "duty"))
        stat = HysteresisThermostat(list(sim.zone_names), THERMOSTAT_STEP_S, occupied=(cs.occupied.low,
                                    cs.occupied.high), unoccupied=(cs.unoccupied.low, cs.unoccupied.high),
                                    min_on_s=300.0, min_off_s=300.0)
    else:
        stat = Guideline36Thermostat(list(sim.zone_names), caps_heat, caps_cool, THERMOSTAT_STEP_S,
                                     occupied=(cs.occupied.low, cs.occupied.high),
                                     unoccupied=(cs.unoccupied.low, cs.unoccupied.high), margin_k=margin_k)
    from models.schedules import parse_schedules

    schedule = parse_schedules(site.schedules)[cs.schedule]
    ts = t0 + THERMOSTAT_STEP_S * np.arange(steps)
    now, soon = occupancy_flags(schedule, ts, site.timezone, stat.warmup_s)
    # Each zone's own sensor: named "<zone>_temperature", else one that reads the zone's air node alone (else
    # the thermostat's own sensor, the true zone temperature).
    exact = {next(iter(w)): name for name, w in sim.net.sensors if len(w) == 1 and next(iter(w.values())) == 1.0}
    zone_sensor = {z.name: f"{z.name}_temperature" if f"{z.name}_temperature" in sim.sensor_names
                   else exact.get(z.node) for z in sim.net.zones}
    zone_idx = [list(sim.sensor_names).index(zone_sensor[z]) if zone_sensor[z] is not None else None
                for z in sim.zone_names]
    compute = np.zeros(steps)
    prog = Progress(steps, "thermostat")
    temps = np.array(list(plant.zone_temperatures().values()))
    readings = plant.sensors()
    for k in range(steps):
        vals = list(readings.values())
        meas = np.array([vals[i] if i is not None and vals[i] is not None else temps[j]
                         for j, i in enumerate(zone_idx)], dtype=float)
        c0 = time.perf_counter()
        u = (stat.step(meas, bool(now[k]), bool(soon[k]), plant.state) if loop else
             stat.step(meas, bool(now[k]), bool(soon[k])))
        compute[k] = time.perf_counter() - c0
        readings = plant.step(u, ts[k])
        temps = np.array(list(plant.zone_temperatures().values()))
        if k % 50 == 0:
            prog.update(k + 1)
    prog.update(steps)
    prog.close()
    return compute


def kpis_of(plant: VirtualBuilding, site: Any, compute: np.ndarray, control_step: float, price_el: Any,
            price_gas: Any, area: float) -> Any:
    """BOPTEST KPIs of a run, scored on the plant's sub-step trajectory (1 min for both controllers), the
    comfort band from the schedule."""
    log = plant.fine_log()
    low, high = comfort_band(site, log.t)
    tm = log.t + log.dt / 2
    return compute_kpis(log.dt, log.zones_start, low, high, np.clip(log.p_el, 0, None), np.clip(log.p_gas, 0, None),
                        price_el.sample(tm, site.timezone),
                        price_gas.sample(tm, site.timezone) if price_gas is not None else 0.0,
                        area, compute, control_step_s=control_step, currency=currency_of(price_el.unit))


def plant_disturbances(dist: DisturbanceBuilder, occupancy: RealOccupancy) -> DisturbanceBuilder:
    """The plant's disturbances: the site's sources (true weather), with the real occupancy for the schedule."""
    sources = dict(dist.sources)
    if "occupancy" in sources:
        sources["occupancy"] = Source("schedule", schedule=occupancy, scale=sources["occupancy"].scale,
                                      label="real occupancy")
    return DisturbanceBuilder(dist.names, {}, {}, dist.tz, sources, samples_per_step=dist.samples_per_step)


def mpc_forecasts(plant_dist: DisturbanceBuilder, forecaster: NoisyForecaster, horizon_s: float, *,
                  perfect: bool) -> ForecastsAt:
    """What the MPC is sent each cycle, as the daemon would receive it over MQTT.

    Default: the forecaster's weather forecasts, no occupancy (the controller then uses the schedule).
    ``perfect``: no weather forecast (the controller's configured source is the plant's own weather) and the
    plant's real occupancy at 1-minute resolution over the horizon."""
    occ = plant_dist.sources.get("occupancy")

    def forecasts_at(t: float) -> dict[str, Forecast]:
        if not perfect:
            return forecaster.forecasts(t)
        if occ is None or occ.schedule is None:
            return {}
        times = t + THERMOSTAT_STEP_S * np.arange(int(horizon_s // THERMOSTAT_STEP_S) + 2)
        return {"occupancy": Forecast(start=t, step=THERMOSTAT_STEP_S,
                                      values=occ.scale * np.asarray(occ.schedule.values(times, plant_dist.tz)))}

    return forecasts_at


def knowledge(perfect: bool, margin: float, price: str, forecaster: NoisyForecaster,
              occupancy: RealOccupancy) -> dict[str, Any]:
    """What each controller knows, for report.json and the printout."""
    prices = ("the tariff series exactly (for highly-dynamic, real-time prices: perfect foresight)"
              if price == "highly-dynamic" else "the tariff series exactly (a published tariff)")
    return {
        "plant": {"weather": "Chicago O'Hare TMY3, true values",
                  "occupancy": "real occupancy: the schedule with absent days, partial attendance, late "
                               "arrivals and early leaves", "occupancy_model": occupancy.describe()},
        "mpc": {
            "weather": ("perfect: the plant's own weather" if perfect else
                        "forecasts issued hourly, error growing with lead time (AR(1): outdoor temperature "
                        "sigma 2.5 K at 24 h, irradiance 30 % at 24 h)"),
            "forecast_error_model": None if perfect else forecaster.describe(),
            "occupancy": "perfect: the plant's real occupancy" if perfect else "the comfort schedule",
            "initial_state": "the model's default initial state; the Kalman estimator corrects it from the "
                             "noisy readings (0.05 K noise, 0.1 K resolution) every 15 min",
            "model": "the site's model; the plant's air capacity, infiltration and internal mass differ",
            "prices": prices,
            "comfort_margin_k": margin,
        },
        "thermostat": {"weather": "none (feedback only)", "occupancy": "the comfort schedule (modes, 2 h warm-up)",
                       "initial_state": "none needed: reads its zone sensors every minute",
                       "prices": "none", "comfort_margin_k": margin},
        "on_off": {"weather": "none (feedback only)", "occupancy": "the comfort schedule (modes)",
                   "initial_state": "none needed: reads its zone sensors every minute",
                   "prices": "none", "control": "hysteresis on/off at full output, 5 min minimum on and off"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-mpc demo", description=__doc__.split("\n")[0])
    ap.add_argument("--building", default="office-20", choices=sorted(SITES))
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--season", default="winter", choices=sorted(SEASONS))
    ap.add_argument("--price", default="dynamic", choices=sorted(PRICES), help="ComEd 2019 price series")
    ap.add_argument("--year", type=int, default=2026, help="calendar year of the simulated days (weather is TMY)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--out", default="demo-out", help="folder for report.json and demo.png")
    ap.add_argument("--seed", type=int, default=1, help="seeds sensor noise, forecast errors and real occupancy")
    ap.add_argument("--perfect-forecasts", action="store_true",
                    help="give MPC the plant's own weather and real occupancy (what perfect forecasts are worth)")
    ap.add_argument("--margin", type=float, default=None, metavar="K",
                    help="comfort margin inside the band for both controllers (default: the site's comfort.margin)")
    args = ap.parse_args(argv)
    if not 0 < args.days <= 60:
        ap.error("--days must be in (0, 60]")
    if args.margin is not None and not 0 <= args.margin <= 1.0:
        ap.error("--margin must be in [0, 1] K")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"tariff.electricity.column={PRICES[args.price]}", f"control.backend={args.backend}"]
    if args.margin is not None:
        overrides.append(f"comfort.margin={args.margin} K")
    site = load_site(SITES[args.building], overrides)
    margin = comfort_margin(site)
    t0 = _start_time(args.season, args.year, site.timezone)
    step = site.control.step_s
    n_mpc = round(args.days * 86400 / step)
    n_tstat = round(args.days * 86400 / THERMOSTAT_STEP_S)
    from models import load_building
    from models.schedules import parse_schedules
    from models.series import load_tariff

    net = load_building(site.model_path)
    sim = net.compile(step)
    dist = builder_from_site(site, sim)
    schedule = parse_schedules(site.schedules)[site.comfort.schedule]
    horizon_s = site.control.horizon * step
    occupancy = RealOccupancy(schedule, site.timezone, t0, t0 + args.days * 86400 + horizon_s + 7200, args.seed)
    plant_dist = plant_disturbances(dist, occupancy)
    truth = {n: (lambda t, s=src: s.series.sample(t, site.timezone)) for n, src in dist.sources.items()
             if src.kind == "series"}
    forecaster = NoisyForecaster(truth, horizon_s, args.seed)
    forecasts_at = mpc_forecasts(plant_dist, forecaster, horizon_s, perfect=args.perfect_forecasts)
    scale = mismatch_scale(net.params.names)
    x_init = sim.x_initial.copy()
    x_init[:] = 21.0
    print(f"edge-mpc demo: {args.building}, {args.days:g} days of {args.season} from "
          f"{datetime.fromtimestamp(t0, site.timezone):%Y-%m-%d}, {args.price} prices, backend {args.backend}")
    print(f"virtual building: {len(sim.zone_names)} zones, {sim.n} states; plant/model mismatch on "
          f"{len(scale)} parameters; sensor noise 0.05 K, 0.1 K resolution; real occupancy "
          f"{occupancy.describe()['real_over_scheduled']:.0%} of the schedule's")
    knows = ("the plant's weather and real occupancy (--perfect-forecasts)" if args.perfect_forecasts else
             "weather forecasts with error, the occupancy schedule")
    print(f"MPC knows {knows}, and starts from the model's default initial state; the thermostat knows the "
          f"schedule; both keep {margin:g} K inside the comfort band")

    def plant(dt: float, substeps: int) -> VirtualBuilding:
        return VirtualBuilding(net, dt=dt, disturbances=plant_dist, param_scale=scale, noise_k=0.05,
                               quantisation_k=0.1, seed=args.seed, substeps=substeps, x0=x_init)

    w0 = time.perf_counter()
    plant_mpc = plant(step, int(step // THERMOSTAT_STEP_S))
    mpc = run_mpc(site, plant_mpc, t0, n_mpc, forecasts_at)
    w1 = time.perf_counter()
    plant_ts = plant(THERMOSTAT_STEP_S, 1)
    c_ts = run_thermostat(site, plant_ts, t0, n_tstat, sim, margin)
    plant_hy = plant(THERMOSTAT_STEP_S, 1)
    c_hy = run_thermostat(site, plant_hy, t0, n_tstat, sim, hysteresis=True)
    w2 = time.perf_counter()
    plant_g36, c_g36 = None, np.zeros(0)
    if abs(margin - G36_MARGIN_K) > 1e-9:
        plant_g36 = plant(THERMOSTAT_STEP_S, 1)
        c_g36 = run_thermostat(site, plant_g36, t0, n_tstat, sim, G36_MARGIN_K)
    currency, series = load_tariff(site.tariff, site.base_dir)
    area = sim.floor_area

    def score(p: VirtualBuilding, compute: np.ndarray, control_step: float) -> Any:
        return kpis_of(p, site, compute, control_step, series["electricity"], series.get("gas"), area)

    k_mpc = score(plant_mpc, mpc.compute, step)
    k_ts = score(plant_ts, c_ts, THERMOSTAT_STEP_S)
    k_hy = score(plant_hy, c_hy, THERMOSTAT_STEP_S)
    k_g36 = score(plant_g36, c_g36, THERMOSTAT_STEP_S) if plant_g36 is not None else None
    print()
    print(f"Both scored on the plant's {THERMOSTAT_STEP_S:g} s trajectory, both {margin:g} K inside the band:")
    print(format_comparison(k_mpc, k_ts, ("MPC", "thermostat")))
    print()
    print(format_comparison(k_mpc, k_hy, ("MPC", "on/off")))
    print(mpc.summary())
    saving = 1 - k_mpc.cost_tot / k_ts.cost_tot if k_ts.cost_tot > 0 else float("nan")
    saving_hy = 1 - k_mpc.cost_tot / k_hy.cost_tot if k_hy.cost_tot > 0 else float("nan")
    print(f"\nMPC saves {saving:.1%} of the energy cost of the thermostat "
          f"(discomfort {k_mpc.tdis_tot:.3f} vs {k_ts.tdis_tot:.3f} K·h/zone), {saving_hy:.1%} of the on/off "
          f"thermostat's (discomfort {k_hy.tdis_tot:.3f} K·h/zone); "
          f"simulated {args.days:g} days in {w2 - w0:.1f} s (MPC {w1 - w0:.1f} s, thermostat {w2 - w1:.1f} s)")
    saving_g36 = None
    if k_g36 is not None:
        saving_g36 = 1 - k_mpc.cost_tot / k_g36.cost_tot if k_g36.cost_tot > 0 else float("nan")
        print(f"Thermostat at G36's usual {G36_MARGIN_K:g} K margin: cost {k_g36.cost_tot:.4g} {currency}/m², "
              f"discomfort {k_g36.tdis_tot:.3f} K·h/zone; against it MPC saves {saving_g36:.1%}")
    scenario = {"building": args.building, "days": args.days, "season": args.season, "price": args.price,
                "start": datetime.fromtimestamp(t0, site.timezone).isoformat(), "backend": args.backend,
                "seed": args.seed, "perfect_forecasts": args.perfect_forecasts,
                "weather": "Chicago O'Hare TMY3", "prices": f"ComEd 2019 {PRICES[args.price]}", "currency": currency,
                "mismatch": scale, "control_step_s": step, "thermostat_step_s": THERMOSTAT_STEP_S,
                "kpi_step_s": THERMOSTAT_STEP_S, "comfort_margin_k": margin, "wall_s": w2 - w0}
    report = {"scenario": scenario, "knowledge": knowledge(args.perfect_forecasts, margin, args.price, forecaster,
                                                           occupancy),
              "mpc": k_mpc.as_dict(), "baseline": k_ts.as_dict(), "cost_saving": saving,
              "mpc_outcomes": mpc.outcomes, "mpc_fallback_reasons": mpc.reasons,
              "hysteresis": k_hy.as_dict(), "cost_saving_vs_hysteresis": saving_hy}
    if k_g36 is not None:
        report["baseline_g36_margin"] = {"comfort_margin_k": G36_MARGIN_K, **k_g36.as_dict()}
        report["cost_saving_vs_g36_margin"] = saving_g36
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out / 'report.json'}")
    try:
        from controller.tools.demo_plot import plot

        plot(out / "demo.png", plant_mpc.fine_log(), plant_ts.fine_log(), site, series["electricity"], args)
        print(f"wrote {out / 'demo.png'}")
    except ImportError:
        print("matplotlib is not installed, so no figure: pip install 'edge-mpc[plot]' (or bash deploy/dev.sh demo)")
    return 0
