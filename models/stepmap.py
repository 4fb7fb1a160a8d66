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
adjoints in a few batched calls after the sweep. A folded component's parameter gradient needs only
gF = sum_k lam[k+1] x[k]^T and gc = sum_k lam[k+1], because its map is affine in the state. That is one
`step_vjp` call on len(reads_x) + 1 rows, whatever the batch and horizon.

Short horizons of a time-invariant step (only folded components) need no loop at all. The states are
x0 P + s, and the adjoints are one product with the block-Toeplitz matrix of F's powers.

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
        # dtype: the host (NumPy) dtype; arrays reach xp already converted, so any namespace accepts them.
        self.comp = comp
        self.p_host = np.asarray(theta[comp.param_index], dtype=float) if comp.param_index else np.zeros(0)
        self.p = xp.asarray(self.p_host.astype(dtype))
        self.S = _select(comp.nodes, n).T        # (n, m): delta @ S.T adds delta into the state
        self.Rx = _select(comp.reads_x, n)       # (mx, n)
        self.Ru = _select(comp.reads_u, nu) if comp.reads_u else None
        self.Rd = _select(comp.reads_d, nd) if comp.reads_d else None
        self.heat = getattr(comp, "kind", "heat") == "heat"   # a heat component: q in W held over the step
        if not hasattr(comp, "param_index"):
            comp.param_index = []
        self.folded = bool(getattr(comp, "affine_in_state", False)) and not comp.reads_u and not comp.reads_d \
            and not self.heat
        self.Tp: np.ndarray | None = None  # folded components: d(parameter gradient)/d(gs), see _affine_param_vjp
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
                 dtype: Any, xdtype: Any = None) -> None:
        self.xp, self.dtype, self.dt = xp, np.dtype(dtype), float(dt)
        self.xdtype = self.dtype if xdtype is None else xdtype
        Ac, Bc, Ec = (np.asarray(mats[k], dtype=float) for k in ("Ac", "Bc", "Ec"))
        n, nu, nd = Ac.shape[0], Bc.shape[1], Ec.shape[1]
        self.n, self.nu, self.nd = n, nu, nd
        # Heat components' heat q (W) is held over the step and enters as C^-1 q: through Gamma, the ZOH of an
        # identity input block, exact for the linear part like Bd and Ed.
        self.has_heat = any(getattr(c, "kind", "heat") == "heat" for c in comps)
        nh = n if self.has_heat else 0
        N = n + nu + nd + nh
        self.Mc = np.zeros((N, N))
        self.Mc[:n, :n], self.Mc[:n, n:n + nu], self.Mc[:n, n + nu:n + nu + nd] = Ac, Bc, Ec
        if nh:
            self.Mc[:n, n + nu + nd:] = np.eye(n)
        Md = expm(self.Mc * self.dt)
        Ad, Bd, Ed = Md[:n, :n], Md[:n, n:n + nu], Md[:n, n + nu:n + nu + nd]
        self.Gamma = Md[:n, n + nu + nd:] if nh else None
        self.inv_c = 1.0 / np.asarray(mats["caps"], dtype=float)
        self.has_network = bool(np.any(self.Mc[:n, :n + nu + nd]))
        self.comps = [_Comp(c, theta, n, nu, nd, xp, self.dtype) for c in comps]
        for c in self.comps:
            if c.heat:
                # q (B, m) -> state increment q @ Gh.T with Gh = Gamma[:, nodes] diag(1/C[nodes]).
                c.Gh = self.Gamma[:, c.comp.nodes] * self.inv_c[c.comp.nodes][None, :]
                c.S_t = xp.asarray(np.ascontiguousarray(c.Gh.T).astype(self.dtype))
                c.S_x = xp.asarray(np.ascontiguousarray(c.Gh).astype(self.dtype))
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
        self._horizons: dict[int, tuple] = {}
        self._ones: dict[int, Any] = {}
        self._fold: tuple[list[int], np.ndarray] | None = None

    # -- whole-horizon maps of a time-invariant step (no per-step components) --------------------------
    def _horizon(self, B: int, K: int) -> tuple[Any, Any, Any] | None:
        """(Pt, Ht, Gt) for x[1..K] = x0 Pt + w Ht and lam[0..K] = cx Gt in flattened (B, K*n) rows, or None
        when the horizon is too long for whole-horizon products (the per-step loop is then cheaper)."""
        n = self.n
        if self.loop_comps or B * ((K + 1) * n) ** 2 > _HORIZON_WORK:
            return None
        if K not in self._horizons:
            pw = [np.eye(n)]
            for _ in range(K):
                pw.append(pw[-1] @ self.F_host)           # F^0 .. F^K
            Pt = np.concatenate([pw[k].T for k in range(1, K + 1)], axis=1)            # (n, K n)
            Ht = np.zeros((K * n, K * n))                 # block (j, k): (F^(k-1-j))^T, j <= k-1
            Gt = np.zeros(((K + 1) * n, (K + 1) * n))     # block (j, k): F^(j-k), j >= k
            for j in range(K + 1):
                for k in range(j + 1):
                    Gt[j * n:(j + 1) * n, k * n:(k + 1) * n] = pw[j - k]
            for j in range(K):
                for k in range(j + 1, K + 1):
                    Ht[j * n:(j + 1) * n, (k - 1) * n:k * n] = pw[k - 1 - j].T
            as_xp = lambda m: self.xp.asarray(m.astype(self.dtype))  # noqa: E731
            s = None if self.c0 is None else as_xp(np.tile(_host(self.c0).astype(float), K) @ Ht)
            self._horizons[K] = (as_xp(Pt), as_xp(Ht), as_xp(Gt), s)
        return self._horizons[K]

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x0: Any, u: Any, d: Any) -> Any:
        """States (B, K+1, n)."""
        xp = self.xp
        B, K, n = u.shape[0], u.shape[1], self.n
        hz = self._horizon(B, K)
        if hz is not None:
            Pt, Ht, _, s = hz
            X = x0 @ Pt
            w = self._drive(u, d, with_constant=False)
            if w is not None:
                X = X + _reshape(w, (B, K * n), xp) @ Ht
            if s is not None:
                X = X + s
            return xp.concat([_reshape(x0, (B, 1, n), xp), _reshape(X, (B, K, n), xp)], axis=1)
        w = self._drive(u, d)
        x = xp.zeros((B, K + 1, n), dtype=self.xdtype)
        x[:, 0, :] = x0
        xk = x0
        for k in range(K):
            nxt = xk @ self.F_t
            if w is not None:
                nxt = nxt + (w if w.ndim == 1 else w[:, k, :])
            for c in self.loop_comps:
                xa, ua, da = c.args(xk, u[:, k, :], d[:, k, :], xp)
                out = c.comp.heat(xa, ua, da, xp) if c.heat else c.comp.step(xa, ua, da, c.p, self.dt, xp)
                nxt = nxt + out @ c.S_t
            x[:, k + 1, :] = nxt
            xk = nxt
        return x

    def _drive(self, u: Any, d: Any, with_constant: bool = True) -> Any:
        """Bd u + Ed d + c: (B, K, n), or the constant c (n,), or None."""
        w = None
        if self.Bd_t is not None:
            w = _mm(u, self.Bd_t, self.xp)
        if self.Ed_t is not None:
            w = _mm(d, self.Ed_t, self.xp) if w is None else w + _mm(d, self.Ed_t, self.xp)
        if self.c0 is not None and with_constant:
            w = self.c0 if w is None else w + self.c0
        return w

    # -- adjoint ------------------------------------------------------------------------------------
    def backward(self, x: Any, u: Any, d: Any, cx: Any, *, want_params: bool
                 ) -> tuple[Any, Any, Any, Any, dict[int, float]]:
        """From the cotangent cx (B, K+1, n) on the states: (g_u, g_x0, g_d, network gradients or None,
        {theta index: dJ/dtheta} of the components' parameters)."""
        xp = self.xp
        B, K, n = u.shape[0], u.shape[1], self.n
        hz = self._horizon(B, K)
        comp_gp: dict[int, Any] = {}
        if hz is not None:
            Lam = _reshape(_reshape(cx, (B, (K + 1) * n), xp) @ hz[2], (B, K + 1, n), xp)
            return self._finish(x, u, d, Lam[:, 1:, :], Lam[:, 0, :], None, None, comp_gp, want_params)
        # Time-major: each step's cotangent is one contiguous (B, n) slab.
        cxt = xp.permute_dims(cx, (1, 0, 2)) if hasattr(xp, "permute_dims") else cx.transpose(1, 0, 2)
        cxt = (cxt.copy() if hasattr(cxt, "copy") else xp.asarray(cxt, copy=True)) if B > 1 else cxt
        lam = cxt[K, ...]
        lams = [lam]
        g_u_loop = [None] * K
        g_d_loop = [None] * K
        for k in range(K - 1, -1, -1):
            new = lam @ self.F + cxt[k, ...]
            if self.loop_comps:
                xk = x[:, k, :]
                gu_k = gd_k = None
                for c in self.loop_comps:
                    xa, ua, da = c.args(xk, u[:, k, :], d[:, k, :], xp)
                    if c.heat:
                        gx, gu, gd = c.comp.heat_vjp(xa, ua, da, lam @ c.S_x, xp)
                        gp = None
                    else:
                        gx, gu, gd, gp = c.comp.step_vjp(xa, ua, da, c.p, self.dt, lam @ c.S_x, xp)
                    if gx is not None and c.comp.reads_x:
                        new = new + gx @ c.Rx_x
                    if gu is not None and c.Ru_x is not None:
                        gu_k = gu @ c.Ru_x if gu_k is None else gu_k + gu @ c.Ru_x
                    if gd is not None and c.Rd_x is not None:
                        gd_k = gd @ c.Rd_x if gd_k is None else gd_k + gd @ c.Rd_x
                    if want_params and gp is not None:
                        comp_gp[id(c)] = gp + comp_gp.get(id(c), 0)
                g_u_loop[k], g_d_loop[k] = gu_k, gd_k
            lam = new
            lams.append(lam)
        lams.reverse()
        L = xp.stack(lams[1:], axis=1)   # lam[1..K]: dJ/d(x[k+1]) for step k
        return self._finish(x, u, d, L, lams[0], g_u_loop, g_d_loop, comp_gp, want_params)

    def _finish(self, x: Any, u: Any, d: Any, L: Any, lam0: Any, g_u_loop: list | None, g_d_loop: list | None,
                comp_gp: dict[int, Any], want_params: bool) -> tuple[Any, Any, Any, Any, dict[int, float]]:
        """Input, disturbance and parameter gradients from the adjoints L = lam[1..K] (B, K, n)."""
        xp = self.xp
        B, K = u.shape[0], u.shape[1]
        g_u = _mm(L, self.Bd, xp) if self.nu else xp.zeros((B, K, 0), dtype=self.xdtype)
        g_d = _mm(L, self.Ed, xp) if self.nd else xp.zeros((B, K, 0), dtype=self.xdtype)
        if g_u_loop is not None and any(g is not None for g in g_u_loop):
            g_u = g_u + xp.stack([g if g is not None else xp.zeros((B, self.nu), dtype=self.xdtype)
                                  for g in g_u_loop], axis=1)
        if g_d_loop is not None and any(g is not None for g in g_d_loop):
            g_d = g_d + xp.stack([g if g is not None else xp.zeros((B, self.nd), dtype=self.xdtype)
                                  for g in g_d_loop], axis=1)
        net = None
        params: dict[int, float] = {}
        if want_params:
            n = self.n
            L2 = _reshape(L, (B * K, n), xp)
            # gF = sum_k lam[k+1] x[k]^T and gc = sum_k lam[k+1]: all that a step affine in the state needs.
            gF = _host(_transpose(L2, xp) @ _reshape(x[:, :K, :], (B * K, n), xp))
            # A product with a ones vector: a column sum over B*K narrow rows is several times slower in NumPy.
            ones = self._ones.get(B * K)
            if ones is None:
                ones = self._ones[B * K] = xp.ones((1, B * K), dtype=self.xdtype)
            gc = _host(ones @ L2)[0]
            fold_idx, fold_T = self._folded_params()
            if fold_idx:
                vals = (np.concatenate([gF.reshape(-1), gc]) @ fold_T).tolist()
                for i, v in zip(fold_idx, vals, strict=True):
                    params[i] = params.get(i, 0.0) + v
            for c in self.comps:
                if id(c) in comp_gp:
                    for i, v in zip(c.comp.param_index, _host(comp_gp[id(c)]).tolist(), strict=True):
                        params[i] = params.get(i, 0.0) + v
            if self.has_network or self.has_heat:
                net = self._network_gradients(L2, gF, x, u, d)
        return g_u, lam0, g_d, net, params

    def _folded_params(self) -> tuple[list[int], np.ndarray]:
        """The folded components' parameter indices and the one matrix that maps [vec gF, gc] to their
        gradients (the per-component maps of `_affine_param_vjp`, side by side)."""
        if self._fold is None:
            idx: list[int] = []
            cols = []
            for c in self.comps:
                if c.folded and c.comp.param_index:
                    _affine_param_vjp(c, np.zeros((self.n, self.n)), np.zeros(self.n), self.dt)
                    idx += list(c.comp.param_index)
                    cols.append(c.Tp)
            self._fold = (idx, np.hstack(cols) if cols else np.zeros((self.n * self.n + self.n, 0)))
        return self._fold

    def _network_gradients(self, L2: Any, gA: np.ndarray, x: Any, u: Any, d: Any
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """dJ/d(Ac, Bc, Ec) of the linear network through the exact ZOH (adjoint Fréchet derivative), and
        dJ/d(1/C) through the heat components' C^-1 q (None without heat components)."""
        xp = self.xp
        BK, n, nu, nd = L2.shape[0], self.n, self.nu, self.nd
        K = u.shape[1]
        Lt = _transpose(L2, xp)
        gB = _host(Lt @ _reshape(u, (BK, nu), xp))
        gE = _host(Lt @ _reshape(d, (BK, nd), xp))
        # The folded components' Jacobians are part of F but not of Ad: dJ/dAd is the same matrix.
        N = self.Mc.shape[0]
        G = np.zeros((N, N))
        G[:n, :n], G[:n, n:n + nu], G[:n, n + nu:n + nu + nd] = gA, gB, gE
        g_inv_c = None
        if self.has_heat:
            # The heat of every step at once (heat is row-wise): q_nodes (B*K, n) scattered to the nodes.
            xk = _reshape(x[:, :K, :], (BK, n), xp)
            u2, d2 = _reshape(u, (BK, nu), xp), _reshape(d, (BK, nd), xp)
            q = None
            for c in self.comps:
                if c.heat:
                    xa, ua, da = c.args(xk, u2, d2, xp)
                    qc = c.comp.heat(xa, ua, da, xp) @ xp.asarray(c.S.T.astype(self.dtype))
                    q = qc if q is None else q + qc
            gq = _host(Lt @ q)                                    # sum_k lam[k+1] q_k^T (n, n)
            G[:n, n + nu + nd:] = gq * self.inv_c[None, :]        # dJ/dGamma: v_k = q_k / C
            g_inv_c = np.einsum("ij,ij->j", self.Gamma, gq)       # dJ/d(1/C_j) = sum_k (Gamma^T lam)_j q_j
        GM = expm_frechet_adjoint(self.Mc * self.dt, G) * self.dt
        return GM[:n, :n], GM[:n, n:n + nu], GM[:n, n + nu:n + nu + nd], g_inv_c

    # -- per-step Jacobians (nonlinear MPC) ---------------------------------------------------------
    # The step components' Jacobians come from their VJPs with unit cotangents (one call per output, all steps).
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
            # How the component's output moves the state: its nodes (step) or Gamma C^-1 (heat held over the step).
            out_map = c.Gh if c.heat else c.S                       # (n, m)
            for i in range(m):  # one VJP per output row of the component, all steps at once
                g = np.zeros((B * K, m))
                g[:, i] = 1.0
                flat = lambda a: None if a is None else a.reshape(B * K, a.shape[-1])  # noqa: E731
                if c.heat:
                    gx, gu, _ = c.comp.heat_vjp(flat(xa), flat(ua), flat(da), g, np)
                else:
                    gx, gu, _, _ = c.comp.step_vjp(flat(xa), flat(ua), flat(da), c.p_host, self.dt, g, np)
                col = out_map[:, i]
                if gx is not None:
                    Ax += col[None, None, :, None] * (np.asarray(gx) @ c.Rx).reshape(B, K, 1, self.n)
                if gu is not None and c.Ru is not None:
                    Bu += col[None, None, :, None] * (np.asarray(gu) @ c.Ru).reshape(B, K, 1, self.nu)
        return Ax, Bu


# A time-invariant horizon is one product with a block-Toeplitz matrix while that costs at most this many
# multiply-adds (B ((K+1) n)^2); longer horizons and larger batches run the per-step loop, whose work is linear in K.
_HORIZON_WORK = 2**16


def _mm(a: Any, m: Any, xp: Any, flat: bool = False) -> Any:
    """a (B, K, i) @ m (i, j) as one 2-D product (a stacked 3-D @ 2-D product loops over B in NumPy)."""
    B, K, i = a.shape
    out = _reshape(a, (B * K, i), xp) @ m
    return out if flat else _reshape(out, (B, K, m.shape[1]), xp)


def _transpose(a: Any, xp: Any) -> Any:
    """The transpose of a 2-D array (`.T` is the array API's, and avoids a function call's overhead)."""
    return a.T


def _reshape(a: Any, shape: tuple[int, ...], xp: Any) -> Any:
    # The ndarray method: NumPy's np.reshape wrapper costs ~0.5 us a call, a tenth of a small gradient.
    return a.reshape(shape) if xp is np else xp.reshape(a, shape)


def _affine_param_vjp(c: _Comp, gF: np.ndarray, gc: np.ndarray, dt: float) -> np.ndarray:
    """sum_k dJ/dp through delta_k = J(p) x_k + c(p), from gF = sum_k lam[k+1] x[k]^T and gc = sum_k lam[k+1].

    The parameter VJP of an affine map is affine in x and linear in the cotangent g, so
    sum_k vjp_p(x_k, g_k) = sum_j vjp_p(e_j, G[:, j]) + vjp_p(0, g_c - sum_j G[:, j]) with G = S^T gF R^T
    and g_c = S^T gc: one call on len(reads_x) + 1 rows instead of one on B*K rows.
    """
    if c.Tp is None:
        # The whole map (gF, gc) -> dJ/dp is linear. Its matrix comes from one VJP per entry of gs, with the
        # gathers folded in, so every later call is one small product.
        mx, m, n = c.Rx.shape[0], c.S.shape[1], c.S.shape[0]
        xs = np.vstack([np.eye(mx), np.zeros((1, mx))])
        rows = []
        for i in range((mx + 1) * m):
            e = np.zeros((mx + 1) * m)
            e[i] = 1.0
            rows.append(np.asarray(c.comp.step_vjp(xs, None, None, c.p_host, dt, e.reshape(mx + 1, m), np)[3], float))
        Tgs = np.array(rows)                                   # d(gp)/d(gs), gs = [G^T; g_off] flattened
        cols = []
        for i in range(n * n + n):                             # unit (gF, gc) through the gathers
            v = np.zeros(n * n + n)
            v[i] = 1.0
            gF_u, gc_u = v[:n * n].reshape(n, n), v[n * n:]
            G = c.S.T @ gF_u @ c.Rx.T
            gs = np.vstack([G.T, (c.S.T @ gc_u - G.sum(axis=1))[None, :]])
            cols.append(gs.reshape(-1) @ Tgs)
        c.Tp = np.array(cols)                                  # (n^2 + n, n_p)
    return np.concatenate([gF.reshape(-1), gc]) @ c.Tp


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
