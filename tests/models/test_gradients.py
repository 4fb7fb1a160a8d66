"""Adjoint gradients against central differences, for every component type and for whole buildings.

For each small model: J = <gz, zones> + <gs, sensors> + <ge, p_el> + <gg, p_gas> over a short horizon
(batch 2) with random inputs inside their bounds; the adjoint gradient w.r.t. the inputs, the initial state
and named parameters must match central differences to 1e-6 relative (vector norm) in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradutil import (
    BUILDINGS,
    adjoint,
    fd_direction,
    fd_full,
    fd_params,
    objective,
    random_case,
    rel_err,
)

from models import building_from_text, load_building
from models.custom import CustomComponent, register_component
from models.gradcheck import check_component

RTOL = 1e-6

HEAD = """model: {name}
disturbances:
  outdoor_temperature: {{unit: degC}}
  solar_irradiance: {{unit: W/m2}}
  ground_temperature: {{unit: degC}}
  occupancy: {{unit: "1"}}
  appliances: {{unit: W}}
materials:
  concrete: {{conductivity: 1.4 W/(m.K), density: 2300 kg/m3, specific_heat: 880 J/(kg.K)}}
  wool: {{conductivity: 0.04 W/(m.K), density: 30 kg/m3, specific_heat: 840 J/(kg.K)}}
  screed: {{conductivity: 1.3 W/(m.K), density: 2000 kg/m3, specific_heat: 1000 J/(kg.K)}}
constructions:
  layered:
    layers:
      - {{material: concrete, thickness: 150 mm}}
      - {{material: wool, thickness: 100 mm}}
  lumped:
    model: lumped
    layers:
      - {{material: concrete, thickness: 150 mm}}
      - {{material: wool, thickness: 100 mm}}
  resistive:
    model: resistive
    layers:
      - {{material: wool, thickness: 50 mm}}
"""
ROOM = """zones:
  room:
    floor_area: 40 m2
    volume: 100 m3
    infiltration: {ach: 0.5, to: outdoor_temperature}
"""
HVAC = "  hvac: {type: ideal_hvac, zone: room, heating_capacity: 3 kW, cooling_capacity: 2 kW, cop_heating: 2.5}\n"
TANK_LOOP = """tanks:
  buffer: {volume: 200 l, loss_ua: 3 W/K, ambient: room, initial_temperature: 40 degC}
radiant_slabs:
  floor:
    zone: room
    supply: buffer
    area: 36 m2
    thickness: 70 mm
    material: screed
    tube: {spacing: 150 mm, outer_diameter: 16 mm, wall_thickness: 2 mm}
    pump: {max_flow: 0.15 kg/s, power: 30 W}
