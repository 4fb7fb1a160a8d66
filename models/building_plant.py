"""Plant parsing for `models.building`: radiant slabs, pumps and actuators (ideal HVAC, boilers, rated heat
pumps and chillers, VAV, hydronic loops) with their inputs and meters.

A mixin of the building parser: it uses the parser's registry of parameters and nodes (`reg`, `num`,
`ref_node`, `new_node`, `connect`) and adds inputs, flows and actuators.
"""

from __future__ import annotations

import math

import numpy as np

from models import components as comp
from models import devices
from models.network import FlowTerm, InputSpec
from models.yamlio import Cursor, did_you_mean, listing


class PlantParser:
    """The hydronics and `actuators:` part of the building parser (see models.building._Builder)."""

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
            raise mat_cur.error(f"unknown material '{mat_cur.value}'{did_you_mean(mat_cur.value, self.materials)}",
                                expected="one of: " + listing(self.materials))
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
            raise cur.get("type").error(f"unknown actuator type '{kind}'{did_you_mean(kind, kinds)}",
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

