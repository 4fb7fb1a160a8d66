"""Discrete-time linear thermal dynamics in modal form, exact zero-order hold.

A thermal RC network has C dx/dt = -L x + ..., with C diagonal positive and L symmetric, so
A = -C^-1 L is similar to a symmetric matrix and has a real, well-conditioned eigenbasis
V = C^-1/2 Q. In that basis the ZOH step is diagonal: z[k+1] = a*z[k] + Bm u[k] + Em d[k] with
a = exp(lambda dt) and Bm = diag(expm1(lambda dt)/lambda) V^-1 B. The horizon then costs a handful of
array calls (models.scan) instead of a matrix product per step, and the adjoint is the same scan run
backwards. Identified (non-symmetric) models use a complex eigenbasis through the same code.

The network is split into connected components (buildings of a campus), each with its own eigenbasis,
so the transforms are block-diagonal (models.blockmap) and cost grows linearly with the number of zones.

Written against `xp`: on NumPy the scans and block products use NumPy's fast idioms, on any other namespace
(CuPy, the strict reference namespace of the tests) their portable form, chosen once when the model is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.backend import to_host, xp_dtype
from models.blockmap import BlockMap
from models.scan import doubling_powers, scans


def connected_components(A: np.ndarray) -> list[np.ndarray]:
    """State index sets that the dynamics couple (union-find on the nonzero pattern of A)."""
    n = A.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(A)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [np.array(g) for g in groups.values()]


def _eigen(A: np.ndarray, caps: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues, V, V^-1 of one component; the symmetric route when A = -C^-1 L with L symmetric."""
    if caps is not None:
        L = -caps[:, None] * A
        if np.allclose(L, L.T, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(L).max()))):
            s = np.sqrt(caps)
            S = (s[:, None] * A) / s[None, :]
            lam, Q = np.linalg.eigh(0.5 * (S + S.T))
            return lam, Q / s[:, None], Q.T * s[None, :]
    lam, V = np.linalg.eig(A)
    if np.all(np.abs(lam.imag) <= 1e-12 * np.maximum(1.0, np.abs(lam.real))):
        lam, V = lam.real, V.real
    cond = np.linalg.cond(V)
    if not np.isfinite(cond) or cond > 1e10:
        raise ValueError(f"the linear dynamics are not diagonalisable (eigenbasis condition number {cond:.3g})")
    return lam, V, np.linalg.inv(V)


