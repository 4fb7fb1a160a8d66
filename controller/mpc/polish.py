"""Active-set polishing: jump from a good guess of which limits and kinks bind to the exact optimum.

At the optimum every input sits at a bound, at the energy kink (zero) or strictly inside a piece where its
energy cost is linear, and every zone-step sits inside its comfort band, on an edge, or outside it where the
penalty is quadratic. Given that classification the problem is an equality-constrained QP: fixed inputs are
fixed, pinned zone-steps stay on their edge (a stiff penalty, so the same Riccati factorisation applies),
the rest is quadratic. One factorisation and one solve give its minimiser. Its multipliers then certify
the plan through the dual bound, or show which classes are wrong (a primal-dual active-set update).

Where the guess comes from: the previous cycle's classification shifted one step (warm start), which the
solve's final interior point iterate provides when polishing did not (from_interior). A wrong guess costs
one factorisation; the interior point method remains the fallback, so polishing never decides
convergence without a certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from controller.mpc.result import shift_plan

if TYPE_CHECKING:
    from controller.mpc.lqsolver import LQSolver

# Input classes
FREE_POS, LO, HI, ZERO, FREE_NEG = 0, 1, 2, 3, 4
# Zone-step classes
IN, PIN_LO, PIN_HI, BELOW, ABOVE = 0, 1, 2, 3, 4

DUAL_TOL = 1e-3  # relative excursion of a multiplier past its range that changes a class
PENALTY = 1e6  # pinned zone-steps' curvature relative to the comfort weights: offsets of ~1e-7 K


@dataclass
class ActiveSet:
    """Classification of a plan in solver layout: inputs (nb, K, nuc) and zone-steps (nb, K, nzc), int8."""

    u: np.ndarray
    y: np.ndarray
    interior: Any = None  # an interior point iterate of the solve, to restart from (lqsolver._IPState)
    misses: int = 0  # consecutive solves whose classification polishing could not certify

    def shifted(self, steps: int = 1) -> ActiveSet:
        """The classification one cycle later: moved ahead, the last step repeated."""
        def sh(a: np.ndarray) -> np.ndarray:
            return shift_plan(a, steps, axis=-2)

        return ActiveSet(sh(self.u), sh(self.y), None if self.interior is None else self.interior.shifted(steps),
                         self.misses)


@dataclass
class PolishOutcome:
    u: np.ndarray  # feasible plan (solver layout) with the smallest certified gap seen
    objective: float  # its true objective
    bound: float  # certified lower bound on the optimum
    active: ActiveSet  # the classification it was solved with
    rounds: int  # active-set steps taken (one factorisation each)
    certified: bool  # gap within the tolerance


def supported(sv: LQSolver) -> bool:
    """Polishing covers bounds, energy kinks, comfort kinks and move suppression; rate limits and hard
    comfort limits are left to the interior point method."""
    return not (sv.mask["R1"].any() or sv.mask["H1"].any() or sv.mask["H2"].any())


def from_interior(sv: LQSolver, s: Any, z: Any, u: np.ndarray) -> ActiveSet:
    """Classes from an interior point iterate (slacks s and multipliers z by constraint group, as the
    solver keeps them): a constraint binds where its multiplier exceeds its slack."""
    act = {k: (z[k] > s[k]) & sv.mask[k] for k in ("B1", "B2", "E1", "E2", "C1", "C2", "C3", "C4")}
    uc = np.where(u >= 0.0, FREE_POS, FREE_NEG)
    uc = np.where(act["E1"] & act["E2"], ZERO, uc)
    uc = np.where(act["B2"], HI, uc)
    uc = np.where(act["B1"] | ~sv.live, LO, uc)
    yc = np.full(sv.low.shape, IN)
    yc = np.where(act["C2"], np.where(act["C1"], PIN_LO, BELOW), yc)
    yc = np.where(act["C4"], np.where(act["C3"], PIN_HI, ABOVE), yc)
    # Interior iterates settle inputs before temperatures: a free input whose zone still reads as inside
    # the band would have no curvature at all, so its zone-step is put on the nearer edge.
    _, zstar, _ = sv.pairs
    b, k, i = np.nonzero(((uc == FREE_POS) | (uc == FREE_NEG)) & sv.live)
    z = zstar[b, i]
    loose = yc[b, k, z] == IN
    b, k, z = b[loose], k[loose], z[loose]
    y = sv.y0 + sv.resp.forward(u)
    yc[b, k, z] = np.where(y[b, k, z] - sv.low[b, k, z] < sv.high[b, k, z] - y[b, k, z], PIN_LO, PIN_HI)
    # ...and a zone-step on an edge whose input is still fixed gets that input freed (or, with no room
    # left, the finite penalty): every pinned zone-step needs an input to hold it.
    istar, _, sg = sv.pairs
    b, k, z = np.nonzero((yc == PIN_LO) | (yc == PIN_HI))
    i = istar[b, z]
    c = uc[b, k, i]
    fixed = (c != FREE_POS) & (c != FREE_NEG)
    b, k, z, i, c = b[fixed], k[fixed], z[fixed], i[fixed], c[fixed]
    need_up = (yc[b, k, z] == PIN_LO) == (sg[b, z] > 0)
    lo, hi = sv.lo[b, k, i], sv.hi[b, k, i]
    room = sv.live[b, k, i] & np.where(need_up, ((c == ZERO) & (hi > 0.0)) | (c == LO),
                                       ((c == ZERO) & (lo < 0.0)) | (c == HI))
    freed = np.where(need_up, np.where((c == ZERO) | (lo >= 0.0), FREE_POS, FREE_NEG),
                     np.where((c == ZERO) | (hi <= 0.0), FREE_NEG, FREE_POS))
    uc[b[room], k[room], i[room]] = freed[room]
    nr = ~room
    yc[b[nr], k[nr], z[nr]] = np.where(yc[b[nr], k[nr], z[nr]] == PIN_LO, BELOW, ABOVE)
    return ActiveSet(uc.astype(np.int8), yc.astype(np.int8))


def _fixed_values(sv: LQSolver, uc: np.ndarray, u: np.ndarray) -> np.ndarray:
    u = np.where(uc == LO, sv.lo, np.where(uc == HI, sv.hi, np.where(uc == ZERO, np.clip(0.0, sv.lo, sv.hi), u)))
    return sv._spread(u)


def _comfort_slope(sv: LQSolver, yc: np.ndarray, y: np.ndarray, rho: float) -> np.ndarray:
    """Derivative of each zone-step's cost under its class (pinned: the stiff penalty)."""
    lo, hi, wq, wl = sv.low, sv.high, sv.wq, sv.wl
    g = np.where(yc == PIN_LO, rho * (y - lo), 0.0)
    g = np.where(yc == PIN_HI, rho * (y - hi), g)
    g = np.where(yc == BELOW, -2.0 * wq * (lo - y) - wl, g)
    return np.where(yc == ABOVE, 2.0 * wq * (y - hi) + wl, g)


