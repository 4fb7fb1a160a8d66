"""The simulator under the strict array namespace (array-api-strict, test extra).

That namespace refuses NumPy arrays, NumPy dtypes and NumPy-only idioms (implicit trailing axes in an
index, `.astype`, `einsum`, `out=`). A path that passes here has no NumPy/namespace mixing that would
break it on CuPy, and CI checks that without a GPU. Results must equal the NumPy run to rounding.

Covered: the step-map path (PL: folded state-affine component, whole-horizon and per-step variants; a
nonlinear component beside a linear network with meters) forward and gradient with parameter
gradients, and the flow path (R2) forward and adjoint. The linear (modal) path is not covered yet. It uses
einsum and in-place BlockMap products, which this namespace does not have.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradutil import BUILDINGS
from test_stepmap import RADIATOR, _radiator_case

from models import building_from_text, load_building

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
        x = fp.forward(conv(x0), conv(u), conv(d))
        g_u, g_x0, g_d = fp.backward(x, conv(u), conv(d), conv(cx))
        out[backend] = [_host(a) for a in (x, g_u, g_x0, g_d)]
    for a, b in zip(out["array-api-strict"], out["numpy"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