"""

# name -> (model body after HEAD, control step, parameters to check)
MODELS: dict[str, tuple[str, float, list[str]]] = {
    "ideal_hvac_electric": (ROOM + "actuators:\n" + HVAC, 900.0,
                            ["room.air_capacity", "room.infiltration.ach", "hvac.cop_heating", "hvac.cop_cooling"]),
    "ideal_hvac_gas": (ROOM + "actuators:\n  hvac: {type: ideal_hvac, zone: room, heating_capacity: 3 kW, "
                       "cooling_capacity: 2 kW, heating_fuel: gas, efficiency: 0.9}\n", 900.0,
                       ["room.air_capacity", "hvac.efficiency", "hvac.cop_cooling"]),
    "heat_pump_tank": (ROOM + "tanks:\n  buffer: {volume: 200 l, loss_ua: 3 W/K, ambient: room, "
                       "initial_temperature: 40 degC}\nconductances:\n  - {name: emitter, between: [buffer, room], "
                       "ua: 60 W/K}\nactuators:\n  hp: {type: heat_pump, node: buffer, capacity: 4 kW, "
                       "source: outdoor_temperature, carnot_efficiency: 0.45, supply_offset: 4 K}\n"
                       "sensors:\n  tank: {node: buffer}\n", 900.0,
                       ["buffer.capacitance", "buffer.loss_ua", "emitter.ua", "hp.carnot_efficiency",
                        "hp.supply_offset"]),
    "boiler": (ROOM + "nodes:\n  radiator: {capacitance: 2.0e5, initial_temperature: 40}\nconductances:\n"
               "  - {name: rad, between: [radiator, room], ua: 80 W/K}\nactuators:\n"
               "  boiler: {type: boiler, node: radiator, capacity: 5 kW, efficiency: 0.88}\n", 900.0,
               ["radiator.capacitance", "rad.ua", "boiler.efficiency"]),
    "vav": (ROOM + "actuators:\n  ahu: {type: vav, zone: room, max_flow: 0.3 kg/s, min_flow: 0.02 kg/s, "
            "supply_min: 14, supply_max: 32, fan_power: 150 W, outdoor_fraction: 0.3, outdoor: outdoor_temperature,"
            " cop_cooling: 3.2}\n", 900.0,
            ["room.air_capacity", "ahu.fan_power", "ahu.outdoor_fraction", "ahu.efficiency", "ahu.max_flow",
             "room.infiltration.ach"]),
    "vav_gas_coil": (ROOM + "actuators:\n  ahu: {type: vav, zone: room, max_flow: 0.3 kg/s, "
                     "outdoor: outdoor_temperature, coil_fuel: gas, efficiency: 0.9}\n", 900.0,
                     ["room.air_capacity", "ahu.efficiency", "ahu.outdoor_fraction"]),
    "hydronic_loop": (ROOM + "tanks:\n  buffer: {volume: 200 l, loss_ua: 3 W/K, ambient: room, "
                      "initial_temperature: 45 degC}\nnodes:\n  radiator: {capacitance: 1.5e5}\nconductances:\n"
                      "  - {name: rad, between: [radiator, room], ua: 70 W/K}\nactuators:\n"
                      "  loop: {type: hydronic_loop, supply: buffer, loop: radiator, max_flow: 0.1 kg/s, "
                      "power: 25 W}\n  boiler: {type: boiler, node: buffer, capacity: 5 kW}\n", 900.0,
                      ["buffer.capacitance", "radiator.capacitance", "rad.ua", "loop.power", "loop.max_flow"]),
    "radiant_slab_pump": (ROOM + TANK_LOOP + "actuators:\n  hp: {type: heat_pump, node: buffer, capacity: 5 kW, "
                          "source: outdoor_temperature}\nsensors:\n  slab: {node: floor.slab}\n", 300.0,
                          ["floor.conductivity", "floor.heat_capacity", "floor.tube.spacing",
                           "floor.tube.outer_diameter", "floor.tube.wall_thickness", "floor.tube.h_water",
                           "floor.area", "floor.pump.power"]),
    "walls": (ROOM.replace("    infiltration", """    walls:
      - {name: layered, construction: layered, area: 30 m2, to: outdoor_temperature}
      - {name: lumped, construction: lumped, area: 20 m2, to: outdoor_temperature}
      - {name: inner, construction: resistive, area: 10 m2, to: hall}
    infiltration""") + """  hall:
    floor_area: 10 m2
    volume: 25 m3
    walls:
      - {name: door, construction: resistive, area: 2 m2, to: outdoor_temperature}
actuators:
""" + HVAC, 900.0, ["room.layered.area", "room.layered.layers[0].conductivity", "room.layered.layers[1].thickness",
                    "room.layered.layers[0].heat_capacity", "room.lumped.layers[0].thickness",
                    "room.lumped.layers[1].conductivity", "room.inner.layers[0].conductivity", "hall.air_capacity"]),
    "windows_gains_ground_mass": (ROOM.replace("    infiltration", """\
    internal_mass: {area: 40 m2, construction: lumped}
    windows:
      - {name: south, area: 6 m2, u_value: 1.4 W/(m2.K), shgc: 0.5, irradiance: solar_irradiance,
         to: outdoor_temperature, solar_to_mass: 0.4}
    internal_gains: {power_density: 8 W/m2, disturbance: occupancy, radiative_fraction: 0.3}
    ground: {area: 40 m2, u_value: 0.3 W/(m2.K), to: ground_temperature}
    infiltration""") + "actuators:\n" + HVAC, 900.0,
        ["room.south.area", "room.south.u_value", "room.south.shgc", "room.internal_gains.power_density",
         "room.ground.u_value", "room.ground.area", "room.mass.area", "room.mass.layers[0].conductivity",
         "room.infiltration.ach"]),
    "raw_nodes_conductances_gains": (ROOM + """nodes:
  core: {capacitance: 3.0e6, initial_temperature: 19}
  plenum: {capacitance: 2.0e5}
