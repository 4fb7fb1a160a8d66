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

from models import components as comp
from models.building_envelope import EnvelopeParser
from models.building_plant import PlantParser
from models.network import Network, Zone
from models.yamlio import Cursor, did_you_mean, listing, load_yaml

log = logging.getLogger("edge_mpc.model")
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


class _Builder(EnvelopeParser, PlantParser):
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
        raise cur.error(f"unknown node '{name}'{did_you_mean(name, known)}",
                        expected="a zone or node declared in this file: " + listing(known))

    def ref_dist(self, cur: Cursor) -> int:
        name = cur.as_str()
        if name not in self.net.disturbances:
            raise cur.error(f"unknown disturbance '{name}'{did_you_mean(name, self.net.disturbances)}",
                            expected="one declared under 'disturbances': " + listing(self.net.disturbances))
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
        raise cur.error(f"unknown node or disturbance '{name}'{did_you_mean(name, known)}",
                        expected="a zone, node or temperature disturbance: " + listing(known))

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
                    raise layer.get("material").error(f"unknown material '{mat}'{did_you_mean(mat, self.materials)}",
                                                      expected="one of: " + listing(self.materials))
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
            cap = self.reg(f"{name}.air_capacity", vol * comp.RHO_AIR * comp.CP_AIR * mult, unit="J/K")
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
                added = self.net.custom[-1] if self.net.custom else None
                if added is not None and getattr(added, "kind", "heat") == "step" and self.net.flows:
                    # The step-map path holds the linear network's exact step; with flows the network's step
                    # depends on the input, and no path combines the two yet.
                    raise cur.error(f"step component '{added.name}' cannot be combined with pumped loops or VAV "
                                    "(flow x temperature inputs) in one model yet",
                                    expected="a step component in a model without pumps or VAV, or a heat "
                                    "component (models.custom.CustomComponent)", found=added.name)
        self._check_physics()
        return self.net

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