class LinearModel:
    """Exact ZOH discretisation of dx/dt = Ac x + Bc u + Ec d, with zone outputs y = Cz x.

    Conventions: u[k], d[k] are held over step k; x[k+1] follows; zone outputs are reported for
    x[1..K] (the temperatures the plan produces), shape (B, K, nz).
    """

    def __init__(self, Ac: np.ndarray, Bc: np.ndarray, Ec: np.ndarray, Cz: np.ndarray, dt: float, *,
                 caps: np.ndarray | None = None, xp: Any = np, dtype: Any = np.float64) -> None:
        self.Ac, self.Bc, self.Ec, self.Cz = (np.asarray(m, dtype=float) for m in (Ac, Bc, Ec, Cz))
        self.dt = float(dt)
        self.caps = None if caps is None else np.asarray(caps, dtype=float)
        self.n, self.nu, self.nd, self.nz = Ac.shape[0], Bc.shape[1], Ec.shape[1], Cz.shape[0]
        self.xp = xp
        self.real_dtype = np.dtype(dtype)
        self.real_xdtype = xp_dtype(xp, self.real_dtype)
        self._scan, self._scan_adjoint = scans(xp)
        # The real part of a (possibly complex) result: an attribute on NumPy, a function in the standard.
        self._real = (lambda a: a.real) if xp is np else xp.real
        lam = np.zeros(self.n, dtype=complex)
        blocks_v, blocks_vi, blocks_b, blocks_e, blocks_c = [], [], [], [], []
        complex_modes = False
        offset = 0
        # Modes are numbered component by component, so every block map touches consecutive modes.
        for comp in connected_components(self.Ac):
            lc, Vc, Vic = _eigen(self.Ac[np.ix_(comp, comp)], None if caps is None else np.asarray(caps)[comp])
            complex_modes |= np.iscomplexobj(lc)
            modes = np.arange(offset, offset + len(comp))
            offset += len(comp)
            lam[modes] = lc
            ldt = lc * self.dt
            with np.errstate(divide="ignore", invalid="ignore"):
                phi = np.where(np.abs(ldt) > 1e-12, np.expm1(ldt) / np.where(lc == 0, 1, lc), self.dt)
            ucols = np.nonzero(np.any(self.Bc[comp] != 0, axis=0))[0]
            dcols = np.nonzero(np.any(self.Ec[comp] != 0, axis=0))[0]
            zrows = np.nonzero(np.any(self.Cz[:, comp] != 0, axis=1))[0]
            blocks_v.append((comp, modes, Vc))
            blocks_vi.append((modes, comp, Vic))
            blocks_b.append((modes, ucols, phi[:, None] * (Vic @ self.Bc[np.ix_(comp, ucols)])))
            blocks_e.append((modes, dcols, phi[:, None] * (Vic @ self.Ec[np.ix_(comp, dcols)])))
            blocks_c.append((zrows, modes, self.Cz[np.ix_(zrows, comp)] @ Vc))
        self.complex = complex_modes
        mdt = np.result_type(self.real_dtype, np.complex64) if complex_modes else self.real_dtype
        self.modal_dtype = mdt
        self.modal_xdtype = xp_dtype(xp, mdt)
        # A copy in the modal dtype (NumPy's method; the standard's function elsewhere).
        self._as_modal = (lambda a: a.astype(mdt)) if xp is np else (lambda a: xp.astype(a, self.modal_xdtype))
        self.lam = lam if complex_modes else lam.real
        self.a_host = np.exp(self.lam * self.dt)
        self.a = xp.asarray(self.a_host.astype(mdt))
        self.V = BlockMap((self.n, self.n), blocks_v, xp, mdt)
        self.Vinv = BlockMap((self.n, self.n), blocks_vi, xp, mdt)
        self.Bm = BlockMap((self.n, self.nu), blocks_b, xp, mdt)
        self.Em = BlockMap((self.n, self.nd), blocks_e, xp, mdt)
        self.Czm = BlockMap((self.nz, self.n), blocks_c, xp, mdt)
        self._pows: dict[int, list] = {}

    def on_host(self) -> LinearModel:
        """This model on NumPy in float64 (itself when it already is): the MPC solvers are host code and take
        this twin, rebuilt from the host matrices this model keeps, so that no device array reaches them."""
        if self.xp is np and self.real_dtype == np.float64:
            return self
        return LinearModel(self.Ac, self.Bc, self.Ec, self.Cz, self.dt, caps=self.caps)

    # -- discrete matrices (host, dense, real) for estimators and reference solvers ---------------
    def discrete(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, E) of x[k+1] = A x[k] + B u[k] + E d[k], dense float64."""
        V, Vi = self.V.to_dense(), self.Vinv.to_dense()
        A = (V * self.a_host[None, :]) @ Vi
        B = V @ self.Bm.to_dense()
        E = V @ self.Em.to_dense()
        return (A.real, B.real, E.real) if self.complex else (A, B, E)

    def powers(self, K: int) -> list:
        if K not in self._pows:
            self._pows[K] = doubling_powers(self.a, K, self.xp)
        return self._pows[K]

    # -- horizon maps ------------------------------------------------------------------------------
    def modal_trajectory(self, x0: Any, u: Any, d: Any) -> Any:
        """z: (B, K+1, n) modal states for x0 (B, n), u (B, K, nu), d (B, K, nd)."""
        K = u.shape[1]
        w = self.Bm.apply(u)
        if self.nd:
            w += self.Em.apply(d)
        return self._scan(self.a, self.powers(K), self.Vinv.apply(x0), w, self.xp)

    def states(self, z: Any) -> Any:
        x = self.V.apply(z)
        return self._real(x) if self.complex else x

    def zones(self, z: Any) -> Any:
        """Zone outputs for x[1..K] from the modal trajectory."""
        y = self.Czm.apply(z[:, 1:, :])
        return self._real(y) if self.complex else y

    def modal_adjoint(self, c: Any) -> Any:
        """lam: (B, K+1, n) from the cotangent c on z (overwritten in place)."""
        return self._scan_adjoint(self.a, self.powers(c.shape[1] - 1), c, self.xp)

    def cotangent_from_zones(self, g_y: Any) -> Any:
        """Cotangent on z (B, K+1, n) from a cotangent on the zone outputs (B, K, nz)."""
        B, K, _ = g_y.shape
        c = self.xp.empty((B, K + 1, self.n), dtype=self.modal_xdtype)
        c[:, 0, :] = 0
        c[:, 1:, :] = self.Czm.apply_t(g_y)
        return c

    def cotangent_from_states(self, g_x: Any) -> Any:
        """Cotangent on z from a cotangent on the states x (B, K+1, n): V^T g_x."""
        g = self.V.apply_t(g_x)
        return g if g.dtype == self.modal_xdtype else self._as_modal(g)

    def input_gradient(self, lam: Any) -> Any:
        """dJ/du (B, K, nu) from the modal adjoint."""
        g = self.Bm.apply_t(lam[:, 1:, :])
        return self._real(g) if self.complex else g

    def disturbance_gradient(self, lam: Any) -> Any:
        g = self.Em.apply_t(lam[:, 1:, :])
        return self._real(g) if self.complex else g

    def initial_state_gradient(self, lam: Any) -> Any:
        g = self.Vinv.apply_t(lam[:, 0, :])
        return self._real(g) if self.complex else g

    # -- parameter gradients ----------------------------------------------------------------------
    def continuous_gradients(self, x0: Any, z: Any, u: Any, d: Any, lam: Any
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dJ/d(Ac, Bc, Ec) through the exact ZOH, from the forward trajectory and the modal adjoint.

        dJ/dAd = sum_k lx[k+1] x[k]^T with lx = V^-T lam; likewise for Bd, Ed. The ZOH matrices are a block
        of expm([[Ac, Bc, Ec], [0, 0, 0]] dt), so the chain to the continuous matrices is the adjoint
        Fréchet derivative of expm (models.expm), exact to rounding.
        """
        from models.expm import expm_frechet_adjoint

        Vi = self.Vinv.to_dense()
        lam_h, z_h = to_host(lam), to_host(z)
        lx = np.einsum("bkm,mn->bkn", lam_h[:, 1:], Vi)  # V^-T lam on x[1..K]
        x = np.einsum("nm,bkm->bkn", self.V.to_dense(), z_h[:, :-1])
        gA = np.einsum("bki,bkj->ij", lx, x)
        gB = np.einsum("bki,bkj->ij", lx, to_host(u))
        gE = np.einsum("bki,bkj->ij", lx, to_host(d)) if self.nd else np.zeros((self.n, 0))
        if self.complex:
            gA, gB, gE = gA.real, gB.real, gE.real
        n, nu, nd = self.n, self.nu, self.nd
        N = n + nu + nd
        M = np.zeros((N, N))
        M[:n, :n], M[:n, n:n + nu], M[:n, n + nu:] = self.Ac, self.Bc, self.Ec
        G = np.zeros((N, N))
        G[:n, :n], G[:n, n:n + nu], G[:n, n + nu:] = gA, gB, gE
        GM = expm_frechet_adjoint(M * self.dt, G) * self.dt
        return GM[:n, :n], GM[:n, n:n + nu], GM[:n, n + nu:]

    # -- fused horizon passes -----------------------------------------------------------------------
    def forward(self, x0: Any, u: Any, d: Any, *, keep_z: bool = True) -> tuple[Any, Any]:
        """(z (B, K+1, n) or None, y (B, K, ny)) in the layout that is fastest for this batch size.

        Small batches: whole-horizon products and a doubling scan (few, larger array calls). Large
        batches: one pass per step on time-major (B, n) slabs, so every product works on cache-resident
        data instead of streaming (B, K, n) arrays through memory several times; there the modal
        trajectory is only kept when asked (states, parameter gradients), since the input and
        initial-state adjoint of a linear model does not need it.
        """
        B = u.shape[0]
        if B * self.n <= _FUSED_MIN_WIDTH:
            z = self.modal_trajectory(x0, u, d)
            return z, self.zones(z)
        return self._forward_fused(x0, u, d, keep_z)

    def _forward_fused(self, x0: Any, u: Any, d: Any, keep_z: bool) -> tuple[Any, Any]:
        B, K, _ = u.shape
        xp = self.xp
        zt = xp.empty((K + 1, B, self.n), dtype=self.modal_xdtype) if keep_z else None
        # Outputs are written batch-major: rows of nz values land where callers read them contiguously.
        y = xp.empty((B, K, self.nz), dtype=self.modal_xdtype)
        z = self._as_modal(self.Vinv.apply(x0))
        if keep_z:
            zt[0, ...] = z
        for k in range(K):
            w = self.Bm.apply(u[:, k, :])
            if self.nd:
                w += self.Em.apply(d[:, k, :])
            z *= self.a
            z += w
            if keep_z:
                zt[k + 1, ...] = z
            y[:, k, :] = self.Czm.apply(z)
        return (_time_major_view(zt, xp) if keep_z else None), (self._real(y) if self.complex else y)

    def backward(self, g_y: Any, g_x: Any = None, *, want_lam: bool = False, want_d: bool = False,
                 g_u_direct: Any = None) -> tuple[Any, Any, Any, Any]:
        """Adjoint of `forward`: (g_u (B,K,nu), g_x0 (B,n), g_d or None, lam or None).

        g_y is the cotangent on the outputs (B, K, ny); g_x an optional cotangent on the states
        (B, K+1, n). lam (the modal adjoint, for parameter gradients) is returned when asked.
        g_u_direct (B, K, nu), the part of dJ/du that does not pass through the dynamics (meter power),
        is added while each step's slab is in cache.
        """
        B = g_y.shape[0]
        if B * self.n <= _FUSED_MIN_WIDTH:
            c = self.cotangent_from_zones(g_y)
            if g_x is not None:
                c += self.cotangent_from_states(g_x)
            lam = self.modal_adjoint(c)
            g_u = self.input_gradient(lam)
            if g_u_direct is not None:
                g_u += g_u_direct
            return (g_u, self.initial_state_gradient(lam),
                    self.disturbance_gradient(lam) if want_d else None, lam if want_lam else None)
        return self._backward_fused(g_y, g_x, want_lam, want_d, g_u_direct)

    def _backward_fused(self, g_y: Any, g_x: Any, want_lam: bool, want_d: bool,
                        g_u_direct: Any) -> tuple[Any, Any, Any, Any]:
        B, K, _ = g_y.shape
        xp = self.xp
        real = self._real
        g_u = xp.empty((B, K, self.nu), dtype=self.real_xdtype)
        g_d = xp.empty((B, K, self.nd), dtype=self.real_xdtype) if want_d else None
        lam_all = xp.empty((K + 1, B, self.n), dtype=self.modal_xdtype) if want_lam else None
        lam = xp.zeros((B, self.n), dtype=self.modal_xdtype)
        for k in range(K, 0, -1):
            # lam_k = c_k + a lam_{k+1};  dJ/dw_{k-1} = lam_k
            lam *= self.a
            lam += self.Czm.apply_t(g_y[:, k - 1, :])
            if g_x is not None:
                lam += self.V.apply_t(g_x[:, k, :])
            gu = self.Bm.apply_t(lam)
            g_u[:, k - 1, :] = real(gu) if self.complex else gu
            if g_u_direct is not None:
                g_u[:, k - 1, :] += g_u_direct[:, k - 1, :]
            if want_d:
                gd = self.Em.apply_t(lam)
                g_d[:, k - 1, :] = real(gd) if self.complex else gd
            if want_lam:
                lam_all[k, ...] = lam
        lam *= self.a
        if g_x is not None:
            lam += self.V.apply_t(g_x[:, 0, :])
        if want_lam:
            lam_all[0, ...] = lam
        g0 = self.Vinv.apply_t(lam)
        return (g_u, real(g0) if self.complex else g0, g_d,
                _time_major_view(lam_all, xp) if want_lam else None)


# Batch x modes above which `forward`/`backward` switch from whole-horizon calls to a fused per-step pass.
_FUSED_MIN_WIDTH = 2048


def _time_major_view(a: Any, xp: Any) -> Any:
    """(K+1, B, n) storage seen as (B, K+1, n), without a copy."""
    return a.transpose(1, 0, 2) if xp is np else xp.permute_dims(a, (1, 0, 2))
