"""The calibration fit: ``calibrate`` and its ``CalibrationResult``.

Method: Levenberg-Marquardt on the simulation error (free-run output error, the model is simulated over the
whole fit period from a fitted initial state), with

- the exact gradient Jᵀr from one adjoint sweep (``sim.gradient(..., params=...)``);
- a Gauss-Newton Hessian from per-residual-block adjoint gradients: the residuals are cut into at most
  ``max_blocks`` consecutive blocks; block b's adjoint gradient is the sum of its Jacobian rows, so with
  one residual per block (the default for up to ``max_blocks`` residuals) the Hessian JᵀJ is exact, and
  with more it is the block-averaged Jacobian's (a slight under-estimate of the curvature, never an
  indefinite one);
- the initial-state columns exact from one batched forward simulation (outputs are affine in x0 for
  RC networks and flow terms);
- positive and non-negative parameters fitted in log space (so they stay physical and steps are
  relative), others in their own units; ``net.params.lower`` gives the bound;
- by default a prior on each fitted parameter around its nominal value (MAP, see ``params``): logged
  normal operation rarely excites every parameter, and without priors the poorly excited ones drift to
  unphysical values that only trade off against each other. The prior's weight against the data needs the
  measurement sigma: it is re-estimated from the residuals and the fit repeated from there (at most 4 passes);
- a weak prior on the initial state (``x0_prior_k``, K) towards a steady state matched to the first
  measurement, because slow wall states can be nearly unobservable from one air sensor and an
  unregularised Gauss-Newton matrix would then be singular. It is deliberately weak (30 K): a tight one
  pulls the wall states and, through them, biases the wall parameters.

1-σ uncertainties are from σ² (JᵀJ + prior weights)⁻¹ with σ² = SSR / (m − p) (m residuals, p fitted numbers including
the initial state), mapped from log space by the delta method. The last ``holdout_fraction`` of the data is
not fitted: the model runs on through it from the fitted state and its RMSE there is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.tools.calibrate.data import CalibrationData, CalibrationError, load_data
from controller.tools.calibrate.params import (
    DEFAULT_PRIOR_REL_SIGMA,
    FitParam,
    prior_rel_sigmas,
    prior_sigma_z,
    resolve_params,
)
from controller.tools.calibrate.result import CalibrationResult, unidentified
from models.building import load_building
from models.errors import ConfigError
from models.network import Network


class _Problem:
    """Residuals of one fit period as a function of z = [fitted parameters (log or linear), x0]."""

    def __init__(self, base: Any, data: CalibrationData, params: list[FitParam], x0_guess: np.ndarray,
                 x0_prior_k: float, ref_sigma_k: float, prior_sigma_z: np.ndarray | None = None) -> None:
        self.base = base
        self.data = data
        self.params = params
        self.P = len(params)
        self.n = base.n
        self.C = self._output_matrix(base, data)
        self.mask = np.isfinite(data.y)
        self.m = int(self.mask.sum())
        self.x0_guess = x0_guess
        # Prior residuals w·(x0 - guess): w = (reference measurement sigma) / (prior sigma).
        self.w_prior = ref_sigma_k / x0_prior_k if x0_prior_k > 0 else 0.0
        # Parameter priors on z (MAP): residuals w·(z - z_nominal) with w = noise_k / prior sigma, where
        # noise_k is the measurement sigma the residuals are weighed against (re-estimated by `calibrate`).
        self.z_nominal = np.array([p.z_nominal for p in params])
        self.prior_sigma_z = np.full(self.P, math.inf) if prior_sigma_z is None else np.asarray(prior_sigma_z)
        self.noise_k = ref_sigma_k
        self.gradient_calls = 0
        self._cache: dict[bytes, Any] = {}

    @staticmethod
    def _output_matrix(sim: Any, data: CalibrationData) -> np.ndarray:
        rows = []
        for name, kind in zip(data.measured, data.kinds, strict=True):
            rows.append(sim.Cs[sim.sensor_names.index(name)] if kind == "sensor"
                        else sim.Cz[sim.zone_names.index(name)])
        return np.array(rows)

    @property
    def w_param(self) -> np.ndarray:
        return self.noise_k / self.prior_sigma_z  # 0 where there is no prior (sigma inf)

    def split(self, z: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        values: dict[str, float] = {}
        for p, zi in zip(self.params, z[:self.P], strict=True):
            v = p.lower + math.exp(zi) if p.log else zi
            for mbr in p.members:
                values[mbr] = v
        return values, z[self.P:]

    def z0(self, x0: np.ndarray) -> np.ndarray:
        return np.concatenate([[math.log(p.value - p.lower) if p.log else p.value for p in self.params], x0])

    def dvalue_dz(self, z: np.ndarray) -> np.ndarray:
        return np.array([math.exp(zi) if p.log else 1.0 for p, zi in zip(self.params, z[:self.P], strict=True)])

    def sim(self, values: dict[str, float]) -> Any:
        return self.base.with_params(values)

    def outputs(self, sim: Any, x0: np.ndarray, data: CalibrationData | None = None) -> tuple[np.ndarray, Any]:
        """Predicted measurements at every row (N, nm) and the trajectory (rows 1..N-1)."""
        data = data or self.data
        traj = sim.simulate(x0[None], data.u[None, :-1], data.d[None, :-1])
        x = np.asarray(traj.x[0])
        return x @ self.C.T, traj

    def evaluate(self, z: np.ndarray) -> tuple[float, np.ndarray, Any, Any]:
        """(cost, residual array (N, nm) with 0 at gaps, simulator, trajectory)."""
        values, x0 = self.split(z)
        sim = self.sim(values)
        yhat, traj = self.outputs(sim, x0)
        r = np.where(self.mask, yhat - np.nan_to_num(self.data.y), 0.0)
        prior = self.w_prior * (x0 - self.x0_guess)
        pp = self.w_param * (z[:self.P] - self.z_nominal)
        return 0.5 * float(np.sum(r * r) + np.sum(prior * prior) + np.sum(pp * pp)), r, sim, traj

    def _adjoint(self, sim: Any, traj: Any, g_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d(sum g_rows * yhat)/d(param values per FitParam, x0) for cotangents on rows 0..N-1."""
        self.gradient_calls += 1
        names = [m for p in self.params for m in p.members]
        g_states = np.zeros((1, g_rows.shape[0], self.n))
        g_states[0] = g_rows @ self.C  # outputs are linear maps of the state at every row, row 0 included
        g = sim.gradient(traj, g_states=g_states, params=names)
        gp = np.array([sum(g.params[m] for m in p.members) for p in self.params])
        return gp, np.asarray(g.x0[0], dtype=float)

    def gradient(self, z: np.ndarray, r: np.ndarray, sim: Any, traj: Any) -> np.ndarray:
        gp, gx = self._adjoint(sim, traj, r)
        _, x0 = self.split(z)
        gx = gx + self.w_prior ** 2 * (x0 - self.x0_guess)
        gz = gp * self.dvalue_dz(z) + self.w_param ** 2 * (z[:self.P] - self.z_nominal)
        return np.concatenate([gz, gx])

    def gauss_newton(self, z: np.ndarray, sim: Any, traj: Any, max_blocks: int) -> tuple[np.ndarray, int]:
        """JᵀJ (+ prior) in z-space: parameter rows from per-block adjoints, x0 columns exact."""
        _, x0 = self.split(z)
        N, nm = self.data.y.shape
        # x0 columns: outputs are affine in x0, so one batched simulation of unit perturbations is exact.
        X = np.vstack([x0[None], x0[None] + np.eye(self.n)])
        tr = sim.simulate(X, np.broadcast_to(self.data.u[None, :-1], (self.n + 1, N - 1, self.data.u.shape[1])),
                          np.broadcast_to(self.data.d[None, :-1], (self.n + 1, N - 1, self.data.d.shape[1])))
        Y = np.asarray(tr.x) @ self.C.T  # (n+1, N, nm)
        Jx = (Y[1:] - Y[0:1])[:, self.mask].T  # (m, n)
        idx = np.argwhere(self.mask)  # residual order: by row, then output
        nb = min(max_blocks, len(idx)) if self.P else 0
        Jp = np.zeros((nb, self.P))
        Jxb = np.zeros((nb, self.n))
        scale = self.dvalue_dz(z)
        for b, chunk in enumerate(np.array_split(np.arange(len(idx)), nb) if nb else []):
            g_rows = np.zeros((N, nm))
            g_rows[idx[chunk, 0], idx[chunk, 1]] = 1.0
            gp, _ = self._adjoint(sim, traj, g_rows)
            s = math.sqrt(len(chunk))
            Jp[b] = gp * scale / s
            Jxb[b] = Jx[chunk].sum(axis=0) / s
        H = np.zeros((self.P + self.n, self.P + self.n))
        H[:self.P, :self.P] = Jp.T @ Jp + np.diag(self.w_param ** 2)
        H[:self.P, self.P:] = Jp.T @ Jxb
        H[self.P:, :self.P] = H[:self.P, self.P:].T
        # Exact x0 block: it is >= the block-averaged one, so H stays positive semi-definite.
        H[self.P:, self.P:] = Jx.T @ Jx + self.w_prior ** 2 * np.eye(self.n)
        return H, nb


