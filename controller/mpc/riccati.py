"""Riccati factorisation of the Newton system of an MPC problem on a diagonal (modal) linear model.

The Newton step of the horizon problem is an LQ problem in the step d (K, nu): states follow
z[k+1] = a*z[k] + Bm d[k] with a diagonal, outputs C z[k+1] carry curvature D[k] (comfort), input changes
d[k] - d[k-1] carry curvature m[k] (move suppression, rate-limit penalties), and the gradient enters as a
linear term on d. The input at the previous step is carried as extra state v so the change terms stay
stage-wise. Inputs that the active set fixes (at a bound or the energy kink) are masked out.

With a diagonal, A'PA is an elementwise product and each step costs a handful of small dense products
plus one (nu x nu) inverse; independent subsystems (buildings of a campus) are a batch axis.
The closed-loop matrices are never formed (that product cost as much as the rest of the factorisation):
each solve applies a x + baug (gain x + kff) in two short loops; several right-hand sides solve in one pass.

Move blocking: at a step that continues a block, the input is not a decision but repeats v (the previous
input), so the step contributes no factorisation, only the closed-loop transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Products of the per-step loops go through np.dot into preallocated C-contiguous buffers: at these sizes
# (20-60 wide) its call costs ~0.4 us less than np.matmul's ufunc dispatch, about 10 % of a factorisation.
dot = np.dot


def _inv(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Inverse of a small SPD matrix into `out`. The public np.linalg.inv, so that a singular reduced Hessian
    raises LinAlgError instead of leaving NaN in the gains (the private gufunc under it skips that check;
    it was ~3 us faster per 20x20 call, about 5 % of a cold office-20 solve)."""
    out[...] = np.linalg.inv(a)
    return out


@dataclass
class RiccatiFactor:
    gain: np.ndarray  # (K, nb, nu, nx): d[k] = gain x[k] + kff[k]; closed loop a x + baug d (held: ahold x)
    hinv: np.ndarray  # (K, nb, nu, nu) inverse of the reduced input Hessian (zero rows for fixed inputs)
    free: np.ndarray  # (K, nb, nu) float mask
    idle: np.ndarray  # (K,) steps with no free input and nothing to carry: gain and hinv are zero
    # True where gain leaves out the diagonal a on its right (d[k] = gain (a x[k]) + kff[k]): the
    # factorisation of one subsystem without the previous-input state saves a product per step that way.
    prescaled: bool = False


