"""Where each network parameter lives in the model YAML, and writing fitted values back there.

Writing back (``write_calibrated_model``): the new model file is the original text with only the fitted
numbers replaced at their exact positions (found with a line/column-aware re-parse); units as written are
kept ("240 mm" stays in mm). Derived parameters are written to the field they come from:
``<zone>.air_capacity`` -> the zone's ``air_capacity_multiplier`` (inserted if absent), a tank's
``capacitance`` -> its ``volume``, a layer's ``heat_capacity`` -> the material's ``density``. A layer's
conductivity lives in a *material* and its thickness in a *construction*, which other walls may share. The
user expects one brick to have one conductivity, so such a field is written only if every parameter that
comes from it gets the same value. Calibrate the shared field itself, by its YAML path (for example
``materials.brick.conductivity``): that ties all the elements that use it. Otherwise writing refuses
with a message that says which elements share the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.tools.calibrate.data import CalibrationError
from models import components as comp
from models.building import load_building
from models.errors import ConfigError
from models.units import _parse_unit
from models.yamlio import load_yaml


@dataclass(frozen=True)
class FieldRef:
    """Where a network parameter's value is written in the model file.

    ``path``: keys from the document root (str for mappings, int for lists). ``to_field``: network value ->
    the field's SI value. ``identity``: the field holds the parameter's own value (so parameters sharing
    the field can be tied). ``insert``: the key may be absent and is then inserted.
    """

    path: tuple[str | int, ...]
    to_field: Callable[[float], float]
    identity: bool = True
    insert: bool = False

    @property
    def dotted(self) -> str:
        out = ""
        for k in self.path:
            out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
        return out


def _si(value: Any) -> float:
    """An SI float from a YAML scalar such as 0.77, '240 mm' or '8 kW'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = re.match(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$", str(value))
    if not m:
        raise CalibrationError(f"cannot read a number in {value!r}")
    unit = m.group(2)
    return float(m.group(1)) * (_parse_unit(unit)[0] if unit else 1.0)


def locate_parameters(model_path: str | Path) -> dict[str, FieldRef]:
    """Network parameter name -> the YAML field it comes from (mirrors the names models.building registers)."""
    doc = load_yaml(model_path)
    out: dict[str, FieldRef] = {}
    ident = (lambda v: v)  # noqa: E731
    materials = doc.get("materials") or {}
    constructions = doc.get("constructions") or {}

    def direct(name: str, path: tuple[str | int, ...], insert: bool = False) -> None:
        out[name] = FieldRef(path, ident, True, insert)

    def layers(prefix: str, cons_name: str) -> None:
        cons = constructions.get(cons_name) or {}
        for li, layer in enumerate(cons.get("layers") or []):
            mat = str(layer.get("material"))
            direct(f"{prefix}.layers[{li}].thickness", ("constructions", cons_name, "layers", li, "thickness"))
            direct(f"{prefix}.layers[{li}].conductivity", ("materials", mat, "conductivity"))
            cp = _si((materials.get(mat) or {}).get("specific_heat", 1.0))
            out[f"{prefix}.layers[{li}].heat_capacity"] = FieldRef(("materials", mat, "density"),
                                                                   lambda v, cp=cp: v / cp, identity=False)

    for zname, z in (doc.get("zones") or {}).items():
        zp: tuple[str | int, ...] = ("zones", zname)
        vol = _si(z.get("volume", 1.0))
        out[f"{zname}.air_capacity"] = FieldRef((*zp, "air_capacity_multiplier"),
                                                lambda v, vol=vol: v / (vol * comp.RHO_AIR * comp.CP_AIR),
                                                identity=False, insert=True)
        mass = z.get("internal_mass")
        if isinstance(mass, dict):
            if "construction" in mass:
                direct(f"{zname}.mass.area", (*zp, "internal_mass", "area"))
                layers(f"{zname}.mass", str(mass["construction"]))
            else:
                direct(f"{zname}.mass.capacitance", (*zp, "internal_mass", "capacitance"))
                direct(f"{zname}.mass.ua", (*zp, "internal_mass", "ua"))
        for i, w in enumerate(z.get("walls") or []):
            wp = f"{zname}.{w.get('name')}"
            direct(f"{wp}.area", (*zp, "walls", i, "area"))
            layers(wp, str(w.get("construction")))
        for i, w in enumerate(z.get("windows") or []):
            wp = f"{zname}.{w.get('name')}"
            for key in ("area", "u_value", "shgc"):
                direct(f"{wp}.{key}", (*zp, "windows", i, key))
        for section, keys in (("infiltration", ("ach",)), ("internal_gains", ("power_density",)),
                              ("ground", ("area", "u_value"))):
            for key in keys:
                direct(f"{zname}.{section}.{key}", (*zp, section, key))
    for name in (doc.get("nodes") or {}):
        direct(f"{name}.capacitance", ("nodes", name, "capacitance"))
    for name in (doc.get("tanks") or {}):
        out[f"{name}.capacitance"] = FieldRef(("tanks", name, "volume"), lambda v: v / (1000.0 * comp.CP_WATER),
                                              identity=False)
        direct(f"{name}.loss_ua", ("tanks", name, "loss_ua"))
    for name, s in (doc.get("radiant_slabs") or {}).items():
        sp: tuple[str | int, ...] = ("radiant_slabs", name)
        direct(f"{name}.area", (*sp, "area"))
        direct(f"{name}.thickness", (*sp, "thickness"))
        mat = str(s.get("material"))
        direct(f"{name}.conductivity", ("materials", mat, "conductivity"))
        cp = _si((materials.get(mat) or {}).get("specific_heat", 1.0))
        out[f"{name}.heat_capacity"] = FieldRef(("materials", mat, "density"), lambda v, cp=cp: v / cp,
                                                identity=False)
        for key in ("spacing", "outer_diameter", "wall_thickness", "conductivity", "h_water"):
            direct(f"{name}.tube.{key}", (*sp, "tube", key), insert=True)
        for key in ("max_flow", "power"):
            direct(f"{name}.pump.{key}", (*sp, "pump", key))
    for section, key in (("conductances", "ua"), ("heat_gains", "gain")):
        for i, c in enumerate(doc.get(section) or []):
            name = c.get("name", f"{section}[{i}]")
            direct(f"{name}.{key}", (section, i, key))
    for name, _a in (doc.get("actuators") or {}).items():
        for key in ("heating_capacity", "cooling_capacity", "cop_heating", "cop_cooling", "efficiency", "capacity",
                    "carnot_efficiency", "supply_offset", "max_cop", "max_flow", "fan_power", "outdoor_fraction",
                    "power"):
            direct(f"{name}.{key}", ("actuators", name, key), insert=True)
    return out


def _groups(refs: dict[str, FieldRef]) -> dict[str, list[str]]:
    """Dotted YAML field -> the network parameters derived from it."""
    out: dict[str, list[str]] = {}
    for name, ref in refs.items():
        out.setdefault(ref.dotted, []).append(name)
    return out


# -- writing the calibrated model ----------------------------------------------------------------------------

def _format(value: float) -> str:
    # 6 significant digits: far finer than any calibrated 1-sigma, and still readable in a diff.
    return f"{value:.6g}"


def _field_text(old: str, si_value: float) -> str:
    """The new scalar text in the unit the user wrote (bare numbers stay bare)."""
    m = re.match(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$", old)
    unit = m.group(2) if m else ""
    if not unit:
        return _format(si_value)
    return f"{_format(si_value / _parse_unit(unit)[0])} {unit}"


def _find(node: yaml.Node, path: tuple[str | int, ...]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(value node at path or None, parent mapping node of the last key)."""
    parent = None
    for key in path:
        parent = node
        if isinstance(key, int):
            if not isinstance(node, yaml.SequenceNode) or key >= len(node.value):
                return None, None
            node = node.value[key]
        else:
            if not isinstance(node, yaml.MappingNode):
                return None, None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    node = v
                    break
            else:
                return None, parent
    return node, parent


def _insert_edit(text: str, mapping: yaml.MappingNode, key: str, value_text: str) -> tuple[int, int, str]:
    """An edit (start, end, replacement) that adds `key: value` to a mapping without touching anything else."""
    if mapping.flow_style:
        close = text.rindex("}", 0, mapping.end_mark.index)
        sep = ", " if mapping.value else ""
        return close, close, f"{sep}{key}: {value_text}"
    for k, v in mapping.value:
        if isinstance(v, yaml.ScalarNode) and v.start_mark.line == v.end_mark.line == k.start_mark.line:
            eol = text.find("\n", v.end_mark.index)
            eol = len(text) if eol < 0 else eol
            return eol, eol, f"\n{' ' * k.start_mark.column}{key}: {value_text}"
    raise CalibrationError(f"cannot insert '{key}' into the mapping at line {mapping.start_mark.line + 1} "
                           "(add it by hand once, then write again)")


def _names(names: list[str], limit: int = 4) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def write_calibrated_model(src_yaml: str | Path, updates: dict[str, float], out_path: str | Path,
                           note: str | None = None) -> Path:
    """Write a copy of ``src_yaml`` in which only the fields behind ``updates`` have new values.

    ``updates`` maps network parameter names (or YAML field paths) to values in SI units (as
    ``CalibrationResult.updates``). Refuses, with a message, parameters it cannot place, and shared fields
    (a material, a construction's layer) whose sharers would get different values (see module docstring).
    ``note``, if given, is appended as YAML comment lines (after the model, so its line numbers stay).
    """
    src_yaml, out_path = Path(src_yaml), Path(out_path)
    try:
        text = src_yaml.read_text(encoding="utf-8")
        net = load_building(src_yaml)
    except OSError as exc:
        raise CalibrationError(f"{src_yaml}: cannot read ({exc.strerror or exc})") from None
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
    refs = locate_parameters(src_yaml)
    groups = _groups(refs)
    by_field: dict[str, tuple[FieldRef, float, str]] = {}
    for name, value in updates.items():
        value = float(value)
        if not math.isfinite(value):
            raise CalibrationError(f"value for '{name}' is not finite")
        if name in groups and name not in refs:
            members = [m for m in groups[name] if m in net.params.index]
            if not all(refs[m].identity for m in members):
                raise CalibrationError(f"field '{name}' is derived; update its parameters instead")
            ref = refs[members[0]]
        elif name in refs:
            ref = refs[name]
        elif name in net.params.index:
            raise CalibrationError(f"parameter '{name}' has no single field in {src_yaml.name} to write it to "
                                   "(state-space and custom components are not written)")
        else:
            raise CalibrationError(f"unknown parameter '{name}'")
        fval = ref.to_field(value)
        prev = by_field.get(ref.dotted)
        if prev is not None and abs(prev[1] - fval) > 1e-9 * max(1.0, abs(fval)):
            raise CalibrationError(f"'{name}' and '{prev[2]}' both come from {ref.dotted} but were given different "
                                   "values; calibrate the shared field itself to tie them")
        by_field[ref.dotted] = (ref, fval, name)
    # A shared field changed for one element would silently change its sharers: refuse.
    for dotted, (_ref, fval, name) in by_field.items():
        sharers = [m for m in groups[dotted] if m in net.params.index]
        if len(sharers) > 1 and name not in groups:
            unchanged = [m for m in sharers if m not in updates]
            if unchanged or any(abs(refs[m].to_field(updates[m]) - fval) > 1e-9 * max(1.0, abs(fval))
                                for m in sharers):
                raise CalibrationError(
                    f"'{name}' comes from {dotted}, which is shared by {_names(sharers)}; writing it would change "
                    f"all of them. Calibrate '{dotted}' itself (one value for all), or give this element its own "
                    "material/construction in the model first")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    edits: list[tuple[int, int, str]] = []
    for dotted, (ref, fval, _name) in sorted(by_field.items()):
        node, parent = _find(root, ref.path)
        if node is None:
            if not ref.insert or not isinstance(parent, yaml.MappingNode):
                raise CalibrationError(f"{src_yaml}: field {dotted} not found")
            edits.append(_insert_edit(text, parent, str(ref.path[-1]), _format(fval)))
            continue
        if not isinstance(node, yaml.ScalarNode):
            raise CalibrationError(f"{src_yaml}:{node.start_mark.line + 1}: {dotted} is not a number")
        new = _field_text(node.value, fval)
        if node.style in ("'", '"'):
            new = f"{node.style}{new}{node.style}"
        edits.append((node.start_mark.index, node.end_mark.index, new))
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end:]
    if note:
        text = text + ("" if text.endswith("\n") else "\n") + "".join(f"# {line}".rstrip() + "\n"
                                                                     for line in note.splitlines())
    out_path.write_text(text, encoding="utf-8")
    return out_path
