"""The step-map path: the linear network's exact zero-order hold plus step components' discrete maps.

One step, for the whole batch of scenarios (rows):

    x[k+1] = F x[k] + Bd u[k] + Ed d[k] + c + sum_c S_c delta_c(R_c x[k], u[k], d[k]; p_c, dt)

Ad, Bd and Ed are the exact ZOH of the linear network, with inputs and disturbances held over the step.
They are taken once from the augmented matrix exponential, so stiff linear parts stay exact at any dt.
Components that are affine in the state and read no inputs or disturbances have the same Jacobian J_c
at every step. It is folded into F = Ad + sum S_c J_c R_c and c; their step map is then never called
inside the loop. Other step components are called once per step on the whole batch. S_c and R_c are
0/1 scatter and gather matrices, so the whole pass uses matmul, stack and sum only, and runs on any
array namespace (NumPy, CuPy, array-api-strict).

Adjoint: lam[k] = F^T lam[k+1] + (sum of the per-step components' state VJPs) + dJ/dx[k].
Inputs, disturbances, the linear network's parameters (through the adjoint Fréchet derivative of the
augmented exponential) and the folded components' parameters come from the stored states and
adjoints in a few batched calls after the sweep. The folded components' parameters take one
`step_vjp` call on all B*K (state, adjoint) pairs, which is exact because their map is affine in the state.

Accuracy: the linear part is exact. A component's delta is its own discrete map, so the path adds no
error beyond the splitting of a component from the stiff network it touches. With the nodes owned by
step components decoupled from the network (the PassiveLogic loop), it adds none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.expm import expm, expm_frechet_adjoint


def _select(cols: list[int], n: int) -> np.ndarray:
    """(len(cols), n) 0/1 matrix: x @ R.T gathers columns `cols`; v @ R scatters back (adding repeats)."""
    R = np.zeros((len(cols), n))
    R[np.arange(len(cols)), cols] = 1.0
    return R


class _Comp:
    def __init__(self, comp: Any, theta: np.ndarray, n: int, nu: int, nd: int, xp: Any, dtype: Any) -> None:
        self.comp = comp
        self.p_host = np.asarray(theta[comp.param_index], dtype=float) if comp.param_index else np.zeros(0)
        self.p = xp.asarray(self.p_host.astype(dtype))
        self.S = _select(comp.nodes, n).T        # (n, m): delta @ S.T adds delta into the state
        self.Rx = _select(comp.reads_x, n)       # (mx, n)
        self.Ru = _select(comp.reads_u, nu) if comp.reads_u else None
        self.Rd = _select(comp.reads_d, nd) if comp.reads_d else None
        self.folded = bool(comp.affine_in_state) and not comp.reads_u and not comp.reads_d
        as_xp = lambda m: None if m is None else xp.asarray(m.astype(dtype))  # noqa: E731
        self.S_t, self.Rx_t = as_xp(self.S.T), as_xp(self.Rx.T)
        self.Ru_t = as_xp(None if self.Ru is None else self.Ru.T)
        self.Rd_t = as_xp(None if self.Rd is None else self.Rd.T)
        self.S_x, self.Rx_x = as_xp(self.S), as_xp(self.Rx)
        self.Ru_x, self.Rd_x = as_xp(self.Ru), as_xp(self.Rd)

    def args(self, x: Any, u: Any, d: Any, xp: Any) -> tuple[Any, Any, Any]:
        """The component's columns of x (…, n), u, d (…, nu/nd)."""
        xs = x @ self.Rx_t if self.comp.reads_x else None
        us = u @ self.Ru_t if self.Ru_t is not None else None
        ds = d @ self.Rd_t if self.Rd_t is not None else None
        return xs, us, ds