def _steady_guess(sim: Any, data: CalibrationData, C: np.ndarray) -> np.ndarray:
    """Steady state for the first row's inputs, shifted so the measured outputs match at t0."""
    mats = sim.mats
    try:
        xs = np.linalg.solve(mats["Ac"], -(mats["Bc"] @ data.u[0] + mats["Ec"] @ data.d[0]))
        if not np.all(np.isfinite(xs)) or np.any(np.abs(xs) > 200):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        xs = np.asarray(sim.x_initial, dtype=float).copy()
    first = np.isfinite(data.y).any(axis=1)
    if not first.any():
        raise CalibrationError("the data hold no measurements")
    k = int(np.argmax(first))
    ok = np.isfinite(data.y[k])
    # The model's own state at row k is unknown; shift the whole steady state so measured outputs match.
    offset = float(np.mean(data.y[k, ok] - C[ok] @ xs))
    return xs + offset


def calibrate(net: Network | str | Path, data: str | Path | dict[str, np.ndarray] | CalibrationData,
              params: Sequence[str], *, dt: float | None = None, holdout_fraction: float = 0.25,
              max_iterations: int = 40, max_blocks: int = 400, x0_prior_k: float = 30.0,
              model_path: str | Path | None = None, tol: float = 1e-9,
              progress: Callable[[int, float], None] | None = None, priors: bool = True,
              prior_rel_sigma: float = DEFAULT_PRIOR_REL_SIGMA,
              prior_overrides: Mapping[str, float | None] | None = None) -> CalibrationResult:
    """Fit ``params`` (and the initial state) to logged data; see the module docstring.

    Args:
        net: the model (``Network``) or its YAML path.
        data: CSV path, ``{column: array}`` or ``CalibrationData``.
        params: network parameter names (``net.params.names``) or shared YAML fields
            (``materials.<m>.conductivity``, ``constructions.<c>.layers[i].thickness``; needs the path).
        dt: the data step (s); default: the smallest step in ``time_s``.
        holdout_fraction: the last part of the rows, not fitted, for the held-out RMSE.
        max_iterations: Levenberg-Marquardt iterations.
        max_blocks: at most this many residual blocks (adjoint sweeps) for the Gauss-Newton matrix.
        x0_prior_k: prior standard deviation of the initial state around its steady-state guess (K).
        model_path: the YAML file (for field-path names); taken from ``net`` when it is a path.
        tol: stop when the relative cost decrease of an accepted step falls below this.
        progress: called with (iteration, cost) after each iteration.
        priors: a prior on every fitted parameter around its nominal value (MAP); see ``params``.
        prior_rel_sigma: the default relative prior 1-σ.
        prior_overrides: fitted name -> relative prior 1-σ for that one (``None``: no prior for it).
    """
    if not isinstance(net, Network):
        model_path = model_path or net
        try:
            net = load_building(net)
        except ConfigError as exc:
            raise CalibrationError(str(exc)) from None
    if model_path is None and net.file and Path(net.file).is_file():
        model_path = net.file
    if not 0.0 <= holdout_fraction < 1.0:
        raise CalibrationError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    fit_params = resolve_params(net, list(params), model_path)
    if isinstance(data, CalibrationData):
        probe = net.compile(data.dt)
        full = data
    else:
        probe = net.compile(dt or 1.0)
        full = load_data(data, probe, dt)
        if dt is None or full.dt != probe.dt:
            probe = net.compile(full.dt)
    N = full.t.size
    n_fit = N - math.floor(holdout_fraction * N)
    if n_fit < 3:
        raise CalibrationError(f"too few rows to fit ({n_fit} after holding out {holdout_fraction:.0%})")
    fit = full.slice(0, n_fit)
    C = _Problem._output_matrix(probe, fit)
    x0g = _steady_guess(probe, fit, C)
    spread = np.nanstd(fit.y) if np.isfinite(fit.y).sum() > 1 else 1.0
    prior_rel = prior_rel_sigmas(fit_params, priors, prior_rel_sigma, prior_overrides)
    prob = _Problem(probe, fit, fit_params, x0g, x0_prior_k, ref_sigma_k=max(0.05, min(0.5, 0.1 * spread)),
                    prior_sigma_z=np.array([prior_sigma_z(p, prior_rel[p.name]) for p in fit_params]))
    if prob.m <= prob.P + prob.n:
        raise CalibrationError(f"{prob.m} measurements are too few for {prob.P} parameters and {prob.n} initial "
                               "states")

    z = prob.z0(x0g)
    cost, r, sim, traj = prob.evaluate(z)
    rmse_before = math.sqrt(float(np.sum(r * r)) / prob.m)
    history = [cost]
    message = "max_iterations reached"
    success = False
    it = 0
    dof = prob.m - prob.P - prob.n
    has_prior = bool(np.isfinite(prob.prior_sigma_z).any())
    # With priors the weight of the data against them depends on the measurement sigma, which is not known
    # in advance: fit, re-estimate it from the residuals, and fit again from there while it moves by more
    # than 25 % (a few passes; later ones start at the optimum and take few iterations).
    for _pass in range(4 if has_prior else 1):
        z, cost, r, sim, traj, it_pass, success, message = _levenberg_marquardt(
            prob, z, cost, r, sim, traj, max_iterations - it, max_blocks, tol, history, progress, it)
        it += it_pass
        if not has_prior or dof <= 0 or it >= max_iterations:
            break
        noise = math.sqrt(float(np.sum(r * r)) / dof)
        if abs(math.log(max(noise, 1e-12) / prob.noise_k)) < math.log(1.25):
            break
        prob.noise_k = max(noise, 1e-6)
        cost, r, sim, traj = prob.evaluate(z)
    # Uncertainty at the solution (fresh Gauss-Newton matrix there).
    H, nb = prob.gauss_newton(z, sim, traj, max_blocks)
    ssr = float(np.sum(r * r))
    s2 = ssr / dof if dof > 0 else math.nan
    try:
        # Posterior covariance: s2 (JᵀJ + prior weights)⁻¹; the prior weights were formed with noise_k,
        # so rescale them to s2 (with noise_k = sqrt(s2) after the passes above, this is nearly a no-op).
        if math.isfinite(s2) and s2 > 0:
            H[:prob.P, :prob.P] += np.diag((s2 / prob.noise_k ** 2 - 1.0) * prob.w_param ** 2)
        cov = s2 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        cov = np.full(H.shape, math.nan)
    values_by_member, x0 = prob.split(z)
    deriv = prob.dvalue_dz(z)
    values = {p.name: values_by_member[p.members[0]] for p in fit_params}
    # A (near-)singular matrix without priors can give negative variances: no finite sigma for those.
    var_z = np.diag(cov)[:prob.P]
    sd_z = np.sqrt(np.where(var_z >= 0, var_z, math.nan))
    sigma = {p.name: float(deriv[i] * sd_z[i]) for i, p in enumerate(fit_params)}
    # Prior sigma at the fitted value (delta method, like `sigma`), so the two compare in z.
    prior_sd = {p.name: float(deriv[i] * prob.prior_sigma_z[i]) if math.isfinite(prob.prior_sigma_z[i])
                else math.nan for i, p in enumerate(fit_params)}
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov[:prob.P, :prob.P] / np.outer(sd_z, sd_z)
    # Held-out period: the model runs on from the fitted state through the whole log.
    hold_before = hold_after = math.nan
    n_hold = int(np.isfinite(full.y[n_fit:]).sum())
    if n_hold:
        def holdout_rmse(s: Any, x: np.ndarray) -> float:
            yhat, _ = prob.outputs(s, x, full)
            e = (yhat - full.y)[n_fit:]
            return math.sqrt(float(np.nanmean(e * e)))
        hold_before = holdout_rmse(probe, x0g)
        hold_after = holdout_rmse(sim, x0)
    return CalibrationResult(
        success=success, message=message, names=[p.name for p in fit_params],
        initial={p.name: p.value for p in fit_params}, values=values, sigma=sigma, correlation=corr,
        updates=dict(values_by_member), x0=x0, rmse_before=rmse_before,
        rmse_after=math.sqrt(ssr / prob.m), rmse_holdout_before=hold_before, rmse_holdout_after=hold_after,
        residual_sigma=math.sqrt(s2) if math.isfinite(s2) else math.nan, n_residuals=prob.m, n_holdout=n_hold,
        iterations=it, gradient_calls=prob.gradient_calls, jacobian_blocks=nb, cost_history=history, data=full,
        prior_rel=prior_rel, prior_sigma=prior_sd,
        unidentified=unidentified([p.name for p in fit_params], values, sigma, prior_sd, corr))


