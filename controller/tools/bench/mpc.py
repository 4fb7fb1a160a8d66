"""MPC solve benchmark: Riccati interior point vs exact conic solver and a straightforward L-BFGS-B baseline.

Rows (median of repeats, same process, same machine):
- R1 office-20 (config/buildings/office-20.yaml; a synthetic R1-like floor if the file is absent) on a
  synthetic winter day (controller.mpc.reference.winter_day: cosine outdoor temperature around -6 degC,
  made-up solar gains and a three-level time-of-use price). R1-real is the same building on a real day:
  Chicago O'Hare TMY3 weather and the ComEd 2019 day/night tariff and gas price from config/data, 15
  January from midnight (the data the office-20 site uses; colder, -14 degC at night). Cold solve and warm solve
  (previous plan and its classification shifted one step, state advanced, disturbance forecast revised),
  each to a certified relative gap <= --gap; `warm-ipm` is the same warm start without the classification
  (interior point from the shifted plan); `loopN` times N consecutive closed-loop cycles.
  Reference: cvxpy + Clarabel (if importable) on the same convex program, built once; reference_s is
  Clarabel's own solve time (solver-reported, without model building and canonicalisation) at tolerance
  --gap, the same as ours, and reference_tight_s at 1e-8, each the median of repeats; the 1e-8 optimum
  gives gap_rel. Clarabel has no warm start, so its warm rows solve the new cycle from scratch.
  Baseline: scipy L-BFGS-B on the u+/u- split, driven by a per-step NumPy forward loop and explicit reverse
  loop, run until it is within --gap of the optimum (or gives up); warm rows start it from the same
  shifted plan as ours.
- R4 campus-500 (25 buildings, 1500 states): the same solver batched over buildings, synthetic day.
- R2 radiant (config/buildings/radiant.yaml: heat pump -> 300 l buffer tank -> pump flow x temperature ->
  slab; horizon 96 x 15 min): nonlinear MPC by SQP over the exact step (controller.mpc.sqp), cold (two
  starts) and warm (shifted plan, revised forecasts), against IPOPT by single shooting around the same
  simulator (controller.tools.bench.ipopt_shooting), best of three starts.
- R2-hp: the same house with its slab heated directly by a rated heat pump (config/buildings/radiant-hp.yaml):
  a linear network with a nonlinear meter, by sequential convex programming (controller.mpc.scp), cold and
  warm, against IPOPT through casadi on the same discrete-time problem.
- NL: the generic projected L-BFGS on a nonlinear heat-pump/tank/radiator model (synthetic day).

--backend and --dtype select how the building model is compiled (cupy falls back to numpy, with a line,
where CuPy or a GPU is missing). The MPC solvers are host NumPy float64 code whatever the model's backend
(the problem takes the model's host twin), so the rows report backend numpy, dtype float64, and the
timings do not depend on these options.

The cold rows also say where the time goes: Riccati factorisations and solves (count and median cost) and
the rest of the solve.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from controller.mpc.lqsolver import LQOptions, LQSolver
from controller.mpc.objective import energy_slopes
from controller.mpc.problem import MPCData, MPCProblem
from controller.mpc.reference import next_cycle
from controller.mpc.result import shift_plan
from controller.tools.bench.measure import Report, machine_line, median_time, rss_bytes
from controller.tools.paths import DATA, ROOT

REAL_DAY = 14  # 15 January, a Tuesday in 2019 (the price year): a winter weekday


def chicago_winter_day(K: int, dt: float, day: int = REAL_DAY
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(disturbances (K, 4): outdoor temperature, irradiance, occupancy, ground temperature; electricity and
    gas price (K,) USD/kWh; occupancy (K,)) for K steps from midnight of `day` (0 = 1 January): TMY3 dry
    bulb and global horizontal irradiance of Chicago O'Hare, the ComEd 2019 day/night tariff
    (PriceElectricPowerDynamic, as config/sites/office-20.yaml) and gas price; occupied 07:00-19:00, ground
    at 8 degC."""
    w = np.genfromtxt(DATA / "chicago_ohare_tmy3.csv", delimiter=",", names=True)
    p = np.genfromtxt(DATA / "chicago_comed_2019.csv", delimiter=",", names=True)
    t0 = day * 86400.0 + dt * np.arange(K)
    mid = t0 + 0.5 * dt
    t_out = np.interp(mid, w["time_s"], w["dry_bulb_c"])
    ghi = np.interp(mid, w["time_s"] - 1800.0, w["ghi_wh_m2"])  # Wh/m² over the hour before time_s
    i = np.clip(np.searchsorted(p["time_s"], mid, side="right") - 1, 0, len(p) - 1)  # hourly, held
    h = (t0 / 3600.0) % 24.0
    occ = ((h >= 7.0) & (h < 19.0)).astype(float)
    d = np.stack([t_out, ghi, occ, np.full(K, 8.0)], axis=1)
    return d, p["PriceElectricPowerDynamic"][i], p["PriceGasPower"][i], occ