conductances:
  - {name: core_room, between: [core, room], ua: 120 W/K}
  - {name: plenum_room, between: [plenum, room], ua: 40 W/K}
  - {name: plenum_out, between: [plenum, outdoor_temperature], ua: 15 W/K}
heat_gains:
  - {name: kit, node: room, disturbance: appliances, gain: 0.8}
  - {name: sun_on_plenum, node: plenum, disturbance: solar_irradiance, gain: 4.0}
actuators:
""" + HVAC + "sensors:\n  mix: {nodes: {room: 0.7, plenum: 0.3}}\n", 900.0,
        ["core.capacitance", "plenum.capacitance", "core_room.ua", "plenum_out.ua", "kit.gain", "sun_on_plenum.gain"]),
}

SS_INLINE = """state_space:
  - name: annex
    time: {time}
{extra}    A: {A}
    B: {B}
    E: [[4.0e-5, 1.0e-7], [2.0e-5, 0.0]]
    C: [[1.0, 0.0]]
    inputs: [{{name: annex_heater, min: -1 kW, max: 4 kW, cop_heating: 2.8}}]
    disturbances: [outdoor_temperature, solar_irradiance]
    zones: [{{name: annex, floor_area: 50 m2}}]
"""
A_CONT = "[[-1.2e-4, 3.0e-5], [2.0e-5, -6.0e-5]]"
B_CONT = "[[2.0e-6], [1.0e-7]]"


def _ss_discrete_matrices(dt: float = 900.0):
    import scipy.linalg

    A = np.array([[-1.2e-4, 3.0e-5], [2.0e-5, -6.0e-5]])
    BE = np.array([[2.0e-6, 4.0e-5, 1.0e-7], [1.0e-7, 2.0e-5, 0.0]])
    M = np.zeros((5, 5))
    M[:2, :2], M[:2, 2:] = A, BE
    E = scipy.linalg.expm(M * dt)
    return E[:2, :2], E[:2, 2:3], E[:2, 3:]


def _build(name: str, body: str, tmp_path: Path | None = None):
    return building_from_text(HEAD.format(name=name) + body, f"{name}.yaml", base_dir=tmp_path)


def check_model(net, dt: float, params: list[str], *, K: int = 10, B: int = 2, seed: int = 0,
                check_d: bool = True) -> dict[str, float]:
    sim = net.compile(dt)
    c = random_case(sim, B, K, seed)
    g = adjoint(sim, c, params=params, wrt_disturbances=check_d)
    span = np.maximum(sim.u_max - sim.u_min, 1e-12)
    errs = {}
    fd_u = fd_full(lambda u: objective(sim, c, u=u), c.u, span, eps=1e-4)
    errs["u"] = rel_err(g.u, fd_u)
    fd_x0 = fd_full(lambda x0: objective(sim, c, x0=x0), c.x0, 1.0, eps=1e-3)
    errs["x0"] = rel_err(g.x0, fd_x0)
    if check_d:
        v = np.random.default_rng(seed + 1).normal(size=c.d.shape) * np.maximum(np.abs(c.d).mean((0, 1)), 1.0)
        fd = fd_direction(lambda d: objective(sim, c, d=d), c.d, v, eps=1e-3)
        errs["d"] = abs(float(np.sum(g.d * v)) - fd) / max(abs(fd), 1e-300)
    if params:
        theta = sim.theta[sim.net.params.lookup(params)]
        got = np.array([g.params[p] for p in params]) * theta
        want = fd_params(sim, c, params) * theta
        errs["params"] = rel_err(got, want)
        errs.update({f"param {p}": abs(a - b) / max(np.abs(want).max(), 1e-300)
                     for p, a, b in zip(params, got, want, strict=True)})
    return errs


def _assert_small(errs: dict[str, float], rtol: float = RTOL) -> None:
    bad = {k: v for k, v in errs.items() if not v <= rtol}
    assert not bad, f"adjoint vs finite differences, relative errors above {rtol:g}: {bad}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_component_gradients(name: str):
    body, dt, params = MODELS[name]
    net = _build(name, body)
    for p in params:
        assert p in net.params.names, f"{p} not in {net.params.names}"
    _assert_small(check_model(net, dt, params))


@pytest.mark.parametrize("time_base", ["continuous", "discrete", "npz"])
def test_state_space_gradients(time_base: str, tmp_path: Path):
    Ad, Bd, Ed = _ss_discrete_matrices()
    fmt = lambda m: "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in m) + "]"  # noqa: E731
    if time_base == "continuous":
        ss = SS_INLINE.format(time="continuous", extra="", A=A_CONT, B=B_CONT)
    elif time_base == "discrete":
        ss = SS_INLINE.format(time="discrete", extra="    dt: 15 min\n", A=fmt(Ad), B=fmt(Bd)).replace(
            "E: [[4.0e-5, 1.0e-7], [2.0e-5, 0.0]]", f"E: {fmt(Ed)}")
    else:
        np.savez(tmp_path / "annex.npz", A=Ad, B=Bd, E=Ed, C=np.array([[1.0, 0.0]]))
        ss = SS_INLINE.format(time="discrete", extra="    dt: 900\n    file: annex.npz\n", A="", B="")
        ss = "\n".join(line for line in ss.splitlines() if line.strip() not in ("A:", "B:")
                       and not line.strip().startswith(("E:", "C:"))) + "\n"
    body = ROOM + "actuators:\n" + HVAC + ss
    net = _build(f"ss_{time_base}", body, tmp_path)
    # The discrete block converted to continuous time reproduces the given continuous matrices.
    if time_base != "continuous":
        i0 = net.params.index["annex.A[0][0]"]
        assert net.params.values[i0] == pytest.approx(-1.2e-4, rel=1e-9)
    params = ["annex.A[0][0]", "annex.A[1][0]", "annex.B[0][0]", "annex.E[0][0]", "annex_heater.cop_heating",
              "room.air_capacity"]
    _assert_small(check_model(net, 900.0, params))


# -- custom components -----------------------------------------------------------------------------
@register_component("test_cubic_bridge")
class CubicBridge(CustomComponent):
    """A nonlinear heat path plus a share of an input: q = k (Td - Tx)^3 + beta u (W)."""

    def setup(self, cfg):
        self.k = cfg.get("k").as_float(positive=True)
        self.beta = cfg.get("beta", 0.0).as_float()

    def heat(self, x, u, d, xp):
        return self.k * (d[:, 0:1] - x[:, 0:1]) ** 3 + self.beta * u[:, 0:1]

    def heat_vjp(self, x, u, d, g, xp):
        s = 3 * self.k * (d[:, 0:1] - x[:, 0:1]) ** 2 * g
        return -s, self.beta * g, s


CUSTOM = ROOM + "actuators:\n" + HVAC + """custom:
  - {type: test_cubic_bridge, name: bridge, nodes: [room], reads_x: [room], reads_u: [hvac],
     reads_d: [outdoor_temperature], k: 0.02, beta: 0.1}
