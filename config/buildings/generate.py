"""Writes the reference buildings R1 office-20 and R4 campus-500 (benchmark problems; see the README).

    python config/buildings/generate.py        # rewrites office-20.yaml and campus-500.yaml beside it

R1 is one floor of a mid-size office: 2 rows x 10 zones of 60 m², each with zone air, a concrete
internal-mass slab and a lumped envelope wall (60 states); partitions between neighbours; a facade with
windows per zone (end zones have two); roof and ground. Heating per zone is sized at 1.3x its design-day
load (Chicago 99.6 % design temperature −20 °C), so price and comfort trade off instead of the plant
being so large or so small that the optimum is bang-bang. R4 is a campus of 25 such buildings with
varied sizes and glazing (500 zones, 1500 states).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent
DESIGN_OUT = -20.0
DESIGN_IN = 21.0
GROUND = 10.0

HEADER = {
    "disturbances": {
        "outdoor_temperature": {"unit": "degC"},
        "solar_irradiance": {"unit": "W/m2"},
        "ground_temperature": {"unit": "degC"},
        "occupancy": {"unit": "1"},
    },
    "materials": {
        "concrete": {"conductivity": "1.4 W/(m.K)", "density": "2300 kg/m3", "specific_heat": "880 J/(kg.K)"},
        "insulation": {"conductivity": "0.035 W/(m.K)", "density": "30 kg/m3", "specific_heat": "1030 J/(kg.K)"},
        "plaster": {"conductivity": "0.5 W/(m.K)", "density": "1300 kg/m3", "specific_heat": "1000 J/(kg.K)"},
        "gypsum": {"conductivity": "0.25 W/(m.K)", "density": "900 kg/m3", "specific_heat": "1000 J/(kg.K)"},
        "mineral_wool": {"conductivity": "0.04 W/(m.K)", "density": "40 kg/m3", "specific_heat": "840 J/(kg.K)"},
        "membrane_roof": {"conductivity": "0.03 W/(m.K)", "density": "35 kg/m3", "specific_heat": "1400 J/(kg.K)"},
    },
    "constructions": {
        "facade": {"model": "lumped", "layers": [
            {"material": "plaster", "thickness": "15 mm"},
            {"material": "concrete", "thickness": "200 mm"},
            {"material": "insulation", "thickness": "100 mm"}]},
        "partition": {"model": "resistive", "layers": [
            {"material": "gypsum", "thickness": "12.5 mm"},
            {"material": "mineral_wool", "thickness": "50 mm"},
            {"material": "gypsum", "thickness": "12.5 mm"}]},
        "roof": {"model": "resistive", "layers": [
            {"material": "concrete", "thickness": "150 mm"},
            {"material": "membrane_roof", "thickness": "140 mm"}]},
        "slab": {"model": "lumped", "layers": [{"material": "concrete", "thickness": "120 mm"}]},
    },
}


def _u(layers: list[tuple[float, float]], h_in: float, h_out: float) -> float:
    return 1.0 / (1.0 / h_in + sum(t / k for t, k in layers) + 1.0 / h_out)


def office_building(prefix: str, cols: int, zone_w: float, zone_d: float, height: float, wwr: float,
                    rotate: bool) -> tuple[dict, dict, dict]:
    """Zones, actuators and sensors of one 2 x cols office floor."""
    zones, acts, sensors = {}, {}, {}
    u_facade = _u([(0.015, 0.5), (0.2, 1.4), (0.1, 0.035)], 7.7, 25.0)
    u_roof = _u([(0.15, 1.4), (0.14, 0.03)], 7.7, 25.0)
    area = zone_w * zone_d
    for row in range(2):
        for col in range(cols):
            name = f"{prefix}z{row * cols + col + 1:02d}"
            facades = [("south" if row == 0 else "north", zone_w)]
            if col == 0:
                facades.append(("west", zone_d))
            if col == cols - 1:
                facades.append(("east", zone_d))
            walls, windows = [], []
            ua_out = 0.0
            opaque = sum(width * height * (1 - wwr) for _, width in facades)
            # One lumped envelope node per zone (3 states per zone), whatever the number of facades.
            walls.append({"name": "envelope", "construction": "facade", "area": f"{opaque:.2f} m2",
                          "to": "outdoor_temperature"})
            for side, width in facades:
                gross = width * height
                glass = gross * wwr
                # Orientation scales how much of the horizontal irradiance reaches the glazing.
                shgc = {"south": 0.42, "north": 0.2, "east": 0.32, "west": 0.32}[side]
                if rotate:
                    shgc = {"south": 0.32, "north": 0.32, "east": 0.42, "west": 0.2}[side]
                windows.append({"name": f"win_{side}", "area": f"{glass:.2f} m2", "u_value": "1.6 W/(m2.K)",
                                "shgc": shgc, "irradiance": "solar_irradiance", "to": "outdoor_temperature",
                                "solar_to_mass": 0.5})
                ua_out += (gross - glass) * u_facade + glass * 1.6
            walls.append({"name": "roof", "construction": "roof", "area": f"{area:.2f} m2",
                          "to": "outdoor_temperature"})
            ua_out += area * u_roof
            if col > 0:
                walls.append({"name": "partition_west", "construction": "partition",
                              "area": f"{zone_d * height:.2f} m2", "to": f"{prefix}z{row * cols + col:02d}"})
            if row == 1:
                walls.append({"name": "partition_south", "construction": "partition",
                              "area": f"{zone_w * height:.2f} m2", "to": f"{prefix}z{col + 1:02d}"})
            vol = area * height
            ach = 0.3
            ua_out += ach * vol * 1.2 * 1005 / 3600
            ground_u = 0.3
            load = ua_out * (DESIGN_IN - DESIGN_OUT) + area * ground_u * (DESIGN_IN - GROUND)
            zones[name] = {
                "floor_area": f"{area:.1f} m2", "volume": f"{vol:.1f} m3",
                "internal_mass": {"area": f"{area:.1f} m2", "construction": "slab"},
                "walls": walls, "windows": windows,
                "infiltration": {"ach": ach, "to": "outdoor_temperature"},
                "internal_gains": {"power_density": "12 W/m2", "disturbance": "occupancy", "radiative_fraction": 0.5},
                "ground": {"area": f"{area:.1f} m2", "u_value": f"{ground_u} W/(m2.K)", "to": "ground_temperature"},
            }
            acts[f"{name}_hvac"] = {
                "type": "ideal_hvac", "zone": name,
                "heating_capacity": f"{1.3 * load / 1000:.2f} kW", "cooling_capacity": f"{0.6 * load / 1000:.2f} kW",
                "cop_heating": 3.2, "cop_cooling": 3.5,
            }
            sensors[f"{name}_temperature"] = {"node": name}
    return zones, acts, sensors


def model(name: str, description: str, buildings: list[tuple]) -> dict:
    doc = {"model": name, "description": description, **HEADER, "zones": {}, "actuators": {}, "sensors": {}}
    for args in buildings:
        z, a, s = office_building(*args)
        doc["zones"].update(z)
        doc["actuators"].update(a)
        doc["sensors"].update(s)
    return doc


def write(path: Path, doc: dict, comment: str) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, width=120, default_flow_style=None)
    note = "# Generated by config/buildings/generate.py; edit that script, not this file."
    path.write_text(f"# {comment}\n{note}\n{text}")


def main() -> None:
    write(HERE / "office-20.yaml",
          model("office-20", "R1: one office floor, 20 zones of 60 m2 (air, internal mass, envelope wall)",
                [("", 10, 8.0, 7.5, 3.0, 0.4, False)]),
          "R1 office-20: 20 zones, 60 states, 20 heating/cooling actuators, 4 disturbances")
    campus = []
    for b in range(25):
        cols = 10
        zone_w = 7.0 + (b % 5) * 0.5
        wwr = 0.3 + 0.05 * (b % 4)
        campus.append((f"b{b + 1:02d}", cols, zone_w, 7.5, 3.0 + 0.25 * (b % 3), wwr, bool(b % 2)))
    write(HERE / "campus-500.yaml",
          model("campus-500", "R4: a campus of 25 office buildings, 500 zones", campus),
          "R4 campus-500: 25 buildings x 20 zones = 500 zones, 1500 states")


if __name__ == "__main__":
    main()
