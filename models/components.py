"""Actuators: how a decision variable becomes heat in the network and power at the meter.

Heat enters the network linearly (ideal heater, heat pump, boiler: thermal power is the decision) or
bilinearly (VAV supply air, hydronic pump flow: mass flow times a temperature difference), see
models.network.FlowTerm. Electric and gas power are pointwise functions of the actuator's own inputs and
the few states and disturbances it reads; they are written with complex-safe operations so that
models.simulator can take their exact elementwise derivatives by complex step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CP_AIR = 1005.0     # J/(kg K)
RHO_AIR = 1.2       # kg/m3
CP_WATER = 4186.0   # J/(kg K)
KELVIN = 273.15


def pos(v: Any, xp: Any = np) -> Any:
    """max(v, 0) that passes a complex perturbation through on the active side (complex-step safe)."""
    if hasattr(xp, "iscomplexobj"):  # NumPy, CuPy
        if not xp.iscomplexobj(v):
            return xp.maximum(v, 0)
        return xp.where(v.real > 0, v, 0)
    if not xp.isdtype(v.dtype, "complex floating"):  # the array API standard's spelling
        return xp.maximum(v, 0)
    return xp.where(xp.real(v) > 0, v, 0)


_COP_CAP_K = 1.0  # width of the smooth COP cap of HeatPump, in kelvin of lift


def _softplus(z: Any, xp: Any = np) -> Any:
    """log(1 + e^z), analytic (complex-step safe) and without overflow: max(z, 0) + log1p(e^-|z|)."""
    a = xp.where(re(z, xp) > 0, z, -z)
    return xp.where(re(z, xp) > 0, z, 0 * z) + xp.log1p(xp.exp(-a))


def re(v: Any, xp: Any = np) -> Any:
    """The real part of a possibly complex-step-perturbed array (an attribute on NumPy, a function in the standard)."""
    if hasattr(v, "real"):
        return v.real
    return xp.real(v) if xp.isdtype(v.dtype, "complex floating") else v


@dataclass
class Actuator:
    """Base: `inputs` are input columns, `reads_x`/`reads_d` the states/disturbances power depends on."""

    name: str
    kind: str
    inputs: list[int]
    unit: str = "W"
    reads_x: list[int] = field(default_factory=list)
    reads_d: list[int] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)   # local name -> theta index

    def p(self, theta: Any, key: str) -> Any:
        return theta[self.params[key]]

    def power(self, theta: Any, u: Any, x: Any, d: Any, xp: Any = np) -> tuple[Any, Any, Any]:
        """(electric W, gas W, thermal W delivered) for u (..., len(inputs)), x (..., len(reads_x)), d."""
        raise NotImplementedError

    def linear_coeffs(self, theta: np.ndarray) -> tuple[float, float, float, float] | None:
        """(el_pos, el_neg, gas_pos, gas_neg) when power is piecewise-linear in one input, else None."""
        return None

    def power_input_slopes(self, theta: Any, u: Any, xp: Any = np) -> tuple[Any, Any] | None:
        """d(el)/du and d(gas)/du where power depends on the actuator's own input only (saves the complex
        step), else None."""
        return None

    def power_partials(self, theta: Any, u: Any, x: Any, d: Any, xp: Any = np) -> tuple | None:
        """Exact partial derivatives of (el, gas) by hand, or None to have them taken by complex step.

        Returns three tuples (inputs, reads_x, reads_d), one (d el, d gas) pair per column; None stands
        for a zero derivative. Tests check every implementation against the complex step."""
        return None


@dataclass
class IdealHVAC(Actuator):
    """Thermal power u in [-cooling, +heating] W delivered to a zone; COP per mode (1.0 = resistance)."""

    heating_fuel: str = "electric"

    def power(self, theta, u, x, d, xp=np):
        q = u[..., 0]
        heat, cool = pos(q, xp), pos(-q, xp)
        cool_el = cool / self.p(theta, "cop_cooling")
        if self.heating_fuel == "gas":
            return cool_el, heat / self.p(theta, "efficiency"), q
        return heat / self.p(theta, "cop_heating") + cool_el, 0 * q, q

    def power_input_slopes(self, theta, u, xp=np):
        q = u[..., 0]
        heating = q > 0
        cool = -1 / self.p(theta, "cop_cooling")
        if self.heating_fuel == "gas":
            return xp.where(heating, 0.0, cool), xp.where(heating, 1 / self.p(theta, "efficiency"), 0.0)
        return xp.where(heating, 1 / self.p(theta, "cop_heating"), cool), None

    def linear_coeffs(self, theta):
        if self.heating_fuel == "gas":
            return 0.0, 1 / theta[self.params["cop_cooling"]], 1 / theta[self.params["efficiency"]], 0.0
        return 1 / theta[self.params["cop_heating"]], 1 / theta[self.params["cop_cooling"]], 0.0, 0.0


@dataclass
class Boiler(Actuator):
    """Gas boiler: thermal power u in [0, capacity] W, gas = u / efficiency."""

    def power(self, theta, u, x, d, xp=np):
        q = u[..., 0]
        return 0 * q, q / self.p(theta, "efficiency"), q

    def linear_coeffs(self, theta):
        return 0.0, 0.0, 1 / theta[self.params["efficiency"]], 0.0


@dataclass
class HeatPump(Actuator):
    """Air-to-water heat pump delivering u W to a water node.

    COP = carnot_efficiency * T_supply / (T_supply - T_source) in kelvin, with T_supply the water node
    plus a condenser approach, capped at max_cop (a real unit's COP does not diverge at small lifts). The cap
    is smooth: the lift is min_lift + w softplus((lift - min_lift) / w) with w = 1 K, so the COP bends over to
    max_cop within a few kelvin instead of at a corner (a corner in the meter is a kink that gradient-based
    planners, which like to sit right on it, cannot converge at; 5 K above it the two differ by 7e-3 K of
    lift, 10 K above by 5e-5 K).
    """

    def cop(self, theta, t_water, t_source, xp=np):
        t_sup = t_water + self.p(theta, "supply_offset") + KELVIN
        lift = t_sup - (t_source + KELVIN)
        min_lift = t_sup * self.p(theta, "carnot_efficiency") / self.p(theta, "max_cop")
        lift = min_lift + _COP_CAP_K * _softplus((lift - min_lift) / _COP_CAP_K, xp)
        return self.p(theta, "carnot_efficiency") * t_sup / lift

    def power(self, theta, u, x, d, xp=np):
        q = u[..., 0]
        return q / self.cop(theta, x[..., 0], d[..., 0], xp), 0 * q, q

    def power_partials(self, theta, u, x, d, xp=np):
        # el = q L / (eta T_sup), L = m + w softplus((lift - m) / w), m = T_sup eta / max_cop, lift = T_sup - T_src.
        q = u[..., 0]
        eta = self.p(theta, "carnot_efficiency")
        t_sup = x[..., 0] + (self.p(theta, "supply_offset") + KELVIN)
        t_src = d[..., 0] + KELVIN
        slope_m = eta / self.p(theta, "max_cop")          # dm / dT_sup
        m = t_sup * slope_m
        z = (t_sup - t_src - m) / _COP_CAP_K
        sig = 0.5 * (1.0 + xp.tanh(0.5 * z))              # softplus' = logistic, without overflow
        lift = m + _COP_CAP_K * _softplus(z, xp)
        inv = 1.0 / (eta * t_sup)
        d_q = lift * inv
        q_inv = q * inv
        d_water = q_inv * (slope_m + sig * (1.0 - slope_m) - lift / t_sup)
        d_source = -q_inv * sig
        return ((d_q, None),), ((d_water, None),), ((d_source, None),)


@dataclass
class VAV(Actuator):
    """Supply air: inputs flow (kg/s) and supply temperature (°C). Heat to zone m cp (Ts - Tz).

    The coil conditions mixed air (outdoor fraction f of outdoor air, the rest return air) to Ts:
    heating share / efficiency (electric or gas), cooling share / cooling COP; fan P = P_max (m/m_max)^3.
    """

    coil_fuel: str = "electric"

    def power(self, theta, u, x, d, xp=np):
        m, ts = u[..., 0], u[..., 1]
        tz, tout = x[..., 0], d[..., 0]
        f = self.p(theta, "outdoor_fraction")
        t_mix = f * tout + (1 - f) * tz
        coil = m * CP_AIR * (ts - t_mix)
        heat, cool = pos(coil, xp), pos(-coil, xp)
        fan = self.p(theta, "fan_power") * (m / self.p(theta, "max_flow")) ** 3
        el = fan + cool / self.p(theta, "cop_cooling")
        if self.coil_fuel == "gas":
            return el, heat / self.p(theta, "efficiency"), m * CP_AIR * (ts - tz)
        return el + heat / self.p(theta, "efficiency"), 0 * m, m * CP_AIR * (ts - tz)


@dataclass
class Pump(Actuator):
    """Hydronic circulator: input flow (kg/s); electric P = P_max (m/m_max)^3 (affinity laws)."""

    def power(self, theta, u, x, d, xp=np):
        m = u[..., 0]
        el = self.p(theta, "pump_power") * (m / self.p(theta, "max_flow")) ** 3
        return el, 0 * m, 0 * m

    def power_input_slopes(self, theta, u, xp=np):
        # The derivative by hand: the pump reads no state or disturbance, so this replaces a complex step.
        m = u[..., 0]
        mx = self.p(theta, "max_flow")
        return m * m * (3 * self.p(theta, "pump_power") / (mx * mx * mx)), None