"""


def test_custom_component_vjp_and_model_gradients():
    net = _build("custom", CUSTOM)
    comp = net.custom[0]
    assert check_component(comp, batch=4) <= 1e-6
    _assert_small(check_model(net, 900.0, ["room.infiltration.ach", "hvac.cop_heating"]))


def test_gradcheck_catches_a_wrong_vjp():
    net = _build("custom_bad", CUSTOM)
    comp = net.custom[0]
    comp.heat_vjp = lambda x, u, d, g, xp: (0 * x, 0.1 * g, 3 * comp.k * (d - x) ** 2 * g)
    with pytest.raises(AssertionError, match="argument 0"):
        check_component(comp)


def test_custom_component_capacitance_parameter():
    net = _build("custom_cap", CUSTOM)
    _assert_small(check_model(net, 900.0, ["room.air_capacity"], check_d=False))


# -- whole example buildings: directional derivatives ------------------------------------------------
BUILDING_PARAMS = {
    "house-1": (900.0, ["living.air_capacity", "living.walls.layers[2].conductivity", "living.glazing.shgc",
                        "living.infiltration.ach", "heater.cop_heating"]),
    "radiant": (300.0, ["house.air_capacity", "buffer.loss_ua", "floor.tube.spacing", "floor.heat_capacity",
                        "heat_pump.carnot_efficiency"]),
    "office-20": (900.0, ["z01.air_capacity", "z07.envelope.area", "z12.mass.layers[0].heat_capacity",
                          "z03.infiltration.ach", "z09.win_south.shgc"]),
}


def directional_errors(sim, params: list[str], *, K: int, B: int = 2, seed: int = 3) -> dict[str, float]:
    c = random_case(sim, B, K, seed)
    g = adjoint(sim, c, params=params)
    rng = np.random.default_rng(seed + 10)
    span = sim.u_max - sim.u_min
    errs = {}
    for trial in range(2):
        v = rng.normal(size=c.u.shape) * span
        fd = fd_direction(lambda u: objective(sim, c, u=u), c.u, v, eps=1e-4)
        errs[f"u{trial}"] = abs(float(np.sum(g.u * v)) - fd) / abs(fd)
        w = rng.normal(size=c.x0.shape)
        fd = fd_direction(lambda x0: objective(sim, c, x0=x0), c.x0, w, eps=1e-3)
        errs[f"x0{trial}"] = abs(float(np.sum(g.x0 * w)) - fd) / abs(fd)
    if params:
        theta = sim.theta[sim.net.params.lookup(params)]
        errs["params"] = rel_err(np.array([g.params[p] for p in params]) * theta, fd_params(sim, c, params) * theta)
    return errs


@pytest.mark.parametrize("name", sorted(BUILDING_PARAMS))
def test_example_building_gradients(name: str):
    dt, params = BUILDING_PARAMS[name]
    sim = load_building(BUILDINGS / f"{name}.yaml").compile(dt)
    _assert_small(directional_errors(sim, params, K=24 if name != "radiant" else 36))


def test_office20_float32_matches_float64():
    net = load_building(BUILDINGS / "office-20.yaml")
    s64, s32 = net.compile(900.0), net.compile(900.0, dtype="float32")
    params = BUILDING_PARAMS["office-20"][1]
    c = random_case(s64, 2, 48, seed=5)
    g64, g32 = adjoint(s64, c, params=params), adjoint(s32, c, params=params)
    assert np.asarray(g32.u).dtype == np.float32
    assert rel_err(g32.u, g64.u) <= 1e-4
    assert rel_err(g32.x0, g64.x0) <= 1e-4
    assert rel_err([g32.params[p] for p in params], [g64.params[p] for p in params]) <= 1e-4
    t32, t64 = s32.simulate(c.x0, c.u, c.d), s64.simulate(c.x0, c.u, c.d)
    assert np.max(np.abs(np.asarray(t32.zones, float) - t64.zones)) <= 1e-3


def test_campus500_compiles_and_directional_derivative():
    """About 4 s here (most of it parsing 8,400 lines of YAML), so not marked slow."""
    net = load_building(BUILDINGS / "campus-500.yaml")
    sim = net.compile(900.0)
    assert sim.n == 1500 and sim.nu == 500
    c = random_case(sim, 1, 12, seed=7)
    g = adjoint(sim, c)
    v = np.random.default_rng(8).normal(size=c.u.shape) * (sim.u_max - sim.u_min)
    fd = fd_direction(lambda u: objective(sim, c, u=u), c.u, v, eps=1e-4)
    assert abs(float(np.sum(g.u * v)) - fd) <= RTOL * abs(fd)
