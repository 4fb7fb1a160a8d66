"""The compiled building: batched simulation and exact adjoint gradients, written once against `xp`.

Two integrators, both exact zero-order hold (inputs and disturbances held over each step):
- linear networks (walls, windows, ideal heaters, heat pumps, boilers, state-space blocks) run through
  models.linear in modal form: a few array calls for the whole horizon, forward and adjoint;
- networks with bilinear flow terms (VAV supply air, pumped water loops) or custom components take one
  matrix exponential per step of [[A(u_k), b(u_k, d_k)], [0, 0]] (A depends on the flow), which is still
  exact for held inputs; the adjoint runs the adjoint Fréchet derivative of each step's exponential.
Meter power (electric, gas) is a pointwise function per actuator; its elementwise derivatives are taken
by complex step, exact to rounding. Parameter gradients chain dJ/d(continuous matrices) with the
complex-step derivative of the assembly (models.network.assemble).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.backend import get_xp, to_host, xp_dtype
from models.expm import expm, expm_frechet_adjoint
from models.flowpath import FlowPath, FlowTape
from models.linear import LinearModel
from models.meters import MeterMixin, _gather_sum, _group_actuators
from models.stepmap import StepPath, _mm

if TYPE_CHECKING:  # the network compiles itself into a simulator: a type-only reference back
    from models.network import Network

_H = 1e-30  # complex-step size: no subtractive cancellation, so it can be tiny
_KEEP_EXP_ELEMENTS = 64 * 2**20  # keep the forward pass's step exponentials up to 512 MB (float64)


@dataclass
class Trajectory:
    """A batched simulation: zones/sensors at x[1..K], powers over each step, per actuator."""

    x0: Any
    u: Any
    d: Any
    zones: Any      # (B, K, nz) °C
    sensors: Any    # (B, K, ns)
    p_el: Any       # (B, K, n_actuators) W
    p_gas: Any      # (B, K, n_actuators) W
    q_th: Any       # (B, K, n_actuators) W thermal
    _sim: Any = field(repr=False, default=None)
    _z: Any = field(repr=False, default=None)      # modal trajectory (linear path)
    _x: Any = field(repr=False, default=None)      # states (bilinear path, or cached)
    _slopes: Any = field(repr=False, default=None)  # d(meter power)/du of piecewise-linear meters
    _exps: Any = field(repr=False, default=None)    # step exponentials of the bilinear path, per chunk

    @property
    def z(self) -> Any:
        """Modal trajectory (linear path), recomputed on demand when the fast pass did not keep it."""
        if self._z is None:
            self._z = self._sim.linear.modal_trajectory(self.x0, self.u, self.d)
        return self._z

    @property
    def x(self) -> Any:
        """States (B, K+1, n); computed on first access on the linear path."""
        if self._x is None:
            self._x = self._sim.linear.states(self.z)
        return self._x


@dataclass
class Gradient:
    u: Any                      # (B, K, nu)
    x0: Any                     # (B, n)
    d: Any | None = None        # (B, K, nd)
    params: dict[str, float] = field(default_factory=dict)


class Simulator(MeterMixin):
    """A building compiled at control step `dt` for one backend and dtype."""

    def __init__(self, net: Network, dt: float, *, backend: str = "numpy", dtype: str = "float64",
                 theta: np.ndarray | None = None) -> None:
        self.net = net
        self.dt = float(dt)
        self.xp, self.backend = get_xp(backend)
        self.dtype = np.dtype(dtype)
        self.xdtype = xp_dtype(self.xp, self.dtype)  # the same dtype as the array namespace spells it
        self.theta = net.params.theta() if theta is None else np.asarray(theta, dtype=float)
        self.n, self.nu, self.nd = net.n, len(net.inputs), len(net.disturbances)
        self.state_names = list(net.nodes)
        self.input_names = [i.name for i in net.inputs]
        self.input_units = [i.unit for i in net.inputs]
        self.disturbance_names = list(net.disturbances)
        self.zone_names = [z.name for z in net.zones]
        self.sensor_names = [s for s, _ in net.sensors]
        self.actuator_names = [a.name for a in net.actuators]
        self.floor_area = float(sum(z.floor_area for z in net.zones))
        self.u_min = np.array([i.lower for i in net.inputs])
        self.u_max = np.array([i.upper for i in net.inputs])
        self.x_initial = np.array(net.initial, dtype=float)
        self.Cz, self.Cs = net.output_matrices()
        self.nz, self.ns = self.Cz.shape[0], self.Cs.shape[0]
        self._compile()

    # -- compilation ------------------------------------------------------------------------------
    def _compile(self) -> None:
        xp = self.xp
        mats = self.net.assemble(self.theta)
        self.mats = mats
        step_comps = [c for c in self.net.custom if getattr(c, "kind", "heat") == "step"]
        heat_comps = [c for c in self.net.custom if getattr(c, "kind", "heat") != "step"]
        if step_comps and mats["flows"]:
            raise ValueError("step components cannot yet be combined with bilinear flows (pumps, VAV) in one model")
        self.step_path: StepPath | None = None
        self.flow_path: FlowPath | None = None
        # Heat components run on the step-map path (their heat held over the step through the exact ZOH),
        # unless flows make the model bilinear: then the per-step matrix exponential path holds both.
        self.bilinear = bool(mats["flows"])
        self._legacy_heat = bool(heat_comps) and self.bilinear
        # Sensors that read a zone node exactly are not computed twice.
        rows: list[np.ndarray] = []
        def row_index(r: np.ndarray) -> int:
            for i, q in enumerate(rows):
                if np.array_equal(q, r):
                    return i
            rows.append(r)
            return len(rows) - 1
        self._zone_rows = np.array([row_index(r) for r in self.Cz], dtype=int)
        self._sensor_rows = np.array([row_index(r) for r in self.Cs], dtype=int)
        Cy = np.array(rows) if rows else np.zeros((0, self.n))
        self.ny = Cy.shape[0]
        self._lookups: dict[tuple[str, ...], list[int]] = {}  # parameter names -> theta indices
        self._zone_sel, self._sensor_sel = self._selector(self._zone_rows), self._selector(self._sensor_rows)
        self._zones_are_outputs = bool(np.array_equal(self._zone_rows, np.arange(self.ny)))
        self.linear: LinearModel | None = None
        if (step_comps or heat_comps) and not self.bilinear:
            self.step_path = StepPath(mats, step_comps + heat_comps, self.theta, self.dt, xp, self.dtype,
                                      self.xdtype)
            self._Cy = xp.asarray(Cy.astype(self.dtype))
            self._Cy_t = xp.asarray(np.ascontiguousarray(Cy.T).astype(self.dtype))
        elif not self.bilinear:
            self.linear = LinearModel(mats["Ac"], mats["Bc"], mats["Ec"], Cy, self.dt, caps=mats["caps"],
                                      xp=xp, dtype=self.dtype)
        else:
            self.flow_path = None
            if not heat_comps:
                fp = FlowPath(mats, self.u_min, self.u_max, self.dt, xp, self.dtype, self.xdtype)
                self.flow_path = fp if fp.ok else None
            self._Ac = xp.asarray(mats["Ac"].astype(self.dtype))
            self._Bc = xp.asarray(mats["Bc"].astype(self.dtype))
            self._Ec = xp.asarray(mats["Ec"].astype(self.dtype))
            self._flows = [(j, other, xp.asarray(P.astype(self.dtype)), xp.asarray(p.astype(self.dtype)))
                           for j, other, P, p in mats["flows"]]
            self._Cy = xp.asarray(Cy.astype(self.dtype))
            self._Cz_rows = xp.asarray(np.ascontiguousarray(Cy[self._zone_rows]).astype(self.dtype))
            self._inv_c = 1.0 / xp.asarray(mats["caps"].astype(self.dtype))
        self._groups = _group_actuators(self.net.actuators, self.xp)
        self._meter_reads_x: bool | None = None  # whether any meter reads a state (models.meters, on first use)
        order = np.concatenate([g.index for g in self._groups]) if self._groups else np.zeros(0, dtype=int)
        # Where each actuator sits among the groups' concatenated columns (None: already in order).
        self._group_order = None if np.array_equal(order, np.arange(len(order))) else xp.asarray(np.argsort(order))
        coeffs = [a.linear_coeffs(self.theta) for a in self.net.actuators]
        self.power_coeffs: dict[str, np.ndarray] | None = None
        if all(c is not None for c in coeffs) and all(len(a.inputs) == 1 for a in self.net.actuators):
            pc = np.zeros((4, self.nu))
            for a, c in zip(self.net.actuators, coeffs, strict=True):
                pc[:, a.inputs[0]] = c
            self.power_coeffs = dict(zip(("el_pos", "el_neg", "gas_pos", "gas_neg"), pc, strict=True))
        self._reads_states = any(a.reads_x for a in self.net.actuators)
        in_order = [a.inputs[0] for a in self.net.actuators] == list(range(self.nu))
        self._pc = None
        if self.power_coeffs is not None and in_order:
            self._pc = tuple(self.xp.asarray(v.astype(self.dtype)) for v in pc)
            self._has_gas = bool(np.any(pc[2:] != 0))

    def with_params(self, updates: dict[str, float]) -> Simulator:
        """A new simulator with some named parameters changed (calibration, sensitivity studies)."""
        theta = self.theta.copy()
        for name, idx in zip(updates, self.net.params.lookup(list(updates)), strict=True):
            theta[idx] = updates[name]
        return Simulator(self.net, self.dt, backend=self.backend, dtype=str(self.dtype), theta=theta)

    def asarray(self, a: Any) -> Any:
        return self.xp.asarray(a, dtype=self.xdtype)

    def initial_state(self, batch: int = 1) -> Any:
        return self.xp.asarray(np.ascontiguousarray(np.broadcast_to(self.x_initial, (batch, self.n)), dtype=self.dtype))

    # -- forward ----------------------------------------------------------------------------------
    def simulate(self, x0: Any, u: Any, d: Any) -> Trajectory:
        """x0 (B, n), u (B, K, nu), d (B, K, nd) -> Trajectory."""
        x0, u, d = self.asarray(x0), self.asarray(u), self.asarray(d)
        if self.linear is not None:
            # The modal trajectory is kept only when meters read states; Trajectory.x recomputes it.
            z, y = self.linear.forward(x0, u, d, keep_z=self._reads_states)
            traj = Trajectory(x0, u, d, self._take(y, self._zone_sel), self._take(y, self._sensor_sel),
                              None, None, None, self, _z=z)
        elif self.step_path is not None:
            x = self.step_path.forward(x0, u, d)
            y = _mm(x[:, 1:, :], self._Cy_t, self.xp) if self.ny else None
            traj = Trajectory(x0, u, d, self._take(y, self._zone_sel) if self.nz else None,
                              self._take(y, self._sensor_sel) if self.ns else None, None, None, None, self, _x=x)
        elif self.flow_path is not None and self.flow_path.in_range(u):
            x, tape = self.flow_path.forward(x0, u, d)
            y = _mm(x[:, 1:, :], self._Cy.T, self.xp)
            traj = Trajectory(x0, u, d, self._take(y, self._zone_sel), self._take(y, self._sensor_sel),
                              None, None, None, self, _x=x)
            traj._flow = tape if tape is not None else True
        else:
            x, exps = self._bilinear_forward(x0, u, d)
            y = x[:, 1:] @ self._Cy.T
            traj = Trajectory(x0, u, d, self._take(y, self._zone_sel), self._take(y, self._sensor_sel),
                              None, None, None, self, _x=x)
            traj._exps = exps
        traj.p_el, traj.p_gas, traj.q_th = self._powers(traj, self.theta)
        return traj

    def _selector(self, rows: np.ndarray) -> Any:
        """How `_take` picks `rows` of the outputs: a slice where they are contiguous (a view), else indices."""
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            return slice(int(rows[0]), int(rows[0]) + len(rows))
        return rows if self.xp is np else self.xp.asarray(rows)

    def _take(self, y: Any, sel: Any) -> Any:
        if isinstance(sel, slice) or self.xp is np:
            return y[..., sel]
        return self.xp.take(y, sel, axis=-1)

    def _step_matrix(self, u_k: Any, d_k: Any) -> Any:
        """[[A(u), b(u, d)], [0, 0]] * dt for any leading shape of u_k (..., nu): (..., n+1, n+1)."""
        xp = self.xp
        n = self.n
        M = xp.zeros((*u_k.shape[:-1], n + 1, n + 1), dtype=self.dtype)
        M[..., :n, :n] = self._Ac
        b = u_k @ self._Bc.T + d_k @ self._Ec.T
        for j, other, P, p in self._flows:
            f = self._factor(j, other, u_k, d_k)
            M[..., :n, :n] += f[..., None, None] * P
            b = b + f[..., None] * p
        M[..., :n, n] = b
        return M * self.dt

    @staticmethod
    def _factor(j: int, other: tuple[str, int] | None, u_k: Any, d_k: Any) -> Any:
        f = u_k[..., j]
        if other is not None:
            f = f * (u_k[..., other[1]] if other[0] == "u" else d_k[..., other[1]])
        return f

    def _chunks(self, B: int, K: int) -> list[range]:
        """Steps whose exponentials are computed together: all at once for small batches (few array
        calls), fewer for large ones (bounded memory); one at a time with custom components, whose heat
        depends on the state at the start of the step."""
        if self.net.custom:
            size = 1
        else:
            size = max(1, min(K, 16384 // max(1, B)))
        return [range(k, min(K, k + size)) for k in range(0, K, size)]

    def _bilinear_forward(self, x0: Any, u: Any, d: Any) -> tuple[Any, list | None]:
        """States and, when they fit in memory, each chunk's step exponentials (the adjoint reuses them)."""
        xp = self.xp
        B, K, _ = u.shape
        n = self.n
        x = xp.empty((B, K + 1, n), dtype=self.dtype)
        x[:, 0] = x0
        keep = B * K * (n + 1) ** 2 <= _KEEP_EXP_ELEMENTS
        exps: list | None = [] if keep else None
        for ks in self._chunks(B, K):
            sl = slice(ks.start, ks.stop)
            M = self._step_matrix(u[:, sl], d[:, sl])
            if self.net.custom:
                q_w = self._custom_heat(x[:, ks.start], u[:, ks.start], d[:, ks.start])
                M[:, 0, :n, n] += q_w * self._inv_c * self.dt
            E = expm(M, xp)
            if exps is not None:
                exps.append(E)
            for i, k in enumerate(ks):
                x[:, k + 1] = xp.einsum("bij,bj->bi", E[:, i, :n, :n], x[:, k]) + E[:, i, :n, n]
        return x, exps

    def _custom_heat(self, x_k: Any, u_k: Any, d_k: Any) -> Any:
        """Custom components' heat into each node (B, n), in W."""
        q_w = self.xp.zeros_like(x_k)
        for c in self.net.custom:
            q_w[:, c.nodes] += c.heat(x_k[:, c.reads_x], u_k[:, c.reads_u], d_k[:, c.reads_d], self.xp)
        return q_w

    # -- per-step Jacobians (nonlinear MPC) -----------------------------------------------------------
    def step_jacobians(self, traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
        """dx[k+1]/dx[k] (B, K, n, n) and dx[k+1]/du[k] (B, K, n, nu) along a trajectory, as host arrays:
        the linearisation a nonlinear MPC iterates on. Linear models give their constant ZOH matrices."""
        from models.flowpath import flow_step_jacobians

        B, K = traj.u.shape[0], traj.u.shape[1]
        if self.step_path is not None:
            return self.step_path.step_jacobians(traj.x, traj.u, traj.d)
        if self.linear is not None:
            A, Bd, _ = self.linear.discrete()
            return (np.broadcast_to(A, (B, K, self.n, self.n)).copy(),
                    np.broadcast_to(Bd, (B, K, self.n, self.nu)).copy())
        if self.flow_path is not None and getattr(traj, "_flow", False):
            return flow_step_jacobians(self.flow_path, traj.x, traj.u, traj.d)
        raise NotImplementedError("per-step Jacobians of this model (several flow inputs, or heat components beside "
                                  "flows) are not available yet")

    # -- adjoint ----------------------------------------------------------------------------------
    def gradient(self, traj: Trajectory, *, g_zones: Any = None, g_sensors: Any = None, g_el: Any = None,
                 g_gas: Any = None, g_states: Any = None, params: tuple[str, ...] | list[str] = (),
                 wrt_disturbances: bool = False) -> Gradient:
        """Exact gradient of J given dJ/d(outputs): w.r.t. inputs, initial state, named parameters.

        g_zones (B,K,nz), g_sensors (B,K,ns), g_el / g_gas (B,K,n_actuators), g_states (B,K+1,n).
        """
        xp = self.xp
        B, K, _ = traj.u.shape
        # The flow path maps a zones-only cotangent to the states directly (g_y is not needed then).
        zones_only = (xp is np and g_sensors is None and g_zones is not None and not params
                      and getattr(traj, "_flow", False) and not self._zones_are_outputs)
        if (g_zones is None and g_sensors is None) or zones_only:
            g_y = None  # a loss on states and meters only, or not needed
        elif g_sensors is None and g_zones is not None and self._zones_are_outputs:
            g_y = self.asarray(g_zones)  # the common case: outputs are the zones, nothing to scatter
        elif xp is not np:  # no indexed writes outside NumPy: the rows are gathered
            g_y = _gather_sum([(self.asarray(g), r) for g, r in ((g_zones, self._zone_rows),
                                                                 (g_sensors, self._sensor_rows)) if g is not None],
                              self.ny, (B, K), self.xdtype, xp)
        else:
            g_y = xp.zeros((B, K, self.ny), dtype=self.xdtype)
            if g_zones is not None:
                self._add_rows(g_y, self._zone_rows, self._zone_sel, g_zones)
            if g_sensors is not None:
                self._add_rows(g_y, self._sensor_rows, self._sensor_sel, g_sensors)
        # Cotangents in the simulator's own dtype and namespace (a strict namespace refuses mixed dtypes in place).
        g_el, g_gas, g_states = (None if g is None else self.asarray(g) for g in (g_el, g_gas, g_states))
        g_u_direct, g_x_direct, g_d_direct = self._power_vjp(traj, g_el, g_gas, want_d=wrt_disturbances)
        if g_states is not None:
            g_x_direct = g_states if g_x_direct is None else g_x_direct + g_states
        if g_y is None and self.step_path is None and not zones_only:
            g_y = xp.zeros((B, K, self.ny), dtype=self.xdtype)
        if self.linear is not None:
            lin = self.linear
            g_u, g_x0, g_d, lam = lin.backward(g_y, g_x_direct, want_lam=bool(params), want_d=wrt_disturbances,
                                               g_u_direct=g_u_direct)
            cont = lin.continuous_gradients(traj.x0, traj.z, traj.u, traj.d, lam) if params else None
        elif self.step_path is not None:
            if g_y is None:
                # A loss on the states only (the PL benchmark): nothing to map.
                cx = g_x_direct if g_x_direct is not None else xp.zeros((B, K + 1, self.n), dtype=self.xdtype)
            else:
                cx = _mm(g_y, self._Cy, xp)
                cx = xp.concat([xp.zeros((B, 1, self.n), dtype=self.xdtype), cx], axis=1)
                if g_x_direct is not None:
                    cx = cx + g_x_direct
            g_u, g_x0, g_d, cont, self._comp_gp = self.step_path.backward(traj.x, traj.u, traj.d, cx,
                                                                          want_params=bool(params))
            if g_u_direct is not None:
                g_u = g_u + g_u_direct
        elif getattr(traj, "_flow", False) and not params:
            if xp is np:  # in place: each of the calls it saves is a few percent of a small gradient
                cx = np.zeros((B, K + 1, self.n), dtype=self.xdtype)
                if zones_only:
                    np.matmul(g_zones, self._Cz_rows, out=cx[:, 1:, :])
                else:
                    np.matmul(g_y, self._Cy, out=cx[:, 1:, :])
                if g_x_direct is not None:
                    cx += g_x_direct
            else:
                cx = xp.concat([xp.zeros((B, 1, self.n), dtype=self.xdtype), _mm(g_y, self._Cy, xp)], axis=1)
                if g_x_direct is not None:
                    cx = cx + g_x_direct
            tape = traj._flow if isinstance(traj._flow, FlowTape) else None
            g_u, g_x0, g_d = self.flow_path.backward(traj.x, traj.u, traj.d, cx, tape, want_d=wrt_disturbances)
            cont = None
            if g_u_direct is not None:
                g_u = g_u + g_u_direct
        else:
            g_u, g_x0, g_d, cont = self._bilinear_adjoint(traj, g_y, g_x_direct, bool(params))
            if g_u_direct is not None:
                g_u += g_u_direct
        if wrt_disturbances and g_d_direct is not None:
            g_d = g_d + g_d_direct
        grads = Gradient(g_u, g_x0, g_d if wrt_disturbances else None)
        if params:
            grads.params = self._param_gradient(traj, list(params), cont, g_el, g_gas)
        return grads

    @staticmethod
    def _add_rows(g_y: Any, rows: np.ndarray, sel: Any, g: Any) -> None:
        if isinstance(sel, slice):
            g_y[..., sel] += g
        elif len(set(rows.tolist())) == len(rows):
            g_y[..., rows] += g
        else:
            for i, r in enumerate(rows.tolist()):
                g_y[..., r] += g[..., i]

    def _bilinear_adjoint(self, traj: Trajectory, g_y: Any, g_x_direct: Any, want_cont: bool):
        xp = self.xp
        x, u, d = traj.x, traj.u, traj.d
        B, K, _ = u.shape
        n = self.n
        c = xp.zeros((B, K + 1, n), dtype=self.dtype)
        c[:, 1:] = g_y @ self._Cy
        if g_x_direct is not None:
            c += g_x_direct
        g_u = xp.zeros_like(u)
        g_d = xp.zeros_like(d)
        acc = {"A": 0, "b_u": 0, "b_d": 0, "P": [0] * len(self._flows), "p": [0] * len(self._flows)
               } if want_cont else None
        lam = c[:, K]
        inv_c = self._inv_c if self.net.custom else None
        chunks = self._chunks(B, K)
        exps = getattr(traj, "_exps", None)
        for ci in range(len(chunks) - 1, -1, -1):
            ks = chunks[ci]
            sl = slice(ks.start, ks.stop)
            uc, dc = u[:, sl], d[:, sl]
            M = self._step_matrix(uc, dc)
            if self.net.custom:
                q_w = self._custom_heat(x[:, ks.start], u[:, ks.start], d[:, ks.start])
                M[:, 0, :n, n] += q_w * inv_c * self.dt
            E = exps[ci] if exps is not None else expm(M, xp)
            # dJ/dE_k = [[lam_{k+1} x_k^T, lam_{k+1}], [0, 0]]; lam_k = c_k + Phi_k^T lam_{k+1}
            G = xp.zeros_like(M)
            for i in range(len(ks) - 1, -1, -1):
                k = ks[i]
                G[:, i, :n, :n] = lam[:, :, None] * x[:, k][:, None, :]
                G[:, i, :n, n] = lam
                lam = c[:, k] + xp.einsum("bij,bi->bj", E[:, i, :n, :n], lam)
            GM = expm_frechet_adjoint(M, G, xp) * self.dt
            gA, gb = GM[..., :n, :n], GM[..., :n, n]
            g_u[:, sl] += gb @ self._Bc
            g_d[:, sl] += gb @ self._Ec
            for t, (j, other, P, p) in enumerate(self._flows):
                s = xp.einsum("bkij,ij->bk", gA, P) + gb @ p
                if other is None:
                    g_u[:, sl, j] += s
                else:
                    o = uc[..., other[1]] if other[0] == "u" else dc[..., other[1]]
                    g_u[:, sl, j] += s * o
                    (g_u if other[0] == "u" else g_d)[:, sl, other[1]] += s * uc[..., j]
                if want_cont:
                    f = self._factor(j, other, uc, dc)
                    acc["P"][t] = acc["P"][t] + xp.einsum("bk,bkij->ij", f, gA)
                    acc["p"][t] = acc["p"][t] + xp.einsum("bk,bki->i", f, gb)
            if self.net.custom:
                k = ks.start
                g_q = gb[:, 0] * inv_c  # dJ/d(heat in W) at each node over step k
                if want_cont:  # the heat enters as q / C: capacitance parameters see it too
                    acc["inv_c"] = acc.get("inv_c", 0) + (gb[:, 0] * q_w).sum(0)
                for comp in self.net.custom:
                    gx, gu_, gd_ = comp.heat_vjp(x[:, k, comp.reads_x], u[:, k, comp.reads_u], d[:, k, comp.reads_d],
                                                 g_q[:, comp.nodes], xp)
                    lam[:, comp.reads_x] += gx
                    g_u[:, k, comp.reads_u] += gu_
                    g_d[:, k, comp.reads_d] += gd_
            if want_cont:
                acc["A"] = acc["A"] + gA.sum((0, 1))
                acc["b_u"] = acc["b_u"] + xp.einsum("bki,bkj->ij", gb, uc)
                acc["b_d"] = acc["b_d"] + xp.einsum("bki,bkj->ij", gb, dc)
        return g_u, lam, g_d, acc

    # -- parameters -------------------------------------------------------------------------------
    def _param_gradient(self, traj: Trajectory, names: list[str], cont: Any, g_el: Any, g_gas: Any
                        ) -> dict[str, float]:
        xp = self.xp
        out = {}
        if not hasattr(self, "_param_sets"):
            # Meter power depends only on the actuators' own parameters: the others skip its complex step.
            self._param_sets = ({i for c in self.net.custom for i in getattr(c, "param_index", [])},
                                {i for a in self.net.actuators for i in a.params.values()})
        comp_params, meter_params = self._param_sets
        key = tuple(names)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = self.net.params.lookup(names)
        for name, idx in zip(names, lookup, strict=True):
            if idx in comp_params:
                # A component's own parameter: nothing in the network or the meters depends on it.
                out[name] = float(self._comp_gp.get(idx, 0.0)) if self.step_path is not None else 0.0
                continue
            th = self.theta.astype(complex)
            th[idx] += 1j * _H
            m = self.net.assemble(th)
            dm = {k: (np.asarray(v).imag / _H) for k, v in m.items() if k != "flows"}
            if self.step_path is not None:
                val = self._comp_gp.get(idx, 0.0)
                if cont is not None:
                    gAc, gBc, gEc, g_inv_c = cont
                    val += float(np.sum(gAc * dm["Ac"]) + np.sum(gBc * dm["Bc"]) + np.sum(gEc * dm["Ec"]))
                    if g_inv_c is not None:
                        val += float(np.sum(g_inv_c * ((1.0 / m["caps"]).imag / _H)))
            elif self.linear is not None:
                gAc, gBc, gEc = cont
                val = float(np.sum(gAc * dm["Ac"]) + np.sum(gBc * dm["Bc"]) + np.sum(gEc * dm["Ec"]))
            else:
                val = float(np.sum(to_host(cont["A"]) * dm["Ac"]) + np.sum(to_host(cont["b_u"]) * dm["Bc"])
                            + np.sum(to_host(cont["b_d"]) * dm["Ec"]))
                for t, (_, _, P, p) in enumerate(m["flows"]):
                    val += float(np.sum(to_host(cont["P"][t]) * (P.imag / _H))
                                 + np.sum(to_host(cont["p"][t]) * (p.imag / _H)))
                if "inv_c" in cont:
                    val += float(np.sum(to_host(cont["inv_c"]) * ((1.0 / m["caps"]).imag / _H)))
            if (g_el is not None or g_gas is not None) and idx in meter_params:
                el, gas, _ = self._powers(traj, th)
                imag = (lambda a: a.imag) if xp is np else xp.imag
                if g_el is not None:
                    val += float(xp.sum(g_el * (imag(el) / _H)))
                if g_gas is not None:
                    val += float(xp.sum(g_gas * (imag(gas) / _H)))
            out[name] = val
        return out
