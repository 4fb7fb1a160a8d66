"""The simulator under the strict array namespace (array-api-strict, test extra).

That namespace refuses NumPy arrays, NumPy dtypes and NumPy-only idioms (implicit trailing axes in an
index, `.astype`, `einsum`, `out=`). A path that passes here has no NumPy/namespace mixing that would
break it on CuPy, and CI checks that without a GPU. Results must equal the NumPy run to rounding.

Covered: the step-map path (PL: folded state-affine component, whole-horizon and per-step variants; a
nonlinear component beside a linear network with meters) forward and gradient with parameter
gradients, and the flow path (R2) forward and adjoint; the linear (modal) path (house-1, office-20 = R1, and
a two-building site whose block maps have unequal blocks and shared disturbance columns) forward, states and
the adjoint with meters, parameter and disturbance gradients, batch 1 and batch > 1 (both the whole-horizon
and the fused per-step layouts), float64 and float32; and BlockMap products against their dense matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradutil import BUILDINGS
from test_gradients import HEAD, MODELS
from test_stepmap import RADIATOR, _radiator_case

from models import building_from_text, load_building
from models.blockmap import BlockMap

xs = pytest.importorskip("array_api_strict")


def _host(a):
    return None if a is None else np.from_dlpack(a) if type(a).__module__.startswith("array_api_strict") else a


def _pl(B: int, K: int, backend: str):
    sim = load_building(BUILDINGS / "passivelogic.yaml").compile(0.1, backend=backend)
    rng = np.random.default_rng(1)
    x0 = np.tile([70.0, 60.0, 33.3], (B, 1)) + rng.normal(0, 1, (B, 3))
    gx = rng.normal(size=(B, K + 1, 3))
    conv = (lambda a: xs.asarray(a)) if backend != "numpy" else (lambda a: a)
    tr = sim.simulate(conv(x0), conv(np.zeros((B, K, 0))), conv(np.zeros((B, K, 0))))
    g = sim.gradient(tr, g_states=conv(gx), params=sim.net.params.names)
    return _host(tr.x), _host(g.x0), g.params


@pytest.mark.parametrize(("B", "K"), [(1, 20), (64, 40)])  # whole-horizon products; the per-step loop
def test_pl_step_path_under_strict_namespace(B: int, K: int):
    x_s, g_s, p_s = _pl(B, K, "array-api-strict")
    x_n, g_n, p_n = _pl(B, K, "numpy")
    np.testing.assert_allclose(x_s, x_n, rtol=1e-13)
    np.testing.assert_allclose(g_s, g_n, rtol=1e-11)
    for k in p_n:
        assert p_s[k] == pytest.approx(p_n[k], rel=1e-10, abs=1e-12 * max(abs(v) for v in p_n.values()))


def _radiator(backend: str):
    sim = building_from_text(RADIATOR, "radiator.yaml").compile(120.0, backend=backend)
    x0, u, d, gz, ge = _radiator_case(sim)
    conv = (lambda a: xs.asarray(a)) if backend != "numpy" else (lambda a: a)
    tr = sim.simulate(conv(x0), conv(u), conv(d))
    g = sim.gradient(tr, g_zones=conv(gz), g_el=conv(ge), params=["rad.emission", "room.air_capacity"],
                     wrt_disturbances=True)
    return _host(tr.zones), _host(tr.p_el), _host(g.u), _host(g.x0), _host(g.d), g.params


def test_nonlinear_step_component_under_strict_namespace():
    got, want = _radiator("array-api-strict"), _radiator("numpy")
    for a, b in zip(got[:5], want[:5], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    for k in want[5]:
        assert got[5][k] == pytest.approx(want[5][k], rel=1e-9)


def test_flow_path_under_strict_namespace():
    out = {}
    for backend in ("array-api-strict", "numpy"):
        sim = load_building(BUILDINGS / "radiant.yaml").compile(300.0, backend=backend)
        fp = sim.flow_path
        assert fp is not None
        rng = np.random.default_rng(4)
        B, K = 2, 24
        u = sim.u_min + (sim.u_max - sim.u_min) * rng.uniform(0.1, 0.9, (B, K, sim.nu))
        d = rng.normal(0, 3, (B, K, sim.nd))
        x0 = np.tile(sim.x_initial, (B, 1))
        cx = rng.normal(size=(B, K + 1, sim.n))
        conv = (lambda a: xs.asarray(a)) if backend != "numpy" else (lambda a: a)
        x, tape = fp.forward(conv(x0), conv(u), conv(d))
        assert tape is not None
        g_u, g_x0, g_d = fp.backward(x, conv(u), conv(d), conv(cx), tape)
        # Without the forward's tape the adjoint rebuilds the step matrices: the same numbers.
        for a, b in zip((g_u, g_x0, g_d), fp.backward(x, conv(u), conv(d), conv(cx)), strict=True):
            np.testing.assert_allclose(_host(a), _host(b), rtol=1e-13, atol=1e-15)
        out[backend] = [_host(a) for a in (x, g_u, g_x0, g_d)]
    for a, b in zip(out["array-api-strict"], out["numpy"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


# Two buildings that share the weather but not a wall: two components of unequal size, so the linear model's
# block maps have two groups, gathers that are not spans, and disturbance columns that several blocks read.
_SITE = (BUILDINGS / "house-1.yaml").read_text().split("actuators:")[0] + """
  annex:
    floor_area: 30 m2
    volume: 75 m3
    walls:
      - {name: walls, construction: ext_wall, area: 60 m2, to: outdoor_temperature}
    infiltration: {ach: 0.6, to: outdoor_temperature}
    ground: {area: 30 m2, u_value: 0.35 W/(m2.K), to: ground_temperature}

