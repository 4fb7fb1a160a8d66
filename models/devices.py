"""Equipment as it behaves: rated heat pumps and chillers, condensing boilers, with exact Jacobians.

Rating table (EN 14511 style): points (source °C, sink °C) -> full-load capacity (W) and COP (EER for a
chiller). Between and around the points both are a least-squares polynomial surface in the scaled
temperatures s = (T_source - s0)/10 K and k = (T_sink - k0)/10 K, (s0, k0) the table's mean. The terms
follow the number of distinct points: 1 -> constant, 3 -> plane, 4-5 -> bilinear (1, s, k, sk), 6 or more
-> full quadratic (1, s, k, s², sk, k²). A polynomial is smooth everywhere (exact derivatives, no kinks at
table points, unlike bilinear interpolation on a grid) and datasheets' COP curves are close to quadratic
in the lift; `check_surface` refuses a fit that turns non-positive over the rated box.

Part load of a running unit at part-load ratio r = q'/Q_max (r in [r_min, 1], Q_max the full-load
capacity at the step's temperatures):

    P(r) = P_run + alpha ((1 - kappa) r + kappa r²),   alpha = Q_max / COP_full - P_run > 0

P_run is the fixed running power (fans, pumps, controls: the issue's measured plant draws 1.3 kW + 0.21 x
heat whenever it runs), kappa in [0, 1) a part-load curvature (0 = electric power affine in heat).

Duty cycling within a step: a unit that may run a fraction of the step at any part load delivers an
average heat q at the cost of the lower convex envelope of {(0, 0)} ∪ {(q', P(q'/Q_max)) : q' in
[r_min Q_max, Q_max]}. Since P(r)/r is minimal at r* = sqrt(P_run / (alpha kappa)) (r* = 1 when kappa = 0),
the envelope is the chord through the origin up to q_t = r_t Q_max, r_t = clip(r*, r_min, 1), and the
curve beyond:

    E(q) = q P(r_t) / q_t          for q <= q_t      (run at r_t for q / q_t of the step)
    E(q) = P(q / Q_max)            for q >  q_t      (run continuously)

With kappa = 0 the envelope is the chord to full load, E = q / COP_full: "full load for 40 % of the step"
costs 40 % of a full-load step, where continuous low load would pay P_run all step. E is convex in q at
fixed temperatures and C¹ where r_t = r* (envelope theorem: dE/d(anything) may treat r_t as fixed). Above
Q_max (the plant saturates there) it continues with its left slope plus a quadratic penalty: convex, C¹,
and dearer per W than full load. Planners should still bound the heat by Q_max(T) (controller.mpc.scp).

Everything here is pure array code against `xp`, written so that complex arguments pass through (complex
step), and every map has an analytic Jacobian (`*_jacobian`) that the tests check against differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.components import Actuator, pos

SCALE_K = 10.0  # K per unit of the scaled temperatures (keeps the fit's normal equations well conditioned)
TERMS = ("1", "s", "k", "ss", "sk", "kk")
_TERM_SETS = {1: (0,), 3: (0, 1, 2), 4: (0, 1, 2, 4), 6: (0, 1, 2, 3, 4, 5)}


# -- rating surfaces ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surface:
    """c · (1, s, k, s², sk, k²) with s, k the scaled source and sink temperatures."""

    coef: np.ndarray  # (6,)
    s0: float
    k0: float

    def __call__(self, t_source: Any, t_sink: Any) -> Any:
        s, k = (t_source - self.s0) / SCALE_K, (t_sink - self.k0) / SCALE_K
        c = self.coef
        return c[0] + c[1] * s + c[2] * k + c[3] * s * s + c[4] * s * k + c[5] * k * k

    def grad(self, t_source: Any, t_sink: Any) -> tuple[Any, Any]:
        """(d/dT_source, d/dT_sink) per kelvin."""
        s, k = (t_source - self.s0) / SCALE_K, (t_sink - self.k0) / SCALE_K
        c = self.coef
        return ((c[1] + 2 * c[3] * s + c[4] * k) / SCALE_K, (c[2] + c[4] * s + 2 * c[5] * k) / SCALE_K)


def fit_surface(t_source: np.ndarray, t_sink: np.ndarray, values: np.ndarray) -> Surface:
    """Least-squares polynomial through rating points; the terms follow the number of distinct points."""
    ts, tk, v = (np.asarray(a, dtype=float).reshape(-1) for a in (t_source, t_sink, values))
    s0, k0 = float(ts.mean()), float(tk.mean())
    s, k = (ts - s0) / SCALE_K, (tk - k0) / SCALE_K
    full = np.stack([np.ones_like(s), s, k, s * s, s * k, k * k], axis=1)
    n_distinct = len({(a, b) for a, b in zip(ts.tolist(), tk.tolist(), strict=True)})
    for size in (6, 4, 3, 1):
        cols = _TERM_SETS[size]
        if n_distinct < size:
            continue
        X = full[:, cols]
        if np.linalg.matrix_rank(X) < len(cols):
            continue  # e.g. all points at one sink temperature: no k² or sk information
        sol, *_ = np.linalg.lstsq(X, v, rcond=None)
        coef = np.zeros(6)
        coef[list(cols)] = sol
        return Surface(coef, s0, k0)
    raise ValueError("a rating table needs at least one point")


def check_surface(surf: Surface, t_source: np.ndarray, t_sink: np.ndarray, what: str) -> str | None:
    """None if the fitted surface stays positive over the rated box (and a margin), else the reason."""
    lo_s, hi_s = float(np.min(t_source)) - 5.0, float(np.max(t_source)) + 5.0
    lo_k, hi_k = float(np.min(t_sink)) - 5.0, float(np.max(t_sink)) + 5.0
    gs, gk = np.meshgrid(np.linspace(lo_s, hi_s, 31), np.linspace(lo_k, hi_k, 31))
    vals = surf(gs, gk)
    if np.min(vals) <= 0:
        i = int(np.argmin(vals))
        return (f"the {what} fitted to the rating points falls to {vals.flat[i]:.3g} at source "
                f"{gs.flat[i]:.1f} degC, sink {gk.flat[i]:.1f} degC")
    return None


# -- the part-load envelope ----------------------------------------------------------------------------------
def _where(cond: Any, a: Any, b: Any, xp: Any) -> Any:
    return xp.where(cond, a, b)


def envelope_power(q: Any, q_max: Any, cop: Any, p_run: Any, r_min: Any, kappa: Any, xp: Any = np) -> Any:
    """Electric power (W) of the duty-cycled envelope at average heat q (W), see the module docstring."""
    q = pos(q, xp)
    alpha = q_max / cop - p_run
    r_t = _best_ratio(p_run, alpha, kappa, r_min, xp)
    p_t = p_run + alpha * ((1 - kappa) * r_t + kappa * r_t * r_t)
    q_t = r_t * q_max
    r = q / q_max
    curve = p_run + alpha * ((1 - kappa) * r + kappa * r * r)
    inside = _where(q.real <= q_t.real, q * p_t / q_t, curve, xp)
    return _where(q.real <= q_max.real, inside, _beyond(q, q_max, cop, p_run, kappa, r_t, xp), xp)


def _beyond(q: Any, q_max: Any, cop: Any, p_run: Any, kappa: Any, r_t: Any, xp: Any) -> Any:
    """Above full load (the planner's bound may exceed Q_max at cold temperatures; the plant saturates):
    continue with the left slope at Q_max plus a quadratic penalty, so the extension stays convex and C¹
    and costs more per W than full load, never less."""
    s_q = _where(xp.real(r_t) >= 1.0, 1.0 / cop, (1 + kappa) / cop - (1 + kappa) * p_run / q_max, xp)
    dq = q - q_max
    return q_max / cop + s_q * dq + dq * dq / (cop * q_max)


def _best_ratio(p_run: Any, alpha: Any, kappa: Any, r_min: Any, xp: Any) -> Any:
    """r_t = clip(sqrt(P_run / (alpha kappa)), r_min, 1), 1 when kappa = 0 (complex-safe)."""
    ak = alpha * kappa
    interior = xp.real(ak) > 0
    r_star = xp.where(interior, xp.sqrt(p_run / xp.where(interior, ak, 1.0)), 1.0)
    r_star = xp.where(xp.real(r_star) < 1.0, r_star, 1.0)
    return xp.where(xp.real(r_star) > xp.real(r_min), r_star, r_min)


def envelope_jacobian(q: Any, q_max: Any, cop: Any, p_run: Any, r_min: Any, kappa: Any,
                      xp: Any = np) -> dict[str, Any]:
    """Partial derivatives of `envelope_power` wrt q, q_max, cop, p_run, r_min, kappa (real arrays).

    On the chord E = q g(r_t) with g(r) = (P_run / r + alpha (1 - kappa) + alpha kappa r) / Q_max; at an
    interior r_t = r*, dg/dr = 0, so every partial is taken at fixed r_t; when r_t = r_min it moves with
    r_min (dg/dr != 0 there); at r_t = 1 it is constant.
    """
    q = xp.maximum(q, 0.0)
    alpha = q_max / cop - p_run
    r_t = _best_ratio(p_run, alpha, kappa, r_min, xp)
    on_chord = q <= r_t * q_max
    g = (p_run / r_t + alpha * (1 - kappa) + alpha * kappa * r_t) / q_max
    # chord branch: E = q g
    c_q = g
    c_p = q / (r_t * q_max)
    c_alpha = q * (1 - kappa + kappa * r_t) / q_max
    c_kappa = q * alpha * (r_t - 1) / q_max
    c_qmax = -q * g / q_max
    at_min = (r_t == r_min) & (r_t < 1.0)
    c_rmin = _where(at_min, q * (-p_run / r_t**2 + alpha * kappa) / q_max, 0.0, xp)
    # curve branch: E = P_run + alpha ((1 - kappa) r + kappa r²), r = q / Q_max
    r = q / q_max
    slope = alpha * ((1 - kappa) + 2 * kappa * r)
    k_q = slope / q_max
    k_p = xp.ones_like(r)
    k_alpha = (1 - kappa) * r + kappa * r * r
    k_kappa = alpha * (r * r - r)
    k_qmax = -slope * r / q_max
    d_q = _where(on_chord, c_q, k_q, xp)
    d_p_direct = _where(on_chord, c_p, k_p, xp)
    d_alpha = _where(on_chord, c_alpha, k_alpha, xp)
    d_kappa = _where(on_chord, c_kappa, k_kappa, xp)
    d_qmax_direct = _where(on_chord, c_qmax, k_qmax, xp)
    d_rmin = _where(on_chord, c_rmin, 0.0, xp)
    # alpha = q_max / cop - p_run
    inside = {"q": d_q, "q_max": d_qmax_direct + d_alpha / cop, "cop": -d_alpha * q_max / cop**2,
              "p_run": d_p_direct - d_alpha, "r_min": d_rmin, "kappa": d_kappa}
    # above full load (see _beyond): E = Q/cop + s_q dq + dq² / (cop Q), dq = q - Q
    full = r_t >= 1.0
    s_q = _where(full, 1.0 / cop, (1 + kappa) / cop - (1 + kappa) * p_run / q_max, xp)
    ds_dq = _where(full, 0.0, (1 + kappa) * p_run / q_max**2, xp)
    ds_dcop = _where(full, -1.0 / cop**2, -(1 + kappa) / cop**2, xp)
    ds_dp = _where(full, 0.0, -(1 + kappa) / q_max, xp)
    ds_dk = _where(full, 0.0, 1.0 / cop - p_run / q_max, xp)
    dq = q - q_max
    beyond = {"q": s_q + 2 * dq / (cop * q_max),
              "q_max": 1.0 / cop + ds_dq * dq - s_q - 2 * dq / (cop * q_max) - dq * dq / (cop * q_max**2),
              "cop": -q_max / cop**2 + ds_dcop * dq - dq * dq / (cop**2 * q_max),
              "p_run": ds_dp * dq, "r_min": 0.0 * dq, "kappa": ds_dk * dq}
    over = q > q_max
    return {k: _where(over, beyond[k], inside[k], xp) for k in inside}


def modulating_power(q: Any, q_max: Any, cop: Any, p_run: Any, r_min: Any, kappa: Any, xp: Any = np) -> Any:
    """Electric power (W) of a unit that follows a heat or modulation demand by running continuously at
    r = q / Q_max (what a modulating unit's own controller does), cycling at r_min only below it. This is
    what the plant draws when told watts or a modulation: continuous low load pays P_run all step."""
    q = xp.maximum(q, 0.0)
    alpha = q_max / cop - p_run
    r = q / q_max
    curve = lambda v: p_run + alpha * ((1 - kappa) * v + kappa * v * v)  # noqa: E731
    low = r / r_min * curve(r_min)
    return xp.where(q > q_max, envelope_power(q, q_max, cop, p_run, r_min, kappa, xp),
                    xp.where(r >= r_min, curve(r), low))


def modulating_jacobian(q: Any, q_max: Any, cop: Any, p_run: Any, r_min: Any, kappa: Any,
                        xp: Any = np) -> dict[str, Any]:
    """Partial derivatives of `modulating_power` wrt q, q_max, cop, p_run, r_min, kappa (real arrays)."""
    q = xp.maximum(q, 0.0)
    alpha = q_max / cop - p_run
    r = q / q_max
    # r >= r_min: E = P_run + alpha ((1 - kappa) r + kappa r²)
    slope = alpha * ((1 - kappa) + 2 * kappa * r)
    k_alpha = (1 - kappa) * r + kappa * r * r
    curve = {"q": slope / q_max, "q_max": -slope * r / q_max + k_alpha / cop, "cop": -k_alpha * q_max / cop**2,
             "p_run": 1.0 - k_alpha, "r_min": 0.0 * r, "kappa": alpha * (r * r - r)}
    # r < r_min: E = q g(r_min), g(r) = (P_run / r + alpha (1 - kappa) + alpha kappa r) / Q_max
    g = (p_run / r_min + alpha * (1 - kappa) + alpha * kappa * r_min) / q_max
    c_alpha = q * (1 - kappa + kappa * r_min) / q_max
    low = {"q": g + 0.0 * q, "q_max": -q * g / q_max + c_alpha / cop, "cop": -c_alpha * q_max / cop**2,
           "p_run": q / (r_min * q_max) - c_alpha, "r_min": q * (-p_run / r_min**2 + alpha * kappa) / q_max,
           "kappa": q * alpha * (r_min - 1) / q_max}
    above = envelope_jacobian(q, q_max, cop, p_run, r_min, kappa, xp)
    over, below = q > q_max, r < r_min
    return {k: _where(over, above[k], _where(below, low[k], curve[k], xp), xp) for k in curve}


def operating_point(q: Any, q_max: Any, cop: Any, p_run: Any, r_min: Any, kappa: Any,
                    xp: Any = np) -> tuple[Any, Any]:
    """(duty, part-load ratio while running) that delivers the average heat q on the envelope."""
    q = xp.maximum(q, 0.0)
    alpha = q_max / cop - p_run
    r_t = _best_ratio(p_run, alpha, kappa, r_min, xp)
    q_t = r_t * q_max
    duty = xp.minimum(q / q_t, 1.0)
    ratio = xp.where(q <= q_t, r_t, q / q_max)
    return duty, ratio


# -- actuators -------------------------------------------------------------------------------------------
SURFACE_KEYS = tuple(f"capacity_c{i}" for i in range(6)) + tuple(f"cop_c{i}" for i in range(6))


def monomials(t_source: Any, t_sink: Any, s0: Any, k0: Any) -> list[Any]:
    """(1, s, k, s², sk, k²) at the scaled temperatures."""
    s, k = (t_source - s0) / SCALE_K, (t_sink - k0) / SCALE_K
    return [1.0 + 0 * s, s, k, s * s, s * k, k * k]


@dataclass
class RatedHeatPump(Actuator):
    """Heat pump from a rating table, duty-cycled envelope (see the module docstring).

    Input u: thermal power into the node (W, u >= 0). Reads x: the node (sink = node + sink_offset, e.g.
    the supply water above the slab); reads d: the source temperature (outdoor air). Parameters (theta):
    running_power, min_modulation, part_load_curvature, capacity_scale, cop_scale, sink_offset,
    duty_cycling (1: the unit is told a duty and runs on the envelope; 0: it follows a heat or modulation
    demand continuously, `modulating_power`; the site's device signal sets it), the two
    surfaces' coefficients capacity_c0..5 / cop_c0..5 and their centres t_source0, t_sink0. The surfaces
    live in theta so that actuators with different tables evaluate together, and calibration can fit them.
    """

    sign = 1.0  # +1: heats the node (heat pump); -1: cools it (chiller)

    def temperatures(self, theta: Any, x: Any, d: Any) -> tuple[Any, Any]:
        return d[..., 0], x[..., 0] + self.p(theta, "sink_offset")

    def rated(self, theta: Any, t_source: Any, t_sink: Any) -> tuple[Any, Any]:
        """(full-load capacity W, full-load COP/EER) at the given temperatures."""
        m = monomials(t_source, t_sink, self.p(theta, "t_source0"), self.p(theta, "t_sink0"))
        cap = sum(self.p(theta, f"capacity_c{i}") * m[i] for i in range(6))
        cop = sum(self.p(theta, f"cop_c{i}") * m[i] for i in range(6))
        return self.p(theta, "capacity_scale") * cap, self.p(theta, "cop_scale") * cop

    def _args(self, theta: Any, u: Any, x: Any, d: Any) -> tuple:
        ts, tk = self.temperatures(theta, x, d)
        qmax, cop = self.rated(theta, ts, tk)
        return self.sign * u[..., 0], qmax, cop, self.p(theta, "running_power"), self.p(theta, "min_modulation"), \
            self.p(theta, "part_load_curvature")

    def power(self, theta, u, x, d, xp=np):
        args = self._args(theta, u, x, d)
        c = self.p(theta, "duty_cycling")
        el = c * envelope_power(*args, xp=xp) + (1 - c) * modulating_power(*args, xp=xp)
        return el, 0 * el, u[..., 0]

    def electric_jacobian(self, theta: np.ndarray, u: Any, x: Any, d: Any, xp: Any = np) -> dict[str, Any]:
        """dP_el / d(u, x node, d source, and each named parameter), elementwise over the leading axes."""
        q, qmax, cop, p_run, r_min, kappa = self._args(theta, u, x, d)
        ts, tk = self.temperatures(theta, x, d)
        c = self.p(theta, "duty_cycling")
        Je = envelope_jacobian(q, qmax, cop, p_run, r_min, kappa, xp)
        Jm = modulating_jacobian(q, qmax, cop, p_run, r_min, kappa, xp)
        J = {k: c * Je[k] + (1 - c) * Jm[k] for k in Je}
        sc, so = self.p(theta, "capacity_scale"), self.p(theta, "cop_scale")
        m = monomials(ts, tk, self.p(theta, "t_source0"), self.p(theta, "t_sink0"))
        c = [self.p(theta, f"capacity_c{i}") for i in range(6)]
        e = [self.p(theta, f"cop_c{i}") for i in range(6)]
        s, k = m[1], m[2]
        # d(surface)/d(scaled s, k): the centres move s and k the other way
        dc_s, dc_k = c[1] + 2 * c[3] * s + c[4] * k, c[2] + c[4] * s + 2 * c[5] * k
        de_s, de_k = e[1] + 2 * e[3] * s + e[4] * k, e[2] + e[4] * s + 2 * e[5] * k
        d_s = J["q_max"] * sc * dc_s + J["cop"] * so * de_s     # per unit of scaled s
        d_k = J["q_max"] * sc * dc_k + J["cop"] * so * de_k
        out = {"u": self.sign * J["q"], "x": d_k / SCALE_K, "d": d_s / SCALE_K,
               "running_power": J["p_run"], "min_modulation": J["r_min"], "part_load_curvature": J["kappa"],
               "capacity_scale": J["q_max"] * qmax / sc, "cop_scale": J["cop"] * cop / so,
               "sink_offset": d_k / SCALE_K, "t_source0": -d_s / SCALE_K, "t_sink0": -d_k / SCALE_K}
        out["duty_cycling"] = (envelope_power(q, qmax, cop, p_run, r_min, kappa, xp)
                               - modulating_power(q, qmax, cop, p_run, r_min, kappa, xp))
        for i in range(6):
            out[f"capacity_c{i}"] = J["q_max"] * sc * m[i]
            out[f"cop_c{i}"] = J["cop"] * so * m[i]
        return out

    def modulating_power(self, theta: np.ndarray, u: Any, x: Any, d: Any, xp: Any = np) -> Any:
        """Electric power when the unit follows the heat continuously (see `modulating_power`)."""
        return modulating_power(*self._args(theta, u, x, d), xp=xp)

    def operating_point(self, theta: np.ndarray, u: Any, x: Any, d: Any, xp: Any = np) -> tuple[Any, Any, Any]:
        """(duty, part-load ratio while running, full-load capacity W) for planned heat u."""
        q, qmax, cop, p_run, r_min, kappa = self._args(theta, u, x, d)
        duty, ratio = operating_point(q, qmax, cop, p_run, r_min, kappa, xp)
        return duty, ratio, qmax


@dataclass
class RatedChiller(RatedHeatPump):
    """Chiller from a rating table (EER against outdoor and chilled-water temperature): u <= 0 cools the node."""

    sign = -1.0


@dataclass
class CondensingBoiler(Actuator):
    """Gas boiler whose efficiency falls with the return temperature (condensing stops above the dew point).

    eta(T_ret) = eta_noncondensing + (eta_condensing - eta_noncondensing) / (1 + exp((T_ret - dew_point) / width))
    with T_ret the node it heats (the water returning to the boiler). Gas = q / eta. The burner fan draws
    fan_power while firing; with cycling at full fire (the cheapest way to deliver an average below the
    minimum modulation when the fan power is fixed) electric power is fan_power * q / capacity.
    """

    capacity: float = 0.0

    def efficiency(self, theta: Any, t_ret: Any, xp: Any = np) -> Any:
        hi, lo = self.p(theta, "eta_condensing"), self.p(theta, "eta_noncondensing")
        z = (t_ret - self.p(theta, "dew_point")) / self.p(theta, "width")
        return lo + (hi - lo) / (1 + xp.exp(z))

    def power(self, theta, u, x, d, xp=np):
        q = pos(u[..., 0], xp)
        eta = self.efficiency(theta, x[..., 0], xp)
        return self.p(theta, "fan_power") * q / self.capacity, q / eta, u[..., 0]

    def jacobian(self, theta: np.ndarray, u: Any, x: Any, xp: Any = np) -> dict[str, dict[str, Any]]:
        """{"gas": {...}, "el": {...}}: derivatives wrt u, x (return temperature) and the parameters."""
        q = xp.maximum(u[..., 0], 0.0)
        on = u[..., 0] > 0
        hi, lo = self.p(theta, "eta_condensing"), self.p(theta, "eta_noncondensing")
        w, td = self.p(theta, "width"), self.p(theta, "dew_point")
        z = (x[..., 0] - td) / w
        sig = 1 / (1 + xp.exp(z))              # condensing share
        eta = lo + (hi - lo) * sig
        dsig_dz = -sig * (1 - sig)
        deta_dt = (hi - lo) * dsig_dz / w
        g = -q / eta**2                          # d gas / d eta
        gas = {"u": xp.where(on, 1 / eta, 0.0), "x": g * deta_dt, "eta_condensing": g * sig,
               "eta_noncondensing": g * (1 - sig), "dew_point": g * (-deta_dt),
               "width": g * (hi - lo) * dsig_dz * (-z / w), "fan_power": 0 * q}
        fan = self.p(theta, "fan_power")
        el = {"u": xp.where(on, fan / self.capacity, 0.0), "x": 0 * q, "fan_power": q / self.capacity}
        return {"gas": gas, "el": el}

