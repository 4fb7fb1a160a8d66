"""Gradient-based MPC solver for linear models: a primal-dual interior point method with Riccati steps.

One algorithm that reads best whole (about 780 lines, over the ~500 the rest of the tree keeps to): the
iteration, its Newton system, step lengths, certificate and result assembly share one state object, and
splitting them would scatter that state over modules. Its pieces that stand alone are already apart:
riccati (the factorisation), modal (the maps), dual_bound (the certificate), polish (active-set steps).

The problem (controller.mpc.problem) is convex but nonsmooth: energy cost has a kink at u = 0, comfort
cost kinks at the band edges (the optimum sits on them for many zone-steps, since a violation costs more
than the energy it saves), and bounds, rate limits and hard comfort limits constrain it. Written with
epigraph variables (energy per input-step, violation below/above the band per zone-step), it is a convex
QP whose every constraint touches one input, one input change or one zone temperature.

Mehrotra's predictor-corrector method solves it. Each iteration eliminates the slacks, multipliers and the
epigraph variables elementwise (closed form), which leaves an LQ problem in the plan step: curvature on
inputs, input changes and zone temperatures over the horizon. A Riccati recursion on the diagonal modal
model (controller.mpc.riccati) solves it exactly in O(K) small dense products; predictor and corrector
share one factorisation. All derivatives come from the modal forward/adjoint maps (controller.mpc.modal).

Stopping is certified: any multipliers give a lower bound on the optimum (controller.mpc.dual_bound), so
the gap between the best feasible plan and the best bound so far is a proof, not an estimate.

Active-set polishing (controller.mpc.polish) shortcuts the method where the binding constraints can be
guessed: a warm start that brings the previous result's classification (`active=`) tries a few
equality-constrained steps first (one factorisation each, usually one or two suffice). Only a certificate
ends a solve. (Polishing interior point iterates as well, a crossover, never certified once the warm path
existed: 0 of 24 cold office-20 problems, of 48 closed-loop cycles, of the R4 solves and of 138 demo
attempts; each try cost a factorisation, so it was removed.)

Hard comfort limits are constraints on zone temperatures, which clipping cannot enforce: a clipped plan
counts as a candidate (for the certificate, and the anytime result) only when it meets them to
`LQOptions.hard_tol`; otherwise the objective could undercut the constrained optimum and "certify" a plan
that breaks them. When no plan meets them, the iterate's hard-limit multipliers are tested as a Farkas
certificate (`_infeasibility_margin`): a positive margin proves that no plan within the actuator bounds and
rate limits meets them, and the solve ends `infeasible` (success False) with the least-violating plan seen.

Arrays: the solver is NumPy (float64) code throughout. It never sees the array namespace the building was
compiled for: MPCProblem holds the model's host twin (models.linear.LinearModel.on_host, taken when the
problem is built), so a CuPy or float32 simulator hands host arrays across that one boundary, and MPCData
is NumPy by construction (MPCProblem.data). Results are NumPy.

Anytime: after every iteration the current plan, clipped to the bounds and rate limits, respects those; the
best one so far that also meets the hard comfort limits (by the true objective) is returned at the deadline.
Pure: the clock is injected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.mpc.dual_bound import BoxLinearMin, comfort_conjugate_min, move_conjugate_min
from controller.mpc.modal import ModalResponse
from controller.mpc.objective import (
    constraint_violation,
    energy_offset,
    energy_slopes,
    objective_terms,
    true_energy_slopes,
)
from controller.mpc.polish import PENALTY, ActiveSet, direct_pairs, from_interior, polish, supported
from controller.mpc.problem import MPCData, MPCProblem
from controller.mpc.result import Duals, MPCResult, Status, shift_plan
from controller.mpc.riccati import LQStructure

BIG = 1e4  # stands for infinite comfort bands (degC) and absent rate limits (scaled units)
GROUPS = ("B1", "B2", "E1", "E2", "C1", "C2", "C3", "C4", "H1", "H2", "R1", "R2")
U_GROUPS = ("B1", "B2", "E1", "E2", "R1", "R2")  # constraints on one input or input change (.., nuc)
Y_GROUPS = ("C1", "C2", "C3", "C4", "H1", "H2")  # constraints on one zone-step (.., nzc)
_WHERE = {k: (0, i) for i, k in enumerate(U_GROUPS)} | {k: (1, i) for i, k in enumerate(Y_GROUPS)}


class _G:
    """Slacks, multipliers or any per-constraint quantity, stored flat (`a`) so that an interior point
    operation on all constraints is one array call; U and Y view it as the stacked input groups
    (<= 6, nb, K, nuc) and zone-step groups (<= 6, nb, K, nzc), and g["C2"] is a view of one group.

    The last two groups of each stack (rate limits; hard comfort limits) are left out where a problem has
    none; g[k] of an absent group reads zero."""

    __slots__ = ("U", "Y", "a")

    def __init__(self, a: np.ndarray, ushape: tuple[int, ...], yshape: tuple[int, ...]) -> None:
        n = math.prod(ushape)
        self.a, self.U, self.Y = a, a[:n].reshape(ushape), a[n:].reshape(yshape)

    @classmethod
    def join(cls, U: np.ndarray, Y: np.ndarray) -> _G:
        return cls(np.concatenate([U.ravel(), Y.ravel()]), U.shape, Y.shape)

    def of(self, d: dict[str, np.ndarray]) -> _G:
        """The same layout holding d's groups."""
        return self.stacked([np.asarray(d[k], float) for k in U_GROUPS[:len(self.U)]],
                            [np.asarray(d[k], float) for k in Y_GROUPS[:len(self.Y)]])

    def new(self, a: np.ndarray) -> _G:
        """The same layout over the flat array a."""
        return _G(a, self.U.shape, self.Y.shape)

    def stacked(self, us: list[np.ndarray], ys: list[np.ndarray]) -> _G:
        """The same layout holding the groups us (U_GROUPS order) and ys (Y_GROUPS order); entries for
        groups the layout leaves out are ignored."""
        g = self.new(np.empty_like(self.a, dtype=float))
        np.stack(us[:len(self.U)], out=g.U)
        np.stack(ys[:len(self.Y)], out=g.Y)
        return g

    def __getitem__(self, k: str) -> np.ndarray:
        f, i = _WHERE[k]
        v = (self.U, self.Y)[f]
        return v[i] if i < len(v) else np.zeros(v.shape[1:], v.dtype)

    def items(self) -> list[tuple[str, np.ndarray]]:
        return [(k, self[k]) for k in GROUPS]


