"""YAML building model -> validated `Network` with named parameters.

Walls are declared by their layers (materials x thicknesses) as EnergyPlus and ISO 52016 users expect;
the RC nodes are generated here. Raw nodes and conductances are allowed for everything else. Every error
names the file, line and field; see models.errors.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from models import components as comp
from models import devices
from models.network import FlowTerm, InputSpec, Network, Zone
from models.yamlio import Cursor, _closest, load_yaml

log = logging.getLogger("edge_mpc.model")
RHO_AIR = 1.2
# Disturbance units as users write them -> the canonical unit the model uses. Temperatures ("degC", "°C")
# are absolute in °C; "K" is a temperature difference (for example a supply-minus-room offset), not kelvin.
DISTURBANCE_UNITS = {
    "degC": "degC", "°C": "degC", "K": "K", "W": "W", "kW": "kW", "W/m2": "W/m2", "kg/s": "kg/s",
    "m3/s": "m3/s", "m/s": "m/s", "Pa": "Pa", "1": "1", "%": "%", "ppm": "ppm", "USD/kWh": "USD/kWh",
    "EUR/kWh": "EUR/kWh",
}
ZONE_KEYS = frozenset({"floor_area", "volume", "air_capacity_multiplier", "initial_temperature", "walls", "windows",
                       "internal_mass", "infiltration", "internal_gains", "ground"})
TOP_KEYS = frozenset({
    "model", "description", "defaults", "materials", "constructions", "disturbances", "zones", "nodes",
    "conductances", "heat_gains", "tanks", "radiant_slabs", "actuators", "sensors", "state_space", "custom",
})


def load_building(path: str | Path) -> Network:
    """Parse and validate a building model file."""
    path = Path(path)
    doc = Cursor(load_yaml(path), str(path))
    return _Builder(doc, path.parent).build()


def building_from_text(text: str, filename: str = "<string>", base_dir: Path | None = None) -> Network:
    from models.yamlio import loads_yaml

    return _Builder(Cursor(loads_yaml(text, filename), filename), base_dir or Path(".")).build()


def _hint(name: object, options) -> str:
    """' (did you mean 'x'?)' for a misspelt reference, else ''."""
    close = _closest(str(name), frozenset(str(o) for o in options))
    return f" (did you mean '{close}'?)" if close else ""


def _listing(options, limit: int = 12) -> str:
    names = [str(o) for o in options]
    if not names:
        return "none declared"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Builder:
    def __init__(self, doc: Cursor, base_dir: Path) -> None:
        self.doc = doc
        self.base = base_dir
        self.net = Network(file=doc.file, name="")
        self.materials: dict[str, dict[str, float]] = {}
        self.constructions: dict[str, Cursor] = {}
        self.defaults: dict[str, float] = {}
        self.where: dict[str, Cursor] = {}  # node name -> where it was declared

    # -- helpers ----------------------------------------------------------------------------------
    def reg(self, name: str, value: float, lower: float = 0.0, cur: Cursor | None = None, unit: str = "-"):
        if name in self.net.params.index:
            # Two elements whose generated parameter names collide (for example two conductances with the
            # same name): the parameter could not be addressed, so the model is ambiguous.
            where = cur or self.doc
            raise where.error(f"parameter name '{name}' is generated twice (two elements share a name)",
                              field=where.field or None, expected="unique names for conductances, heat gains, "
                              "actuators and state-space inputs", found=name)
        i = self.net.params.add(name, value, lower=lower, unit=unit)
        return lambda th, i=i: th[i]

    def num(self, cur: Cursor, key: str, prefix: str, unit: str | None, default: float | None = None,
            label: str | None = None, **checks: Any):
        """Parameter `prefix.key` from cur[key] (or default), registered; returns (theta->value, value).

        ``label``: the unit shown to people when ``unit`` (the one parsed) does not say it (default: ``unit``)."""
        if cur.has(key):
            value = cur.get(key).as_float(unit=unit, **checks)
        elif default is not None:
            value = default
        else:
            raise cur.error(f"missing required field '{key}'", field=f"{cur.field}.{key}" if cur.field else key,
                            expected=f"a number{f' in {unit}' if unit else ''}", found=None)
        lower = 0.0 if checks.get("positive") or checks.get("nonnegative") else -math.inf
        fn = self.reg(f"{prefix}.{key}", value, lower=lower,
                      cur=cur.get(key) if cur.has(key) else cur, unit=label or unit or "-")
        return fn, value

    def ref_node(self, cur: Cursor) -> int:
        name = cur.as_str()
        if name in self.net.nodes:
            return self.net.node(name)
        zone_names = [z.name for z in self.net.zones]
        known = zone_names + [n for n in self.net.nodes if n not in zone_names and not str(n).startswith("ss:")]
        raise cur.error(f"unknown node '{name}'{_hint(name, known)}",
                        expected="a zone or node declared in this file: " + _listing(known))

    def ref_dist(self, cur: Cursor) -> int:
        name = cur.as_str()
        if name not in self.net.disturbances:
            raise cur.error(f"unknown disturbance '{name}'{_hint(name, self.net.disturbances)}",
                            expected="one declared under 'disturbances': " + _listing(self.net.disturbances))
        return self.net.disturbances.index(name)

    def ref_target(self, cur: Cursor) -> tuple[str, int]:
        """A wall's far side: a node/zone or a temperature disturbance."""
        name = cur.as_str()
        if name in self.net.nodes:
            return "node", self.net.node(name)
        if name in self.net.disturbances:
            if self.net.disturbance_units[self.net.disturbances.index(name)] != "degC":
                raise cur.error(f"'{name}' is not a temperature", expected="a node or a disturbance with unit degC")
            return "dist", self.net.disturbances.index(name)
        known = [n for n in self.net.nodes if not str(n).startswith("ss:")] + [
            n for n, unit in zip(self.net.disturbances, self.net.disturbance_units, strict=True) if unit == "degC"]
        raise cur.error(f"unknown node or disturbance '{name}'{_hint(name, known)}",
                        expected="a zone, node or temperature disturbance: " + _listing(known))

    def ref_temperature(self, cur: Cursor, what: str) -> int:
        """A disturbance that must be a temperature (a heat pump's source, a VAV's outdoor air)."""
        j = self.ref_dist(cur)
        if self.net.disturbance_units[j] != "degC":
            raise cur.error(f"{what} must be a temperature, but '{cur.value}' has unit "
                            f"{self.net.disturbance_units[j]}", expected="a disturbance with unit degC")
        return j

    def new_node(self, name: str, cur: Cursor, initial: float | None = None) -> int:
        if name in self.net.nodes:
            prev = self.where[name]
            raise cur.error(f"name '{name}' is already used (line {prev.line})", expected="a unique name",
                            found=name)
        self.where[name] = cur
        return self.net.add_node(name, self.defaults["initial_temperature"] if initial is None else initial, cur.line)

    def connect(self, i: int, target: tuple[str, int], g, cur: Cursor) -> None:
        kind, j = target
        if kind == "node":
            if j == i:
                raise cur.error("a heat path from a node to itself makes no physical sense",
                                expected="two different nodes")
            self.net.edges.append((i, j, g))
        else:
            self.net.boundary.append((i, j, g))

    # -- sections ---------------------------------------------------------------------------------
    def build(self) -> Network:
        d = self.doc
        d.only_keys(TOP_KEYS)
        self.net.name = d.get("model").as_str()
        defaults = d.get("defaults", {})
        defaults.only_keys({"initial_temperature", "air_capacity_multiplier", "h_inside", "h_outside"})
        self.defaults = {
            "initial_temperature": defaults.get("initial_temperature", 20.0).as_float(unit="degC", low=-50, high=150),
            "air_capacity_multiplier": defaults.get("air_capacity_multiplier", 3.0).as_float(positive=True),
            "h_inside": defaults.get("h_inside", 7.7).as_float(unit="W/(m2.K)", positive=True),
            "h_outside": defaults.get("h_outside", 25.0).as_float(unit="W/(m2.K)", positive=True),
        }
        for name, cur in d.get("disturbances", {}).items():
            cur.only_keys({"unit", "description"})
            unit = cur.get("unit").as_str()
            unit = DISTURBANCE_UNITS.get(unit.replace(" ", ""), unit)
            if unit not in DISTURBANCE_UNITS.values():
                raise cur.get("unit").error("unsupported disturbance unit",
                                            expected="one of " + ", ".join(sorted(set(DISTURBANCE_UNITS))))
            self.net.dist(name, unit)
        for name, cur in d.get("materials", {}).items():
            cur.only_keys({"conductivity", "density", "specific_heat"})
            self.materials[name] = {
                "conductivity": cur.get("conductivity").as_float(unit="W/(m.K)", positive=True),
                "density": cur.get("density").as_float(unit="kg/m3", positive=True),
                "specific_heat": cur.get("specific_heat").as_float(unit="J/(kg.K)", positive=True),
            }
        for name, cur in d.get("constructions", {}).items():
            cur.only_keys({"layers", "model", "h_inside", "h_outside"})
            if len(cur.get("layers")) == 0:
                raise cur.get("layers").error("a construction needs at least one layer", expected="a non-empty list")
            for layer in cur.get("layers"):
                layer.only_keys({"material", "thickness"})
                mat = layer.get("material").as_str()
                if mat not in self.materials:
                    raise layer.get("material").error(f"unknown material '{mat}'{_hint(mat, self.materials)}",
                                                      expected="one of: " + _listing(self.materials))
                layer.get("thickness").as_float(unit="m", positive=True, high=5.0)
            model = cur.get("model", "layers").as_str()
            if model not in ("layers", "lumped", "resistive"):
                raise cur.get("model").error("unknown construction model", expected="layers, lumped or resistive")
            self.constructions[name] = cur
        for name, cur in d.get("zones", {}).items():
            cur.only_keys(ZONE_KEYS)
            area = cur.get("floor_area").as_float(unit="m2", positive=True)
            vol = cur.get("volume").as_float(unit="m3", positive=True)
            mult = cur.get("air_capacity_multiplier", self.defaults["air_capacity_multiplier"]).as_float(positive=True)
            init = cur.get("initial_temperature", self.defaults["initial_temperature"]).as_float(unit="degC")
            i = self.new_node(name, cur, init)
            cap = self.reg(f"{name}.air_capacity", vol * RHO_AIR * comp.CP_AIR * mult, unit="J/K")
            self.net.caps.append((i, cap))
            self.net.zones.append(Zone(name, i, area))
        self.stepped: dict[int, Cursor] = {}  # nodes without capacitance: states that step components own
        for name, cur in d.get("nodes", {}).items():
            cur.only_keys({"capacitance", "initial_temperature"})
            i = self.new_node(name, cur, cur.get("initial_temperature", self.defaults["initial_temperature"]).as_float(
                unit="degC"))
            if cur.has("capacitance"):
                self.net.caps.append((i, self.num(cur, "capacitance", name, "J/K", positive=True)[0]))
            else:
                self.stepped[i] = cur
                self.net.caps.append((i, lambda th: 1.0))
        for name, cur in d.get("tanks", {}).items():
            cur.only_keys({"volume", "loss_ua", "ambient", "initial_temperature"})
            i = self.new_node(name, cur, cur.get("initial_temperature", 45.0).as_float(unit="degC", low=0, high=100))
            vol = cur.get("volume").as_float(unit="m3", positive=True)
            self.net.caps.append((i, self.reg(f"{name}.capacitance", vol * 1000.0 * comp.CP_WATER, unit="J/K")))
            loss = self.num(cur, "loss_ua", name, "W/K", positive=True)[0]
            self.connect(i, self.ref_target(cur.get("ambient")), loss, cur.get("ambient"))
        # Envelope elements refer to zones and nodes, so they come after all nodes exist.
        self._envelope()
        for name, cur in d.get("radiant_slabs", {}).items():
            self._radiant_slab(name, cur)
        seen: dict[str, Cursor] = {}
        for i, cur in enumerate(d.get("conductances", [])):
            cur.only_keys({"name", "between", "ua"})
            name = self._element_name(cur, f"conductances[{i}]", seen)
            pair = cur.get("between")
            if len(pair.expect_list()) != 2:
                raise pair.error("wrong length", expected="two names [a, b]")
            a, b = list(pair)
            ia = self.ref_node(a)
            self.connect(ia, self.ref_target(b), self.num(cur, "ua", name, "W/K", positive=True)[0], pair)
        seen = {}
        for i, cur in enumerate(d.get("heat_gains", [])):
            cur.only_keys({"name", "node", "disturbance", "gain"})
            name = self._element_name(cur, f"heat_gains[{i}]", seen)
            node = self.ref_node(cur.get("node"))
            dist = self.ref_dist(cur.get("disturbance"))
            self.net.dist_heat.append((node, dist, self.num(cur, "gain", name, None, positive=True,
                                                            label=f"W per {self.net.disturbance_units[dist]}")[0]))
        for name, cur in d.get("actuators", {}).items():
            self._actuator(name, cur)
        for name, cur in d.get("sensors", {}).items():
            cur.only_keys({"node", "nodes"})
            if cur.has("node"):
                weights = {self.ref_node(cur.get("node")): 1.0}
            elif cur.has("nodes"):
                weights = {}
                for node_name, w in cur.get("nodes").items():
                    weights[self.ref_node(Cursor(node_name, w.file, w.field, w.line))] = w.as_float()
                if abs(sum(weights.values()) - 1.0) > 1e-9:
                    raise cur.get("nodes").error("sensor weights must sum to 1", expected="weights summing to 1",
                                                 found=sum(weights.values()))
            else:
                raise cur.error("sensor needs 'node' or 'nodes'", expected="node: <name> or nodes: {name: weight}")
            self.net.sensors.append((name, weights))
        if d.has("state_space"):
            from models.statespace import parse_state_space

            for i, cur in enumerate(d.get("state_space")):
                parse_state_space(self, cur, i)
        if d.has("custom"):
            from models.custom import parse_custom

            for i, cur in enumerate(d.get("custom")):
                parse_custom(self, cur, i)
        self._check_physics()
        return self.net

    # -- envelope ---------------------------------------------------------------------------------
    def _envelope(self) -> None:
        for zname, zcur in self.doc.get("zones", {}).items():
            iz = self.net.node(zname)
            area = zcur.get("floor_area").as_float(unit="m2", positive=True)
            vol = zcur.get("volume").as_float(unit="m3", positive=True)
            mass = None
            if zcur.has("internal_mass"):
                mass = self._internal_mass(zname, iz, zcur.get("internal_mass"))
            names: set[str] = set()
            for w in zcur.get("walls", []):
                w.only_keys({"name", "construction", "area", "to"})
                wname = self._unique(w, names)
                cons = self._construction(w.get("construction"))
                target = self.ref_target(w.get("to"))
                if target == ("node", iz):
                    raise w.get("to").error("a wall from a zone to itself makes no physical sense",
                                            expected="another zone, a node or an outdoor/ground temperature")
                self._wall(f"{zname}.{wname}", iz, target, cons, w)
            for w in zcur.get("windows", []):
                w.only_keys({"name", "area", "u_value", "shgc", "irradiance", "to", "solar_to_mass"})
                prefix = f"{zname}.{self._unique(w, names)}"
                a, _ = self.num(w, "area", prefix, "m2", positive=True)
                u, _ = self.num(w, "u_value", prefix, "W/(m2.K)", positive=True)
                self.connect(iz, self.ref_target(w.get("to")), lambda th, a=a, u=u: a(th) * u(th), w)
                if w.has("irradiance"):
                    dist = self.ref_dist(w.get("irradiance"))
                    if self.net.disturbance_units[dist] != "W/m2":
                        raise w.get("irradiance").error("not an irradiance", expected="a disturbance with unit W/m2")
                    shgc, _ = self.num(w, "shgc", prefix, None, positive=True, high=1.0)
                    frac = w.get("solar_to_mass", 0.0).as_float(nonnegative=True, high=1.0) if mass is not None else 0.0
                    self.net.dist_heat.append((iz, dist, lambda th, a=a, s=shgc, f=frac: (1 - f) * a(th) * s(th)))
                    if frac:
                        self.net.dist_heat.append((mass, dist, lambda th, a=a, s=shgc, f=frac: f * a(th) * s(th)))
            if zcur.has("infiltration"):
                c = zcur.get("infiltration")
                c.only_keys({"ach", "to"})
                ach, _ = self.num(c, "ach", f"{zname}.infiltration", "1", nonnegative=True, high=50, label="1/h")
                g = lambda th, ach=ach, v=vol: ach(th) * v * RHO_AIR * comp.CP_AIR / 3600.0  # noqa: E731
                self.connect(iz, self.ref_target(c.get("to")), g, c)
            if zcur.has("internal_gains"):
                c = zcur.get("internal_gains")
                c.only_keys({"power_density", "disturbance", "radiative_fraction"})
                pd, _ = self.num(c, "power_density", f"{zname}.internal_gains", "W/m2", nonnegative=True)
                dist = self.ref_dist(c.get("disturbance"))
                if self.net.disturbance_units[dist] != "1":
                    raise c.get("disturbance").error(
                        "internal gains scale with a fraction (occupancy schedule), but "
                        f"'{c.get('disturbance').value}' has unit {self.net.disturbance_units[dist]}",
                        expected="a disturbance with unit 1 (0..1 occupancy)")
                rad = c.get("radiative_fraction", 0.0).as_float(nonnegative=True, high=1.0) if mass is not None else 0.0
                self.net.dist_heat.append((iz, dist, lambda th, pd=pd, r=rad, A=area: (1 - r) * pd(th) * A))
                if rad:
                    self.net.dist_heat.append((mass, dist, lambda th, pd=pd, r=rad, A=area: r * pd(th) * A))
            if zcur.has("ground"):
                c = zcur.get("ground")
                c.only_keys({"area", "u_value", "to"})
                a, _ = self.num(c, "area", f"{zname}.ground", "m2", positive=True)
                u, _ = self.num(c, "u_value", f"{zname}.ground", "W/(m2.K)", positive=True)
                self.connect(iz, self.ref_target(c.get("to")), lambda th, a=a, u=u: a(th) * u(th), c)

    def _element_name(self, cur: Cursor, default: str, seen: dict[str, Cursor]) -> str:
        """The optional `name` of a list element (conductance, heat gain); names address parameters."""
        name = cur.get("name", default).as_str()
        if name in seen:
            raise cur.get("name").error(f"name '{name}' is used twice (first on line {seen[name].line})",
                                        expected="a unique name")
        seen[name] = cur.get("name", default)
        return name

    def _unique(self, cur: Cursor, names: set[str]) -> str:
        name = cur.get("name").as_str()
        if name in names or "." in name:
            raise cur.get("name").error(f"element name '{name}' is used twice in this zone or contains '.'",
                                        expected="a unique name without dots")
        names.add(name)
        return name

    def _construction(self, cur: Cursor) -> Cursor:
        name = cur.as_str()
        if name not in self.constructions:
            raise cur.error(f"unknown construction '{name}'{_hint(name, self.constructions)}",
                            expected="one of: " + _listing(self.constructions))
        return self.constructions[name]

    def _layer_params(self, prefix: str, cons: Cursor) -> list[tuple[Any, Any, Any]]:
        """Per-layer (thickness, conductivity, volumetric heat capacity) as parameter functions."""
        out = []
        for li, layer in enumerate(cons.get("layers")):
            m = self.materials[layer.get("material").as_str()]
            t = self.reg(f"{prefix}.layers[{li}].thickness", layer.get("thickness").as_float(unit="m", positive=True),
                         unit="m")
            k = self.reg(f"{prefix}.layers[{li}].conductivity", m["conductivity"], unit="W/(m.K)")
            rc = self.reg(f"{prefix}.layers[{li}].heat_capacity", m["density"] * m["specific_heat"], unit="J/(m3.K)")
            out.append((t, k, rc))
        return out

    def _films(self, cons: Cursor, outside_is_node: bool) -> tuple[float, float]:
        h_in = cons.get("h_inside", self.defaults["h_inside"]).as_float(unit="W/(m2.K)", positive=True)
        h_out_default = self.defaults["h_inside"] if outside_is_node else self.defaults["h_outside"]
        h_out = cons.get("h_outside", h_out_default).as_float(unit="W/(m2.K)", positive=True)
        return h_in, h_out

    def _wall(self, prefix: str, iz: int, target: tuple[str, int], cons: Cursor, cur: Cursor) -> None:
        area, _ = self.num(cur, "area", prefix, "m2", positive=True)
        layers = self._layer_params(prefix, cons)
        h_in, h_out = self._films(cons, target[0] == "node")
        model = cons.get("model", "layers").as_str()
        if model == "resistive":
            def g(th, layers=layers, a=area):
                r = 1 / h_in + 1 / h_out
                for t, k, _ in layers:
                    r = r + t(th) / k(th)
                return a(th) / r
            self.connect(iz, target, g, cur)
            return
        if model == "lumped":
            values = [lay.get("thickness").as_float(unit="m") * self._rho_c(lay) for lay in cons.get("layers")]
            heavy = max(range(len(layers)), key=values.__getitem__)
            node = self.new_node(f"{prefix}", cur)
            self.net.caps.append((node, lambda th, L=layers, a=area: a(th) * sum(t(th) * rc(th) for t, _, rc in L)))

            def r_side(th, idx, film, half, L=layers):
                r = 1 / film + half
                for i in idx:
                    r = r + L[i][0](th) / L[i][1](th)
                return r
            t_h, k_h, _ = layers[heavy]
            self.net.edges.append((iz, node, lambda th, a=area: a(th) / r_side(
                th, range(heavy), h_in, t_h(th) / (2 * k_h(th)))))
            self.connect(node, target, lambda th, a=area: a(th) / r_side(
                th, range(heavy + 1, len(layers)), h_out, t_h(th) / (2 * k_h(th))), cur)
            return
        prev = ("node", iz)
        for li, (t, k, rc) in enumerate(layers):
            node = self.new_node(f"{prefix}.layers[{li}]", cur)
            self.net.caps.append((node, lambda th, a=area, t=t, rc=rc: a(th) * t(th) * rc(th)))
            if li == 0:
                g = lambda th, a=area, t=t, k=k: a(th) / (1 / h_in + t(th) / (2 * k(th)))  # noqa: E731
            else:
                tp, kp, _ = layers[li - 1]
                g = lambda th, a=area, t=t, k=k, tp=tp, kp=kp: a(th) / (  # noqa: E731
                    tp(th) / (2 * kp(th)) + t(th) / (2 * k(th)))
            self.connect(node, prev, g, cur)
            prev = ("node", node)
        t, k, _ = layers[-1]
        self.connect(prev[1], target, lambda th, a=area, t=t, k=k: a(th) / (t(th) / (2 * k(th)) + 1 / h_out), cur)

    def _rho_c(self, layer: Cursor) -> float:
        m = self.materials[layer.get("material").as_str()]
        return m["density"] * m["specific_heat"]

    def _internal_mass(self, zname: str, iz: int, cur: Cursor) -> int:
        cur.only_keys({"area", "construction", "capacitance", "ua"})
        node = self.new_node(f"{zname}.mass", cur)
        if cur.has("construction"):
            cons = self._construction(cur.get("construction"))
            area, _ = self.num(cur, "area", f"{zname}.mass", "m2", positive=True)
            layers = self._layer_params(f"{zname}.mass", cons)
            h_in, _ = self._films(cons, True)
            # Both faces exposed to the zone: the layers' half-thickness resistance to the mid-plane.
            self.net.caps.append((node, lambda th, L=layers, a=area: a(th) * sum(t(th) * rc(th) for t, _, rc in L)))

            def g(th, L=layers, a=area):
                r = 1 / h_in
                for t, k, _ in L:
                    r = r + t(th) / (2 * k(th))
                return 2 * a(th) / r
            self.net.edges.append((iz, node, g))
        else:
            self.net.caps.append((node, self.num(cur, "capacitance", f"{zname}.mass", "J/K", positive=True)[0]))
            self.net.edges.append((iz, node, self.num(cur, "ua", f"{zname}.mass", "W/K", positive=True)[0]))
        return node

    # -- hydronics --------------------------------------------------------------------------------
    def _radiant_slab(self, name: str, cur: Cursor) -> None:
        """Slab core + water in the tubes; tube-to-slab UA from geometry (ISO 11855 style resistances)."""
        cur.only_keys({"zone", "area", "thickness", "material", "tube", "supply", "pump", "initial_temperature"})
        iz = self.ref_node(cur.get("zone"))
        supply = self.ref_node(cur.get("supply"))
        init = cur.get("initial_temperature", self.defaults["initial_temperature"]).as_float(unit="degC")
        mat_cur = cur.get("material")
        mat = self.materials.get(mat_cur.as_str())
        if mat is None:
            raise mat_cur.error(f"unknown material '{mat_cur.value}'{_hint(mat_cur.value, self.materials)}",
                                expected="one of: " + _listing(self.materials))
        area, _ = self.num(cur, "area", name, "m2", positive=True)
        thick, _ = self.num(cur, "thickness", name, "m", positive=True, high=1.0)
        k_slab = self.reg(f"{name}.conductivity", mat["conductivity"], unit="W/(m.K)")
        rc = self.reg(f"{name}.heat_capacity", mat["density"] * mat["specific_heat"], unit="J/(m3.K)")
        tube = cur.get("tube")
        tube.only_keys({"spacing", "outer_diameter", "wall_thickness", "conductivity", "h_water"})
        spacing, sp = self.num(tube, "spacing", f"{name}.tube", "m", positive=True, high=1.0)
        d_o, do = self.num(tube, "outer_diameter", f"{name}.tube", "m", positive=True, high=0.2)
        wall, wt = self.num(tube, "wall_thickness", f"{name}.tube", "m", positive=True)
        if wt * 2 >= do:
            raise tube.get("wall_thickness").error("tube wall is thicker than the tube radius",
                                                   expected=f"less than {do / 2} m")
        k_tube = self.num(tube, "conductivity", f"{name}.tube", "W/(m.K)", default=0.35, positive=True)[0]
        h_w = self.num(tube, "h_water", f"{name}.tube", "W/(m2.K)", default=1500.0, positive=True)[0]
        slab = self.new_node(f"{name}.slab", cur, init)
        water = self.new_node(f"{name}.water", cur, init)
        self.net.caps.append((slab, lambda th: area(th) * thick(th) * rc(th)))
        self.net.caps.append((water, lambda th: area(th) / spacing(th) * math.pi * (d_o(th) - 2 * wall(th)) ** 2 / 4
                              * 1000.0 * comp.CP_WATER))

        def ua_tube(th):
            import numpy as np

            length = area(th) / spacing(th)
            di = d_o(th) - 2 * wall(th)
            r_conv = 1 / (h_w(th) * math.pi * di)
            r_wall = np.log(d_o(th) / di) / (2 * math.pi * k_tube(th))
            # Conduction from the tube into the slab core: the spacing-dependent term of ISO 11855.
            r_slab = np.log(spacing(th) / (math.pi * d_o(th))) / (2 * math.pi * k_slab(th))
            return length / (r_conv + r_wall + r_slab)
        if sp <= math.pi * do:
            raise tube.get("spacing").error("tube spacing must exceed pi times the outer diameter",
                                            expected=f"more than {math.pi * do:.3f} m")
        self.net.edges.append((water, slab, ua_tube))
        h_s = self.defaults["h_inside"] + 3.0  # radiant + convective surface coefficient of a heated floor
        self.net.edges.append((slab, iz, lambda th: area(th) / (1 / h_s + thick(th) / (2 * k_slab(th)))))
        pump = cur.get("pump")
        pump.only_keys({"max_flow", "power", "min_flow"})
        self._pump(f"{name}.pump", pump, supply, water)

    def _pump(self, name: str, cur: Cursor, supply: int, loop: int) -> None:
        _, mm = self.num(cur, "max_flow", name, "kg/s", positive=True)
        self.num(cur, "power", name, "W", nonnegative=True)
        lo = cur.get("min_flow", 0.0).as_float(unit="kg/s", nonnegative=True, high=mm)
        j = len(self.net.inputs)
        self.net.inputs.append(InputSpec(name, "kg/s", lo, mm, name))
        cp = lambda th: comp.CP_WATER  # noqa: E731
        # Water leaves the supply node for the loop and returns at the loop temperature (closed circuit).
        neg = lambda th: -comp.CP_WATER  # noqa: E731
        self.net.flows += [FlowTerm(loop, cp, j, None, supply), FlowTerm(loop, neg, j, None, loop),
                           FlowTerm(supply, cp, j, None, loop), FlowTerm(supply, neg, j, None, supply)]
        self.net.actuators.append(comp.Pump(name, "pump", [j], "kg/s",
                                            params={"pump_power": self.net.params.index[f"{name}.power"],
                                                    "max_flow": self.net.params.index[f"{name}.max_flow"]}))

    # -- actuators --------------------------------------------------------------------------------
    def _actuator(self, name: str, cur: Cursor) -> None:
        kind = cur.get("type").as_str()
        net = self.net
        if name in {a.name for a in net.actuators}:
            raise cur.error(f"actuator '{name}' defined twice", expected="unique actuator names")
        if kind == "ideal_hvac":
            cur.only_keys({"type", "zone", "heating_capacity", "cooling_capacity", "cop_heating", "cop_cooling",
                           "heating_fuel", "efficiency"})
            iz = self.ref_node(cur.get("zone"))
            _, hc = self.num(cur, "heating_capacity", name, "W", nonnegative=True)
            _, cc = self.num(cur, "cooling_capacity", name, "W", default=0.0, nonnegative=True)
            if hc == 0 and cc == 0:
                raise cur.error("actuator has no capacity", expected="heating_capacity or cooling_capacity > 0")
            fuel = cur.get("heating_fuel", "electric").as_str()
            if fuel not in ("electric", "gas"):
                raise cur.get("heating_fuel").error("unknown fuel", expected="electric or gas")
            self.num(cur, "cop_heating", name, None, default=1.0, positive=True, high=10)
            self.num(cur, "cop_cooling", name, None, default=3.0, positive=True, high=15)
            self.num(cur, "efficiency", name, None, default=0.92, positive=True, high=1.2)
            j = self._input(name, "W", -cc, hc)
            net.input_heat.append((iz, j, lambda th: 1.0))
            act = comp.IdealHVAC(name, kind, [j], "W",
                                 params=self._pidx(name, "cop_heating", "cop_cooling", "efficiency"),
                                 heating_fuel=fuel)
        elif kind in ("heat_pump", "chiller") and (kind == "chiller" or cur.has("rating")):
            act = self._rated_machine(name, cur, kind)
        elif kind == "condensing_boiler":
            act = self._condensing_boiler(name, cur)
        elif kind in ("heat_pump", "boiler"):
            keys = {"type", "node", "capacity", "efficiency"} if kind == "boiler" else {
                "type", "node", "capacity", "carnot_efficiency", "supply_offset", "source", "max_cop"}
            cur.only_keys(keys)
            node = self.ref_node(cur.get("node"))
            _, cap = self.num(cur, "capacity", name, "W", positive=True)
            j = self._input(name, "W", 0.0, cap)
            net.input_heat.append((node, j, lambda th: 1.0))
            if kind == "boiler":
                self.num(cur, "efficiency", name, None, default=0.92, positive=True, high=1.2)
                act = comp.Boiler(name, kind, [j], "W", params=self._pidx(name, "efficiency"))
            else:
                src = self.ref_temperature(cur.get("source"), "a heat pump's source")
                self.num(cur, "carnot_efficiency", name, None, default=0.45, positive=True, high=1.0)
                self.num(cur, "supply_offset", name, "K", default=3.0, nonnegative=True, high=30)
                self.num(cur, "max_cop", name, None, default=7.0, positive=True, high=20)
                act = comp.HeatPump(name, kind, [j], "W", reads_x=[node], reads_d=[src],
                                    params=self._pidx(name, "carnot_efficiency", "supply_offset", "max_cop"))
        elif kind == "vav":
            cur.only_keys({"type", "zone", "max_flow", "min_flow", "supply_min", "supply_max", "fan_power",
                           "outdoor_fraction", "outdoor", "coil_fuel", "efficiency", "cop_cooling"})
            iz = self.ref_node(cur.get("zone"))
            _, mmax = self.num(cur, "max_flow", name, "kg/s", positive=True, high=100)
            mmin = cur.get("min_flow", 0.0).as_float(unit="kg/s", nonnegative=True, high=mmax)
            smin = cur.get("supply_min", 12.0).as_float(unit="degC", low=0, high=60)
            smax = cur.get("supply_max", 35.0).as_float(unit="degC", low=smin, high=70)
            self.num(cur, "fan_power", name, "W", default=0.0, nonnegative=True)
            self.num(cur, "outdoor_fraction", name, None, default=0.3, nonnegative=True, high=1.0)
            self.num(cur, "efficiency", name, None, default=0.92, positive=True, high=1.2)
            self.num(cur, "cop_cooling", name, None, default=3.0, positive=True, high=15)
            fuel = cur.get("coil_fuel", "electric").as_str()
            if fuel not in ("electric", "gas"):
                raise cur.get("coil_fuel").error("unknown fuel", expected="electric or gas")
            out = self.ref_temperature(cur.get("outdoor"), "a VAV's outdoor air")
            jm = self._input(f"{name}.flow", "kg/s", mmin, mmax, owner=name)
            js = self._input(f"{name}.supply_temperature", "degC", smin, smax, owner=name)
            net.flows += [FlowTerm(iz, lambda th: comp.CP_AIR, jm, ("u", js), None),
                          FlowTerm(iz, lambda th: -comp.CP_AIR, jm, None, iz)]
            act = comp.VAV(name, kind, [jm, js], "kg/s", reads_x=[iz], reads_d=[out], coil_fuel=fuel,
                           params=self._pidx(name, "fan_power", "outdoor_fraction", "efficiency", "cop_cooling",
                                             "max_flow"))
        elif kind == "hydronic_loop":
            cur.only_keys({"type", "supply", "loop", "max_flow", "min_flow", "power"})
            sup, loop = self.ref_node(cur.get("supply")), self.ref_node(cur.get("loop"))
            if sup == loop:
                raise cur.get("loop").error("a hydronic loop must return to a different node than it leaves",
                                            expected="supply and loop to differ", found=cur.get("loop").value)
            self._pump(name, cur, sup, loop)
            return
        else:
            kinds = ("ideal_hvac", "heat_pump", "chiller", "boiler", "condensing_boiler", "vav", "hydronic_loop")
            raise cur.get("type").error(f"unknown actuator type '{kind}'{_hint(kind, kinds)}",
                                        expected=", ".join(kinds[:-1]) + " or " + kinds[-1])
        net.actuators.append(act)

    def _rated_machine(self, name: str, cur: Cursor, kind: str) -> comp.Actuator:
        """A heat pump or chiller from a rating table, duty-cycled within the step (models.devices)."""
        perf = "eer" if kind == "chiller" else "cop"
        cur.only_keys({"type", "node", "source", "capacity", "rating", "running_power", "min_modulation",
                       "part_load_curvature", "sink_offset"})
        node = self.ref_node(cur.get("node"))
        src = self.ref_temperature(cur.get("source"), f"a {kind.replace('_', ' ')}'s source")
        rows = cur.get("rating")
        if len(rows) == 0:
            raise rows.error("a rating table needs at least one point", expected="a non-empty list of "
                             f"{{source, sink, capacity, {perf}}}")
        pts = []
        for row in rows:
            row.only_keys({"source", "sink", "capacity", perf})
            pts.append((row.get("source").as_float(unit="degC", low=-40, high=60),
                        row.get("sink").as_float(unit="degC", low=-10, high=90),
                        row.get("capacity").as_float(unit="W", positive=True),
                        row.get(perf).as_float(positive=True, high=20)))
        ts, tk, capv, perfv = (np.array(c) for c in zip(*pts, strict=True))
        cap_s, perf_s = devices.fit_surface(ts, tk, capv), devices.fit_surface(ts, tk, perfv)
        for surf, what in ((cap_s, "capacity"), (perf_s, perf.upper())):
            bad = devices.check_surface(surf, ts, tk, what)
            if bad:
                raise rows.error(bad, expected="rating points whose fit stays positive (add points or check units)")
        _, p_run = self.num(cur, "running_power", name, "W", default=0.0, nonnegative=True)
        p_full = capv / perfv
        if np.any(p_run >= p_full):
            raise cur.get("running_power").error(
                "the running power is not below the full-load electric power at every rating point",
                expected=f"less than {float(np.min(p_full)):.0f} W (capacity / {perf.upper()})", found=p_run)
        self.num(cur, "min_modulation", name, None, default=0.3, nonnegative=True, high=1.0)
        self.num(cur, "part_load_curvature", name, None, default=0.0, nonnegative=True, high=0.95)
        self.num(cur, "sink_offset", name, "K", default=0.0, low=-30, high=30)
        for key in ("capacity_scale", "cop_scale", "duty_cycling"):
            self.reg(f"{name}.{key}", 1.0, lower=0.0, cur=cur)
        # The fitted surfaces live in theta (see models.devices.RatedHeatPump): same centres for both.
        self.reg(f"{name}.t_source0", cap_s.s0, lower=-math.inf, cur=rows)
        self.reg(f"{name}.t_sink0", cap_s.k0, lower=-math.inf, cur=rows)
        for i in range(6):
            self.reg(f"{name}.capacity_c{i}", float(cap_s.coef[i]), lower=-math.inf, cur=rows)
            self.reg(f"{name}.cop_c{i}", float(perf_s.coef[i]), lower=-math.inf, cur=rows)
        _, cap = self.num(cur, "capacity", name, "W", default=float(np.max(capv)), positive=True)
        sign = 1.0 if kind == "heat_pump" else -1.0
        j = self._input(name, "W", 0.0, cap) if sign > 0 else self._input(name, "W", -cap, 0.0)
        self.net.input_heat.append((node, j, lambda th: 1.0))
        cls = devices.RatedHeatPump if sign > 0 else devices.RatedChiller
        return cls(name, kind, [j], "W", reads_x=[node], reads_d=[src],
                   params=self._pidx(name, "running_power", "min_modulation", "part_load_curvature",
                                     "capacity_scale", "cop_scale", "sink_offset", "duty_cycling", "t_source0",
                                     "t_sink0", *devices.SURFACE_KEYS))

    def _condensing_boiler(self, name: str, cur: Cursor) -> comp.Actuator:
        """Gas boiler whose efficiency falls with the return (node) temperature (models.devices)."""
        cur.only_keys({"type", "node", "capacity", "eta_condensing", "eta_noncondensing", "dew_point", "width",
                       "fan_power"})
        node = self.ref_node(cur.get("node"))
        _, cap = self.num(cur, "capacity", name, "W", positive=True)
        _, hi = self.num(cur, "eta_condensing", name, None, default=0.97, positive=True, high=1.1)
        self.num(cur, "eta_noncondensing", name, None, default=0.87, positive=True, high=hi)
        self.num(cur, "dew_point", name, "degC", default=55.0, low=20, high=80)
        self.num(cur, "width", name, "K", default=4.0, positive=True, high=30)
        self.num(cur, "fan_power", name, "W", default=0.0, nonnegative=True)
        j = self._input(name, "W", 0.0, cap)
        self.net.input_heat.append((node, j, lambda th: 1.0))
        return devices.CondensingBoiler(name, "condensing_boiler", [j], "W", reads_x=[node],
                                        params=self._pidx(name, "eta_condensing", "eta_noncondensing", "dew_point",
                                                          "width", "fan_power"), capacity=cap)

    def _input(self, name: str, unit: str, lo: float, hi: float, owner: str | None = None) -> int:
        self.net.inputs.append(InputSpec(name, unit, lo, hi, owner or name))
        return len(self.net.inputs) - 1

    def _pidx(self, prefix: str, *keys: str) -> dict[str, int]:
        return {k: self.net.params.index[f"{prefix}.{k}"] for k in keys}

    # -- whole-model checks -----------------------------------------------------------------------
    def _check_physics(self) -> None:
        net = self.net
        # A plant-only model (no zones) is allowed: a hydronic loop, a tank, a benchmark plant.
        owned = {i for c in net.custom if getattr(c, "kind", "heat") == "step" for i in c.nodes}
        for i, cur in self.stepped.items():
            if i not in owned:
                raise cur.error(f"node '{net.nodes[i]}' has no capacitance and no step component owns it",
                                field=f"nodes.{net.nodes[i]}.capacitance",
                                expected="a capacitance in J/K, or a step component listing it under 'nodes'",
                                found=None)
        touched = owned | {i for c in net.custom for i in c.nodes}
        linked = set(touched)
        for i, j, _ in net.edges:
            linked |= {i, j}
        for i, _, _ in net.boundary:
            linked.add(i)
        for f in net.flows:
            linked.add(f.node)
        for i, name in enumerate(net.nodes):
            if i not in linked and not name.startswith("ss:"):
                cur = self.where.get(name, self.doc)
                self._warn(cur, f"node '{name}' is not connected to anything: its temperature stays where it starts "
                           "unless an input or gain heats it")
        # Every group of coupled nodes needs a heat path to a boundary temperature (outdoor, ground, a
        # supply-air temperature); without one its temperature has a zero eigenvalue and drifts forever.
        parent = list(range(net.n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        anchored: set[int] = {i for i, _, _ in net.boundary}
        for i, j, _ in net.edges:
            parent[find(i)] = find(j)
        for f in net.flows:
            if f.state is not None:
                parent[find(f.node)] = find(f.state)
            elif f.other is not None:
                anchored.add(f.node)  # supply air at an input or disturbance temperature
        anchored_roots = {find(i) for i in anchored}
        warned: set[int] = set()
        for i, name in enumerate(net.nodes):
            if str(name).startswith("ss:") or find(i) in anchored_roots or i not in linked or i in touched:
                continue
            if find(i) in warned:
                continue
            warned.add(find(i))
            group = [str(net.nodes[j]) for j in range(net.n) if find(j) == find(i)]
            cur = self.where.get(name, self.doc)
            self._warn(cur, f"no heat path to the outside from '{name}'"
                       + (f" (nor from {', '.join(group[1:6])}{'...' if len(group) > 6 else ''})"
                          if len(group) > 1 else "")
                       + ": a closed system, its mean temperature only changes with inputs and gains")

    def _warn(self, cur: Cursor, message: str) -> None:
        where = f"{cur.file}:{cur.line}" if cur.line is not None else cur.file
        text = f"{where}: warning: {message}"
        self.net.warnings.append(text)
        log.warning("%s", text)
