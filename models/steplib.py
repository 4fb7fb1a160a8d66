"""Built-in step components (models.custom.StepComponent), registered under their YAML type names.

`tank_pipe_slab`: the hydronic loop of PassiveLogic's public BuildingSimulation benchmark. It is written
from that benchmark's published equations and constants; no code is copied. A tank feeds water through a
pipe of tubes embedded in a floor slab. The three states are the tank, the water in the pipe (the
"quanta" at the end of the previous step) and the slab, in °C. One step of length dt:

    P1  = m_dot cp_w (T_tank - T_pipe)             water leaves the tank at T_tank
    T_tank += P1 dt / (cp_tank V_tank rho_tank)
    T_w  = T_pipe + P1 / (cp_w m_dot)               the pipe water takes the tank's temperature
    P2  = (T_slab - T_w) / R,  R = c_geo r_tube t_tube / (A_slab / s_tube * pi * d_tube)
    T_pipe = T_w + P2 / (cp_w m_dot)                 the water picks up the slab's heat
    T_slab -= P2 dt / (cp_slab A_slab t_slab rho_slab)

with m_dot = flow * rho_w. It is the benchmark's explicit discrete map. It is affine in the state, so the
simulator folds it into one step matrix.

The map is explicit, so its distance from the continuous-time limit of these equations grows with dt:
at the benchmark's 0.1 s it is 0.047 K at most over 24 h against an LSODA reference (while the loop
settles, in the first minute). `substeps: N` applies the same map N times with dt / N inside each step
(0.0047 K at N = 10). The composition is still affine and still folded into one step matrix at compile
time, so substeps cost nothing per step. The benchmark itself uses N = 1.

Its parameters are named `<component>.<key>`. The keys:
tube_spacing, tube_diameter, tube_thickness, tube_resistivity, geometry_coefficient, slab_area,
slab_specific_heat, slab_density, slab_thickness, flow, fluid_density, fluid_specific_heat, tank_volume,
tank_density, tank_specific_heat. Optional: substeps (default 1).
"""

from __future__ import annotations

import math
from typing import Any

from models.custom import StepComponent, register_component

_KEYS = (  # (key, unit) in the order of p
    ("tube_spacing", "m"), ("tube_diameter", "m"), ("tube_thickness", "m"), ("tube_resistivity", "m.K/W"),
    ("geometry_coefficient", None), ("slab_area", "m2"), ("slab_specific_heat", "J/(kg.K)"),
    ("slab_density", "kg/m3"), ("slab_thickness", "m"), ("flow", "m3/s"), ("fluid_density", "kg/m3"),
    ("fluid_specific_heat", "J/(kg.K)"), ("tank_volume", "m3"), ("tank_density", "kg/m3"),
    ("tank_specific_heat", "J/(kg.K)"),
)


