"""Envelope parsing for `models.building`: zones' walls (from their layers), windows, internal mass, films.

A mixin of the building parser: it uses the parser's registry of parameters and nodes (`reg`, `num`,
`new_node`, `connect`) and adds the RC nodes and conductances the envelope declares.
"""

from __future__ import annotations

from typing import Any

from models import components as comp
from models.yamlio import Cursor, did_you_mean, listing


class EnvelopeParser:
    """The `zones:` envelope part of the building parser (see models.building._Builder)."""

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
                g = lambda th, ach=ach, v=vol: ach(th) * v * comp.RHO_AIR * comp.CP_AIR / 3600.0  # noqa: E731
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
            raise cur.error(f"unknown construction '{name}'{did_you_mean(name, self.constructions)}",
                            expected="one of: " + listing(self.constructions))
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