@dataclass(frozen=True)
class LQOptions:
    tol: float = 1e-6  # certified relative optimality gap at which the solve stops
    max_iter: int = 60
    mu0: float = 0.1  # initial size of bound multipliers relative to energy slopes (cold start)
    mu0_warm: float = 1e-3
    step_frac: float = 0.995  # fraction of the step to the boundary
    correctors: int = 0  # Gondzio centrality correctors per iteration (each one more solve)
    warm_rounds: int = 3  # active-set steps tried from the previous classification before interior point
    warm_interior_delta: float = 1e-3  # how far a carried-over interior iterate is pushed off the boundary
    # The iterate carried over is the first with a certified gap below this: better centred than the last
    # one, it reaches the next cycle's optimum in fewer iterations (office-20 closed loop: p90 99 -> 80 ms).
    warm_store_gap: float = 0.1
    # K by which a plan may exceed a hard comfort limit and still count as meeting it. Interior point iterates
    # reach the limits from outside (the primal residual shrinks geometrically, not to zero), so a binding
    # limit is met to rounding only in the limit; 1e-6 K is far below any sensor's resolution.
    hard_tol: float = 1e-6


def _step_changes(u: np.ndarray, first: np.ndarray | float) -> np.ndarray:
    """u[k] - u[k-1] along the step axis (-2), with u[-1] = first: np.diff with prepend, without the
    concatenation that made it cost twice as much at this size."""
    d = u.copy()
    d[..., 1:, :] -= u[..., :-1, :]
    d[..., 0, :] -= first
    return d


def _corrector_shift(s: np.ndarray, z: np.ndarray, ds: np.ndarray, dz: np.ndarray, m: np.ndarray, at: float,
                     lo_t: float, hi_t: float) -> np.ndarray:
    """Gondzio: how far each complementarity product at the trial step lies outside [lo_t, hi_t]."""
    v = (s + at * ds) * (z + at * dz)
    return np.maximum((np.clip(v, lo_t, hi_t) - v) * m, -hi_t)


class _IPState:
    """Primal variables, slacks and multipliers of the interior point iteration (solver layout)."""

    def __init__(self, u: np.ndarray, e: np.ndarray, vl: np.ndarray, vh: np.ndarray,
                 s: _G, z: _G) -> None:
        self.u, self.e, self.vl, self.vh, self.s, self.z = u, e, vl, vh, s, z

    def shifted(self, steps: int) -> _IPState:
        def sh(a: np.ndarray) -> np.ndarray:
            return shift_plan(a, steps, axis=-2)

        return _IPState(sh(self.u), sh(self.e), sh(self.vl), sh(self.vh), _G.join(sh(self.s.U), sh(self.s.Y)),
                        _G.join(sh(self.z.U), sh(self.z.Y)))


class _Newton:
    """One iteration's reduced Newton system (shared by predictor and corrector)."""

    __slots__ = ("W", "c2l", "c4h", "cvh", "cvl", "dl", "fac", "hue", "inv_s", "nihee", "nihhh", "nihll", "rpd", "rue",
                 "st", "zb")