def eqp_step(sv: LQSolver, act: ActiveSet, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimiser of the problem restricted to the classification: plan u and zone-step multipliers lam."""
    uc, yc = act.u, act.y
    wq, rho = sv.wq, sv.rho
    free = sv.live & ((uc == FREE_POS) | (uc == FREE_NEG))
    u = _fixed_values(sv, uc, u)
    y = sv.y0 + sv.resp.forward(u)
    slope = np.where(uc == FREE_POS, sv.cpB, -sv.cmB) * free
    gy = _comfort_slope(sv, yc, y, rho)
    g = sv._to_u(slope, gy, sv._move_slope(sv._delta(u)))
    D = np.where((yc == PIN_LO) | (yc == PIN_HI), rho, np.where((yc == BELOW) | (yc == ABOVE), 2.0 * wq, 0.0))
    D = D * sv.resp.out_mask[:, None, :]
    # A free input that no curvature reaches has a linear cost: the small curvature turns its step into a
    # long one, which the reclassification then stops at a bound.
    fac = sv.lq.factor(D, sv.mchg0, free, sv.reg)
    d = sv._spread(sv.lq.solve(fac, g) * free)
    u = u + d
    return u, _comfort_slope(sv, yc, sv.y0 + sv.resp.forward(u), rho)


def clip_multipliers(sv: LQSolver, yc: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Multipliers moved into the range their class allows (a pinned zone-step's lies between the slopes
    of the penalty on either side of the edge). Where the classification cannot hold a zone-step on its
    edge, the stiff penalty's multiplier is huge and says nothing about the optimum; clipped it still
    gives a useful bound and a sensible reduced gradient."""
    wl = sv.wl
    lam = np.where(yc == PIN_LO, np.clip(lam, -wl, 0.0), lam)
    lam = np.where(yc == PIN_HI, np.clip(lam, 0.0, wl), lam)
    lam = np.where(yc == BELOW, np.minimum(lam, -wl), lam)
    return np.where(yc == ABOVE, np.maximum(lam, wl), lam)


def direct_pairs(sv: LQSolver) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subsystem: the input that moves each zone most within one step, the zone each input moves most,
    and the sign of that direct effect ((nb, nzc), (nb, nuc), (nb, nzc))."""
    cb = sv.resp.C @ sv.resp.Bm  # (nb, nzc, nuc)
    istar = np.abs(cb).argmax(axis=2)
    zstar = np.abs(cb).argmax(axis=1)
    sg = np.sign(np.take_along_axis(cb, istar[:, :, None], axis=2)[:, :, 0])
    return istar, zstar, sg


def reclassify(sv: LQSolver, act: ActiveSet, u: np.ndarray, y: np.ndarray, lam: np.ndarray,
               mu: np.ndarray | None) -> ActiveSet:
    """Primal-dual active-set update, primal first.

    Primal changes: a free input that left its piece is fixed where it left, and the zone-step it was
    holding on an edge is released; a zone-step that left its band is pinned to the edge together with the
    input that moves it most within the step, if that input has room (one pivot pairs an input with a
    zone-step, as the optimum pairs them). Only when the plan has none of these do multipliers decide:
    fixed inputs whose reduced gradient points inwards are freed, pinned zone-steps whose multiplier left
    its range are released. Pivoting on both at once overshoots (the problem is LP-like).
    """
    uc, yc = act.u, act.y
    lo, hi, cp, cm = sv.lo, sv.hi, sv.cpB, sv.cmB
    low, high, wl = sv.low, sv.high, sv.wl
    istar, zstar, sg = sv.pairs
    zero_ok = (lo <= 0.0) & (hi >= 0.0)
    nu_, ny = uc.copy(), yc.copy()
    # -- free inputs that left their piece
    pos, neg = uc == FREE_POS, uc == FREE_NEG
    nu_ = np.where(pos & (u < 0.0), np.where(zero_ok, ZERO, LO), nu_)
    nu_ = np.where(neg & (u > 0.0), np.where(zero_ok, ZERO, HI), nu_)
    nu_ = np.where((pos | neg) & (u <= lo), LO, nu_)
    nu_ = np.where((pos | neg) & (u >= hi), HI, nu_)
    fixed_now = (pos | neg) & (nu_ != uc) & sv.live
    if fixed_now.any():
        upper = (nu_ == HI) | ((nu_ == ZERO) & neg)  # stopped while rising
        b, k, i = np.nonzero(fixed_now)
        z = zstar[b, i]
        e = np.where(upper[b, k, i], 1.0, -1.0) * np.sign((sv.resp.C[b, z] * sv.resp.Bm[b, :, i]).sum(-1))
        cur = ny[b, k, z]
        ny[b, k, z] = np.where(cur == PIN_LO, np.where(e > 0, BELOW, IN),
                               np.where(cur == PIN_HI, np.where(e > 0, IN, ABOVE), cur))
    # -- zone-steps that left their band or their penalty piece
    ny = np.where((yc == BELOW) & (y > low), PIN_LO, ny)
    ny = np.where((yc == ABOVE) & (y < high), PIN_HI, ny)
    out = (yc == IN) & sv.resp.out_mask[:, None, :] & ((y < low) | (y > high))
    if out.any():
        b, k, z = np.nonzero(out)
        i = istar[b, z]
        need_up = (y[b, k, z] < low[b, k, z]) == (sg[b, z] > 0)  # the input must rise
        c = nu_[b, k, i]
        room = sv.live[b, k, i] & np.where(need_up, (c == ZERO) & (hi[b, k, i] > 0.0) | (c == LO),
                                           (c == ZERO) & (lo[b, k, i] < 0.0) | (c == HI))
        freed = np.where(need_up, np.where((c == ZERO) | (lo[b, k, i] >= 0.0), FREE_POS, FREE_NEG),
                         np.where((c == ZERO) | (hi[b, k, i] <= 0.0), FREE_NEG, FREE_POS))
        nu_[b[room], k[room], i[room]] = freed[room]
        is_low = y[b, k, z] < low[b, k, z]
        ny[b, k, z] = np.where(room, np.where(is_low, PIN_LO, PIN_HI), np.where(is_low, BELOW, ABOVE))
    if (nu_ != uc).any() or (ny != yc).any():
        return ActiveSet(np.where(sv.live, nu_, LO).astype(np.int8), ny.astype(np.int8))
    # -- dual changes
    g = sv._plan_gradient(clip_multipliers(sv, yc, lam), mu)
    right = np.where(lo >= 0.0, cp, -cm)  # energy slope just above lo
    left = np.where(hi > 0.0, cp, -cm)  # just below hi
    tg = DUAL_TOL * (np.abs(cp) + np.abs(cm)) + 1e-15
    nu_ = np.where((uc == LO) & (g + right < -tg) & (hi > lo), np.where(lo >= 0.0, FREE_POS, FREE_NEG), nu_)
    nu_ = np.where((uc == HI) & (g + left > tg) & (hi > lo), np.where(hi > 0.0, FREE_POS, FREE_NEG), nu_)
    nu_ = np.where((uc == ZERO) & (g < -cp - tg) & (hi > 0.0), FREE_POS, nu_)
    nu_ = np.where((uc == ZERO) & (g > cm + tg) & (lo < 0.0), FREE_NEG, nu_)
    # A freed input needs a zone-step to hold (else nothing curves its cost): its own zone, on the edge
    # that zone is nearer to.
    b, k, i = np.nonzero((nu_ != uc) & sv.live)
    z = zstar[b, i]
    loose = yc[b, k, z] == IN
    b, k, z = b[loose], k[loose], z[loose]
    ny[b, k, z] = np.where(y[b, k, z] - low[b, k, z] < high[b, k, z] - y[b, k, z], PIN_LO, PIN_HI)
    # Multipliers within a hair of their range's ends are ties (degenerate vertices), not signals.
    tl = DUAL_TOL * wl
    ny = np.where((yc == PIN_LO) & (lam < -wl - tl), BELOW, ny)
    ny = np.where((yc == PIN_LO) & (lam > tl), IN, ny)
    ny = np.where((yc == PIN_HI) & (lam > wl + tl), ABOVE, ny)
    ny = np.where((yc == PIN_HI) & (lam < -tl), IN, ny)
    return ActiveSet(np.where(sv.live, nu_, LO).astype(np.int8), ny.astype(np.int8))


def polish(sv: LQSolver, act: ActiveSet, u: np.ndarray, tol: float, rounds: int,
           expired: Callable[[], bool] = lambda: False) -> PolishOutcome | None:
    """Up to `rounds` active-set steps from `act`, stopping at the first certified plan (relative gap <= tol).
    Returns the plan with the smallest certified gap (None if no round produced finite numbers)."""
    best: PolishOutcome | None = None
    seen = {act.u.tobytes() + act.y.tobytes()}
    r = 0
    for r in range(1, rounds + 1):
        if expired():
            r -= 1
            break
        un, lam = eqp_step(sv, act, u)
        if not (np.all(np.isfinite(un)) and np.all(np.isfinite(lam))):
            break
        mu = sv._move_slope(sv._delta(un))
        uf = sv._feasible_plan(un)
        j = float(sv._true_objective(uf)[0])
        q = sv._dual_bound(clip_multipliers(sv, act.y, lam), mu)
        ok = j - q <= tol * max(abs(j), 1e-9)
        if best is None or j - q < best.objective - best.bound:
            best = PolishOutcome(uf, j, q, act, r, ok)
        if ok:
            break
        # Zone-steps are judged under the plan clipped into its bounds: an input without curvature steps
        # far out of them, and the temperatures it would cause there say nothing.
        yf = sv.y0 + sv.resp.forward(uf)
        nxt = reclassify(sv, act, un, yf, lam, mu)
        key = nxt.u.tobytes() + nxt.y.tobytes()
        if key in seen:  # the update cycles (it can, the problem being LP-like): interior point takes over
            break
        seen.add(key)
        act, u = nxt, uf
    if best is not None:
        best.rounds = r
    return best
