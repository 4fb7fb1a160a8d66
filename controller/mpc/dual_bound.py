"""A certified lower bound on the MPC optimum from any multipliers (Fenchel duality), in solver layout.

The problem is  min e(u) + psi(y) + m(w)  over u in its box, with y = y0 + G u and w = D u - w0 (input
changes, the first one from the last applied input). Dualising the two linear maps with multipliers lam
(zone-steps) and mu (input changes) splits the Lagrangian into one-dimensional convex problems with
closed-form minima:

    q(lam, mu) = lam'y0 - mu'w0 + sum_u min_box [e(u) + (G'lam + D'mu) u]
                 + sum_y min_hard [psi(y) - lam y] + sum_w min_rate [m(w) - mu w]

Weak duality makes q a lower bound on the optimum for every (lam, mu); near the optimum, the solver's own
multipliers make it tight. The gap J(u) - q of a feasible plan u is then a certificate: the plan is
within that many USD of the optimum, whatever the solver did to find it.
"""

from __future__ import annotations

import numpy as np


class BoxLinearMin:
    """min over u in [lo, hi] of cp max(u,0) + cm max(-u,0) + c u, elementwise, for many slopes c: the minimum
    of a convex piecewise-linear function sits at lo, hi or the kink (0 clipped into the box), whose energy
    terms do not depend on c and are computed once."""

    def __init__(self, cp: np.ndarray, cm: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        def energy(u: np.ndarray) -> np.ndarray:
            return cp * np.maximum(u, 0.0) + cm * np.maximum(-u, 0.0)

        self.lo, self.hi, self.u0 = lo, hi, np.clip(0.0, lo, hi)
        self.elo, self.ehi, self.e0 = energy(lo), energy(hi), energy(self.u0)

    def __call__(self, c: np.ndarray) -> np.ndarray:
        return np.minimum(np.minimum(self.elo + c * self.lo, self.ehi + c * self.hi), self.e0 + c * self.u0)


def box_linear_min(c: np.ndarray, cp: np.ndarray, cm: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """BoxLinearMin for a single slope array c."""
    return BoxLinearMin(cp, cm, lo, hi)(c)


def comfort_conjugate_min(lam: np.ndarray, low: np.ndarray, high: np.ndarray, hlow: np.ndarray,
                          hhigh: np.ndarray, wq: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """min over y in [hlow, hhigh] of psi(y) - lam y, psi = wq v^2 + wl v with v the distance outside
    [low, high]; elementwise. lam must be 0 where the band edge it pushes towards is absent."""
    q2 = np.where(wq > 0, 2.0 * wq, 1.0)
    below = np.where(wq > 0, low + (lam + wl) / q2, -np.inf)
    above = np.where(wq > 0, high + (lam - wl) / q2, np.inf)
    y = np.where(lam < -wl, below, np.where(lam <= 0.0, low, np.where(lam <= wl, high, above)))
    y = np.clip(y, hlow, hhigh)
    v = np.maximum(low - y, 0.0) + np.maximum(y - high, 0.0)
    return (wq * v + wl) * v - lam * y


def move_conjugate_min(mu: np.ndarray, wm: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """min over |w| <= rate of wm w^2 - mu w, elementwise."""
    w = np.where(wm > 0, mu / np.where(wm > 0, 2.0 * wm, 1.0), np.sign(mu) * rate)
    w = np.clip(w, -rate, rate)
    return wm * w * w - mu * w
