"""State estimation: a Kalman filter on the discrete model with offset (unmodelled heat) states.

Each zone gets an integrating disturbance state: an unmeasured heat input to its air node (W), driven by
a random walk. A model whose UA or capacitances are 20 % off then still tracks the measured temperatures
without steady-state error: the mismatch shows up as an estimated offset heat, which the MPC's prediction
includes. Missing readings (NaN) skip that channel's update; a reading whose innovation is implausible
(a 15 K jump from a broken sensor) is rejected by a gate and reported, never fed to the filter.
A model that is not linear in the inputs (a pumped loop: flow x temperature) gets the extended filter,
`ExtendedKalmanEstimator`: it predicts with the exact nonlinear step and propagates the covariance with the
step's Jacobians at the current estimate; the offset states and the measurement update are the same.
Pure array code: no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# x, u, d (known disturbances), offsets -> x_next (n,), dx_next/dx (n, n), dx_next/du (n, nu), dx_next/do (n, no)
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                  tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class EstimateInfo:
    innovation: np.ndarray   # (ny,) K, NaN where no reading
    rejected: np.ndarray     # (ny,) bool, reading refused by the innovation gate
    diverged: bool           # non-finite state or covariance blown up


class KalmanEstimator:
    """x[k+1] = A x + B u + E d + G o,  o[k+1] = o[k] + w,  y = C x + v.

    G (n, no) maps the offset heats (W) into the state; q_state (K²), q_offset (W²) and r_meas (K²) are
    per-step variances. gate_sigma and max_jump_k bound the accepted innovation.
    """

    def __init__(self, A: np.ndarray, B: np.ndarray, E: np.ndarray, C: np.ndarray, G: np.ndarray, *,
                 q_state: float = 1e-3, q_offset: float = 400.0, r_meas: float = 0.01,
                 gate_sigma: float = 6.0, max_jump_k: float = 5.0, p0_state: float = 4.0,
                 p0_offset: float = 1e6) -> None:
        self.A, self.B, self.E, self.C, self.G = (np.asarray(m, dtype=float) for m in (A, B, E, C, G))
        self.n, self.no, self.ny = self.A.shape[0], self.G.shape[1], self.C.shape[0]
        N = self.n + self.no
        self.F = np.eye(N)
        self.F[:self.n, :self.n] = self.A
        self.F[:self.n, self.n:] = self.G
        self.H = np.hstack([self.C, np.zeros((self.ny, self.no))])
        self.Q = np.diag(np.r_[np.full(self.n, q_state), np.full(self.no, q_offset)])
        self.R = np.eye(self.ny) * r_meas
        self.gate_sigma, self.max_jump_k = gate_sigma, max_jump_k
        self.p0 = np.diag(np.r_[np.full(self.n, p0_state), np.full(self.no, p0_offset)])
        self.z = np.zeros(N)
        self.P = self.p0.copy()

    @property
    def x(self) -> np.ndarray:
        """Physical state estimate (n,)."""
        return self.z[:self.n].copy()

    @property
    def offsets(self) -> np.ndarray:
        """Estimated unmodelled heat per offset channel (W)."""
        return self.z[self.n:].copy()

    def reset(self, x: np.ndarray) -> None:
        self.z = np.r_[np.asarray(x, dtype=float), np.zeros(self.no)]
        self.P = self.p0.copy()

    def predict(self, u: np.ndarray, d: np.ndarray, u_var: np.ndarray | None = None) -> None:
        """One step with inputs `u` and disturbances `d`. `u_var` (nu,), per-step variance of each input
        (its unit squared): an input that is only guessed (a relinquished actuator run by its local
        controller) adds B diag(u_var) Bᵀ to the state covariance, so the zones it heats trust the
        readings more than the prediction."""
        with np.errstate(all="ignore"):  # non-finite inputs show up as divergence in update()
            self._predict(u, d, u_var)

    def _predict(self, u: np.ndarray, d: np.ndarray, u_var: np.ndarray | None) -> None:
        self.z = self.F @ self.z
        self.z[:self.n] += self.B @ np.asarray(u, dtype=float) + self.E @ np.asarray(d, dtype=float)
        self.P = self.F @ self.P @ self.F.T + self.Q
        if u_var is not None and np.any(u_var):
            Bv = self.B * np.asarray(u_var, dtype=float)
            self.P[:self.n, :self.n] += Bv @ self.B.T

    def update(self, y: np.ndarray) -> EstimateInfo:
        with np.errstate(all="ignore"):
            return self._update(np.asarray(y, dtype=float))

    def _update(self, y: np.ndarray) -> EstimateInfo:
        innov = y - self.H @ self.z
        S_full = self.H @ self.P @ self.H.T + self.R
        seen = np.isfinite(y)
        rejected = np.zeros(self.ny, bool)
        sigma = np.sqrt(np.maximum(np.diag(S_full), 1e-12))
        rejected[seen] = (np.abs(innov[seen]) > self.gate_sigma * sigma[seen]) & (
            np.abs(innov[seen]) > self.max_jump_k)
        use = seen & ~rejected
        if use.any() and np.all(np.isfinite(self.P)):
            H, e = self.H[use], innov[use]
            S = S_full[np.ix_(use, use)]
            K = np.linalg.solve(S, H @ self.P).T
            self.z = self.z + K @ e
            IKH = np.eye(len(self.z)) - K @ H
            # Joseph form: stays symmetric positive definite under rounding.
            self.P = IKH @ self.P @ IKH.T + K @ self.R[np.ix_(use, use)] @ K.T
        diverged = not (np.all(np.isfinite(self.z)) and np.all(np.isfinite(self.P))
                        and float(np.max(np.diag(self.P))) < 1e12)
        return EstimateInfo(np.where(seen, innov, np.nan), rejected, diverged)

    def export_state(self) -> dict:
        # Binary-exact and compact: the covariance is thousands of numbers, saved every cycle.
        return {"z": pack_array(self.z), "P": pack_array(self.P)}

    def import_state(self, state: dict) -> None:
        z, P = unpack_array(state["z"]), unpack_array(state["P"])
        if z.shape == self.z.shape and P.shape == self.P.shape and np.all(np.isfinite(z)) and np.all(np.isfinite(P)):
            self.z, self.P = z, P


class ExtendedKalmanEstimator(KalmanEstimator):
    """The filter above on a nonlinear step x[k+1] = f(x, u, d, o) (the simulator's exact zero-order hold):
    the prediction is f itself, the covariance goes through its Jacobians at the estimate before the step
    (`step` returns both). Offsets, noise levels, gate and update are KalmanEstimator's."""

    def __init__(self, step: StepFn, n: int, nu: int, C: np.ndarray, no: int, **kw: float) -> None:
        super().__init__(np.eye(n), np.zeros((n, nu)), np.zeros((n, 0)), C, np.zeros((n, no)), **kw)
        self.step = step

    def _predict(self, u: np.ndarray, d: np.ndarray, u_var: np.ndarray | None) -> None:
        n = self.n
        x_next, A, B, G = self.step(self.z[:n].copy(), np.asarray(u, dtype=float), np.asarray(d, dtype=float),
                                    self.z[n:].copy())
        F = np.eye(n + self.no)
        F[:n, :n], F[:n, n:] = A, G
        self.F, self.B = F, np.asarray(B, dtype=float)   # the last linearisation (diagnostics)
        self.z = np.r_[np.asarray(x_next, dtype=float), self.z[n:]]
        self.P = F @ self.P @ F.T + self.Q
        if u_var is not None and np.any(u_var):
            Bv = self.B * np.asarray(u_var, dtype=float)
            self.P[:n, :n] += Bv @ self.B.T


def pack_array(a: np.ndarray) -> dict:
    """An array as {shape, base64 little-endian float64}: binary-exact and compact in a JSON state file."""
    import base64

    return {"shape": list(a.shape), "f8": base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode()}


def unpack_array(obj: object) -> np.ndarray:
    """An array saved by pack_array (or a nested list from older state files)."""
    import base64

    if isinstance(obj, dict):
        raw = base64.b64decode(str(obj["f8"]), validate=True)
        return np.frombuffer(raw, dtype="<f8").reshape([int(n) for n in obj["shape"]]).astype(float)
    return np.asarray(obj, dtype=float)
