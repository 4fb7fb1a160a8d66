"""Riccati factorisation and the modal response against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from controller.mpc.modal import ModalResponse
from controller.mpc.reference import office_problem
from controller.mpc.riccati import LQStructure


def dense_newton(a, Bm, C, D, m, r, free, g, held):
    """The same Newton step from the explicit Hessian (G'DG + change terms + r), block variables."""
    K, nu = g.shape
    nz = C.shape[0]
    G = np.zeros((K, nz, K, nu))
    for j in range(K):
        x = Bm.copy()
        for k in range(j, K):
            G[k, :, j, :] = C @ x
            x = a[:, None] * x
    G = G.reshape(K * nz, K * nu)
    Dl = np.eye(K * nu) - np.eye(K * nu, k=-nu)
    H = G.T @ np.diag(D.ravel()) @ G + Dl.T @ np.diag(m.ravel()) @ Dl + np.diag(r.ravel())
    starts = np.cumsum(~held) - 1
    E = np.zeros((K * nu, (starts[-1] + 1) * nu))
    for k in range(K):
        E[k * nu:(k + 1) * nu, starts[k] * nu:(starts[k] + 1) * nu] = np.eye(nu)
    fr = np.zeros(E.shape[1], bool)
    gb = np.zeros(E.shape[1])
    rb = np.zeros(E.shape[1])
    for k in np.nonzero(~held)[0]:
        sl = slice(starts[k] * nu, (starts[k] + 1) * nu)
        fr[sl], gb[sl], rb[sl] = free[k], g[k], r[k]
    Hb = E.T @ (H - np.diag(r.ravel())) @ E + np.diag(rb)
    d = np.zeros(E.shape[1])
    d[fr] = np.linalg.solve(Hb[np.ix_(fr, fr)], -gb[fr])
    return (E @ d).reshape(K, nu)


@pytest.mark.parametrize(("held", "augment", "all_free"), [
    (None, True, False),
    (np.array([0, 0, 1, 1, 0, 1, 0], bool), True, False),
    (None, False, False),  # no move terms: the modal state alone (office-20's path)
    (None, False, True),  # ... with every input free, as in interior point iterations
    (None, True, True),
])
@pytest.mark.parametrize("nb", [1, 2])
def test_factor_solve_matches_dense(held, augment, all_free, nb) -> None:
    rng = np.random.default_rng(0)
    nc, nu, nz, K = 5, 3, 2, 7
    a = rng.uniform(0.2, 0.95, (nb, nc))
    Bm = rng.standard_normal((nb, nc, nu))
    C = rng.standard_normal((nb, nz, nc))
    hmask = np.zeros(K, bool) if held is None else held
    st = LQStructure(a, Bm, C, K, held, augment=augment)
    D = rng.uniform(0, 2, (nb, K, nz))
    m = rng.uniform(0, 1, (nb, K, nu)) if augment else np.zeros((nb, K, nu))
    r = rng.uniform(0.01, 1, (nb, K, nu))
    free = np.ones((nb, K, nu), bool) if all_free else rng.uniform(size=(nb, K, nu)) > 0.3
    if not all_free:
        free[:, 3] = False  # a step with no free input (idle without move terms)
    free[:, hmask], m[:, hmask] = False, 0.0
    g = rng.standard_normal((nb, K, nu)) * free
    fac = st.factor(D, m, free, r)
    d = st.solve(fac, g)
    for b in range(nb):
        np.testing.assert_allclose(d[b], dense_newton(a[b], Bm[b], C[b], D[b], m[b], r[b], free[b], g[b], hmask),
                                   atol=1e-10)
    d2 = st.solve(fac, np.stack([g, -2 * g]))  # several right-hand sides in one pass
    np.testing.assert_allclose(d2[1], -2 * d, atol=1e-12)
    # The output response the solve reads off its states is the forward map's: y[k] = C z[k+1].
    d1, y1 = st.solve(fac, g, outputs=True)
    np.testing.assert_allclose(d1, d, atol=1e-12)
    for b in range(nb):
        z = np.zeros(nc)
        for k in range(K):
            z = a[b] * z + Bm[b] @ d[b, k]
            np.testing.assert_allclose(y1[b, k], C[b] @ z, atol=1e-10)
    _, y2 = st.solve(fac, np.stack([g, -2 * g]), outputs=True)
    np.testing.assert_allclose(y2[1], -2 * y1, atol=1e-10)
    # The factor buffers are reused: a second factorisation with other data gives its own answer.
    fac2 = st.factor(2.0 * D, m, free, r)
    d3 = st.solve(fac2, g)
    for b in range(nb):
        np.testing.assert_allclose(d3[b], dense_newton(a[b], Bm[b], C[b], 2.0 * D[b], m[b], r[b], free[b], g[b],
                                                       hmask), atol=1e-10)


def test_modal_response_matches_model_and_is_adjoint() -> None:
    prob, _ = office_problem(2, 2, K=10, buildings=3)
    m = prob.model
    scale = np.maximum(np.abs(prob.u_min).max(0), np.abs(prob.u_max).max(0))
    resp = ModalResponse(m, 10, scale)
    assert resp.nb == 3
    rng = np.random.default_rng(1)
    u = rng.standard_normal((2, 10, m.nu))
    y = m.zones(m.modal_trajectory(np.zeros((2, m.n)), u * scale, np.zeros((2, 10, m.nd))))
    np.testing.assert_allclose(resp.from_sub_y(resp.forward(resp.to_sub_u(u))), y, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    gu = resp.from_sub_u(resp.adjoint(resp.to_sub_y(gy)))
    assert np.isclose(float((gy * y).sum()), float((gu * u).sum()), rtol=1e-12)


def test_singular_reduced_hessian_raises_instead_of_nan_gains() -> None:
    from controller.mpc import riccati

    out = np.empty((3, 3))
    with pytest.raises(np.linalg.LinAlgError):
        riccati._inv(np.zeros((3, 3)), out)
    spd = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    np.testing.assert_allclose(riccati._inv(spd, out) @ spd, np.eye(3), atol=1e-14)