@register_component("tank_pipe_slab")
class TankPipeSlab(StepComponent):
    """nodes and reads_x: [tank, pipe, slab]."""

    affine_in_state = True

    def setup(self, cfg: Any) -> None:
        if len(self.nodes) != 3 or self.nodes != self.reads_x:
            raise cfg.get("nodes").error("tank_pipe_slab owns three states and reads them",
                                         expected="nodes and reads_x both [tank, pipe, slab]")
        if self.reads_u or self.reads_d:
            raise cfg.error("tank_pipe_slab reads no inputs or disturbances",
                            expected="no reads_u and no reads_d")
        for key, unit in _KEYS:
            self.param(cfg, key, unit=unit, default=10.0 if key == "geometry_coefficient" else None,
                       positive=True)
        self.substeps = 1
        if cfg.has("substeps"):
            n = cfg.get("substeps")
            if not isinstance(n.value, int) or isinstance(n.value, bool) or n.value < 1:
                raise n.error("substeps must be a positive whole number", expected="an integer >= 1",
                              found=n.value)
            self.substeps = n.value

    def step(self, x, u, d, p, dt, xp):
        h = dt / self.substeps
        y = x
        for _ in range(self.substeps):
            y = y + self._step1(y, p, h, xp)
        return y - x

    def step_vjp(self, x, u, d, p, dt, gout, xp):
        if self.substeps == 1:
            return self._vjp1(x, p, dt, gout, xp)
        h = dt / self.substeps
        ys = [x]
        for _ in range(self.substeps - 1):
            ys.append(ys[-1] + self._step1(ys[-1], p, h, xp))
        # delta = y_N - y_0: the cotangent of y_N is gout; each substep y + s(y) passes a + s_y^T a back.
        a, g_p = gout, None
        for y in reversed(ys):
            g_y, _, _, g_pi = self._vjp1(y, p, h, a, xp)
            a = a + g_y
            g_p = g_pi if g_p is None else g_p + g_pi
        return a - gout, None, None, g_p

    @staticmethod
    def _coefficients(p: Any, dt: float) -> tuple:
        sp, diam, thk, res, geo, a_s, cp_s, rho_s, th_s, flow, rho_w, cp_w, v_t, rho_t, cp_t = (
            p[i] for i in range(15))
        mdot = flow * rho_w
        area_t = a_s / sp * math.pi * diam
        g = area_t / (res * thk * geo)          # 1 / R
        a_t = dt / (cp_t * v_t * rho_t)         # K per J in the tank
        a_q = 1.0 / (cp_w * mdot)               # K per W of the flowing water
        a_sl = dt / (cp_s * a_s * th_s * rho_s)  # K per J in the slab
        return mdot * cp_w, a_t, a_q, g, a_sl

    def _step1(self, x, p, dt, xp):
        mc, a_t, a_q, g, a_sl = self._coefficients(p, dt)
        t_tank, t_pipe, t_slab = x[:, 0], x[:, 1], x[:, 2]
        p1 = mc * (t_tank - t_pipe)
        t_w = t_pipe + a_q * p1
        p2 = g * (t_slab - t_w)
        return xp.stack([a_t * p1, (t_w - t_pipe) + a_q * p2, -a_sl * p2], axis=1)

    def _vjp1(self, x, p, dt, gout, xp):
        mc, a_t, a_q, g, a_sl = self._coefficients(p, dt)
        t_tank, t_pipe, t_slab = x[:, 0], x[:, 1], x[:, 2]
        e1 = t_tank - t_pipe
        p1 = mc * e1
        t_w = t_pipe + a_q * p1
        e2 = t_slab - t_w
        p2 = g * e2
        gt, gq, gs = gout[:, 0], gout[:, 1], gout[:, 2]
        # Reverse sweep through the assignments above.
        g_p2 = a_q * gq - a_sl * gs
        g_aq = gq * p2
        g_asl = -gs * p2
        g_g = g_p2 * e2
        g_e2 = g_p2 * g
        g_tw = gq - g_e2
        g_tpipe = g_tw - gq
        g_aq = g_aq + g_tw * p1
        g_p1 = g_tw * a_q + gt * a_t
        g_at = gt * p1
        g_mc = g_p1 * e1
        g_e1 = g_p1 * mc
        g_x = xp.stack([g_e1, g_tpipe - g_e1, g_e2], axis=1)
        # Parameters: through mc = flow rho_w cp_w, a_q = 1 / mc, g = area_t / (res thk geo), a_t, a_sl.
        sp, diam, thk, res, geo, a_s, cp_s, rho_s, th_s, flow, rho_w, cp_w, v_t, rho_t, cp_t = (
            p[i] for i in range(15))
        # Every parameter enters through four products, so the batch sums come first and the parameter
        # gradient is a handful of scalar operations (the simulator only needs the sum over rows).
        g_lnmc = xp.sum(g_mc) * mc - xp.sum(g_aq) * a_q   # d/d(log mc): mc and a_q = 1/mc
        g_lng = xp.sum(g_g) * g                            # d/d(log g)
        g_lnat = xp.sum(g_at) * a_t
        g_lnasl = xp.sum(g_asl) * a_sl
        g_p = xp.stack([
            -g_lng / sp, g_lng / diam, -g_lng / thk, -g_lng / res, -g_lng / geo,
            (g_lng - g_lnasl) / a_s, -g_lnasl / cp_s, -g_lnasl / rho_s, -g_lnasl / th_s,
            g_lnmc / flow, g_lnmc / rho_w, g_lnmc / cp_w,
            -g_lnat / v_t, -g_lnat / rho_t, -g_lnat / cp_t,
        ])
        return g_x, None, None, g_p
