"""Custom components: user Python classes registered by name, in two kinds.

Heat components (`CustomComponent`) return a heat flow in W and its vector-Jacobian product; the
simulator holds the heat over the step. Keep stiff couplings in the linear network.

Step components (`StepComponent`) are discrete-time step maps with named parameters. The protocol:

- `setup(cfg)` reads the YAML entry. `self.param(cfg, key, unit=..., default=...)` registers the
  parameter `<component>.<key>`. Gradients (`Simulator.gradient(params=...)`) and `edge-mpc calibrate`
  address it by that name. The values reach the methods below as the 1-D array `p`, in the order of
  the `param` calls.
- `step(x, u, d, p, dt, xp) -> delta` (B, len(nodes)): the change of the component's nodes over one
  step of length dt (s). x, u and d hold the columns named by reads_x, reads_u and reads_d, each (B, k).
  The simulator adds delta to the exact zero-order-hold step of the linear network (a Lie splitting:
  the linear part is exact, the component's effect is its own discrete map).
- `step_vjp(x, u, d, p, dt, g, xp) -> (g_x, g_u, g_d, g_p)`: the vector-Jacobian product of `step`
  with the cotangent g (B, len(nodes)). g_p is (len(p),), summed over the B rows (the simulator needs
  only the sum; summing before the parameter chain is usually much cheaper). Return None for absent parts.
- `step_jvp(x, u, d, p, dt, t_x, t_u, t_d, t_p, xp) -> t_delta` (optional): the Jacobian-vector product.
  Nonlinear MPC uses it for the per-step Jacobians (`Simulator.step_jacobians`).
- `affine_in_state = True` declares that delta = J(u, d, p, dt) x + c(u, d, p, dt). With no reads_u
  and reads_d, J is then the same at every step. The simulator folds J into the step matrix and makes
  one batched `step_vjp` call over all steps, instead of one Python call per step.
- `complex_step = True` (the default) declares that `step` is complex-safe: no abs, no max, no
  comparisons on the state. `models.gradcheck.check_step_component` then checks the VJP exactly by
  complex step, and otherwise by scale-aware central differences.

Use `models.gradcheck.check_component` (heat kind) or `check_step_component` (step kind) before deploying.

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
    kind = "heat"

    def setup(self, cfg: Cursor) -> None:
        """Read the component's own fields from its YAML entry."""

    def param(self, cfg: Cursor, key: str, *, unit: str | None = None, default: float | None = None,
              **checks: Any) -> float:
        """Register the named parameter `<component>.<key>` from field `key` (or the default); returns its value."""
        b = getattr(self, "_builder", None)
        if b is None:
            raise RuntimeError("param() is only available inside setup()")
        _, value = b.num(cfg, key, self.name, unit, default, **checks)
        self.param_names.append(key)
        self.param_index.append(b.net.params.index[f"{self.name}.{key}"])
        return value

    def heat(self, x: Any, u: Any, d: Any, xp: Any) -> Any:
        raise NotImplementedError

    def heat_vjp(self, x: Any, u: Any, d: Any, g: Any, xp: Any) -> tuple[Any, Any, Any]:
        raise NotImplementedError


class StepComponent(CustomComponent):
    """A discrete-time step map with named parameters (see the module docstring for the protocol)."""

    kind = "step"
    affine_in_state = False
    complex_step = True

    def step(self, x: Any, u: Any, d: Any, p: Any, dt: float, xp: Any) -> Any:
        raise NotImplementedError

    def step_vjp(self, x: Any, u: Any, d: Any, p: Any, dt: float, g: Any, xp: Any) -> tuple[Any, Any, Any, Any]:
        raise NotImplementedError

    step_jvp = None  # optional: (x, u, d, p, dt, t_x, t_u, t_d, t_p, xp) -> t_delta


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
    comp.param_names, comp.param_index = [], []
    comp._builder = b
    try:
        comp.setup(cur)
    finally:
        del comp._builder
    b.net.custom.append(comp)
