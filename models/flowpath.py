"""The flow path: exact zero-order hold for networks whose dynamics depend on one flow input.

A pumped loop or a VAV box makes the continuous dynamics bilinear: dx/dt = (A0 + f P) x + b(u, d), with f
the loop's mass flow, one input. With f and b held over a step (zero-order hold), the step is exact:

    x[k+1] = Ad(f_k) x[k] + Gd(f_k) b_k,   [[Ad, Gd], [0, I]] = expm([[A0 + f P, I], [0, 0]] dt)

Ad and Gd are entire functions of the scalar f. On the input's range they are interpolated by Chebyshev
series of degree J, chosen at compile time so that the series matches expm to 1e-11 relative at random
flows. That is degree 8 for R2 and 5 for the stiff VAV closet of the tests. Tighter is not useful:
scaling and squaring leaves expm itself about 1e-12 off on stiff models. Against the exact per-step
exponentials, R2's states then agree to 4e-10 K and its input gradient to 7e-10 relative. A step then
costs a few small products instead of a matrix exponential, and its derivative with respect to f is the
derivative of the series:

    dJ/df_k = sum_j T_j'(s_k) ds/df (<lam[k+1] x[k]^T, C_j> + <lam[k+1] b_k^T, D_j>)

The adjoint needs no Fréchet derivative. Short horizons at small batches use a doubling scan of the
affine step maps (log2 K rounds of batched products). Large batches step sequentially over time-major
slabs. Flows outside the interpolation range, and parameter gradients, go to the exact per-step
exponential path (models.simulator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.expm import expm

_NODES = 48            # Chebyshev points for the coefficients
_TOL = 1e-11           # required accuracy of the series against expm, relative to max |Ad|, |Gd|
_MARGIN = 0.25         # the interpolation range extends a quarter of the input's span beyond its bounds (not below 0)
_CHUNK_ELEMENTS = 2**22  # per-step matrices built at once (32 MB in float64)
_SCAN_MAX_BATCH = 32   # up to this batch the doubling scan beats the sequential loop


class FlowPath:
    """Forward and adjoint of a network with one flow factor (see the module docstring)."""

    def __init__(self, mats: dict[str, Any], u_min: np.ndarray, u_max: np.ndarray, dt: float, xp: Any,
                 dtype: Any, xdtype: Any = None) -> None:
        self.ok = False
        self.xdtype = np.dtype(dtype) if xdtype is None else xdtype
        flows = mats["flows"]
        state_flows = [(j, other, P) for j, other, P, p in flows if np.any(P)]
        factors = {(j, other) for j, other, _ in state_flows}
        if len(factors) != 1 or next(iter(factors))[1] is not None:
            return  # A depends on more than one input (or on a product of two): the exact path handles it
        self.j = next(iter(factors))[0]
        Ac, Bc, Ec = (np.asarray(mats[k], dtype=float) for k in ("Ac", "Bc", "Ec"))
        n = Ac.shape[0]
        self.n, self.dt, self.xp, self.dtype = n, float(dt), xp, np.dtype(dtype)
        P = sum(np.asarray(P_, dtype=float) for _, _, P_ in state_flows)
        span = float(u_max[self.j] - u_min[self.j])
        if not np.isfinite(span) or span <= 0:
            return
        # A flow that cannot be negative keeps 0 as its lower end: a negative flow through a stiff node makes
        # the exponential explode (and no input is allowed there anyway; out-of-range flows take the exact path).
        self.lo = float(u_min[self.j]) - _MARGIN * span
        if u_min[self.j] >= 0:
            self.lo = max(self.lo, 0.0)
        self.hi = float(u_max[self.j]) + _MARGIN * span
        C, D, J = _chebyshev(Ac, P, self.lo, self.hi, self.dt)
        if C is None:
            return
        self.J = J
        self.Bc, self.Ec = Bc, Ec
        self.offsets = [(j, other, np.asarray(p, dtype=float)) for j, other, P_, p in flows if np.any(p)]
        as_xp = lambda m: xp.asarray(np.ascontiguousarray(m).astype(self.dtype))  # noqa: E731
        self.C = as_xp(C.reshape(J + 1, n * n))           # Ad = sum_j T_j(s) C_j
        self.D = as_xp(D.reshape(J + 1, n * n))
        self.CD = as_xp(np.concatenate([C.reshape(J + 1, n * n), D.reshape(J + 1, n * n)], axis=1))
        self.Bc_t, self.Ec_t = as_xp(Bc.T), as_xp(Ec.T)
        self.Bc_x, self.Ec_x = as_xp(Bc), as_xp(Ec)
        self.p_x = [(j, other, as_xp(p)) for j, other, p in self.offsets]
        self._j = as_xp(np.arange(J + 1.0))
        self._sign = as_xp((-1.0) ** (np.arange(J + 1) + 1))
        self.ok = True

    # -- pieces -----------------------------------------------------------------------------------------
    def in_range(self, u: Any) -> bool:
        f = u[..., self.j]
        return bool(float(self.xp.min(f)) >= self.lo and float(self.xp.max(f)) <= self.hi)

    def _s(self, f: Any) -> Any:
        return (2.0 * f - (self.lo + self.hi)) / (self.hi - self.lo)

    def _cheb(self, s: Any, derivative: bool = False) -> tuple[Any, Any]:
        """T_j(s) = cos(j acos s) and, when asked, dT_j/ds = j sin(j t) / sin(t), on a new last axis (…, J+1).

        s is in [-1, 1] (in_range); at s = +-1 the derivative takes its limit (+-1)^(j+1) j^2.
        """
        xp = self.xp
        if s.size > 4096:
            # Large batches: the three-term recurrences (a few multiply-adds per entry) beat cos/sin.
            T = [xp.ones_like(s), s]
            dT = [xp.zeros_like(s), xp.ones_like(s)]
            for _ in range(2, self.J + 1):
                T.append(2 * s * T[-1] - T[-2])
                if derivative:
                    dT.append(2 * T[-2] + 2 * s * dT[-1] - dT[-2])
            return (xp.stack(T[:self.J + 1], axis=-1),
                    xp.stack(dT[:self.J + 1], axis=-1) if derivative else None)
        t = xp.acos(xp.clip(s, -1.0, 1.0)) if hasattr(xp, "acos") else xp.arccos(xp.clip(s, -1.0, 1.0))
        jt = t[..., None] * self._j
        T = xp.cos(jt)
        if not derivative:
            return T, None
        sin_t = xp.sin(t)[..., None]
        edge = xp.abs(sin_t) < 1e-8
        limit = xp.where(t[..., None] < 1.0, self._j ** 2, self._sign * self._j ** 2)
        dT = xp.where(edge, limit, self._j * xp.sin(jt) / xp.where(edge, 1.0, sin_t))
        return T, dT

    def _drive(self, u: Any, d: Any) -> Any:
        """The held continuous-time drive b = Bc u + Ec d + sum of flow offsets (…, n)."""
        b = u @ self.Bc_t + d @ self.Ec_t
        for j, other, p in self.p_x:
            f = u[..., j]
            if other is not None:
                f = f * (u[..., other[1]] if other[0] == "u" else d[..., other[1]])
            b = b + f[..., None] * p
        return b

    def _mats(self, u: Any, derivative: bool = False) -> tuple[Any, Any, Any]:
        """Ad_k, Gd_k (…, n, n) at the steps' flows, and dT/ds (…, J+1) when asked."""
        T, dT = self._cheb(self._s(u[..., self.j]), derivative)
        shape = (*T.shape[:-1], self.n, self.n)
        return xp_reshape(T @ self.C, shape, self.xp), xp_reshape(T @ self.D, shape, self.xp), dT

    def _chunks(self, B: int, K: int) -> list[slice]:
        size = max(1, min(K, _CHUNK_ELEMENTS // max(1, B * self.n * self.n)))
        return [slice(k, min(K, k + size)) for k in range(0, K, size)]

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, x0: Any, u: Any, d: Any) -> Any:
        xp = self.xp
        B, K, _ = u.shape
        n = self.n
        x = xp.empty((B, K + 1, n), dtype=self.xdtype)
        x[:, 0, :] = x0
        for sl in self._chunks(B, K):
            Ad, Gd, _ = self._mats(u[:, sl, :])
            w = (Gd @ self._drive(u[:, sl, :], d[:, sl, :])[..., None])[..., 0]
            x[:, sl.start + 1:sl.stop + 1, :] = _affine_scan(Ad, w, x[:, sl.start, :], xp)
        return x

    # -- adjoint ----------------------------------------------------------------------------------------
    def backward(self, x: Any, u: Any, d: Any, cx: Any) -> tuple[Any, Any, Any]:
        """(g_u, g_x0, g_d) from the cotangent cx (B, K+1, n) on the states."""
        xp = self.xp
        B, K, _ = u.shape
        n = self.n
        g_u = xp.zeros_like(u)
        g_d = xp.zeros_like(d)
        lam = cx[:, K, :]
        scale = 2.0 / (self.hi - self.lo)
        for sl in reversed(self._chunks(B, K)):
            uc, dc = u[:, sl, :], d[:, sl, :]
            Ad, Gd, dT = self._mats(uc, derivative=True)
            At = _mT(Ad, xp)
            # lam[k] = Ad_k^T lam[k+1] + cx[k], run backwards over the chunk: a forward scan on reversed steps.
            rev = slice(sl.stop - 1, sl.start - 1 if sl.start > 0 else None, -1)
            lams_rev = _affine_scan(xp.flip(At, axis=1), cx[:, rev, :], lam, xp)  # lam[stop-1], ..., lam[start]
            L_all = xp.concat([xp.flip(lams_rev, axis=1), lam[:, None, :]], axis=1)  # lam[start .. stop]
            L = L_all[:, 1:, :]                                                   # lam[k+1] for the chunk's steps
            lam = L_all[:, 0, :]
            b = self._drive(uc, dc)
            g_b = (_mT(Gd, xp) @ L[..., None])[..., 0]
            g_u[:, sl, :] += g_b @ self.Bc_x
            g_d[:, sl, :] += g_b @ self.Ec_x
            for j, other, p in self.p_x:
                s_ = g_b @ p
                if other is None:
                    g_u[:, sl, j] += s_
                else:
                    o = uc[..., other[1]] if other[0] == "u" else dc[..., other[1]]
                    g_u[:, sl, j] += s_ * o
                    (g_u if other[0] == "u" else g_d)[:, sl, other[1]] += s_ * uc[..., j]
            # dJ/df through Ad and Gd: <lam x^T, dAd/df> + <lam b^T, dGd/df>.
            outer = xp.concat([xp.reshape(L[..., :, None] * x[:, sl, None, :], (*L.shape[:2], n * n)),
                               xp.reshape(L[..., :, None] * b[..., None, :], (*L.shape[:2], n * n))], axis=-1)
            g_u[:, sl, self.j] += scale * xp.sum((outer @ _mT(self.CD, xp)) * dT, axis=-1)
        return g_u, lam, g_d


def flow_step_jacobians(fp: FlowPath, x: np.ndarray, u: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dx[k+1]/dx[k] = Ad(f_k) and dx[k+1]/du[k] = Gd(f_k) db/du + (dAd/df x[k] + dGd/df b_k) e_j^T, host arrays."""
    from models.backend import to_host

    xp = fp.xp
    Ad, Gd, dT = fp._mats(u, derivative=True)
    b = fp._drive(u, d)
    scale = 2.0 / (fp.hi - fp.lo)
    Ad, Gd, dT, b, xh, uh, dh = (to_host(a) for a in (Ad, Gd, dT, b, x, u, d))
    n = fp.n
    B, K = uh.shape[0], uh.shape[1]
    C, D = to_host(fp.C).reshape(-1, n, n), to_host(fp.D).reshape(-1, n, n)
    dAd = scale * np.einsum("bkj,jmn->bkmn", dT, C)
    dGd = scale * np.einsum("bkj,jmn->bkmn", dT, D)
    db = np.broadcast_to(fp.Bc, (B, K, n, fp.Bc.shape[1])).copy()     # d b / d u (B, K, n, nu)
    for j, other, p in fp.offsets:
        f_other = 1.0 if other is None else (uh[..., other[1]] if other[0] == "u" else dh[..., other[1]])
        db[..., j] += np.multiply.outer(np.asarray(f_other) * np.ones((B, K)), p)
        if other is not None and other[0] == "u":
            db[..., other[1]] += np.multiply.outer(uh[..., j], p)
    Bu = Gd @ db
    Bu[..., fp.j] += np.einsum("bkmn,bkn->bkm", dAd, xh[:, :K]) + np.einsum("bkmn,bkn->bkm", dGd, b)
    del xp
    return Ad, Bu


def _mT(a: Any, xp: Any) -> Any:
    return xp.matrix_transpose(a) if hasattr(xp, "matrix_transpose") else xp.swapaxes(a, -1, -2)


def xp_reshape(a: Any, shape: tuple, xp: Any) -> Any:
    return xp.reshape(a, shape)


def _affine_scan(A: Any, w: Any, x0: Any, xp: Any) -> Any:
    """States x[1..K] of x[k+1] = A_k x[k] + w_k from x0, for A (B, K, n, n), w (B, K, n), x0 (B, n)."""
    B, K = A.shape[0], A.shape[1]
    if B > _SCAN_MAX_BATCH:
        out = xp.empty(w.shape, dtype=w.dtype)
        xk = x0
        for k in range(K):
            xk = (A[:, k, ...] @ xk[..., None])[..., 0] + w[:, k, :]
            out[:, k, :] = xk
        return out
    # Doubling (Hillis-Steele) scan on the augmented maps M_k = [[A_k, w_k], [0, 1]]: after round r, M[k]
    # maps x[k-2^r+1] to x[k+1]. One product per round.
    n = A.shape[-1]
    M = xp.zeros((B, K, n + 1, n + 1), dtype=A.dtype)
    M[..., :n, :n] = A
    M[..., :n, n] = w
    M[..., n, n] = 1.0
    off = 1
    while off < K:
        M[:, off:, ...] = M[:, off:, ...] @ M[:, :K - off, ...]
        off *= 2
    return (M[..., :n, :n] @ x0[:, None, :, None])[..., 0] + M[..., :n, n]


def _chebyshev(A0: np.ndarray, P: np.ndarray, lo: float, hi: float, dt: float
               ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Chebyshev coefficients (J+1, n, n) of Ad(f) and Gd(f) on [lo, hi], or None when the series does not
    reach _TOL against expm at random flows."""
    n = A0.shape[0]

    def exact(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        M = np.zeros((len(f), 2 * n, 2 * n))
        M[:, :n, :n] = A0 + f[:, None, None] * P
        M[:, :n, n:] = np.eye(n)
        E = expm(M * dt)
        return E[:, :n, :n], E[:, :n, n:]

    theta = np.pi * (np.arange(_NODES) + 0.5) / _NODES
    s = np.cos(theta)
    Ad, Gd = exact(lo + (s + 1) * (hi - lo) / 2)
    k = np.arange(_NODES)
    basis = np.cos(np.outer(k, theta)) * (2.0 / _NODES)      # (J, nodes)
    basis[0] /= 2
    cA = np.tensordot(basis, Ad, axes=(1, 0))
    cG = np.tensordot(basis, Gd, axes=(1, 0))
    scale = max(np.abs(Ad).max(), np.abs(Gd).max())
    rng = np.random.default_rng(0)
    st = np.concatenate([rng.uniform(-1, 1, 64), [-1.0, 1.0]])
    eA, eG = exact(lo + (st + 1) * (hi - lo) / 2)
    for J in range(4, _NODES):
        T = np.cos(np.outer(np.arccos(st), np.arange(J + 1)))  # (points, J+1)
        err = max(np.abs(np.tensordot(T, cA[:J + 1], axes=(1, 0)) - eA).max(),
                  np.abs(np.tensordot(T, cG[:J + 1], axes=(1, 0)) - eG).max())
        if err <= _TOL * scale:
            return cA[:J + 1], cG[:J + 1], J
    return None, None, 0
