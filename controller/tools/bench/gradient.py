"""`edge-mpc bench gradient`: forward and forward+gradient of the simulator against a straightforward
per-step NumPy implementation of the same model, run in the same process (problems R1, R2, R4, PL: README).

The objective is the shape MPC uses: a quadratic comfort term on every zone temperature plus electricity
cost (price x electric power). "forward" is simulation + objective; "fwd+grad" adds the adjoint gradient
with respect to all actuator trajectories. The baseline steps x[k+1] = A x[k] + B u[k] + E d[k] in a
Python loop with dense discrete matrices (one per building block of a block-diagonal model: R4 is 25
buildings) and runs the explicit reverse loop for the adjoint (for the bilinear R2 model it takes one
matrix exponential per step).

PL is PassiveLogic's BuildingSimulation benchmark (controller.tools.bench.pl): the gradient of its loss with
respect to every parameter, beside a per-step NumPy loop and, when torch is installed, PyTorch.

Timing: forward, forward+gradient and the baseline (and PyTorch) run interleaved, in rounds, and each
figure is the median over the rounds; every contender is timed at least three times, large batches too.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from controller.tools.bench.measure import Report, machine_line, rss_bytes
from controller.tools.paths import BUILDINGS
from models import load_building
from models.expm import expm, expm_frechet_adjoint

T_REF = 21.0
PRICE = 0.1 / 3.6e6  # USD per J


def _problem(sim: Any, B: int, K: int, seed: int = 0) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    lo, hi = sim.u_min, sim.u_max
    u = lo + (hi - lo) * rng.uniform(0.2, 0.8, (B, K, sim.nu))
    names = sim.disturbance_names
    d = np.zeros((B, K, sim.nd))
    t = np.arange(K) * sim.dt / 3600.0
    for j, name in enumerate(names):
        if name == "outdoor_temperature":
            d[..., j] = -5 + 5 * np.sin(2 * np.pi * (t - 9) / 24) + rng.normal(0, 1, (B, 1))
        elif name == "solar_irradiance":
            d[..., j] = np.clip(400 * np.sin(2 * np.pi * (t - 6) / 24), 0, None)
        elif name == "ground_temperature":
            d[..., j] = 10.0
        else:
            d[..., j] = ((t % 24) > 7) & ((t % 24) < 19)
    x0 = np.broadcast_to(sim.x_initial, (B, sim.n)).copy()
    return sim.asarray(x0), sim.asarray(u), sim.asarray(d)


def objective(sim: Any, x0: Any, u: Any, d: Any) -> tuple[float, Any, Any]:
    """J, the trajectory, and the zone deviations (the comfort term's cotangent is 2 * dev)."""
    tr = sim.simulate(x0, u, d)
    dev = tr.zones - T_REF
    J = float(sim.xp.vdot(dev, dev) + PRICE * sim.dt * tr.p_el.sum())
    return J, tr, dev


def forward_gradient(sim: Any, x0: Any, u: Any, d: Any) -> tuple[float, Any]:
    J, tr, dev = objective(sim, x0, u, d)
    dev *= 2
    # The energy term is linear: its cotangent is one constant.
    g_el = sim.xp.full(tr.p_el.shape, PRICE * sim.dt, dtype=sim.dtype)
    g = sim.gradient(tr, g_zones=dev, g_el=g_el)
    return J, g.u


class Straightforward:
    """The textbook implementation: a per-step loop with dense matrices and an explicit reverse loop."""

    def __init__(self, sim: Any) -> None:
        from models.linear import connected_components

        self.sim = sim
        self.xp = sim.xp
        self.Cz = sim.asarray(sim.Cz)
        if sim.linear is not None:
            A, Bm, E = sim.linear.discrete()
            # A block-diagonal model (a campus of separate buildings) is stepped block by block, as anyone
            # would write it, rather than as one dense matrix mostly made of zeros.
            self.blocks = []
            for idx in connected_components(sim.mats["Ac"]):
                ucols = np.nonzero(np.any(Bm[idx] != 0, axis=0))[0]
                dcols = np.nonzero(np.any(E[idx] != 0, axis=0))[0]
                self.blocks.append((idx, ucols, dcols, sim.asarray(A[np.ix_(idx, idx)]),
                                    sim.asarray(Bm[np.ix_(idx, ucols)]), sim.asarray(E[np.ix_(idx, dcols)])))
            if len(self.blocks) == 1:
                self.blocks = None
                self.A, self.B, self.E = (sim.asarray(m) for m in (A, Bm, E))

    def run(self, x0: Any, u: Any, d: Any, grad: bool) -> tuple[float, Any]:
        sim, xp = self.sim, self.xp
        K = u.shape[1]
        xs = [x0]
        Es = []
        J = 0.0
        for k in range(K):
            if sim.linear is not None and self.blocks is not None:
                x = xp.empty_like(x0)
                for idx, uc, dc, A, Bb, Eb in self.blocks:
                    x[:, idx] = xs[-1][:, idx] @ A.T + u[:, k, uc] @ Bb.T + d[:, k, dc] @ Eb.T
            elif sim.linear is not None:
                x = xs[-1] @ self.A.T + u[:, k] @ self.B.T + d[:, k] @ self.E.T
            else:
                M = sim._step_matrix(u[:, k], d[:, k])
                Ek = expm(M, xp)
                Es.append((M, Ek))
                x = xp.einsum("bij,bj->bi", Ek[:, :sim.n, :sim.n], xs[-1]) + Ek[:, :sim.n, sim.n]
            xs.append(x)
            dev = x @ self.Cz.T - T_REF
            J += float((dev * dev).sum())
        traj = _Traj(x0, u, d, xp.stack(xs, 1))
        el, _, _ = sim._powers(traj, sim.theta)
        J += float(PRICE * sim.dt * el.sum())
        if not grad:
            return J, None
        g_el = xp.full(el.shape, PRICE * sim.dt)
        g_u_direct, g_x_direct, _ = sim._power_vjp(traj, g_el, None)
        g_u = xp.zeros_like(u)
        lam = xp.zeros_like(x0)
        n = sim.n
        for k in range(K, 0, -1):
            lam = lam + 2 * (xs[k] @ self.Cz.T - T_REF) @ self.Cz
            if g_x_direct is not None:
                lam = lam + g_x_direct[:, k]
            if sim.linear is not None and self.blocks is not None:
                new = xp.empty_like(lam)
                for idx, uc, _, A, Bb, _ in self.blocks:
                    g_u[:, k - 1, uc] = lam[:, idx] @ Bb
                    new[:, idx] = lam[:, idx] @ A
                lam = new
            elif sim.linear is not None:
                g_u[:, k - 1] = lam @ self.B
                lam = lam @ self.A
            else:
                M, Ek = Es[k - 1]
                G = xp.zeros_like(M)
                G[:, :n, :n] = lam[:, :, None] * xs[k - 1][:, None, :]
                G[:, :n, n] = lam
                GM = expm_frechet_adjoint(M, G, xp) * sim.dt
                g_u[:, k - 1] = GM[:, :n, n] @ sim._Bc
                for j, other, P, p in sim._flows:
                    s = xp.einsum("bij,ij->b", GM[:, :n, :n], P) + GM[:, :n, n] @ p
                    o = 1.0 if other is None else (u[:, k - 1, other[1]] if other[0] == "u" else d[:, k - 1, other[1]])
                    g_u[:, k - 1, j] += s * o
                    if other is not None and other[0] == "u":
                        g_u[:, k - 1, other[1]] += s * u[:, k - 1, j]
                lam = xp.einsum("bij,bi->bj", Ek[:, :n, :n], lam)
        return J, g_u + g_u_direct


class _Traj:
    def __init__(self, x0: Any, u: Any, d: Any, x: Any) -> None:
        self.x0, self.u, self.d, self.x = x0, u, d, x
        self._slopes = None


CASES = [  # (problem, building file, control step s, horizon, batches)
    ("R1", "office-20.yaml", 900.0, 96, [1, 64, 1024]),
    ("R2", "radiant.yaml", 300.0, 96, [1, 10000]),
    ("R4", "campus-500.yaml", 900.0, 96, [1]),
]


def _timings(sim: Any, base: Straightforward, x0: Any, u: Any, d: Any, repeats: int) -> tuple[float, float, float]:
    """Medians of forward, forward+gradient and the baseline, timed interleaved in rounds (at least 3)."""
    from controller.tools.bench.pl import interleaved

    t = interleaved({"fwd": lambda: objective(sim, x0, u, d), "fg": lambda: forward_gradient(sim, x0, u, d),
                     "base": lambda: base.run(x0, u, d, True)}, rounds=max(3, repeats), reps=1)
    return t["fwd"], t["fg"], t["base"]


def _pl_rows(rep: Report, batches: list[int], quick: bool) -> None:
    from controller.tools.bench import pl as bench_pl

    impls = bench_pl.contenders()
    by = {c.name: c for c in impls}
    for B in batches:
        if quick and B > 64:
            continue
        x0 = bench_pl.scenarios(B)
        err = bench_pl.agree({c.name: c.fwd_grad(x0) for c in impls})
        if not err < 1e-10:
            raise SystemExit(f"PL batch {B}: the contenders disagree on the loss or gradient (rel. error {err:.2e})")
        fns = {"fwd": lambda x0=x0: by["edge-mpc"].forward(x0), "fg": lambda x0=x0: by["edge-mpc"].fwd_grad(x0),
               "base": lambda x0=x0: by["numpy-loop"].fwd_grad(x0)}
        if "torch" in by:
            fns["torch"] = lambda x0=x0: by["torch"].fwd_grad(x0)
        reps = 1 if quick else (20 if B < 100 else 3)
        t = bench_pl.interleaved(fns, rounds=3 if quick else 10, reps=reps)
        row = dict(suite="gradient", problem="PL", backend="numpy", dtype="float64", batch=B, horizon=bench_pl.STEPS,
                   fwd_s=t["fwd"], fwd_grad_s=t["fg"], baseline_s=t["base"], ratio_grad_fwd=t["fg"] / t["fwd"],
                   speedup=t["base"] / t["fg"], us_per_scen_step=t["fg"] / (B * bench_pl.STEPS) * 1e6,
                   us_per_grad=t["fg"] / B * 1e6, rss_bytes=rss_bytes(), fwd_ms=t["fwd"] * 1e3,
                   fwd_grad_ms=t["fg"] * 1e3, baseline_ms=t["base"] * 1e3, rss_mb=rss_bytes() / 2**20,
                   grad_rel_err=err, n_states=3, n_params=len(bench_pl.KEYS))
        if "torch" in t:
            import torch

            row.update(torch_s=t["torch"], torch_ms=t["torch"] * 1e3, torch_ratio=t["torch"] / t["fg"],
                       torch_version=torch.__version__)
        rep.row(**row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-mpc bench gradient", description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--problems", default="R1,R2,R4,PL", help="comma-separated subset of R1,R2,R4,PL")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and the small batches only (smoke test)")
    args = ap.parse_args(argv)
    wanted = set(args.problems.split(","))
    if not args.json:
        print(machine_line(args.backend))
    rep = Report([("problem", "problem", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"),
                  ("horizon", "K", "d"), ("fwd_ms", "fwd ms", ".3f"), ("fwd_grad_ms", "fwd+grad ms", ".3f"),
                  ("ratio_grad_fwd", "grad/fwd", ".2f"), ("baseline_ms", "baseline ms", ".3f"),
                  ("speedup", "speed-up", ".1f"), ("us_per_scen_step", "us/scen/step", ".3f"),
                  ("torch_ms", "torch ms", ".3f"), ("torch_ratio", "torch/ours", ".0f"),
                  ("rss_mb", "RSS MB", ".0f")], args.json)
    if "PL" in wanted:
        _pl_rows(rep, [1, 1024], args.quick)
    for problem, fname, dt, K, batches in CASES:
        if problem not in wanted:
            continue
        sim = load_building(BUILDINGS / fname).compile(dt, backend=args.backend, dtype=args.dtype)
        base = Straightforward(sim)
        for B in batches:
            if args.quick and B > 64:
                continue
            x0, u, d = _problem(sim, B, K)
            work = B * K * sim.n
            repeats = 1 if args.quick else max(3, min(50, int(2e7 / max(work, 1))))
            t_fwd, t_fg, t_base = _timings(sim, base, x0, u, d, repeats)
            # Same answer as the baseline, or the timing is meaningless.
            g1 = forward_gradient(sim, x0, u, d)[1]
            g2 = base.run(x0, u, d, True)[1]
            g1, g2 = (np.asarray(g.get() if hasattr(g, "get") else g) for g in (g1, g2))
            err = float(np.linalg.norm(g1 - g2) / max(np.linalg.norm(g2), 1e-300))
            tol = 1e-6 if args.dtype == "float64" else 1e-2
            if not err < tol:
                raise SystemExit(f"{problem} batch {B}: gradient disagrees with the baseline (rel. error {err:.2e})")
            rep.row(suite="gradient", problem=problem, backend=args.backend, dtype=args.dtype, batch=B, horizon=K,
                    fwd_s=t_fwd, fwd_grad_s=t_fg, baseline_s=t_base, ratio_grad_fwd=t_fg / t_fwd,
                    speedup=t_base / t_fg, us_per_scen_step=t_fg / (B * K) * 1e6, rss_bytes=rss_bytes(),
                    fwd_ms=t_fwd * 1e3, fwd_grad_ms=t_fg * 1e3, baseline_ms=t_base * 1e3,
                    rss_mb=rss_bytes() / 2**20, grad_rel_err=err, n_states=sim.n)
    return 0
