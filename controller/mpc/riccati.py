"""Riccati factorisation of the Newton system of an MPC problem on a diagonal (modal) linear model.

The Newton step of the horizon problem is an LQ problem in the step d (K, nu): states follow
z[k+1] = a*z[k] + Bm d[k] with a diagonal, outputs C z[k+1] carry curvature D[k] (comfort), input changes
d[k] - d[k-1] carry curvature m[k] (move suppression, rate-limit penalties), and the gradient enters as a
linear term on d. The input at the previous step is carried as extra state v so the change terms stay
stage-wise. Inputs that the active set fixes (at a bound or the energy kink) are masked out.

With a diagonal, A'PA is an elementwise product and each step costs a handful of small dense products
plus one (nu x nu) Cholesky factorisation; independent subsystems (buildings of a campus) are a batch axis.
The closed-loop matrices are never formed (that product cost as much as the rest of the factorisation):
each solve applies a x + baug (gain x + kff) in two short loops; several right-hand sides solve in one pass.

Move blocking: at a step that continues a block, the input is not a decision but repeats v (the previous
input), so the step contributes no factorisation, only the closed-loop transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RiccatiFactor:
    gain: np.ndarray  # (K, nb, nu, nx): d[k] = gain x[k] + kff[k]; closed loop a x + baug d (held: ahold x)
    hinv: np.ndarray  # (K, nb, nu, nu) inverse of the reduced input Hessian (zero rows for fixed inputs)
    free: np.ndarray  # (K, nb, nu) float mask


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

    def factor(self, D: np.ndarray, m: np.ndarray, free: np.ndarray, r: float | np.ndarray
               ) -> RiccatiFactor:
        """D (nb, K, nz) output curvature, m (nb, K, nu) change curvature, r (nb, K, nu) input curvature,
        free (nb, K, nu) bool.

        Held steps (move blocking) must have free = False and m = 0: their input is the previous one.
        """
        K, nb, nc, nu, nx = self.K, self.nb, self.nc, self.nu, self.nx
        f = np.ascontiguousarray(np.moveaxis(free, 1, 0)).astype(float)  # (K, nb, nu)
        mk = np.ascontiguousarray(np.moveaxis(m, 1, 0))  # (K, nb, nu)
        idx = np.arange(nu)
        vi = nc + idx
        # Output curvature C'D[k]C on z[k+1]: for one subsystem all steps in one product with the rows'
        # outer products; for a batch step by step (the all-steps array would be large).
        if nb == 1:
            q_all = (D[0] @ self.c_outer[0]).reshape(K, nc, nc)

            def qzz(k: int) -> np.ndarray:
                return q_all[k]
        else:
            Dk, C, CT = np.moveaxis(D, 1, 0), self.C, self.C.transpose(0, 2, 1)

            def qzz(k: int) -> np.ndarray:
                return (CT * Dk[k][:, None, :]) @ C
        rk = np.moveaxis(np.broadcast_to(r, free.shape), 1, 0)
        hdd_add = (f * (mk + rk) + (1.0 - f))[..., None] * self.eye_u  # (K, nb, nu, nu)
        ffT = f[..., :, None] * f[..., None, :]
        if not self.augment and np.any(mk):
            raise ValueError("input-change curvature needs the augmented state")
        hdx_add = np.zeros((K, nb, nu, nx))
        if self.augment:
            hdx_add[..., idx, vi] = -mk * f
        fa = f[..., :, None] * self.aaug[None, :, None, :]  # (K, nb, nu, nx)
        gain, hinv = self._gain, self._hinv
        gain[self.held] = 0.0
        hinv[self.held] = 0.0
        baug, baugT, AA, held = self.baug, self.baug.transpose(0, 2, 1), self.AA, self.held
        P = np.zeros((nb, nx, nx))
        P[:, :nc, :nc] = qzz(K - 1)
        if nb == 1:  # plain 2-D products: batched ones cost more per call at this size
            P, b, bT, aa, ah = P[0], baug[0], baugT[0], AA[0], self.ahold[0]
            ahT = ah.T
            for k in range(K - 1, -1, -1):
                if held[k]:
                    P = ahT @ P @ ah
                else:
                    PB = P @ b
                    Hdd = bT @ PB
                    Hdd *= ffT[k, 0]
                    Hdd += hdd_add[k, 0]
                    Hdx = PB.T * fa[k, 0]
                    Hdx += hdx_add[k, 0]
                    Hi = np.linalg.inv(Hdd)
                    G = Hi @ Hdx
                    gain[k, 0] = G
                    hinv[k, 0] = Hi
                    P = P * aa
                    P -= Hdx.T @ G
                if k:
                    P[:nc, :nc] += qzz(k - 1)
                if self.augment:
                    P[vi, vi] += mk[k, 0]
        else:
            aholdT = self.ahold.transpose(0, 2, 1)
            for k in range(K - 1, -1, -1):
                if held[k]:
                    P = aholdT @ P @ self.ahold
                else:
                    PB = P @ baug
                    Hdd = (baugT @ PB) * ffT[k] + hdd_add[k]
                    Hdx = PB.transpose(0, 2, 1) * fa[k] + hdx_add[k]
                    Hi = np.linalg.inv(Hdd)
                    G = Hi @ Hdx
                    gain[k] = G
                    hinv[k] = Hi
                    P = P * AA - Hdx.transpose(0, 2, 1) @ G
                if k:
                    P[:, :nc, :nc] += qzz(k - 1)
                if self.augment:
                    P[:, vi, vi] += mk[k]
        # Gains were stored with the opposite sign: u = -G x.
        gain *= -1.0
        hinv *= ffT  # exact zeros for fixed inputs
        return RiccatiFactor(gain, hinv, f)

    def solve(self, fac: RiccatiFactor, g: np.ndarray) -> np.ndarray:
        """Newton steps d for gradients g, both (nb, K, nu) or (R, nb, K, nu): min 1/2 d'Hd + g'd.

        Held steps' gradients must already be summed into their block's first step (and zero).
        """
        K, held, nc = self.K, self.held, self.nc
        single = g.ndim == 3
        G = g[None] if single else g
        R = G.shape[0]
        gk = np.ascontiguousarray(G.transpose(2, 1, 3, 0)) * fac.free[..., None]  # (K, nb, nu, R)
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
        out = d.transpose(3, 1, 0, 2)  # (R, nb, K, nu)
        return out[0] if single else out