actuators:
  heater:
    type: ideal_hvac
    zone: living
    heating_capacity: 8 kW
    cooling_capacity: 4 kW
    cop_heating: 3.0
    cop_cooling: 3.5
  annex_heater:
    type: ideal_hvac
    zone: annex
    heating_capacity: 3 kW
    cooling_capacity: 1 kW
    cop_heating: 2.5
    cop_cooling: 3.0
"""


def _linear(source: str, B: int, dtype: str, backend: str):
    if source == "site":
        net = building_from_text(_SITE, "site.yaml")
    elif source in MODELS:  # small models of test_gradients: meters that read states and disturbances
        net = building_from_text(HEAD.format(name=source) + MODELS[source][0], f"{source}.yaml")
    else:
        net = load_building(BUILDINGS / source)
    sim = net.compile(900.0, backend=backend, dtype=dtype)
    assert sim.linear is not None
    rng = np.random.default_rng(5)
    K = 24
    u = sim.u_min + (sim.u_max - sim.u_min) * rng.uniform(0.05, 0.95, (B, K, sim.nu))
    d = rng.normal(0, 3, (B, K, sim.nd)) + np.array([5.0, 200.0, 10.0, 0.5, 100.0])[:sim.nd]
    x0 = np.tile(sim.x_initial, (B, 1)) + rng.normal(0, 0.5, (B, sim.n))
    gz, ge = rng.normal(size=(B, K, sim.nz)), rng.normal(size=(B, K, len(sim.actuator_names)))
    gx = rng.normal(size=(B, K + 1, sim.n))
    # Parameters of the network (through the modal adjoint) and of a meter (through the complex step).
    names = [n for n in sim.net.params.names if n.endswith(("air_capacity", "u_value", "cop_heating", "efficiency",
                                                                "loss_ua", "supply_offset"))]
    conv = (lambda a: xs.asarray(a.astype(dtype))) if backend != "numpy" else (lambda a: a.astype(dtype))
    tr = sim.simulate(conv(x0), conv(u), conv(d))
    g = sim.gradient(tr, g_zones=conv(gz), g_el=conv(ge), g_states=conv(gx), params=names, wrt_disturbances=True)
    arrays = [_host(a) for a in (tr.zones, tr.sensors, tr.p_el, tr.x, g.u, g.x0, g.d)]
    return sim, arrays, g.params


@pytest.mark.parametrize(("source", "B", "dtype"), [
    ("house-1.yaml", 1, "float64"), ("house-1.yaml", 600, "float64"),   # 600 x 5 modes: the fused layout
    ("office-20.yaml", 1, "float64"), ("office-20.yaml", 8, "float64"), ("office-20.yaml", 40, "float32"),
    ("site", 1, "float64"), ("site", 300, "float64"), ("site", 3, "float32"),
    ("heat_pump_tank", 2, "float64"), ("heat_pump_tank", 2, "float32"), ("ideal_hvac_gas", 2, "float64"),
    ("boiler", 1, "float64")])
def test_linear_path_under_strict_namespace(source: str, B: int, dtype: str):
    sim_s, got, p_s = _linear(source, B, dtype, "array-api-strict")
    sim_n, want, p_n = _linear(source, B, dtype, "numpy")
    assert sim_s.linear.V.portable and not sim_n.linear.V.portable  # each ran its own form
    if source == "site":
        assert len(sim_n.linear.V.groups) == 2 and sim_n.linear.V.dense is None
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert got[0].dtype == np.dtype(dtype) and got[4].dtype == np.dtype(dtype)  # zones and dJ/du
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        if b.size == 0:  # the site has no sensors
            continue
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))
    scale = max(abs(v) for v in p_n.values())
    assert scale > 0
    for k in p_n:
        assert p_s[k] == pytest.approx(p_n[k], rel=10 * tol, abs=10 * tol * scale)


def test_blockmap_products_under_strict_namespace():
    """Unequal blocks (two groups), gathers that are not spans, repeated rows and columns shared by blocks."""
    rng = np.random.default_rng(2)
    blocks = [(np.array([4, 0]), np.array([1, 5, 2]), rng.normal(size=(2, 3))),
              (np.array([2, 6]), np.array([5, 3, 0]), rng.normal(size=(2, 3))),
              (np.array([1, 3, 5]), np.array([4, 5]), rng.normal(size=(3, 2))),
              (np.array([2, 3, 7]), np.array([0, 6]), rng.normal(size=(3, 2)))]
    x = rng.normal(size=(3, 4, 7))
    y = rng.normal(size=(3, 4, 8))
    bn = BlockMap((8, 7), blocks)
    bs = BlockMap((8, 7), blocks, xs, np.float64)
    M = bn.to_dense()
    np.testing.assert_allclose(bs.to_dense(), M, rtol=0, atol=0)
    np.testing.assert_allclose(_host(bs.apply(xs.asarray(x))), x @ M.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_host(bs.apply_t(xs.asarray(y))), y @ M, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bn.apply(x), x @ M.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bn.apply_t(y), y @ M, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("B", [2, 600])  # whole-horizon and fused layouts
def test_complex_modal_linear_model_under_strict_namespace(B: int):
    """An identified (non-symmetric) model has complex modes: real parts are taken with the standard's real()."""
    from models.linear import LinearModel

    rng = np.random.default_rng(3)
    n, nu, nd, nz, K = 4, 2, 1, 2, 10
    Ac = -np.eye(n) * 1e-3 + rng.normal(size=(n, n)) * 3e-4
    Ac[0, 1], Ac[1, 0] = 5e-4, -5e-4
    Bc, Ec, Cz = rng.normal(size=(n, nu)) * 1e-4, rng.normal(size=(n, nd)) * 1e-4, rng.normal(size=(nz, n))
    r = np.random.default_rng(1)
    x0, u, d = r.normal(size=(B, n)), r.normal(size=(B, K, nu)), r.normal(size=(B, K, nd))
    gy, gx = r.normal(size=(B, K, nz)), r.normal(size=(B, K + 1, n))
    out = []
    for xp, conv in ((np, lambda a: a), (xs, xs.asarray)):
        m = LinearModel(Ac, Bc, Ec, Cz, 600.0, xp=xp)
        assert m.complex
        z, y = m.forward(conv(x0), conv(u), conv(d), keep_z=True)
        g = m.backward(conv(gy), conv(gx), want_lam=True, want_d=True)
        out.append([_host(a) for a in (y, m.states(z), *g)])
    for a, b in zip(*out, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(a))))