class LQSolver:
    """Solver for one MPCProblem with a real-modal LinearModel. Construct once; call `solve` per cycle."""

    def __init__(self, prob: MPCProblem, options: LQOptions | None = None) -> None:
        if prob.weights.peak_demand:
            raise NotImplementedError("peak-demand penalty: use controller.mpc.generic")
        self.prob = prob
        self.opt = options or LQOptions()
        K, nu, nz = prob.horizon, prob.nu, prob.nz
        self.K = K
        # Inputs scaled to about [-1, 1] so tolerances mean the same for a fan coil and an air handler.
        scale = np.maximum(np.abs(prob.u_min).max(axis=0), np.abs(prob.u_max).max(axis=0))
        self.scale = np.where(scale > 0, scale, 1.0)
        self.resp = resp = ModalResponse(prob.model, K, self.scale)
        bid = prob.block_starts()
        self.start = np.r_[True, bid[1:] != bid[:-1]]  # first step of each move block
        self.start_idx = np.nonzero(self.start)[0]
        self.bid = bid
        self.of_step = self.start_idx[bid]  # the block-start step each step copies
        self.blocked = not self.start.all()
        w, dt_h = prob.weights, prob.dt_h
        augment = self.blocked or bool(np.any(np.asarray(w.move) > 0)) or bool(np.any(np.isfinite(prob.rate_limit)))
        self.lq = LQStructure(resp.a, resp.Bm, resp.C, K, ~self.start, augment=augment)

        def sub_z(v: Any) -> np.ndarray:
            return np.append(np.broadcast_to(np.asarray(v, float), (nz,)), 0.0)[resp.out_idx]

        def sub_u(v: Any, pad: float = 0.0) -> np.ndarray:
            return np.append(np.broadcast_to(np.asarray(v, float), (nu,)), pad)[resp.in_idx]

        self.sub_u = sub_u
        self.wq = dt_h * sub_z(w.comfort_quadratic)[:, None, :]  # (nb, 1, nzc)
        self.wl = dt_h * sub_z(w.comfort_linear)[:, None, :]
        self.wm = (sub_u(w.move) / 1e6 * sub_u(self.scale, 1.0) ** 2)[:, None, :]  # (nb, 1, nuc)
        self.rate = sub_u(np.minimum(prob.rate_limit / self.scale, BIG), BIG)[:, None, :]
        self.in_mask = resp.in_mask[:, None, :]
        self.has_move = bool(np.any(self.wm > 0))
        self.mchg0 = 2.0 * self.wm * self.start[None, :, None]  # input-change curvature without rate terms
        self.rho = PENALTY * max(2.0 * float(self.wq.max()), float(self.wl.max()), 1e-12)
        self.reg = 1e-6
        self.pairs = direct_pairs(self)
        self.start3 = self.start[None, :, None]

    # -- per-cycle data in the solver's layout ------------------------------------------------------
    def _prepare(self, data: MPCData) -> None:
        prob, resp, K = self.prob, self.resp, self.K
        m = prob.model
        z = m.modal_trajectory(data.x0[None], np.zeros((1, K, prob.nu)), data.d[None])
        self.y0 = resp.to_sub_y(np.asarray(m.zones(z))[0])
        lo = resp.to_sub_u(data.u_min / self.scale)
        hi = resp.to_sub_u(data.u_max / self.scale)
        # The method works on the convex energy cost (the true one unless a negative price makes an entry
        # concave: then its chord, whose constant enters the dual bound); plans are judged by the true cost.
        cp, cm = energy_slopes(prob, data)
        off = energy_offset(prob, data)
        self.offset = float(off.sum())
        cp, cm = resp.to_sub_u(cp * self.scale), resp.to_sub_u(cm * self.scale)
        self.cp, self.cm = cp, cm
        self.n_concave = int(np.count_nonzero(off))
        if self.n_concave:
            tp, tm = true_energy_slopes(prob, data)
            self.cp, self.cm = resp.to_sub_u(tp * self.scale), resp.to_sub_u(tm * self.scale)
            self.env_slopes = (cp, cm)
        if self.blocked:  # a block's input satisfies every step's bounds and pays every step's energy
            lo = np.maximum.reduceat(lo, self.start_idx, axis=1)[:, self.bid]
            hi = np.minimum.reduceat(hi, self.start_idx, axis=1)[:, self.bid]
            hi = np.maximum(hi, lo)
        self.lo, self.hi = lo, hi
        self.cpB, self.cmB = self._block_sum(cp), self._block_sum(cm)
        # Decision entries: block starts of real inputs with room to move; the rest sit at their lower bound.
        self.live = self.start3 & self.in_mask & (hi > lo + 1e-12)
        self.livef = self.live.astype(float)

        def band(v: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
            b = np.clip(resp.to_sub_y(v, pad), -BIG, BIG)
            return b, (np.abs(b) < BIG) & resp.out_mask[:, None, :]

        self.low, mlow = band(data.comfort_low, -BIG)
        self.high, mhigh = band(data.comfort_high, BIG)
        self.hlow, mhl = band(data.hard_low, -BIG)
        self.hhigh, mhh = band(data.hard_high, BIG)
        up = (self.high >= BIG) & (self.hhigh >= BIG)
        down = (self.low <= -BIG) & (self.hlow <= -BIG)
        self.no_edge = (up, down) if up.any() or down.any() else (None, None)
        self.ulast = self.sub_u(data.u_last / self.scale)[:, None, :]
        prev_live = np.concatenate([np.zeros_like(self.live[:, :1]), self.live[:, :-1]], axis=1)
        if self.blocked:
            prev_live = np.concatenate([np.zeros_like(self.live[:, :1]), self.live[:, self.of_step][:, :-1]], axis=1)
        mrate = (self.rate < BIG) & self.start3 & self.in_mask & (self.live | prev_live)
        lv = self.live
        # Terms that vanish in most problems (office-20 has no rate limits and no hard comfort limits) are
        # skipped rather than computed as zeros in every iteration, and their groups left out of the layout.
        self.has_rate, self.has_hard = bool(mrate.any()), bool(mhl.any() or mhh.any())
        # In U_GROUPS / Y_GROUPS order.
        self.mask = _G.join(np.stack([lv, lv, lv, lv, mrate, mrate][:6 if self.has_rate else 4]),
                            np.stack([mlow, mlow, mhigh, mhigh, mhl, mhh][:6 if self.has_hard else 4]))
        self.rate_on = np.where(mrate, self.rate, BIG)
        self.maskf = self.mask.new(self.mask.a.astype(float))
        self.ncons = max(1, int(self.mask.a.sum()))
        self.all_live = bool(self.live.all())
        self.box_min = BoxLinearMin(self.cpB, self.cmB, self.lo, self.hi)

    def _block_sum(self, a: np.ndarray) -> np.ndarray:
        """Per-step quantities summed into their block's first step (zero on held steps)."""
        if not self.blocked:
            return a
        out = np.zeros_like(a)
        out[..., self.start_idx, :] = np.add.reduceat(a, self.start_idx, axis=-2)
        return out

    def _spread(self, a: np.ndarray) -> np.ndarray:
        return a[..., self.of_step, :] if self.blocked else a

    def _delta(self, u: np.ndarray) -> np.ndarray:
        return _step_changes(u, self.ulast[..., 0, :])

    # -- objective ---------------------------------------------------------------------------------
    def _true_objective(self, U: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """True objective (USD) of plans U (..., nb, K, nuc), and their zone temperatures (Y if given): the
        true energy cost even where the method works on its convex envelope (negative prices)."""
        ax = (-3, -2, -1)
        if Y is None:
            Y = self.y0 + self.resp.forward(U)
        energy = (np.maximum(U, 0.0) * self.cp + np.maximum(-U, 0.0) * self.cm).sum(axis=ax)
        v = np.maximum(self.low - Y, 0.0) + np.maximum(Y - self.high, 0.0)
        total = energy + ((self.wq * v + self.wl) * v).sum(axis=ax)
        if self.has_move:
            dl = self._delta(U)
            total = total + (self.wm * dl * dl).sum(axis=ax)
        return total, Y

    def _envelope_excess(self, U: np.ndarray) -> float:
        """True energy cost minus its convex envelope's (USD) for plan U: zero unless negative prices make
        some entries concave (energy_slopes)."""
        if not self.n_concave:
            return 0.0
        cp, cm = self.env_slopes
        return float((np.maximum(U, 0.0) * (self.cp - cp) + np.maximum(-U, 0.0) * (self.cm - cm)).sum()) - self.offset

    def _dual_bound(self, lam: np.ndarray, mu: np.ndarray | None) -> float:
        """Lower bound on the optimum (USD) from zone-step multipliers lam and input-change multipliers mu
        (None: no input-change terms)."""
        up, down = self.no_edge
        if up is not None:  # no edge above: lam > 0 would make the bound -inf (and below alike)
            lam = np.where(up, np.minimum(lam, 0.0), lam)
            lam = np.where(down, np.maximum(lam, 0.0), lam)
        g = self._plan_gradient(lam, mu)
        bu = self.box_min(g)
        if not self.all_live:
            bu *= self.start3 & self.in_mask
        by = comfort_conjugate_min(lam, self.low, self.high, self.hlow, self.hhigh, self.wq, self.wl)
        q = float(lam.ravel() @ self.y0.ravel()) + float(bu.sum()) + float(by.sum()) + self.offset
        if mu is not None:
            q += float(move_conjugate_min(mu, self.wm, self.rate_on).sum())
            q -= float((mu[..., 0, :] * self.ulast[:, 0]).sum())
        return q

    def _hard_violation(self, y: np.ndarray) -> float:
        """K by which zone temperatures y (solver layout) break the hard comfort limits (0 without any)."""
        if not self.has_hard:
            return 0.0
        return max(0.0, float(np.max(np.maximum(self.hlow - y, y - self.hhigh))))

    def _infeasibility_margin(self, z: _G) -> float:
        """Farkas test of the hard comfort limits with the iterate's multipliers on them (lam on zone-steps,
        mu on rate-limited input changes): for any plan u in its box whose changes w = D u - w0 meet the rate
        limits and whose temperatures y = y0 + G u meet the hard limits,
            0 = lam'(y0 + G u - y) + mu'(D u - w0 - w)
              >= lam'y0 - mu'w0 + min_box (G'lam + D'mu)'u + min_|w|<=rate (-mu'w) + min_hard (-lam'y),
        so a positive right-hand side proves that no such plan exists. Returned less a slack for rounding and
        for hard_tol per unit of multiplier: positive means certified infeasible."""
        lam = z["H2"] - z["H1"]  # the hard-limit part of the zone-step multipliers (the gradient's sign)
        mu = z["R1"] - z["R2"] if self.has_rate else None
        g = self._plan_gradient(lam, mu)
        bu = np.minimum(g * self.lo, g * self.hi)
        if not self.all_live:
            bu *= self.start3 & self.in_mask
        # lam > 0 only where an upper hard limit exists, lam < 0 only where a lower one does.
        by = np.where(lam > 0.0, lam * self.hhigh, lam * self.hlow)
        terms = [float(lam.ravel() @ self.y0.ravel()), float(bu.sum()), -float(by.sum())]
        norm = float(np.abs(lam).sum())
        if mu is not None:
            terms += [-float((mu[..., 0, :] * self.ulast[:, 0]).sum()), -float((np.abs(mu) * self.rate_on).sum())]
            norm += float(np.abs(mu).sum())
        margin = math.fsum(terms)
        # Rounding in the sums is at most ~1e-12 of their largest term; the margin must clear it clearly.
        slack = 1e-9 * max(abs(t) for t in terms) + self.opt.hard_tol * norm
        return margin - slack if norm > 0.0 else -math.inf

    def _feasible_plan(self, u: np.ndarray) -> np.ndarray:
        """The plan clipped into its bounds (and, with rate limits, into reach of the previous step)."""
        u = np.clip(u, self.lo, self.hi)
        if self.has_rate:  # the solver's layout has steps on axis 1
            u = repair_rate(u, self.ulast[:, 0], self.rate[:, 0], np.broadcast_to(self.lo, u.shape),
                            np.broadcast_to(self.hi, u.shape), axis=1)
        return u

    # -- interior point pieces ---------------------------------------------------------------------
    def _constraints(self, u: np.ndarray, e: np.ndarray, vl: np.ndarray, vh: np.ndarray, y: np.ndarray,
                     dl: np.ndarray) -> _G:
        """Constraint values c(x) >= 0 by group (the same expressions are linear in the step)."""
        us = [u - self.lo, self.hi - u, e - self.cpB * u, e + self.cmB * u]
        ys = [vl, vl + y - self.low, vh, vh - y + self.high]
        if self.has_rate:
            us += [self.rate - dl, self.rate + dl]
        if self.has_hard:
            ys += [y - self.hlow, self.hhigh - y]
        return self.mask.stacked(us, ys)

    def _gradients(self, zh: _G, cvl: np.ndarray, cvh: np.ndarray, dl: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Lagrangian gradient pieces with multipliers zh: on u (direct), e, vl, vh, y and input changes;
        cvl, cvh: the comfort penalties' own slopes at the iterate (2 wq v + wl), zero where the zone-step has
        no such band edge (multipliers outside their masks are zero, so no other masking is needed)."""
        gu = zh["B2"] - zh["B1"] + self.cpB * zh["E1"] - self.cmB * zh["E2"]
        ge = 1.0 - zh["E1"] - zh["E2"]
        if not self.all_live:
            ge *= self.livef
        gvl = cvl - zh["C1"] - zh["C2"]
        gvh = cvh - zh["C3"] - zh["C4"]
        gy = zh["C4"] - zh["C2"]
        if self.has_hard:
            gy += zh["H2"] - zh["H1"]
        gd = self._move_slope(dl)
        if self.has_rate:
            gd = (zh["R1"] - zh["R2"]) if gd is None else gd + zh["R1"] - zh["R2"]
        return gu, ge, gvl, gvh, gy, gd

    def _move_slope(self, dl: np.ndarray) -> np.ndarray | None:
        """Derivative of the move-suppression cost at input changes dl; None without move weights."""
        return 2.0 * self.wm * dl if self.has_move else None

    def _plan_gradient(self, gy: np.ndarray, gd: np.ndarray | None) -> np.ndarray:
        """Gradient on the plan (block starts) of zone-temperature and input-change terms gy, gd (or None)."""
        g = self.resp.adjoint(gy)
        if gd is not None:
            g += gd
            g[..., :-1, :] -= gd[..., 1:, :]
        return self._block_sum(g)

    def _to_u(self, gu: np.ndarray, gy: np.ndarray, gd: np.ndarray | None) -> np.ndarray:
        """Total gradient on the plan from direct, zone-temperature and input-change parts."""
        g = self._plan_gradient(gy, gd)
        if not self.all_live:
            g *= self.livef
        g += gu
        return g

    def solve(self, data: MPCData, u0: np.ndarray | None = None, *, active: ActiveSet | None = None,
              timer: Callable[[], float] | None = None, deadline_s: float = math.inf) -> MPCResult:
        """Solve one cycle. u0: warm start (K, nu) in W, e.g. shift_plan(last.u); active: the previous
        result's `active.shifted(steps)`, which lets a warm start go straight to active-set polishing.

        timer: seconds since any epoch (injected; the solver reads no clock itself); at `deadline_s` after the
        start the best feasible plan so far is returned with status `deadline`.
        """
        timer = timer or (lambda: 0.0)
        t0 = timer()
        opt, resp = self.opt, self.resp
        if not data.is_finite() or (u0 is not None and not np.all(np.isfinite(u0))):
            return self._fallback(data, t0, timer, "non-finite inputs")
        self._prepare(data)
        can_polish = supported(self)
        it = nfac = 0
        best_u, best_j, best_q = None, math.inf, -math.inf
        # Warm start: the previous classification, corrected by a few active-set steps, usually is the
        # new one; the certificate decides.
        fits = active is not None and active.u.shape == self.lo.shape and active.y.shape == self.low.shape
        # After cycles whose classification could not be certified, shorter and then rarer probes: such
        # stretches (pre-heat transitions, a plant the model does not match) last, and a failed round costs a
        # factorisation.
        misses = active.misses if fits else 0
        probe = can_polish and (misses < 3 or misses % 4 == 0)
        if fits and u0 is not None and probe:
            u_w = self._spread(np.where(self.live | ~self.start3, resp.to_sub_u(np.asarray(u0, float) / self.scale),
                                        self.lo))
            rounds = min(2, opt.warm_rounds) if misses else opt.warm_rounds
            po = polish(self, active, self._feasible_plan(u_w), opt.tol, rounds, lambda: timer() - t0 >= deadline_s)
            if po is not None:
                nfac += po.rounds
                if po.certified:
                    po.active.interior = active.interior  # older, but the best start if the next guess fails
                    return self._result(data, po.u, Status.CONVERGED, "", po.rounds, 0.0, t0, timer,
                                        self._rel(po.objective, po.bound), nfac, None, po.active)
                # Not certified: the interior point method starts from the best polished plan, which keeps
                # counting for the anytime result and the gap.
                best_u, best_j, best_q = po.u, po.objective, po.bound
                u0 = resp.from_sub_u(po.u) * self.scale
        prev = active.interior if fits else None
        if prev is not None and (prev.s.U.shape, prev.s.Y.shape) == (self.mask.U.shape, self.mask.Y.shape):
            st = self._warm_interior(prev)
        else:
            st = self._initial_point(u0)
        maskf = self.maskf
        status, msg = Status.STALLED, "iteration limit"
        keep = None
        least_u, least_v = None, math.inf  # the plan closest to meeting the hard limits, while none meets them
        best_env = math.inf
        y = rpd = None
        while True:
            dl = self._delta(st.u)
            s, z = st.s, st.z
            if rpd is None:
                # Afterwards carried along the steps: the constraints are linear, so a step of length a leaves
                # (1 - a) of the primal residual, and the zone temperatures follow the step's response.
                y = self.y0 + resp.forward(st.u)
                c = self._constraints(st.u, st.e, st.vl, st.vh, y, dl)
                rpd = s.new((c.a - s.a) * maskf.a)  # outside the mask s = 1 and z = 0 always
            mu = float(s.a @ z.a) / self.ncons
            grads = None
            # Anytime: the iterate made feasible, judged by the true objective; the multipliers bound the
            # optimum from below whatever their accuracy (dual_bound), so the gap is certified.
            uf = self._feasible_plan(st.u)
            jf_a, yf = self._true_objective(uf, y if np.array_equal(uf, st.u) else None)
            jf = float(jf_a)
            hv = self._hard_violation(yf)
            if hv <= opt.hard_tol:
                if jf < best_j:
                    best_u, best_j = uf, jf
                if self.n_concave:  # the relaxation's own progress (negative prices)
                    best_env = min(best_env, jf - self._envelope_excess(uf))
            elif hv < least_v:
                least_u, least_v = uf, hv
            # The bound is worth its cost only once complementarity is below the objective: s'z overstates
            # the certified gap (about six times on office-20 near the end), and early bounds are far off.
            if mu * self.ncons <= abs(jf):
                grads = self._iterate_gradients(st, dl)
                q_it = self._dual_bound(grads[4], grads[5])
                best_q = max(best_q, q_it)
                if keep is None and self._rel(jf, q_it) <= opt.warm_store_gap:
                    keep = _IPState(st.u, st.e, st.vl, st.vh, st.s, st.z)
            if not (math.isfinite(mu) and math.isfinite(jf)):
                status, msg = Status.NONFINITE, "non-finite iterate"
                break
            if best_u is None and self.has_hard and self._infeasibility_margin(st.z) > 0.0:
                status = Status.INFEASIBLE
                msg = f"hard comfort limits cannot be met (least violation seen {least_v:.3g} K)"
                break
            gap = self._rel(best_j, best_q)
            if gap <= opt.tol:
                status, msg = Status.CONVERGED, ""
                break
            if self.n_concave and self._rel(best_env, best_q) <= opt.tol:
                # The convex relaxation is solved, but its plan sits inside a concave entry's range, where the
                # envelope undercuts the true cost: no method on the relaxation can certify more.
                status = Status.STALLED
                msg = (f"negative prices make the energy cost concave at {self.n_concave} actuator-steps (paid to "
                       f"heat and to cool); plan certified within gap_bound of the optimum, not to tol")
                break
            if it >= opt.max_iter:
                break
            if timer() - t0 >= deadline_s:
                status, msg = Status.DEADLINE, "deadline reached"
                break
            nw = self._newton_system(st, rpd, dl)
            nfac += 1
            rc0 = s.a * z.a
            aff = self._direction(nw, rc0)
            a_aff = self._max_step(st, aff)
            ds, dz = aff["s"], aff["z"]
            mu_aff = float((s.a + a_aff * ds.a) @ (z.a + a_aff * dz.a)) / self.ncons
            sigma = min(1.0, (mu_aff / mu) ** 3) if mu > 0 else 0.0
            rc = (rc0 + ds.a * dz.a - sigma * mu) * maskf.a
            dd = self._direction(nw, rc)
            amax = self._max_step(st, dd)
            # Gondzio's centrality correctors: more solves with the same factorisation buy longer steps.
            for _ in range(opt.correctors):
                if amax >= 1.0:
                    break
                at = min(1.0, 1.5 * amax + 0.1)
                lo_t, hi_t = 0.1 * sigma * mu, 10.0 * sigma * mu
                rc_t = rc - _corrector_shift(s.a, z.a, dd["s"].a, dd["z"].a, maskf.a, at, lo_t, hi_t)
                trial = self._direction(nw, rc_t)
                at_new = self._max_step(st, trial)
                if at_new < amax + 0.1 * (at - amax):
                    break
                dd, amax, rc = trial, at_new, rc_t
            a = min(1.0, opt.step_frac * amax)
            st.u = st.u + a * dd["u"]
            y = y + a * dd["y"]
            st.e = st.e + a * dd["e"]
            st.vl = st.vl + a * dd["vl"]
            st.vh = st.vh + a * dd["vh"]
            # Outside the masks the steps are exactly zero: slacks stay 1 and multipliers 0 there.
            st.s = s = s.new(s.a + a * dd["s"].a)
            st.z = z = z.new(z.a + a * dd["z"].a)
            rpd = s.new((1.0 - a) * rpd.a)
            it += 1
        if grads is None:
            grads = self._iterate_gradients(st, dl)
            if best_q == -math.inf and math.isfinite(jf):  # stopped before any bound was taken
                best_q = self._dual_bound(grads[4], grads[5])
        rd = self._residual_norm(*grads)
        if best_u is not None:
            plan = best_u
        else:  # nothing met the hard limits: the least violation seen, and no claim about optimality
            plan = least_u if least_u is not None else self._feasible_plan(st.u)
            if self.has_hard and status in (Status.DEADLINE, Status.STALLED):
                msg = f"{msg}; no plan met the hard comfort limits (least violation {least_v:.3g} K)"
        act = from_interior(self, st.s, st.z, st.u)
        act.interior, act.misses = keep or st, misses + 1
        return self._result(data, plan, status, msg, it, rd, t0, timer, self._rel(best_j, best_q), nfac, st, act)

    def _iterate_gradients(self, st: _IPState, dl: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """_gradients at the iterate's own multipliers."""
        return self._gradients(st.z, *self._comfort_slopes(st), dl)

    def _comfort_slopes(self, st: _IPState) -> tuple[np.ndarray, np.ndarray]:
        """The comfort penalties' own slopes at the iterate, 2 wq v + wl, where the band edge exists."""
        return ((2.0 * self.wq * st.vl + self.wl) * self.maskf["C1"],
                (2.0 * self.wq * st.vh + self.wl) * self.maskf["C3"])

    def _residual_norm(self, gu: np.ndarray, ge: np.ndarray, gvl: np.ndarray, gvh: np.ndarray, gy: np.ndarray,
                       gd: np.ndarray | None) -> float:
        """Largest Lagrangian gradient entry (the result's pg_norm), from _gradients' pieces."""
        gtot = self._to_u(gu, gy, gd)
        return max(float(np.abs(gtot).max()), float(np.abs(ge).max()), float(np.abs(gvl).max()),
                   float(np.abs(gvh).max()))

    @staticmethod
    def _rel(j: float, q: float) -> float:
        return max(j - q, 0.0) / max(abs(j), 1e-9) if math.isfinite(j) and math.isfinite(q) else math.inf

    def _newton_system(self, st: _IPState, rpd: _G, dl: np.ndarray) -> _Newton:
        """Eliminate slacks, multipliers and epigraph variables (W = z/s) and factor the plan's LQ system."""
        z, s, maskf, mask = st.z, st.s, self.maskf, self.mask
        nw = _Newton()
        nw.st, nw.rpd, nw.dl = st, rpd, dl
        nw.inv_s = inv_s = 1.0 / s.a
        nw.W = W = s.new(z.a * inv_s * maskf.a)
        # Shared by every direction of this system: the multipliers with the primal residual folded in and
        # the parts of the comfort gradients that do not depend on the multipliers.
        nw.zb = z.a - W.a * rpd.a
        nw.cvl, nw.cvh = self._comfort_slopes(st)
        cpB, cmB = self.cpB, self.cmB
        huu = W["B1"] + W["B2"] + cpB * cpB * W["E1"] + cmB * cmB * W["E2"]
        nw.hue = hue = cmB * W["E2"] - cpB * W["E1"]
        hee = np.where(self.live, W["E1"] + W["E2"], 1.0)
        hyy = W["C2"] + W["C4"]
        if self.has_hard:
            hyy += W["H1"] + W["H2"]
        hll = np.where(mask["C1"], 2.0 * self.wq + W["C1"] + W["C2"], 1.0)
        hhh = np.where(mask["C3"], 2.0 * self.wq + W["C3"] + W["C4"], 1.0)
        nw.nihee, nw.nihll, nw.nihhh = -1.0 / hee, -1.0 / hll, -1.0 / hhh
        nw.rue = -hue * nw.nihee  # hue / hee
        R = huu - hue * nw.rue
        nw.c2l, nw.c4h = -W["C2"] * nw.nihll, -W["C4"] * nw.nihhh
        D = hyy - W["C2"] * nw.c2l - W["C4"] * nw.c4h
        mchg = (2.0 * self.wm + W["R1"] + W["R2"]) * self.start3 if self.has_rate else self.mchg0
        nw.fac = self.lq.factor(D, mchg, self.live, R)
        return nw

    def _direction(self, nw: _Newton, rc: np.ndarray) -> dict[str, Any]:
        """Step for complementarity targets rc: solve the reduced LQ system, then recover the rest."""
        W, maskf, rpd = nw.W, self.maskf, nw.rpd
        s = nw.st.s
        # Multipliers with the complementarity and primal residuals folded in: z - (rc + z rp)/s.
        t = rc * nw.inv_s
        zh = s.new(nw.zb - t)
        gu, ge, gvl, gvh, gy, gd = self._gradients(zh, nw.cvl, nw.cvh, nw.dl)
        gu -= nw.rue * ge
        gy -= nw.c2l * gvl
        gy += nw.c4h * gvh
        # The Riccati solve's steps are zero where inputs are fixed and repeat the block start on held steps;
        # outside their masks the curvatures below are one and the numerators zero.
        du, dy = self.lq.solve(nw.fac, self._to_u(gu, gy, gd), outputs=True)
        de = nw.hue * du
        de += ge
        de *= nw.nihee
        dvl = W["C2"] * dy
        dvl += gvl
        dvl *= nw.nihll
        dvh = W["C4"] * dy
        np.subtract(gvh, dvh, out=dvh)
        dvh *= nw.nihhh
        cpB, cmB = self.cpB, self.cmB
        us = [du, -du, de - cpB * du, de + cmB * du]
        ys = [dvl, dvl + dy, dvh, dvh - dy]
        if self.has_rate:
            ddl = _step_changes(du, 0.0)
            us += [-ddl, ddl]
        if self.has_hard:
            ys += [dy, -dy]
        dc = s.stacked(us, ys)
        dc.a += rpd.a
        dc.a *= maskf.a
        dz = W.a * dc.a
        dz += t
        np.negative(dz, out=dz)
        return {"u": du, "y": dy, "e": de, "vl": dvl, "vh": dvh, "s": dc, "z": s.new(dz)}

    @staticmethod
    def _max_step(st: _IPState, dd: dict[str, Any]) -> float:
        """Longest step in [0, 1] keeping slacks and multipliers nonnegative."""
        m = 0.0  # most negative relative change dv/v; outside the masks z = dz = 0 gives NaN, which fmin skips
        with np.errstate(divide="ignore", invalid="ignore"):
            for v, dv in ((st.s.a, dd["s"].a), (st.z.a, dd["z"].a)):
                m = min(m, float(np.fmin.reduce(dv / v, axis=None)))
        return 1.0 if m >= -1.0 else -1.0 / m

    def _warm_interior(self, prev: _IPState) -> _IPState:
        """An interior point iterate of the previous solve (the first within warm_store_gap), already
        shifted, pulled back off the boundary (slacks and multipliers raised by warm_interior_delta): on
        office-20 about seven iterations instead of ten to twelve when the active-set guess fails."""
        d = self.opt.warm_interior_delta
        m = self.mask
        s = m.new(np.where(m.a, prev.s.a + d, 1.0))
        z = m.new(np.where(m.a, prev.z.a + d, 0.0))
        u = self._spread(np.where(self.live | ~self.start3, prev.u, self.lo))
        return _IPState(u, prev.e * self.livef, prev.vl * self.maskf["C1"], prev.vh * self.maskf["C3"], s, z)

    def _initial_point(self, u0: np.ndarray | None) -> _IPState:
        opt, resp = self.opt, self.resp
        lo, hi = self.lo, self.hi
        width = hi - lo
        if u0 is None:  # the middle of the box: on office-20, two fewer iterations than starting at zero
            u = lo + 0.5 * width
            mu0 = opt.mu0
        else:
            u = resp.to_sub_u(np.asarray(u0, float) / self.scale)
            mu0 = opt.mu0_warm
        u = self._spread(np.clip(u, lo + 0.02 * width, hi - 0.02 * width))
        u = np.where(self.live | ~self.start3, u, lo)
        u = self._spread(u)
        y = self.y0 + resp.forward(u)
        dl = self._delta(u)
        e = np.maximum(self.cpB * u, -self.cmB * u) * self.livef
        vl = np.maximum(self.low - y, 0.0) * self.maskf["C1"]
        vh = np.maximum(y - self.high, 0.0) * self.maskf["C3"]
        slope = 0.5 * (np.abs(self.cpB) + np.abs(self.cmB)) + 1e-9
        e = e + 0.1 * slope * self.livef
        c = self._constraints(u, e, vl, vh, y, dl)
        # Slacks at least a fraction of each constraint's natural size; multipliers near dual feasibility
        # (the energy epigraph multipliers sum to one, the comfort ones to the violation cost's slope).
        zc_l = 0.5 * (2.0 * self.wq * vl + self.wl)
        zc_h = 0.5 * (2.0 * self.wq * vh + self.wl)
        floor = {"B1": 0.05 * width, "B2": 0.05 * width, "E1": 0.1 * slope, "E2": 0.1 * slope, "C1": 0.1,
                 "C2": 0.1, "C3": 0.1, "C4": 0.1, "H1": 0.5, "H2": 0.5, "R1": 0.1 * self.rate,
                 "R2": 0.1 * self.rate}
        zinit = {"B1": mu0 * slope, "B2": mu0 * slope, "E1": 0.5, "E2": 0.5, "C1": zc_l, "C2": zc_l, "C3": zc_h,
                 "C4": zc_h, "H1": mu0 * self.wl, "H2": mu0 * self.wl, "R1": mu0 * slope, "R2": mu0 * slope}
        s, z = {}, {}
        for k in GROUPS:
            s[k] = np.where(self.mask[k], np.maximum(c[k], floor[k]), 1.0)
            z[k] = np.where(self.mask[k], np.broadcast_to(zinit[k], s[k].shape), 0.0)
        return _IPState(u, e, vl, vh, self.mask.of(s), self.mask.of(z))

    # -- results -----------------------------------------------------------------------------------
    def _result(self, data: MPCData, U: np.ndarray, status: Status, msg: str, it: int, rd: float, t0: float,
                timer: Callable[[], float], gap: float, nfac: int, st: _IPState | None,
                active: ActiveSet | None = None) -> MPCResult:
        resp, prob = self.resp, self.prob
        u = np.clip(resp.from_sub_u(U) * self.scale, data.u_min, data.u_max)
        # Values within rounding of a bound or of the energy kink are put on it (interior iterates approach
        # them but never reach them); the objective changes by far less than the tolerance.
        tol = 1e-7 * self.scale
        u = np.where(np.abs(u - data.u_min) <= tol, data.u_min, np.where(np.abs(u - data.u_max) <= tol,
                                                                            data.u_max, u))
        u = np.where((np.abs(u) <= tol) & (data.u_min <= 0) & (data.u_max >= 0), 0.0, u)
        if np.any(np.isfinite(prob.rate_limit)):
            u = repair_rate(u, data.u_last, prob.rate_limit, data.u_min, data.u_max)
        m = prob.model
        y = np.asarray(m.zones(m.modal_trajectory(data.x0[None], u[None], data.d[None])))[0]
        terms = {k: float(v) for k, v in objective_terms(prob, data, u, y).items()}
        viol = {k: float(v) for k, v in constraint_violation(prob, data, u, y).items()}
        total = terms.pop("total")
        # The plan as returned (snapped to bounds and the kink, simulated by the model itself) must meet every
        # hard constraint; the tenfold hard_tol allows for the snapping's effect on the temperatures.
        feasible = (viol["bounds"] == 0.0 and viol["comfort_hard"] <= 10.0 * self.opt.hard_tol
                    and viol["rate"] <= 1e-6 * float(self.scale.max()))
        if not feasible:  # never certify a violating plan (a deadline stays a deadline, without success)
            gap = math.inf
            if status == Status.CONVERGED:
                status = Status.STALLED
                msg = (f"plan breaks a hard constraint (comfort {viol['comfort_hard']:.3g} K, rate "
                       f"{viol['rate']:.3g} W, bounds {viol['bounds']:.3g} W)")
        ok = status in (Status.CONVERGED, Status.DEADLINE) and feasible and math.isfinite(total)
        return MPCResult(u=u, status=status, success=ok, objective=total, terms=terms, iterations=it, pg_norm=rd,
                         solve_time=timer() - t0, zone_temps=y, gap_bound=gap, violation=viol,
                         duals=None if st is None else Duals({k: v.copy() for k, v in st.z.items()}),
                         factorizations=nfac, message=msg, active=active)

    def _fallback(self, data: MPCData, t0: float, timer: Callable[[], float], msg: str) -> MPCResult:
        """A plan that respects the bounds whatever the inputs: hold the last value where it is finite."""
        K, nu = self.K, self.prob.nu
        last = np.where(np.isfinite(data.u_last), data.u_last, 0.0)
        lo = np.where(np.isfinite(data.u_min), data.u_min, 0.0)
        hi = np.where(np.isfinite(data.u_max), data.u_max, 0.0)
        u = np.clip(np.broadcast_to(last, (K, nu)), lo, np.maximum(lo, hi))
        return MPCResult(u=u, status=Status.NONFINITE, success=False, objective=math.nan, terms={}, iterations=0,
                         pg_norm=math.nan, solve_time=timer() - t0, zone_temps=np.full((K, self.prob.nz), np.nan),
                         message=msg)


def repair_rate(u: np.ndarray, u_last: np.ndarray, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                axis: int = 0) -> np.ndarray:
    """Clip each step (along `axis`) into the rate-limited reach of the previous one and into the bounds:
    a feasible plan. `lo` and `hi` have u's shape; `u_last` and `rate` the shape of one step."""
    out = np.array(u, dtype=float, copy=True)
    steps, low, high = (np.moveaxis(a, axis, 0) for a in (out, lo, hi))
    prev = u_last
    for k in range(steps.shape[0]):
        steps[k] = np.clip(np.clip(steps[k], prev - rate, prev + rate), low[k], high[k])
        prev = steps[k]
    return out