def _levenberg_marquardt(prob: _Problem, z: np.ndarray, cost: float, r: np.ndarray, sim: Any, traj: Any,
                         max_iterations: int, max_blocks: int, tol: float, history: list[float],
                         progress: Callable[[int, float], None] | None,
                         it0: int) -> tuple[np.ndarray, float, np.ndarray, Any, Any, int, bool, str]:
    """Levenberg-Marquardt from z; returns (z, cost, residuals, sim, trajectory, iterations, success, message)."""
    mu = 1e-3
    message = "max_iterations reached"
    success = False
    it = 0
    for it in range(1, max_iterations + 1):
        g = prob.gradient(z, r, sim, traj)
        H, _nb = prob.gauss_newton(z, sim, traj, max_blocks)
        d = np.sqrt(np.maximum(np.diag(H), 1e-12 * max(1.0, float(np.max(np.diag(H))))))
        accepted = False
        for _ in range(12):
            A = H + mu * np.diag(d * d)
            try:
                step = -np.linalg.solve(A, g)
            except np.linalg.LinAlgError:
                mu *= 10
                continue
            # Log-parameter steps beyond a factor e^2 per iteration only happen far from the optimum,
            # where the Gauss-Newton model is not trusted anyway.
            step[:prob.P] = np.clip(step[:prob.P], -2.0, 2.0)
            z_new = z + step
            try:
                c_new, r_new, sim_new, traj_new = prob.evaluate(z_new)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                c_new = math.inf
            if math.isfinite(c_new) and c_new < cost:
                accepted = True
                rel = (cost - c_new) / max(cost, 1e-300)
                z, cost, r, sim, traj = z_new, c_new, r_new, sim_new, traj_new
                mu = max(mu / 3.0, 1e-9)
                break
            mu *= 4.0
        history.append(cost)
        if progress is not None:
            progress(it0 + it, cost)
        if not accepted:
            message = "converged (no further decrease)"
            success = True
            break
        if rel < tol:
            message = "converged"
            success = True
            break
    return z, cost, r, sim, traj, it, success, message
