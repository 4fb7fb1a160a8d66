"""Kalman estimator: unmeasured states converge, offset-free tracking under model mismatch, gating."""

import numpy as np

from controller.estimator import KalmanEstimator
from models import load_building

HOUSE = "config/buildings/house-1.yaml"


def _matrices(sim):
    A, B, E = sim.linear.discrete()
    # Offset channel: 1 W of unmodelled heat at the zone air node, through the same exact hold.
    zone = sim.net.zones[0].node
    G = B[:, :1] * 0
    col = np.zeros(sim.nu)
    col[0] = 1.0
    # The heater injects W at the zone node, so its column is the unit-heat response there.
    G[:, 0] = B @ col
    assert sim.net.input_heat[0][0] == zone
    return A, B, E, G


def _weather(K, rng):
    t = np.arange(K) * 0.25
    solar = np.clip(400 * np.sin(2 * np.pi * (t - 6) / 24), 0, None)
    return np.stack([-5 + 5 * np.sin(2 * np.pi * (t - 9) / 24), solar,
                     np.full(K, 10.0), ((t % 24) > 7) & ((t % 24) < 19)], -1) + rng.normal(0, 0.01, (K, 4))


def test_unmeasured_states_converge_from_a_wrong_guess():
    sim = load_building(HOUSE).compile(900.0)
    A, B, E, G = _matrices(sim)
    rng = np.random.default_rng(0)
    K = 4 * 24 * 4
    d = _weather(K, rng)
    u = rng.uniform(0, 6000, (K, sim.nu))
    x = np.full(sim.n, 20.0)
    est = KalmanEstimator(A, B, E, sim.Cs, G, r_meas=0.05**2)
    est.reset(np.full(sim.n, 12.0))  # walls and slab 8 K off
    for k in range(K):
        est.predict(u[k], d[k])
        x = A @ x + B @ u[k] + E @ d[k]
        est.update(sim.Cs @ x + rng.normal(0, 0.05, sim.ns))
    assert np.max(np.abs(est.x - x)) < 0.3, (est.x - x)


def test_offset_free_tracking_under_20_percent_mismatch():
    net = load_building(HOUSE)
    model = net.compile(900.0)
    scaled = {n: model.theta[i] * 1.2 for i, n in enumerate(net.params.names)
              if n.endswith(("conductivity", "air_capacity", "u_value", "ach"))}
    plant = model.with_params(scaled)
    A, B, E, G = _matrices(model)
    Ap, Bp, Ep = plant.linear.discrete()
    rng = np.random.default_rng(1)
    K = 4 * 24 * 5
    d = _weather(K, rng)
    est = KalmanEstimator(A, B, E, model.Cs, G, r_meas=0.05**2)
    est.reset(np.full(model.n, 20.0))
    x = np.full(model.n, 20.0)
    u = np.full(model.nu, 3000.0)
    errs = []
    for k in range(K):
        est.predict(u, d[k])
        x = Ap @ x + Bp @ u + Ep @ d[k]
        est.update(model.Cs @ x + rng.normal(0, 0.05, model.ns))
        # One-step prediction error of the zone temperature with the estimated offset held.
        pred = A @ est.x + B @ u + E @ d[min(k + 1, K - 1)] + G @ est.offsets
        errs.append((model.Cs @ pred - model.Cs @ (Ap @ x + Bp @ u + Ep @ d[min(k + 1, K - 1)]))[0])
    late = np.abs(np.array(errs[-96:]))
    assert late.mean() < 0.1
    assert abs(np.mean(errs[-96:])) < 0.05  # no steady-state bias
    assert abs(est.offsets[0]) > 10  # the mismatch was attributed to unmodelled heat, not ignored


def test_missing_channel_skips_update_and_outlier_is_gated():
    sim = load_building(HOUSE).compile(900.0)
    A, B, E, G = _matrices(sim)
    est = KalmanEstimator(A, B, E, sim.Cs, G)
    est.reset(np.full(sim.n, 20.0))
    P_before = est.P.copy()
    info = est.update(np.full(sim.ns, np.nan))
    assert np.all(np.isnan(info.innovation)) and not info.rejected.any()
    np.testing.assert_array_equal(est.P, P_before)
    est.update(sim.Cs @ np.full(sim.n, 20.0))
    info = est.update(sim.Cs @ np.full(sim.n, 20.0) + 15.0)  # a sensor that jumps by 15 K
    assert info.rejected.all()
    assert abs(est.x[0] - 20.0) < 0.5


def test_state_round_trip_and_divergence_flag():
    sim = load_building(HOUSE).compile(900.0)
    A, B, E, G = _matrices(sim)
    est = KalmanEstimator(A, B, E, sim.Cs, G)
    est.reset(np.full(sim.n, 19.0))
    other = KalmanEstimator(A, B, E, sim.Cs, G)
    other.import_state(est.export_state())
    np.testing.assert_array_equal(other.x, est.x)
    est.predict(np.full(sim.nu, np.inf), np.zeros(sim.nd))
    info = est.update(np.full(sim.ns, 20.0))
    assert info.diverged
