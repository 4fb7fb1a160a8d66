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

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.expm import expm

_NODES = 48            # Chebyshev points for the coefficients
_TOL = 1e-11           # required accuracy of the series against expm, relative to max |Ad|, |Gd|
_MARGIN = 0.25         # the interpolation range extends a quarter of the input's span beyond its bounds (not below 0)
_CHUNK_ELEMENTS = 2**22  # per-step matrices built at once (32 MB in float64)
_SCAN_MAX_BATCH = 32   # up to this batch the doubling scan beats the sequential loop


@dataclass
class FlowTape:
    """What the forward pass computed that the adjoint needs: step matrices, drive, series values."""

    Ad: Any
    Gd: Any
    b: Any
    s: Any   # the flows on the series' [-1, 1] scale
    T: Any   # T_0 .. T_{J+1} at s
    rounds: list | None  # the forward's doubling-scan rounds (small batches), see _adjoint_scan


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
        self._j2 = as_xp(np.arange(J + 2.0))
        # [C_j | D_j] side by side (n, 2n) for degrees 1 .. J, flattened, transposed (2 n^2, J) and scaled by
        # ds/df (CDs), and also by j/2 (CDq; see _dcheb_tape).
        cdh = np.concatenate([C, D], axis=2).reshape(J + 1, 2 * n * n)[1:].T * (2.0 / (self.hi - self.lo))
        self.CDs, self.CDq = as_xp(cdh), as_xp(cdh * (np.arange(1.0, J + 1) / 2))
        self._sign = as_xp((-1.0) ** (np.arange(J + 1) + 1))
        self._chunk_cache: dict[tuple[int, int], list[slice]] = {}
        self.ok = True

    # -- pieces -----------------------------------------------------------------------------------------
    def in_range(self, u: Any) -> bool:
        f = u[..., self.j]
        return bool(float(_amin(f, self.xp)) >= self.lo and float(_amax(f, self.xp)) <= self.hi)

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
        return T, self._dcheb(t, jt)

    def _dcheb(self, t: Any, jt: Any) -> Any:
        """dT_j/ds at s = cos t (jt = j t on a last axis), with the limits at s = +-1."""
        xp = self.xp
        sin_t = xp.sin(t)[..., None]
        if float(_amin(xp.abs(sin_t), xp)) >= 1e-8:  # no flow at an end of the range (the usual case)
            return self._j * xp.sin(jt) / sin_t
        edge = xp.abs(sin_t) < 1e-8
        limit = xp.where(t[..., None] < 1.0, self._j ** 2, self._sign * self._j ** 2)
        return xp.where(edge, limit, self._j * xp.sin(jt) / xp.where(edge, 1.0, sin_t))

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
        return (*self._from_series(T), dT)

    def _from_series(self, T: Any) -> tuple[Any, Any]:
        shape = (*T.shape[:-1], self.n, self.n)
        return xp_reshape(T @ self.C, shape, self.xp), xp_reshape(T @ self.D, shape, self.xp)

    def _chunks(self, B: int, K: int) -> list[slice]:
        chunks = self._chunk_cache.get((B, K))
        if chunks is None:
            size = max(1, min(K, _CHUNK_ELEMENTS // max(1, B * self.n * self.n)))
            chunks = self._chunk_cache[(B, K)] = [slice(k, min(K, k + size)) for k in range(0, K, size)]
        return chunks

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, x0: Any, u: Any, d: Any) -> tuple[Any, FlowTape | None]:
        """States (B, K+1, n), and what the adjoint reuses when the horizon is one chunk (else None)."""
        xp = self.xp
        B, K, _ = u.shape
        n = self.n
        x = xp.empty((B, K + 1, n), dtype=self.xdtype)
        x[:, 0, :] = x0
        chunks = self._chunks(B, K)
        tape = None
        for sl in chunks:
            uc = u[:, sl, :]
            s = self._s(uc[..., self.j])
            if len(chunks) == 1 and s.size <= 4096:
                # The step matrices, the drive and the series' angles are the adjoint's inputs too: kept, the
                # backward pass skips rebuilding them (the angles give the series' derivative in three calls).
                t = xp.acos(xp.clip(s, -1.0, 1.0)) if hasattr(xp, "acos") else xp.arccos(xp.clip(s, -1.0, 1.0))
                T = xp.cos(t[..., None] * self._j2)       # T_0 .. T_{J+1}: the last one for the derivative
                Ad, Gd = self._from_series(T[..., :self.J + 1])
                b = self._drive(uc, d[:, sl, :])
                tape = FlowTape(Ad, Gd, b, s, T, [] if B <= _SCAN_MAX_BATCH else None)
            else:
                Ad, Gd = self._from_series(self._cheb(s)[0])
                b = self._drive(uc, d[:, sl, :])
            w = (Gd @ b[..., None])[..., 0]
            x[:, sl.start + 1:sl.stop + 1, :] = _affine_scan(Ad, w, x[:, sl.start, :], xp,
                                                             None if tape is None else tape.rounds)
        return x, tape

    # -- adjoint ----------------------------------------------------------------------------------------
    def backward(self, x: Any, u: Any, d: Any, cx: Any, tape: FlowTape | None = None, want_d: bool = True
                 ) -> tuple[Any, Any, Any]:
        """(g_u, g_x0, g_d) from the cotangent cx (B, K+1, n) on the states; `tape` from `forward`.
        g_d is None without want_d."""
        xp = self.xp
        B, K, _ = u.shape
        n = self.n
        if tape is None:
            g_u = xp.zeros_like(u)
            g_d = xp.zeros_like(d)
        lam = cx[:, K, :]
        for sl in reversed(self._chunks(B, K)):
            uc, dc = u[:, sl, :], d[:, sl, :]
            w = None
            if tape is not None:
                Ad, Gd, b = tape.Ad, tape.Gd, tape.b
                dT1, w = self._dcheb_tape(tape)
            else:
                Ad, Gd, dT = self._mats(uc, derivative=True)
                b = self._drive(uc, dc)
                dT1 = dT[..., 1:]  # T_0 is constant: degrees 1 .. J carry the derivative
            if tape is not None and tape.rounds is not None:
                L_all = _adjoint_scan(tape.rounds, cx, xp)                       # one chunk: lam[0 .. K]
            else:
                At = _mT(Ad, xp)
                # lam[k] = Ad_k^T lam[k+1] + cx[k], backwards over the chunk: a forward scan on reversed steps.
                rev = slice(sl.stop - 1, sl.start - 1 if sl.start > 0 else None, -1)
                lams_rev = _affine_scan(xp.flip(At, axis=1), cx[:, rev, :], lam, xp)  # lam[stop-1 .. start]
                L_all = xp.concat([xp.flip(lams_rev, axis=1), lam[:, None, :]], axis=1)  # lam[start .. stop]
            L = L_all[:, 1:, :]                                                   # lam[k+1] for the chunk's steps
            lam = L_all[:, 0, :]
            g_b = (L[..., None, :] @ Gd)[..., 0, :]   # Gd^T lam
            if tape is not None:  # one chunk: the whole horizon
                g_u = g_b @ self.Bc_x
                g_d = g_b @ self.Ec_x if want_d or self.p_x else None
            else:
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
            # dJ/df through Ad and Gd: <lam x^T, dAd/df> + <lam b^T, dGd/df>, i.e. lam^T [dAd | dGd] [x; b] with
            # [dAd | dGd] = ds/df sum_j dT_j/ds [C_j | D_j]: one outer product against the side-by-side
            # coefficients. From the tape, dT_j/ds = j/2 (T_{j-1} - T_{j+1}) / w: j/2 and ds/df are in CDq.
            xb = xp.concat([x[:, sl, :], b], axis=-1)
            outer = xp.reshape(L[..., :, None] * xb[..., None, :], (*L.shape[:2], 2 * n * n))
            if w is not None:
                g_f = _vecdot(outer @ self.CDq, dT1, xp) / w
            else:
                g_f = _vecdot(outer @ self.CDs, dT1, xp)
            g_u[:, sl, self.j] += g_f
        return g_u, lam, g_d

    def _dcheb_tape(self, tape: FlowTape) -> tuple[Any, Any]:
        """The series' slope for degrees 1 .. J (T_0 is constant) from the forward's T_0 .. T_{J+1}.

        dT_j/ds = j (T_{j-1} - T_{j+1}) / (2 (1 - s^2)): no transcendental calls. Returns (T_{j-1} - T_{j+1},
        1 - s^2); the factors j/2 are in CDq. Near s = +-1 (a flow at an end of the range: a pump that is off)
        that difference cancels, and the angle form takes over: (dT_j/ds, None)."""
        xp = self.xp
        w = 1.0 - tape.s * tape.s
        if float(_amin(w, xp)) < 1e-4:
            t = xp.acos(xp.clip(tape.s, -1.0, 1.0)) if hasattr(xp, "acos") else xp.arccos(xp.clip(tape.s, -1.0, 1.0))
            return self._dcheb(t, t[..., None] * self._j)[..., 1:], None
        return tape.T[..., :self.J] - tape.T[..., 2:], w


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


def _amin(a: Any, xp: Any) -> Any:
    # The ndarray method: np.min's wrapper costs ~1.5 us a call, a few percent of a small gradient.
    return a.min() if xp is np else xp.min(a)


def _amax(a: Any, xp: Any) -> Any:
    return a.max() if xp is np else xp.max(a)


def _vecdot(a: Any, b: Any, xp: Any) -> Any:
    """sum(a * b, axis=-1) in one call where the namespace has vecdot."""
    return xp.vecdot(a, b) if hasattr(xp, "vecdot") else xp.sum(a * b, axis=-1)


def _mT(a: Any, xp: Any) -> Any:
    # The attribute (array API 2022): NumPy's matrix_transpose function costs ~1.5 us more per call.
    return a.mT if hasattr(a, "mT") else xp.swapaxes(a, -1, -2)


def xp_reshape(a: Any, shape: tuple, xp: Any) -> Any:
    return xp.reshape(a, shape)


def _affine_scan(A: Any, w: Any, x0: Any, xp: Any, rounds: list | None = None) -> Any:
    """States x[1..K] of x[k+1] = A_k x[k] + w_k from x0, for A (B, K, n, n), w (B, K, n), x0 (B, n).

    With a list as `rounds` (and the doubling scan), the augmented maps of every round are appended to it."""
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
    if rounds is not None:
        rounds.append(M)
    off = 1
    while off < K:
        if rounds is None:
            M[:, off:, ...] = M[:, off:, ...] @ M[:, :K - off, ...]
        else:
            # Each round into a new array (the same work as in place): the adjoint's scan reuses them all.
            new = xp.empty_like(M)
            new[:, :off, ...] = M[:, :off, ...]
            if xp is np:  # straight into place, no temporary
                np.matmul(M[:, off:, ...], M[:, :K - off, ...], out=new[:, off:, ...])
            else:
                new[:, off:, ...] = M[:, off:, ...] @ M[:, :K - off, ...]
            M = new
            rounds.append(M)
        off *= 2
    return (M[..., :n, :n] @ x0[:, None, :, None])[..., 0] + M[..., :n, n]


def _adjoint_scan(rounds: list, cx: Any, xp: Any) -> Any:
    """lam[0..K] of lam[k] = A_k^T lam[k+1] + cx[k] from lam[K] = cx[K], with the forward scan's rounds.

    lam[k] = sum_j S(k, j)^T cx[j] with S(k, j) = A_{j-1} ... A_k. After round r, v[k] holds that sum over the
    window j = k .. k + 2^r - 1, and the next round adds S(k, k + 2^r)^T v[k + 2^r]. S(k, k + 2^r) is the
    linear part of the forward's round-r map at step k + 2^r - 1 (the window of 2^r steps ending there), so
    the adjoint needs matrix-vector products only."""
    K = cx.shape[1] - 1
    n = cx.shape[2]
    v = cx.copy() if hasattr(cx, "copy") else xp.asarray(cx, copy=True)  # CuPy 13's asarray takes no copy=
    off, r = 1, 0
    while off <= K:
        S = rounds[r][:, off - 1:K, :n, :n]
        v[:, :K + 1 - off, :] += (v[:, off:, None, :] @ S)[..., 0, :]  # S^T v as a row times S
        off, r = 2 * off, r + 1
    return v


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