class LQStructure:
    """What does not change between factorisations: a, Bm, C of each subsystem, block pattern."""

    def __init__(self, a: np.ndarray, Bm: np.ndarray, C: np.ndarray, K: int, held: np.ndarray | None = None,
                 augment: bool = True):
        # a (nb, nc), Bm (nb, nc, nu), C (nb, nz, nc); held (K,) bool: step repeats the previous input.
        # augment: carry the previous input as state (needed for move terms, rate limits and blocking);
        # without them the factorisation works on the modal states alone, about half the arithmetic.
        self.a, self.Bm, self.C, self.K = a, Bm, C, K
        nb, nc, nu = Bm.shape
        if held is not None and np.any(held) and not augment:
            raise ValueError("move blocking needs the augmented state")
        self.augment = augment
        self.nb, self.nc, self.nu, self.nx = nb, nc, nu, nc + (nu if augment else 0)
        nx = self.nx
        self.baug = (np.concatenate([Bm, np.broadcast_to(np.eye(nu), (nb, nu, nu))], axis=1) if augment
                     else np.ascontiguousarray(Bm))  # (nb, nx, nu)
        self.aaug = np.zeros((nb, nx))
        self.aaug[:, :nc] = a
        self.AA = self.aaug[:, :, None] * self.aaug[:, None, :]  # A'PA = P * AA elementwise
        self.held = np.zeros(K, bool) if held is None else np.asarray(held, bool)
        # Transition of a held step: z+ = a z + Bm v, v+ = v.
        self.ahold = np.zeros((nb, nx, nx))
        self.ahold[:, :nc, :nc] = a[:, :, None] * np.eye(nc)
        if augment:
            self.ahold[:, :nc, nc:] = Bm
            self.ahold[:, nc:, nc:] = np.eye(nu)
        self.eye_u = np.eye(nu)
        # Factor buffers, reused: a campus-sized factorisation is ~100 MB and first-touching it each time
        # costs more than the arithmetic. A RiccatiFactor is valid until the next factor() call.
        self._gain = np.empty((K, nb, nu, nx))
        self._hinv = np.empty((K, nb, nu, nu))
        self.c_outer = (C[:, :, :, None] * C[:, :, None, :]).reshape(nb, C.shape[1], nc * nc)  # rows' c c'
        # Per-factorisation temporaries of a single subsystem, also reused: at ~1-3 MB each, fresh ones
        # come from mmap and page-fault on first touch, which cost more than filling them.
        if nb == 1:
            self._q_all = np.empty((K, nc * nc))
            self._bk = np.empty((K, nx, nu))
            self._bkT = np.empty((K, nu, nx))
            self._views = {"P": np.zeros((nx, nx)), "PB": np.empty((nx, nu)), "Hdd": np.empty((nu, nu)),
                           "Hdx": np.empty((nu, nx)), "T": np.empty((nx, nx)), "bk": list(self._bk),
                           "bkT": list(self._bkT), "hinv": list(self._hinv[:, 0]), "gain": list(self._gain[:, 0])}
            self._views["gainT"] = [g.T for g in self._views["gain"]]
            self._bT = np.ascontiguousarray(self.baug[0].T)
            self._bneg = -self.baug[0]
            self.CT0 = np.ascontiguousarray(C[0].T)
            self._ext: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # _solve_prescaled_one's buffers
            self._ext_fac: RiccatiFactor | None = None  # the factor whose gain _ext holds
        else:
            self._hdd_add = np.empty((K, nb, nu, nu))

    def factor(self, D: np.ndarray, m: np.ndarray, free: np.ndarray, r: float | np.ndarray
               ) -> RiccatiFactor:
        """D (nb, K, nz) output curvature, m (nb, K, nu) change curvature, r (nb, K, nu) input curvature,
        free (nb, K, nu) bool.

        Held steps (move blocking) must have free = False and m = 0: their input is the previous one.
        """
        if not self.augment and np.any(m):
            raise ValueError("input-change curvature needs the augmented state")
        r = np.broadcast_to(r, free.shape)
        errs = np.seterr(divide="ignore", invalid="ignore", over="ignore")  # singular Hdd: checked by callers
        try:
            if self.nb == 1:
                return self._factor_single(D[0], m[0], free[0], r[0])
            return self._factor_batch(D, m, free, r)
        finally:
            np.seterr(**errs)

    def _factor_batch(self, D: np.ndarray, m: np.ndarray, free: np.ndarray, r: np.ndarray) -> RiccatiFactor:
        """factor() for a batch of subsystems (a campus), step by step over the batch axis."""
        K, nb, nc, nu, nx = self.K, self.nb, self.nc, self.nu, self.nx
        f = np.ascontiguousarray(np.moveaxis(free, 1, 0)).astype(float)  # (K, nb, nu)
        mk = np.ascontiguousarray(np.moveaxis(m, 1, 0))  # (K, nb, nu)
        vi = nc + np.arange(nu)
        # Output curvature C'D[k]C on z[k+1], step by step (the all-steps array would be large).
        Dk, C, CT = np.moveaxis(D, 1, 0), self.C, self.C.transpose(0, 2, 1)

        def qzz(k: int) -> np.ndarray:
            return (CT * Dk[k][:, None, :]) @ C
        rk = np.moveaxis(r, 1, 0)
        hdd_add = np.multiply((f * (mk + rk) + (1.0 - f))[..., None], self.eye_u, out=self._hdd_add)
        hdx_add = None
        if self.augment:
            hdx_add = np.zeros((K, nb, nu, nx))
            hdx_add[..., np.arange(nu), vi] = -mk * f
        gain, hinv = self._gain, self._hinv
        gain[self.held] = 0.0
        hinv[self.held] = 0.0
        baug, baugT, AA, held = self.baug, self.baug.transpose(0, 2, 1), self.AA, self.held
        P = np.zeros((nb, nx, nx))
        P[:, :nc, :nc] = qzz(K - 1)
        fa = f[..., :, None] * self.aaug[None, :, None, :]  # (K, nb, nu, nx)
        aholdT = self.ahold.transpose(0, 2, 1)
        for k in range(K - 1, -1, -1):
            if held[k]:
                P = aholdT @ P @ self.ahold
            else:
                PB = P @ baug
                Hdd = (baugT @ PB) * (f[k, :, :, None] * f[k, :, None, :]) + hdd_add[k]
                Hdx = PB.transpose(0, 2, 1) * fa[k]
                if hdx_add is not None:
                    Hdx += hdx_add[k]
                Hi = _inv(Hdd, hinv[k])
                G = np.matmul(Hi, Hdx, out=gain[k])
                P = P * AA - Hdx.transpose(0, 2, 1) @ G
            if k:
                P[:, :nc, :nc] += qzz(k - 1)
            if self.augment:
                P[:, vi, vi] += mk[k]
        # Gains were stored with the opposite sign: u = -G x.
        gain *= -1.0
        hinv *= f[..., :, None]  # exact zeros for fixed inputs
        hinv *= f[..., None, :]
        return RiccatiFactor(gain, hinv, f, np.zeros(K, bool))

    def _factor_single(self, D: np.ndarray, m: np.ndarray, free: np.ndarray, r: np.ndarray) -> RiccatiFactor:
        """factor() for one subsystem: D (K, nz), m, free, r (K, nu). Plain 2-D products into preallocated
        buffers through per-step views made once (at 96 steps of ~10 small products each, call and indexing
        overhead is a third of the time); diagonal additions go through strided views of the diagonals."""
        K, nc, nu, nx = self.K, self.nc, self.nu, self.nx
        v = self._views
        P, PB, Hdd, Hdx, T = v["P"], v["PB"], v["Hdd"], v["Hdx"], v["T"]
        gain, hinv = self._gain, self._hinv
        aa, ah = self.AA[0], self.ahold[0]
        neg_a = -self.aaug[0]  # Hdx is formed negated, so that gain = Hinv Hdx needs no sign pass
        f = free.astype(float)
        all_free = bool(free.all())  # interior point iterations: no masking needed
        h = (m + r) if all_free else f * (m + r) + (1.0 - f)  # fixed inputs: a unit diagonal, zero rows
        held = self.held.tolist()
        # Without input-change terms, a step with no free input only propagates P (an active-set step
        # fixes most inputs at night and at full power).
        idle_arr = ~free.any(axis=1) & ~self.held & (not self.augment)
        idle = idle_arr.tolist()
        gain[self.held | idle_arr] = 0.0
        hinv[self.held | idle_arr] = 0.0
        # Fixed inputs' columns of B are zeroed once for all steps: their rows of Hdd and the gain vanish.
        # Without the previous-input state, B enters negated (see below).
        bsrc = self.baug[0] if self.augment else self._bneg
        if all_free:
            bk, bkT = [bsrc] * K, [np.ascontiguousarray(bsrc.T)] * K
        else:
            np.multiply(bsrc[None], f[:, None, :], out=self._bk)
            np.copyto(self._bkT, self._bk.transpose(0, 2, 1))
            bk, bkT = v["bk"], v["bkT"]
        hinv_v, gain_v = v["hinv"], v["gain"]
        # Output curvature C'D[k]C on z[k+1], all steps in one product with the rows' outer products.
        ql = list(np.matmul(D, self.c_outer[0], out=self._q_all).reshape(K, nc, nc))
        hl = list(h)
        hdd_diag = Hdd.reshape(-1)[::nu + 1]
        Pz = P[:nc, :nc]
        P.fill(0.0)
        Pz += ql[K - 1]
        if not self.augment:
            # With Bn = -B: PBn = P Bn, Hdd = Bn' PBn, the raw gain Gr = Hinv PBn' (the gain is Gr diag(a))
            # and the downdate PBn Gr = PB Hinv PB' is taken before the a a' scaling: no Hdx product.
            PBT = PB.T
            for k in range(K - 1, -1, -1):
                if not idle[k]:
                    dot(P, bk[k], PB)
                    dot(bkT[k], PB, Hdd)
                    hdd_diag += hl[k]
                    hi, g = hinv_v[k], gain_v[k]
                    _inv(Hdd, hi)
                    dot(hi, PBT, g)
                    dot(PB, g, T)
                    P -= T
                P *= aa
                if k:
                    P += ql[k - 1]
        else:
            ml, mfl = list(m), list(m * f)
            hdx_diag = Hdx.reshape(-1)[nc::nx + 1]  # entries (i, nc + i): input i against its previous value
            pv_diag = P.reshape(-1)[nc * (nx + 1)::nx + 1]  # the previous inputs' diagonal
            for k in range(K - 1, -1, -1):
                if held[k]:
                    np.copyto(P, ah.T @ P @ ah)
                else:
                    dot(P, bk[k], PB)
                    dot(bkT[k], PB, Hdd)
                    hdd_diag += hl[k]
                    np.multiply(PB.T, neg_a, out=Hdx)
                    hdx_diag += mfl[k]
                    _inv(Hdd, hinv_v[k])
                    dot(hinv_v[k], Hdx, gain_v[k])
                    P *= aa
                    dot(Hdx.T, gain_v[k], T)
                    P -= T
                if k:
                    Pz += ql[k - 1]
                pv_diag += ml[k]
        if not all_free:
            hinv[:, 0] *= f[:, :, None]  # exact zeros for fixed inputs
            hinv[:, 0] *= f[:, None, :]
        return RiccatiFactor(gain, hinv, f[:, None, :], idle_arr, prescaled=not self.augment)

    def solve(self, fac: RiccatiFactor, g: np.ndarray, outputs: bool = False
              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Newton steps d for gradients g, both (nb, K, nu) or (R, nb, K, nu): min 1/2 d'Hd + g'd.

        Held steps' gradients must already be summed into their block's first step (and zero).
        outputs: also return the steps' output response C z[k+1], (nb, K, nz) or (R, nb, K, nz), read off
        the states the forward pass goes through anyway (a separate forward map would cost more).
        """
        held, nc = self.held, self.nc
        single = g.ndim == 3
        if single and fac.prescaled:  # the interior point method's case: no layout changes needed
            d1, x1 = self._solve_prescaled_one(fac, g[0] * fac.free[:, 0])
            if not outputs:
                return d1[None, :, :, 0]
            return d1[None, :, :, 0], (x1[1:, :nc, 0] @ self.CT0)[None]
        G = g[None] if single else g
        gk = np.ascontiguousarray(G.transpose(2, 1, 3, 0)) * fac.free[..., None]  # (K, nb, nu, R)
        if self.nb == 1 and not held.any():
            d1, x1 = self._solve_single(fac, gk[:, 0])
            d, x = d1[:, None], x1[:, None]
        else:
            d, x = self._solve_general(fac, gk)
        out = d.transpose(3, 1, 0, 2)  # (R, nb, K, nu)
        if not outputs:
            return out[0] if single else out
        y = np.matmul(self.C, x[1:, :, :nc, :]).transpose(3, 1, 0, 2)  # (R, nb, K, nz)
        return (out[0], y[0]) if single else (out, y)

    def _solve_general(self, fac: RiccatiFactor, gk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """solve() for a batch or with move blocking: gk (K, nb, nu, R) -> steps (K, nb, nu, R) and the states
        they lead through (K + 1, nb, nx, R)."""
        K, held, nc, R = self.K, self.held, self.nc, gk.shape[-1]
        # Reverse: s[k] = acl[k]' s[k+1] + gain[k]' g[k]; forward: x[k+1] = acl[k] x[k] + baug kff[k].
        gainT = fac.gain.transpose(0, 1, 3, 2)
        baug, baugT, a = self.baug, self.baug.transpose(0, 2, 1), self.aaug[:, :, None]
        aholdT = self.ahold.transpose(0, 2, 1)
        s = np.zeros((K + 1, self.nb, self.nx, R))
        bts = np.zeros((K + 1, self.nb, self.nu, R))  # baug' s[k], reused by the feed-forward
        for k in range(K - 1, -1, -1):
            # closed loop' s = a s + gain' (baug' s); held steps: ahold' s
            if held[k]:
                s[k] = aholdT @ s[k + 1]
            else:
                s[k] = a * s[k + 1] + gainT[k] @ (bts[k + 1] + gk[k])
            bts[k] = baugT @ s[k]
        kff = -(fac.hinv @ (gk + bts[1:]))  # (K, nb, nu, R)
        x = np.zeros_like(s)
        d = np.empty((K, self.nb, self.nu, R))
        for k in range(K):
            if held[k]:
                d[k] = 0.0
                x[k + 1] = self.ahold @ x[k]
            else:
                d[k] = fac.gain[k] @ x[k] + kff[k]
                x[k + 1] = a * x[k] + baug @ d[k]
        if held.any():  # a held step repeats the previous input (the v part of its state)
            d[held] = x[:-1][held][:, :, nc:]
        return d, x

    def _solve_single(self, fac: RiccatiFactor, gk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """solve() for one subsystem without move blocking, in plain 2-D products into buffers: gk (K, nu, R)
        -> steps (K, nu, R) and states (K + 1, nx, R)."""
        K, nu, nx = self.K, self.nu, self.nx
        idle = fac.idle.tolist()
        if fac.gain is self._gain:  # the usual case: views of the reused buffers, made once
            gain, gainT = self._views["gain"], self._views["gainT"]
        else:
            gain = list(fac.gain[:, 0])
            gainT = [g.T for g in gain]
        a, b, bT = self.aaug[0][:, None], self.baug[0], self._bT
        R = gk.shape[-1]
        bts = np.zeros((K + 1, nu, R))
        s, w, t = np.zeros((nx, R)), np.empty((nu, R)), np.empty((nx, R))
        gl, bl = list(gk), list(bts)
        pre = fac.prescaled  # gain (a x) rather than gain x: the a scaling moves next to the product
        for k in range(K - 1, -1, -1):
            if pre:
                if not idle[k]:
                    np.add(bl[k + 1], gl[k], out=w)
                    s += dot(gainT[k], w, t)
                s *= a
            else:
                s *= a
                if not idle[k]:
                    np.add(bl[k + 1], gl[k], out=w)
                    s += dot(gainT[k], w, t)
            dot(bT, s, bl[k])
        kff = list(np.matmul(fac.hinv[:, 0], gk + bts[1:]))
        d = np.zeros((K, nu, R))
        x = np.zeros((K + 1, nx, R))
        dl, xl = list(d), list(x)
        for k in range(K):
            if idle[k]:
                np.multiply(xl[k], a, out=xl[k + 1])
            elif pre:
                np.multiply(xl[k], a, out=xl[k + 1])
                dk = dot(gain[k], xl[k + 1], dl[k])
                dk -= kff[k]
                xl[k + 1] += dot(b, dk, t)
            else:
                dk = dot(gain[k], xl[k], dl[k])
                dk -= kff[k]
                np.multiply(xl[k], a, out=xl[k + 1])
                xl[k + 1] += dot(b, dk, t)
        return d, x

    def _solve_prescaled_one(self, fac: RiccatiFactor, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """_solve_single for one right-hand side g (K, nu) and a prescaled factor, at four operations per step
        each way instead of five: the state carries a constant 1 as its last entry, so the gradient enters the
        backward products as an extra column of B' and the feed-forward enters the forward products as an
        extra column of the gain."""
        K, nu, nx = self.K, self.nu, self.nx
        if self._ext is None:
            mb = np.empty((K, nu, nx + 1))
            mb[:, :, :nx] = self._bT
            self._ext = (mb, np.empty((K, nu, nx + 1)), np.append(self.aaug[0], 1.0))
        mb, ge, a1 = self._ext
        mb[:, :, nx] = g
        gainT = self._views["gainT"] if fac.gain is self._gain else [v.T for v in fac.gain[:, 0]]
        s = np.zeros(nx + 1)
        s[nx] = 1.0
        sv, t = s[:nx], np.empty(nx)
        w = np.empty((K, nu))
        wl, mbl = list(w), list(mb)
        for k in range(K - 1, -1, -1):
            dot(mbl[k], s, wl[k])  # B' s[k+1] + g[k]
            sv += dot(gainT[k], wl[k], t)
            s *= a1
        if self._ext_fac is not fac:  # the predictor and corrector share a factor: copy its gain once
            ge[:, :, :nx] = fac.gain[:, 0]
            self._ext_fac = fac
        ge[:, :, nx] = -np.matmul(fac.hinv[:, 0], w[:, :, None])[:, :, 0]  # -kff
        x = np.zeros((K + 1, nx + 1))
        x[:, nx] = 1.0
        d = np.empty((K, nu))
        xl, xv, dl, gel, b = list(x), list(x[:, :nx]), list(d), list(ge), self.baug[0]
        for k in range(K):
            np.multiply(xl[k], a1, out=xl[k + 1])
            dot(gel[k], xl[k + 1], dl[k])
            xv[k + 1] += dot(b, dl[k], t)
        return d[:, :, None], x[:, :nx, None]
