"""The flow path's adjoint (models.flowpath: Chebyshev series of the exact ZOH in the pump flow) against the
exact per-step exponential adjoint and against central differences, on the radiant house (R2).

Every way the adjoint can run is covered: one chunk with the forward's tape and its doubling-scan rounds
(small batches), one chunk with the tape but a sequential scan (batches above the scan's limit), and
several chunks without a tape. The plans include steps with the pump off and at full flow (the ends of the
series' range, where the derivative of the series takes its limit) and steps in between.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradutil import BUILDINGS

import models.flowpath as flowpath
from models import load_building


def _case(B: int, K: int, seed: int = 3):
    sim = load_building(BUILDINGS / "radiant.yaml").compile(300.0)
    assert sim.flow_path is not None
    rng = np.random.default_rng(seed)
    u = sim.u_min + (sim.u_max - sim.u_min) * rng.uniform(0.0, 1.0, (B, K, sim.nu))
    j = sim.flow_path.j
    u[:, ::5, j] = sim.u_min[j]        # pump off
    u[:, 2::7, j] = sim.u_max[j]       # full flow
    d = np.zeros((B, K, sim.nd))
    d[..., 0] = rng.normal(0.0, 4.0, (B, K))          # outdoor temperature
    d[..., 1] = np.clip(rng.normal(200.0, 150.0, (B, K)), 0.0, None)
    d[..., 2] = 10.0
    d[..., 3] = rng.uniform(0.0, 1.0, (B, K))
    x0 = np.tile(sim.x_initial, (B, 1)) + rng.normal(0.0, 1.0, (B, sim.n))
    gz = rng.normal(size=(B, K, sim.nz))
    gs = rng.normal(size=(B, K, sim.ns))
    ge = rng.uniform(0.5, 1.5, (B, K, len(sim.net.actuators))) * 1e-4
    return sim, x0, u, d, gz, gs, ge


def _objective(sim, x0, u, d, gz, gs, ge) -> float:
    tr = sim.simulate(x0, u, d)
    return float(np.sum(gz * tr.zones) + np.sum(gs * tr.sensors) + np.sum(ge * tr.p_el))


@pytest.mark.parametrize("B, chunk", [(1, None), (2, None), (40, None), (3, 200)])
def test_flow_adjoint_matches_the_exact_adjoint(B, chunk, monkeypatch):
    if chunk is not None:  # force several chunks: no tape, the adjoint rebuilds the step matrices
        monkeypatch.setattr(flowpath, "_CHUNK_ELEMENTS", chunk)
    K = 48
    sim, x0, u, d, gz, gs, ge = _case(B, K)
    tr = sim.simulate(x0, u, d)
    assert tr._flow is not False
    assert (tr._flow is True) == (chunk is not None)
    if chunk is None:
        assert (tr._flow.rounds is not None) == (B <= flowpath._SCAN_MAX_BATCH)
    g = sim.gradient(tr, g_zones=gz, g_sensors=gs, g_el=ge)
    # Asking for a parameter sends the same adjoint through the exact per-step exponentials and Fréchet
    # derivatives (models.simulator._bilinear_adjoint).
    g_exact = sim.gradient(sim.simulate(x0, u, d), g_zones=gz, g_sensors=gs, g_el=ge, params=["floor.pump.power"])
    scale_u = np.abs(g_exact.u).max(axis=(0, 1))
    assert np.all(np.abs(g.u - g_exact.u).max(axis=(0, 1)) <= 1e-8 * scale_u), \
        np.abs(g.u - g_exact.u).max(axis=(0, 1)) / scale_u   # measured 4e-9 (pump off: the series' end), 2e-11
    assert np.abs(g.x0 - g_exact.x0).max() <= 1e-8 * np.abs(g_exact.x0).max()
    # A loss on the zones alone (the MPC's comfort term) takes a shortcut to the states' cotangent.
    g = sim.gradient(tr, g_zones=gz, g_el=ge)
    g_exact = sim.gradient(sim.simulate(x0, u, d), g_zones=gz, g_el=ge, params=["floor.pump.power"])
    assert np.all(np.abs(g.u - g_exact.u).max(axis=(0, 1)) <= 1e-8 * np.abs(g_exact.u).max(axis=(0, 1)))


def test_flow_adjoint_matches_central_differences():
    sim, x0, u, d, gz, gs, ge = _case(1, 24, seed=5)
    g = sim.gradient(sim.simulate(x0, u, d), g_zones=gz, g_sensors=gs, g_el=ge)
    rng = np.random.default_rng(9)
    span = sim.u_max - sim.u_min
    j = sim.flow_path.j
    for trial in range(3):
        v = rng.normal(size=u.shape) * span
        # Central differences need room on both sides: the flow is not moved at the steps at its range's ends
        # (those are checked against the exact adjoint above).
        at_end = (u[..., j] <= sim.u_min[j]) | (u[..., j] >= sim.u_max[j])
        v[..., j] = np.where(at_end, 0.0, v[..., j])
        eps = 1e-5
        fd = (_objective(sim, x0, u + eps * v, d, gz, gs, ge)
              - _objective(sim, x0, u - eps * v, d, gz, gs, ge)) / (2 * eps)
        got = float(np.sum(g.u * v))
        assert abs(got - fd) <= 1e-6 * abs(fd), (trial, got, fd)