class StepPath:
    """Forward and adjoint of the step-map path for one compiled model (see the module docstring)."""

    def __init__(self, mats: dict[str, Any], comps: list[Any], theta: np.ndarray, dt: float, xp: Any,
                 dtype: Any) -> None:
        self.xp, self.dtype, self.dt = xp, np.dtype(dtype), float(dt)
        Ac, Bc, Ec = (np.asarray(mats[k], dtype=float) for k in ("Ac", "Bc", "Ec"))
        n, nu, nd = Ac.shape[0], Bc.shape[1], Ec.shape[1]
        self.n, self.nu, self.nd = n, nu, nd
        self.Mc = np.zeros((n + nu + nd, n + nu + nd))
        self.Mc[:n, :n], self.Mc[:n, n:n + nu], self.Mc[:n, n + nu:] = Ac, Bc, Ec
        Md = expm(self.Mc * self.dt)
        Ad, Bd, Ed = Md[:n, :n], Md[:n, n:n + nu], Md[:n, n + nu:]
        self.has_network = bool(np.any(self.Mc))
        self.comps = [_Comp(c, theta, n, nu, nd, xp, self.dtype) for c in comps]
        F = Ad.copy()
        c0 = np.zeros(n)
        for c in self.comps:
            if not c.folded:
                continue
            J, c_off = _affine_parts(c, self.dt)
            F += c.S @ J @ c.Rx
            c0 += c.S @ c_off
        self.F_host = F
        as_xp = lambda m: xp.asarray(np.ascontiguousarray(m).astype(self.dtype))  # noqa: E731
        self.F, self.F_t = as_xp(F), as_xp(F.T)
        self.c0 = as_xp(c0) if np.any(c0) else None
        self.Bd_t, self.Ed_t = (as_xp(Bd.T) if np.any(Bd) else None), (as_xp(Ed.T) if np.any(Ed) else None)
        self.Bd, self.Ed = as_xp(Bd), as_xp(Ed)
        self.loop_comps = [c for c in self.comps if not c.folded]

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x0: Any, u: Any, d: Any) -> Any:
        """States (B, K+1, n)."""
        xp = self.xp
        K = u.shape[1]
        w = self._drive(u, d)
        xs = [x0]
        x = x0
        for k in range(K):
            nxt = x @ self.F_t
            if w is not None:
                nxt = nxt + (w if w.ndim == 1 else w[:, k])
            for c in self.loop_comps:
                xa, ua, da = c.args(x, u[:, k], d[:, k], xp)
                nxt = nxt + c.comp.step(xa, ua, da, c.p, self.dt, xp) @ c.S_t
            xs.append(nxt)
            x = nxt
        return xp.stack(xs, axis=1)

    def _drive(self, u: Any, d: Any) -> Any:
        """Bd u + Ed d + c: (B, K, n), or the constant c (n,), or None."""
        w = None
        if self.Bd_t is not None:
            w = u @ self.Bd_t
        if self.Ed_t is not None:
            w = d @ self.Ed_t if w is None else w + d @ self.Ed_t
        if self.c0 is not None:
            w = self.c0 if w is None else w + self.c0
        return w

    # -- adjoint ------------------------------------------------------------------------------------
    def backward(self, x: Any, u: Any, d: Any, cx: Any, *, want_params: bool
                 ) -> tuple[Any, Any, Any, Any, dict[int, float]]:
        """From the cotangent cx (B, K+1, n) on the states: (g_u, g_x0, g_d, network gradients or None,
        {theta index: dJ/dtheta} of the components' parameters)."""
        xp = self.xp
        B, K = u.shape[0], u.shape[1]
        lam = cx[:, K]
        lams = [lam]
        g_u_loop = [None] * K
        g_d_loop = [None] * K
        comp_gp: dict[int, Any] = {}
        for k in range(K - 1, -1, -1):
            new = lam @ self.F + cx[:, k]
            if self.loop_comps:
                xk = x[:, k]
                gu_k = gd_k = None
                for c in self.loop_comps:
                    xa, ua, da = c.args(xk, u[:, k], d[:, k], xp)
                    gx, gu, gd, gp = c.comp.step_vjp(xa, ua, da, c.p, self.dt, lam @ c.S_x, xp)
                    if gx is not None and c.comp.reads_x:
                        new = new + gx @ c.Rx_x
                    if gu is not None and c.Ru_x is not None:
                        gu_k = gu @ c.Ru_x if gu_k is None else gu_k + gu @ c.Ru_x
                    if gd is not None and c.Rd_x is not None:
                        gd_k = gd @ c.Rd_x if gd_k is None else gd_k + gd @ c.Rd_x
                    if want_params and gp is not None:
                        comp_gp[id(c)] = xp.sum(gp, axis=0) + comp_gp.get(id(c), 0)
                g_u_loop[k], g_d_loop[k] = gu_k, gd_k
            lam = new
            lams.append(lam)
        lams.reverse()
        L = xp.stack(lams[1:], axis=1)   # lam[1..K]: dJ/d(x[k+1]) for step k
        g_u = L @ self.Bd
        g_d = L @ self.Ed
        if any(g is not None for g in g_u_loop):
            g_u = g_u + xp.stack([g if g is not None else xp.zeros((B, self.nu), dtype=self.dtype)
                                  for g in g_u_loop], axis=1)
        if any(g is not None for g in g_d_loop):
            g_d = g_d + xp.stack([g if g is not None else xp.zeros((B, self.nd), dtype=self.dtype)
                                  for g in g_d_loop], axis=1)
        net = None
        params: dict[int, float] = {}
        if want_params:
            xk = x[:, :K]
            for c in self.comps:
                if c.folded and c.comp.param_index:
                    # Affine in the state: the parameter VJP of all steps is one call on B*K rows.
                    m = len(c.comp.nodes)
                    gout = xp.reshape(L @ c.S_x, (B * K, m))
                    xa = xp.reshape(xk @ c.Rx_t, (B * K, len(c.comp.reads_x)))
                    gp = c.comp.step_vjp(xa, None, None, c.p, self.dt, gout, xp)[3]
                    comp_gp[id(c)] = xp.sum(gp, axis=0)
            for c in self.comps:
                if id(c) in comp_gp:
                    vals = _host(comp_gp[id(c)])
                    for i, v in zip(c.comp.param_index, vals, strict=True):
                        params[i] = params.get(i, 0.0) + float(v)
            if self.has_network:
                net = self._network_gradients(L, xk, u, d)
        return g_u, lams[0], g_d, net, params

    def _network_gradients(self, L: Any, xk: Any, u: Any, d: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dJ/d(Ac, Bc, Ec) of the linear network, through the exact ZOH (adjoint Fréchet derivative)."""
        xp = self.xp
        B, K, n = L.shape[0], L.shape[1], self.n
        L2 = xp.reshape(L, (B * K, n))
        Lt = xp.matrix_transpose(L2) if hasattr(xp, "matrix_transpose") else L2.T
        gA = _host(Lt @ xp.reshape(xk, (B * K, n)))
        gB = _host(Lt @ xp.reshape(u, (B * K, self.nu)))
        gE = _host(Lt @ xp.reshape(d, (B * K, self.nd)))
        # The folded components' Jacobians are part of F but not of Ad: dJ/dAd is the same matrix.
        N = self.Mc.shape[0]
        G = np.zeros((N, N))
        G[:n, :n], G[:n, n:n + self.nu], G[:n, n + self.nu:] = gA, gB, gE
        GM = expm_frechet_adjoint(self.Mc * self.dt, G) * self.dt
        return GM[:n, :n], GM[:n, n:n + self.nu], GM[:n, n + self.nu:]

    # -- per-step Jacobians (nonlinear MPC) ---------------------------------------------------------
    def step_jacobians(self, x: Any, u: Any, d: Any) -> tuple[np.ndarray, np.ndarray]:
        """dx[k+1]/dx[k] (B, K, n, n) and dx[k+1]/du[k] (B, K, n, nu) along a trajectory, on the host."""
        xh, uh, dh = _host(x), _host(u), _host(d)
        B, K = uh.shape[0], uh.shape[1]
        Ax = np.broadcast_to(self.F_host, (B, K, self.n, self.n)).copy()
        Bu = np.broadcast_to(_host(self.Bd), (B, K, self.n, self.nu)).copy()
        for c in self.loop_comps:
            m = len(c.comp.nodes)
            xa = xh[:, :K] @ c.Rx.T
            ua = uh @ c.Ru.T if c.Ru is not None else None
            da = dh @ c.Rd.T if c.Rd is not None else None
            for i in range(m):  # one VJP per output row of the component, all steps at once
                g = np.zeros((B * K, m))
                g[:, i] = 1.0
                flat = lambda a: None if a is None else a.reshape(B * K, a.shape[-1])  # noqa: E731
                gx, gu, _, _ = c.comp.step_vjp(flat(xa), flat(ua), flat(da), c.p_host, self.dt, g, np)
                row = c.comp.nodes[i]
                if gx is not None:
                    Ax[:, :, row, :] += (gx @ c.Rx).reshape(B, K, self.n)
                if gu is not None and c.Ru is not None:
                    Bu[:, :, row, :] += (gu @ c.Ru).reshape(B, K, self.nu)
        return Ax, Bu


def _affine_parts(c: _Comp, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(J, c) of delta = J x + c for a component affine in the state, on the host in float64."""
    comp = c.comp
    m, mx = len(comp.nodes), len(comp.reads_x)
    off = np.asarray(comp.step(np.zeros((1, mx)), None, None, c.p_host, dt, np), dtype=float)[0]
    gx = comp.step_vjp(np.zeros((m, mx)), None, None, c.p_host, dt, np.eye(m), np)[0]
    J = np.zeros((m, mx)) if gx is None else np.asarray(gx, dtype=float)  # row i of J is the VJP of e_i
    return J, off


def _host(a: Any) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    try:
        return np.asarray(a)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(a)
