"""CuPy backend: agreement with NumPy and gradient checks on a real GPU; clean fallback without one."""

import logging

import numpy as np
import pytest

from models import load_building
from models.backend import get_xp
from tests.gpu.conftest import cupy

OFFICE = "config/buildings/office-20.yaml"


def test_missing_gpu_falls_back_to_numpy_with_a_log_line(caplog):
    if cupy is not None:
        pytest.skip("a GPU is present; the fallback path is for machines without one")
    with caplog.at_level(logging.WARNING, logger="edge_mpc.backend"):
        xp, used = get_xp("cupy")
    assert xp is np and used == "numpy"
    assert any("falling back to numpy" in r.getMessage() for r in caplog.records)
    sim = load_building(OFFICE).compile(900.0, backend="cupy")
    assert sim.backend == "numpy"


def _problem(sim, B, K, seed=0):
    rng = np.random.default_rng(seed)
    u = sim.u_min + (sim.u_max - sim.u_min) * rng.uniform(0.2, 0.8, (B, K, sim.nu))
    d = np.stack([rng.normal(-5, 3, (B, K)), rng.uniform(0, 400, (B, K)), np.full((B, K), 10.0),
                  rng.uniform(0, 1, (B, K))], -1)
    x0 = np.broadcast_to(sim.x_initial, (B, sim.n)).copy()
    return x0, u, d


@pytest.mark.needs_gpu
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-9), ("float32", 1e-4)])
@pytest.mark.parametrize("B", [1, 64, 1024])
@pytest.mark.parametrize("building, dt", [(OFFICE, 900.0), ("config/buildings/radiant.yaml", 300.0)])
def test_cupy_matches_numpy_forward_and_gradient(dtype, tol, B, building, dt):
    """The linear path (office-20) and the flow path of a pumped loop (radiant: tape, doubling scan for small
    batches, sequential scan for large ones)."""
    net = load_building(building)
    ref = net.compile(dt)
    gpu = net.compile(dt, backend="cupy", dtype=dtype)
    assert gpu.backend == "cupy"
    x0, u, d = _problem(ref, B, 96)
    tr_r = ref.simulate(x0, u, d)
    tr_g = gpu.simulate(x0, u, d)
    zr, zg = tr_r.zones, cupy.asnumpy(tr_g.zones)
    assert np.max(np.abs(zr - zg)) / np.max(np.abs(zr)) < tol
    gz = 2 * (tr_r.zones - 21.0)
    g_r = ref.gradient(tr_r, g_zones=gz, g_el=np.ones_like(tr_r.p_el))
    g_g = gpu.gradient(tr_g, g_zones=cupy.asarray(gz, dtype=dtype), g_el=cupy.ones(tr_g.p_el.shape, dtype=dtype))
    err = np.linalg.norm(g_r.u - cupy.asnumpy(g_g.u)) / np.linalg.norm(g_r.u)
    assert err < tol


@pytest.mark.needs_gpu
def test_cupy_gradient_matches_finite_differences():
    sim = load_building(OFFICE).compile(900.0, backend="cupy", dtype="float64")
    x0, u, d = _problem(sim, 2, 24)
    rng = np.random.default_rng(3)
    w = rng.normal(size=(2, 24, sim.nz))

    def J(uu):
        return float(cupy.sum(cupy.asarray(w) * sim.simulate(x0, uu, d).zones))

    tr = sim.simulate(x0, u, d)
    g = cupy.asnumpy(sim.gradient(tr, g_zones=cupy.asarray(w)).u)
    v = rng.normal(size=u.shape)
    h = 1.0
    fd = (J(u + h * v) - J(u - h * v)) / (2 * h)
    assert abs(fd - np.sum(g * v)) <= 1e-7 * max(1.0, abs(fd))


@pytest.mark.needs_gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mpc_on_a_cupy_compiled_building(dtype):
    """`control.backend: cupy`: the MPC problem takes the model's host twin, so the solve is the NumPy one."""
    from controller.mpc import LQSolver, Status
    from controller.mpc.reference import simulator_problem

    net = load_building(OFFICE)
    gpu = net.compile(900.0, backend="cupy", dtype=dtype)
    assert gpu.backend == "cupy"
    prob, data = simulator_problem(gpu, K=48)
    assert prob.model.xp is np
    res = LQSolver(prob).solve(data)
    ref_prob, ref_data = simulator_problem(net.compile(900.0), K=48)
    ref = LQSolver(ref_prob).solve(ref_data)
    assert res.status == Status.CONVERGED and res.success
    assert abs(res.objective - ref.objective) <= 1e-9 * abs(ref.objective)