def _load(name: str, synthetic: Any, move: float = 0.0, backend: str = "numpy", dtype: str = "float64",
          real: bool = False) -> tuple[MPCProblem, MPCData, str]:
    """The building from config/buildings on the synthetic winter day, or (real) on 15 January in Chicago."""
    from controller.mpc.reference import simulator_problem

    path = ROOT / "config" / "buildings" / f"{name}.yaml"
    try:
        from models import load_building

        sim = load_building(path).compile(900.0, backend=backend, dtype=dtype)
        if sim.linear is None:
            raise ValueError("not linear")
        K = 96
        prob, data = simulator_problem(sim, K, move=move, day=chicago_winter_day(K, 900.0) if real else None)
        day = "Chicago TMY3 weather, ComEd 2019 prices, 15 Jan" if real else "synthetic day"
        return prob, data, f"{path.relative_to(ROOT)} (model {sim.backend}/{dtype}); {day}"
    except Exception as exc:  # the synthetic stand-in keeps the benchmark usable without the model file
        prob, data = synthetic()
        return prob, data, f"synthetic floor and day ({type(exc).__name__}: {exc})"[:100]


class LoopBaseline:
    """The straightforward way: dense discrete matrices, a per-step forward loop and a per-step reverse loop,
    scipy L-BFGS-B on the split u = u+ - u- (energy is then linear on each part)."""

    def __init__(self, prob: MPCProblem, data: MPCData) -> None:
        self.prob, self.data = prob, data
        self.A, self.B, self.E = prob.model.discrete()
        self.C = prob.model.Cz
        self.cp, self.cm = energy_slopes(prob, data)
        w = prob.weights
        self.wq = prob.dt_h * np.broadcast_to(np.asarray(w.comfort_quadratic, float), (prob.nz,))
        self.wl = prob.dt_h * np.broadcast_to(np.asarray(w.comfort_linear, float), (prob.nz,))
        self.wm = np.broadcast_to(np.asarray(w.move, float), (prob.nu,)) / 1e6
        self.scale = np.maximum(np.abs(data.u_min).max(0), np.abs(data.u_max).max(0))

    def f_and_grad(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        K, nu, data = self.prob.horizon, self.prob.nu, self.data
        vp, vm = v[:K * nu].reshape(K, nu) * self.scale, v[K * nu:].reshape(K, nu) * self.scale
        u = vp - vm
        xs = [data.x0]
        for k in range(K):
            xs.append(self.A @ xs[-1] + self.B @ u[k] + self.E @ data.d[k])
        f = float((self.cp * vp).sum() + (self.cm * vm).sum())
        gu = np.zeros((K, nu))
        du = np.diff(u, axis=0, prepend=data.u_last[None])
        f += float((self.wm * du * du).sum())
        gd = 2 * self.wm * du
        gu += gd
        gu[:-1] -= gd[1:]
        lam = np.zeros_like(data.x0)
        for k in range(K - 1, -1, -1):
            y = self.C @ xs[k + 1]
            lo, hi = data.comfort_low[k] - y, y - data.comfort_high[k]
            vl, vh = np.maximum(lo, 0), np.maximum(hi, 0)
            f += float((self.wq * (vl * vl + vh * vh) + self.wl * (vl + vh)).sum())
            gy = (2 * self.wq * vh + self.wl * (hi > 0)) - (2 * self.wq * vl + self.wl * (lo > 0))
            lam = lam + self.C.T @ gy
            gu[k] += self.B.T @ lam
            lam = self.A.T @ lam
        gp, gm = (gu + self.cp) * self.scale, (-gu + self.cm) * self.scale
        return f, np.concatenate([gp.ravel(), gm.ravel()])

    def solve(self, f_target: float, max_iter: int = 3000, u0: np.ndarray | None = None) -> tuple[float, int]:
        """Best objective and iterations until f_target is reached (or max_iter); u0 (K, nu) W: warm start
        (split into its heating and cooling parts), else zero."""
        from scipy.optimize import minimize

        data, K, nu = self.data, self.prob.horizon, self.prob.nu
        ub = np.concatenate([np.maximum(data.u_max, 0).ravel(), np.maximum(-data.u_min, 0).ravel()])
        ub = ub / np.tile(self.scale, 2 * K)
        best = [math.inf]

        def fg(v: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = self.f_and_grad(v)
            best[0] = min(best[0], f)
            if best[0] <= f_target:
                raise StopIteration
            return f, g

        it = [0]

        def count(_: np.ndarray) -> None:
            it[0] += 1

        try:
            v0 = np.zeros(2 * K * nu)
            if u0 is not None:
                u0 = np.clip(u0, data.u_min, data.u_max) / self.scale
                v0 = np.concatenate([np.maximum(u0, 0.0).ravel(), np.maximum(-u0, 0.0).ravel()])
            minimize(fg, v0, jac=True, method="L-BFGS-B", bounds=list(zip(0 * ub, ub, strict=True)),
                     callback=count, options={"maxiter": max_iter, "maxfun": 2 * max_iter, "ftol": 1e-16,
                                              "gtol": 1e-12})
        except StopIteration:
            pass
        return best[0], it[0]


def _reference(prob: MPCProblem, data: MPCData, tol: float, repeats: int) -> tuple[float | None, float, float]:
    """(optimum at 1e-8, Clarabel's median solve time at tol, at 1e-8), solver-reported, over repeats of the
    same program (built and canonicalised once)."""
    try:
        from controller.mpc.convex_reference import ReferenceProblem

        ref = ReferenceProblem(prob, data)
    except ImportError:
        return None, math.nan, math.nan
    times: dict[float, list[float]] = {tol: [], 1e-8: []}
    f = None
    for _ in range(max(1, repeats)):
        for t in times:  # interleaved, like ours
            _, ft = ref.solve(tol=t)
            times[t].append(ref.solve_time)
            if t == 1e-8:
                f = ft
    return f, float(np.median(times[tol])), float(np.median(times[1e-8]))


def _lq_rows(report: Report, name: str, prob: MPCProblem, data: MPCData, args: argparse.Namespace,
             reference: bool, baseline: bool, loop: int = 0) -> None:
    # The solver's stopping gap is a certified upper bound on the true gap, so it can equal --gap.
    solver = LQSolver(prob, LQOptions(tol=args.gap))
    cold = solver.solve(data, timer=time.perf_counter)
    nd = next_cycle(prob, data, cold.u)
    u0 = shift_plan(cold.u)
    act = cold.active.shifted() if cold.active is not None else None
    repeats = args.repeats
    t_cold = median_time(lambda: solver.solve(data), repeats=repeats, warmup=0)
    warm = solver.solve(nd, u0, active=act, timer=time.perf_counter)
    t_warm = median_time(lambda: solver.solve(nd, u0, active=act), repeats=repeats, warmup=0)
    # The same warm start without the previous classification: interior point from the shifted plan.
    warm_ip = solver.solve(nd, u0, timer=time.perf_counter)
    t_warm_ip = median_time(lambda: solver.solve(nd, u0), repeats=max(1, repeats // 2), warmup=0)
    rows = (("cold", cold, t_cold, data, None), ("warm", warm, t_warm, nd, u0),
            ("warm-ipm", warm_ip, t_warm_ip, nd, u0))
    parts = _cost_parts(solver, data, min(repeats, 3))
    if not args.json:
        print(f"# {name} cold, where the time goes: {parts['factorizations']} Riccati factorisations of "
              f"{parts['factor_s'] * 1e3:.2f} ms, {parts['lq_solves']} Riccati solves of "
              f"{parts['lq_solve_s'] * 1e3:.2f} ms, {parts['other_s'] * 1e3:.1f} ms of other array work")
    ref_repeats = max(1, min(repeats, 3))
    for mode, res, t, d, start in rows:
        f_ref, t_ref, t_tight = (_reference(prob, d, args.gap, ref_repeats) if reference and mode != "warm-ipm"
                                 else (None, math.nan, math.nan))
        gap = (res.objective - f_ref) / abs(f_ref) if f_ref is not None else res.gap_bound
        base_s, speed, base_gap = math.nan, math.nan, math.nan
        if baseline and f_ref is not None:
            bl = LoopBaseline(prob, d)
            t0 = time.perf_counter()
            f_bl, it_bl = bl.solve(f_ref + args.gap * abs(f_ref), u0=start)
            base_s = time.perf_counter() - t0
            base_gap = (f_bl - f_ref) / abs(f_ref)
            reached = base_gap <= args.gap
            # A baseline that gives up still took base_s: the ratio is then a lower bound (flagged by base_gap).
            speed = base_s / t
            if not reached and not args.json:
                print(f"# baseline ({mode}) gave up at gap {(f_bl - f_ref) / abs(f_ref):.1e} after {it_bl} iterations")
        extra = parts if mode == "cold" else {}
        report.row(suite="mpc", problem=name, backend="numpy", dtype="float64", batch=1, horizon=prob.horizon,
                   mode=mode, solve_s=t, reference_s=t_ref, reference_tight_s=t_tight, gap_rel=gap,
                   iterations=res.iterations, **extra,
                   status=str(res.status), baseline_s=base_s, baseline_gap=base_gap, speedup=speed,
                   ref_ratio=t_ref / t if math.isfinite(t_ref) else math.nan, rss_bytes=rss_bytes())
    if loop > 0:
        _loop_row(report, name, prob, solver, data, cold, loop)


def _cost_parts(solver: LQSolver, data: MPCData, repeats: int) -> dict[str, Any]:
    """Median cost of one Riccati factorisation and one Riccati solve over cold solves, and the rest of the
    median solve time: the linear algebra that bounds the method, measured apart from the array work
    around it."""
    lq = solver.lq
    factor, lsolve = lq.factor, lq.solve
    tf: list[float] = []
    ts: list[float] = []

    def timed(fn: Any, into: list[float]) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            into.append(time.perf_counter() - t0)
            return out
        return call

    lq.factor, lq.solve = timed(factor, tf), timed(lsolve, ts)
    try:
        totals = []
        for _ in range(max(1, repeats)):
            tf.clear()
            ts.clear()
            t0 = time.perf_counter()
            solver.solve(data)
            totals.append((time.perf_counter() - t0, sum(tf) + sum(ts), len(tf), len(ts), float(np.median(tf)),
                           float(np.median(ts))))
    finally:
        del lq.factor, lq.solve  # back to the class methods
    total, lin, nf, ns, f1, s1 = sorted(totals)[len(totals) // 2]
    return {"factorizations": nf, "factor_s": f1, "lq_solves": ns, "lq_solve_s": s1, "other_s": total - lin}


def _loop_row(report: Report, name: str, prob: MPCProblem, solver: LQSolver, data: MPCData, first: Any,
              cycles: int) -> None:
    """Closed loop: `cycles` consecutive cycles, each warm-started from the one before (plant advanced,
    forecasts revised); the median, the 90th percentile and how often active-set polishing handed over to
    the interior point method. Gaps are the solver's certified bounds (one exact solve per cycle would take
    minutes)."""
    res, d = first, data
    times, gaps, iters, handed_over, statuses = [], [], [], 0, set()
    for c in range(cycles):
        d = next_cycle(prob, d, res.u, seed=100 + c)
        act = res.active.shifted() if res.active is not None else None
        res = solver.solve(d, shift_plan(res.u), active=act, timer=time.perf_counter)
        times.append(res.solve_time)
        gaps.append(res.gap_bound)
        iters.append(res.iterations)
        handed_over += res.iterations > solver.opt.warm_rounds
        statuses.add(str(res.status))
    t = np.asarray(times)
    if not report.as_json:
        print(f"# {name} closed loop, {cycles} cycles: median {np.median(t) * 1e3:.1f} ms, p90 "
              f"{np.percentile(t, 90) * 1e3:.1f} ms, max {t.max() * 1e3:.1f} ms; {handed_over} of {cycles} handed "
              f"over to interior point; largest certified gap {max(gaps):.1e}")
    report.row(suite="mpc", problem=name, backend="numpy", dtype="float64", batch=1, horizon=prob.horizon,
               mode=f"loop{cycles}", solve_s=float(np.median(t)), p90_s=float(np.percentile(t, 90)),
               max_s=float(t.max()), handed_over=handed_over, cycles=cycles, gap_rel=max(gaps),
               iterations=int(np.median(iters)), status="/".join(sorted(statuses)), reference_s=math.nan,
               reference_tight_s=math.nan, baseline_s=math.nan, speedup=math.nan, ref_ratio=math.nan,
               rss_bytes=rss_bytes())


def _nonlinear_rows(report: Report, args: argparse.Namespace) -> None:
    from scipy.optimize import minimize

    from controller.mpc.generic import GenericSolver
    from controller.mpc.reference import heat_pump_problem

    case = heat_pump_problem(K=24, dt=3600.0)
    solver = GenericSolver(case.f_and_grad, case.u_min, case.u_max)
    res = solver.solve()
    t = median_time(lambda: solver.solve(), repeats=max(1, args.repeats // 4), warmup=0)
    scale = case.u_max.max(axis=0)

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = case.f_and_grad(x.reshape(-1, 2) * scale)
        return f, (g * scale).ravel()

    t0 = time.perf_counter()
    ref = minimize(fg, np.zeros(case.u_min.size), jac=True, method="L-BFGS-B",
                   bounds=list(zip((case.u_min / scale).ravel(), (case.u_max / scale).ravel(), strict=True)),
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
    t_ref = time.perf_counter() - t0
    report.row(suite="mpc", problem="NL heat pump", backend="numpy", dtype="float64", batch=1, horizon=24,
               mode="cold", solve_s=t, reference_s=t_ref, reference_tight_s=math.nan,
               gap_rel=(res.objective - ref.fun) / abs(ref.fun),
               iterations=res.iterations, status=str(res.status), baseline_s=t_ref, baseline_gap=0.0,
               speedup=t_ref / t,
               ref_ratio=t_ref / t, rss_bytes=rss_bytes())


def _r2_hp_rows(report: Report, args: argparse.Namespace, reference: bool) -> None:
    """R2-hp: the radiant heat pump (controller.tools.bench.ipopt_reference.radiant_case), horizon 96 x 15 min, solved
    by sequential convex programming; IPOPT (casadi) on the same discrete-time problem from three starts
    (zero, 30 % load, our plan) gives gap_rel, and its run from zero gives reference_s."""
    from controller.mpc.scp import SCPOptions, SCPSolver
    from controller.tools.bench.ipopt_reference import ipopt_solve, radiant_case

    sim, prob, data = radiant_case(96, 900.0)
    solver = SCPSolver(prob, sim, SCPOptions(tol=args.gap))
    cold = solver.solve(data, timer=time.perf_counter)
    nd = next_cycle(prob, data, cold.u)
    u0 = shift_plan(cold.u)
    act = cold.active.shifted() if cold.active is not None else None
    t_cold = median_time(lambda: solver.solve(data), repeats=args.repeats, warmup=0)
    warm = solver.solve(nd, u0, active=act, timer=time.perf_counter)
    t_warm = median_time(lambda: solver.solve(nd, u0, active=act), repeats=args.repeats, warmup=0)
    for mode, res, t, d in (("cold", cold, t_cold, data), ("warm", warm, t_warm, nd)):
        f_ref, t_ref = None, math.nan
        if reference:
            try:
                f_ref, _, t_ref = ipopt_solve(sim, prob, d, [np.zeros_like(res.u), 0.3 * d.u_max, res.u])
            except ImportError:
                if not args.json:
                    print("# R2-hp: casadi is not installed, no IPOPT reference (pip install 'edge-mpc[test]')")
        gap = (res.objective - f_ref) / abs(f_ref) if f_ref is not None and math.isfinite(f_ref) else math.nan
        report.row(suite="mpc", problem="R2-hp", backend="numpy", dtype="float64", batch=1, horizon=prob.horizon,
                   mode=mode, solve_s=t, reference_s=t_ref, reference_tight_s=math.nan, gap_rel=gap,
                   iterations=res.iterations,
                   status=str(res.status), scp_iterations=res.info.get("scp_iterations"), baseline_s=math.nan,
                   baseline_gap=math.nan, speedup=math.nan, ref_ratio=t_ref / t if math.isfinite(t_ref) else math.nan,
                   rss_bytes=rss_bytes())


def _r2_rows(report: Report, args: argparse.Namespace, reference: bool) -> None:
    """R2 (controller.tools.bench.ipopt_shooting.radiant_loop_case), horizon 96 x 15 min, solved by SQP;
    IPOPT by single shooting from three starts (our plan, half of every range, full flow with the heat pump
    off) gives gap_rel, and its run from our plan gives reference_s (IPOPT polishing a plan it is handed)."""
    from controller.mpc.sqp import SQPOptions, SQPSolver
    from controller.tools.bench.ipopt_shooting import ipopt_shooting, radiant_loop_case

    sim, prob, data = radiant_loop_case(96, 900.0)
    # stops when the relative objective change and predicted decrease are both <= --gap (as the daemon, 1e-4)
    solver = SQPSolver(prob, sim, SQPOptions(tol=args.gap))
    cold = solver.solve(data, timer=time.perf_counter)
    rng = np.random.default_rng(7)
    nd = replace(data.shifted(1), x0=np.asarray(solver.simulate(data, cold.u).x)[0, 1]
                 + rng.normal(0.0, 0.05, sim.n), u_last=cold.u[0].copy())
    nd.d = nd.d.copy()
    nd.d[:, sim.disturbance_names.index("outdoor_temperature")] += rng.normal(0.0, 0.5, prob.horizon)
    u0 = shift_plan(cold.u)
    t_cold = median_time(lambda: solver.solve(data), repeats=args.repeats, warmup=0)
    warm = solver.solve(nd, u0, timer=time.perf_counter)
    t_warm = median_time(lambda: solver.solve(nd, u0), repeats=args.repeats, warmup=0)
    for mode, res, t, d in (("cold", cold, t_cold, data), ("warm", warm, t_warm, nd)):
        f_ref, t_ref = None, math.nan
        if reference:
            try:
                hi = d.u_max[0]
                starts = [res.u, np.tile(0.5 * hi, (prob.horizon, 1)), np.tile([hi[0], 0.0], (prob.horizon, 1))]
                f_ref, _, t_ref = ipopt_shooting(sim, prob, d, starts)
            except ImportError:
                if not args.json:
                    print("# R2: casadi is not installed, no IPOPT reference (pip install 'edge-mpc[test]')")
        gap = (res.objective - f_ref) / abs(f_ref) if f_ref is not None and math.isfinite(f_ref) else math.nan
        report.row(suite="mpc", problem="R2", backend="numpy", dtype="float64", batch=1, horizon=prob.horizon,
                   mode=mode, solve_s=t, reference_s=t_ref, reference_tight_s=math.nan, gap_rel=gap,
                   iterations=res.iterations, status=str(res.status),
                   sqp_iterations=res.info.get("sqp_iterations"), baseline_s=math.nan, baseline_gap=math.nan,
                   speedup=math.nan, ref_ratio=t_ref / t if math.isfinite(t_ref) else math.nan,
                   rss_bytes=rss_bytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-mpc bench mpc", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--problems", default="R1,R1-real,R4,NL",
                    help="comma-separated subset of R1,R1-real,R2,R2-hp,R4,NL")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gap", type=float, default=1e-4, help="relative optimality gap each solve must reach")
    ap.add_argument("--move", type=float, default=0.0,
                    help="move-suppression weight, USD/kW² per step (the R1/R4 reference problems have none)")
    ap.add_argument("--loop", type=int, default=48,
                    help="R1 closed-loop cycles to time after the warm rows (0: none)")
    ap.add_argument("--no-reference", action="store_true", help="skip cvxpy + Clarabel")
    ap.add_argument("--no-baseline", action="store_true", help="skip the L-BFGS-B loop baseline")
    ap.add_argument("--r4-reference", action="store_true", help="also run the exact solver on R4 (minutes)")
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                    help="array backend the building model is compiled for (the MPC solver is host NumPy code "
                         "whatever this says; cupy falls back to numpy where unavailable)")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="dtype the building model is compiled in (the MPC solver works in float64)")
    args = ap.parse_args(argv)
    from controller.mpc.reference import office_problem

    backend = args.backend
    if backend == "cupy":
        from models.backend import cupy_or_reason

        cupy, why = cupy_or_reason()
        if cupy is None:
            print(f"# --backend cupy: unavailable here ({why}); the model compiles for numpy", flush=True)
            backend = "numpy"
    if not args.json and (args.backend, args.dtype) != ("numpy", "float64"):
        print(f"# model compiled for {backend}/{args.dtype}; the MPC solver runs on the host in float64 (the "
              f"problem takes the model's host twin), so these rows are numpy/float64 solves")
    report = Report([("problem", "problem", ""), ("mode", "mode", ""), ("solve_s", "solve s", ".4f"),
                     ("iterations", "iters", "d"), ("status", "status", ""), ("gap_rel", "gap", ".1e"),
                     ("reference_s", "ref s", ".3f"), ("ref_ratio", "ref/ours", ".1f"),
                     ("reference_tight_s", "ref 1e-8 s", ".3f"),
                     ("baseline_s", "base s", ".3f"), ("baseline_gap", "base gap", ".1e"),
                     ("speedup", "base/ours", ".1f"),
                     ("rss_bytes", "RSS B", ".3g")], args.json)
    problems = {p.strip().upper() for p in args.problems.split(",")}
    if not args.json:
        print(machine_line("numpy"))
        print(f"# ref s: Clarabel's own solve time (solver-reported, median of {max(1, min(args.repeats, 3))}) at "
              f"tolerance {args.gap:g} like ours, ref 1e-8 s at 1e-8 (its optimum gives gap); no warm start. "
              f"NL: scipy L-BFGS-B wall time. base: L-BFGS-B loop baseline, warm rows from our warm start")
    if "R1" in problems:
        prob, data, src = _load("office-20", office_problem, args.move, backend, args.dtype)
        if not args.json:
            print(f"R1: {src}; {prob.model.n} states, {prob.nu} inputs, {prob.horizon} steps")
        _lq_rows(report, "R1", prob, data, args, not args.no_reference, not args.no_baseline, args.loop)
    if "R1-REAL" in problems:
        prob, data, src = _load("office-20", office_problem, args.move, backend, args.dtype, real=True)
        if not args.json:
            print(f"R1-real: {src}; {prob.model.n} states, {prob.nu} inputs, {prob.horizon} steps")
        _lq_rows(report, "R1-real", prob, data, args, not args.no_reference, not args.no_baseline, args.loop)
    if "R4" in problems:
        path = ROOT / "config" / "buildings" / "campus-500.yaml"
        if not path.exists():
            print("R4: skipped (config/buildings/campus-500.yaml not found)")
        else:
            prob, data, src = _load("campus-500", lambda: office_problem(buildings=25), args.move, backend,
                                    args.dtype)
            if not args.json:
                print(f"R4: {src}; {prob.model.n} states, {prob.nu} inputs, {prob.horizon} steps")
            _lq_rows(report, "R4", prob, data, args, args.r4_reference and not args.no_reference, False)
    if "R2" in problems:
        _r2_rows(report, args, not args.no_reference)
    if "R2-HP" in problems:
        _r2_hp_rows(report, args, not args.no_reference)
    if "NL" in problems:
        _nonlinear_rows(report, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
