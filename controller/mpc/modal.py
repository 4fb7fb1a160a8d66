"""The input-to-zone response of a LinearModel in its modal basis, split into independent subsystems.

Modes that share no actuator and no zone output (buildings of a campus) form separate subsystems; each
is padded to common sizes so that a whole campus is one batch of equal-shaped arrays. Inputs are scaled
to about [-1, 1] (by the larger bound magnitude) so that the solver's tolerances mean the same for a 500 W
fan coil and a 50 kW air handler.

The response to the plan is linear and starts from zero; the response to x0 and the disturbance forecast
comes from the LinearModel itself once per solve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.scan import doubling_powers


def _components(Bm: np.ndarray, Cm: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(modes, inputs, outputs) groups coupled through shared inputs or outputs (union-find)."""
    n, nu = Bm.shape
    nz = Cm.shape[0]
    parent = list(range(n + nu + nz))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj

    for i, j in zip(*np.nonzero(Bm), strict=True):
        union(int(i), n + int(j))
    for r, i in zip(*np.nonzero(Cm), strict=True):
        union(n + nu + int(r), int(i))
    groups: dict[int, list[int]] = {}
    for i in range(n + nu + nz):
        groups.setdefault(find(i), []).append(i)
    out = []
    for g in groups.values():
        g = np.array(g)
        modes, ins, outs = g[g < n], g[(g >= n) & (g < n + nu)] - n, g[g >= n + nu] - n - nu
        if len(modes) or len(ins) or len(outs):
            out.append((modes, ins, outs))
    return out


class ModalResponse:
    """Zero-state response y = G u of the plan, batched over subsystems, in scaled input units."""

    def __init__(self, model: Any, K: int, u_scale: np.ndarray) -> None:
        if model.complex:
            raise NotImplementedError("the Riccati solver needs a real modal basis (symmetric RC network)")
        a = np.asarray(model.a_host, dtype=float)
        Bm = np.asarray(model.Bm.to_dense(), dtype=float) * u_scale[None, :]
        Cm = np.asarray(model.Czm.to_dense(), dtype=float)
        comps = _components(Bm, Cm)
        self.nb = nb = len(comps)
        self.nc = nc = max(1, max(len(c[0]) for c in comps))
        self.nuc = nuc = max(1, max(len(c[1]) for c in comps))
        self.nzc = nzc = max(1, max(len(c[2]) for c in comps))
        self.nu, self.nz, self.K = Bm.shape[1], Cm.shape[0], K
        self.a = np.zeros((nb, nc))
        self.Bm = np.zeros((nb, nc, nuc))
        self.C = np.zeros((nb, nzc, nc))
        # Padding indices point at an extra column that is always zero.
        self.in_idx = np.full((nb, nuc), self.nu)
        self.out_idx = np.full((nb, nzc), self.nz)
        self.in_mask = np.zeros((nb, nuc), bool)
        self.out_mask = np.zeros((nb, nzc), bool)
        for b, (modes, ins, outs) in enumerate(comps):
            self.a[b, :len(modes)] = a[modes]
            self.Bm[b, :len(modes), :len(ins)] = Bm[np.ix_(modes, ins)]
            self.C[b, :len(outs), :len(modes)] = Cm[np.ix_(outs, modes)]
            self.in_idx[b, :len(ins)], self.in_mask[b, :len(ins)] = ins, True
            self.out_idx[b, :len(outs)], self.out_mask[b, :len(outs)] = outs, True
        self.BmT = np.ascontiguousarray(self.Bm.transpose(0, 2, 1))
        self.CT = np.ascontiguousarray(self.C.transpose(0, 2, 1))
        self.pows = [p[:, None, :] for p in doubling_powers(self.a, K)]  # (nb, 1, nc) each

    # -- layout ----------------------------------------------------------------------------------
    def to_sub_u(self, u: np.ndarray) -> np.ndarray:
        """(..., K, nu) -> (..., nb, K, nuc); padding reads zero."""
        up = np.concatenate([u, np.zeros((*u.shape[:-1], 1))], axis=-1)
        return np.moveaxis(up[..., self.in_idx], -2, -3)

    def to_sub_y(self, y: np.ndarray, pad: float = 0.0) -> np.ndarray:
        yp = np.concatenate([y, np.full((*y.shape[:-1], 1), pad)], axis=-1)
        return np.moveaxis(yp[..., self.out_idx], -2, -3)

    def from_sub_u(self, us: np.ndarray) -> np.ndarray:
        """(..., nb, K, nuc) -> (..., K, nu)."""
        out = np.zeros((*us.shape[:-3], self.K, self.nu + 1))
        out[..., self.in_idx[self.in_mask]] = np.moveaxis(us, -3, -2)[..., self.in_mask]
        return out[..., :-1]

    def from_sub_y(self, ys: np.ndarray) -> np.ndarray:
        out = np.zeros((*ys.shape[:-3], self.K, self.nz + 1))
        out[..., self.out_idx[self.out_mask]] = np.moveaxis(ys, -3, -2)[..., self.out_mask]
        return out[..., :-1]

    # -- maps ------------------------------------------------------------------------------------
    def forward(self, us: np.ndarray) -> np.ndarray:
        """y (..., nb, K, nzc) for plans us (..., nb, K, nuc) from zero state."""
        x = us @ self.BmT  # x[k+1] = a x[k] + w[k]: the doubling scan turns w into x[1..K] in place
        o = 1
        for p in self.pows:
            x[..., o:, :] += p * x[..., :-o, :]
            o *= 2
        return x @ self.CT

    def adjoint(self, gy: np.ndarray) -> np.ndarray:
        """Gradient on the plan (..., nb, K, nuc) from the cotangent on y (..., nb, K, nzc)."""
        lam = gy @ self.C
        o = 1
        for p in self.pows:
            lam[..., :-o, :] += p * lam[..., o:, :]
            o *= 2
        return lam @ self.Bm
