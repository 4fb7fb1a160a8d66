"""Custom components: user Python classes registered by name that add heat to nodes.

A custom component provides its heat flow and the vector-Jacobian product of it; the simulator calls
them once per step (held over the step, so keep stiff couplings in the linear network). Use
`models.gradcheck.check_component` to verify a VJP against central differences before deploying.

    from models.custom import CustomComponent, register_component

    @register_component("thermal_bridge")
    class ThermalBridge(CustomComponent):
        def setup(self, cfg):                  # cfg: models.yamlio.Cursor of the YAML entry
            self.k = cfg.get("k").as_float(positive=True)
        def heat(self, x, u, d, xp):           # x: (B, len(reads_x)) ... -> (B, len(nodes)) W
            return self.k * (d[:, 0:1] - x[:, 0:1]) ** 3 ...
        def heat_vjp(self, x, u, d, g, xp):    # g: (B, len(nodes)) -> (g_x, g_u, g_d)
            ...

YAML: `custom: [{type: thermal_bridge, nodes: [z01], reads_x: [z01], reads_d: [outdoor_temperature], k: 0.1}]`.
"""

from __future__ import annotations

from typing import Any

from models.yamlio import Cursor

_REGISTRY: dict[str, type[CustomComponent]] = {}


class CustomComponent:
    """Base class: fill `nodes`, `reads_x`, `reads_u`, `reads_d` (index lists) come from the YAML."""

    name: str
    nodes: list[int]
    reads_x: list[int]
    reads_u: list[int]
    reads_d: list[int]

    def setup(self, cfg: Cursor) -> None:
        """Read the component's own fields from its YAML entry."""

    def heat(self, x: Any, u: Any, d: Any, xp: Any) -> Any:
        raise NotImplementedError

    def heat_vjp(self, x: Any, u: Any, d: Any, g: Any, xp: Any) -> tuple[Any, Any, Any]:
        raise NotImplementedError


def register_component(name: str):
    """Class decorator: make a CustomComponent available to YAML files as `type: <name>`."""
    def wrap(cls: type[CustomComponent]) -> type[CustomComponent]:
        if not issubclass(cls, CustomComponent):
            raise TypeError(f"{cls.__name__} must subclass CustomComponent")
        _REGISTRY[name] = cls
        return cls
    return wrap


def registered() -> dict[str, type[CustomComponent]]:
    return dict(_REGISTRY)


def parse_custom(b: Any, cur: Cursor, index: int) -> None:
    type_name = cur.get("type").as_str()
    if type_name not in _REGISTRY:
        from models.yamlio import _closest

        close = _closest(type_name, frozenset(_REGISTRY))
        hint = f" (did you mean '{close}'?)" if close else ""
        raise cur.get("type").error(f"unknown custom component type '{type_name}'{hint}",
                                    expected="a type registered with models.custom.register_component: "
                                    + (", ".join(sorted(_REGISTRY)) or "none registered"))
    comp = _REGISTRY[type_name]()
    comp.name = cur.get("name", f"custom[{index}]").as_str()
    comp.nodes = [b.ref_node(c) for c in cur.get("nodes")]
    comp.reads_x = [b.ref_node(c) for c in cur.get("reads_x", [])]
    inputs = [i.name for i in b.net.inputs]
    comp.reads_u = []
    for c in cur.get("reads_u", []):
        if c.as_str() not in inputs:
            raise c.error(f"unknown input '{c.value}'", expected="one of: " + ", ".join(inputs))
        comp.reads_u.append(inputs.index(c.value))
    comp.reads_d = [b.ref_dist(c) for c in cur.get("reads_d", [])]
    comp.setup(cur)
    b.net.custom.append(comp)
