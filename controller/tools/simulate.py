"""`edge-mpc simulate MODEL --inputs CSV --out CSV`: open-loop simulation from a CSV of inputs.

Input CSV columns: `time_s`, then one column per model input (actuator) and per disturbance, named as in
the model (`edge-mpc check` lists them). Rows are the control steps; the step is the difference of
consecutive `time_s` values (uniform). Output CSV: `time_s` (end of each step), zone temperatures,
sensor read-outs, then electric and gas power per actuator (W).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from models import load_building
from models.errors import ConfigError


def read_columns(path: str | Path, required: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """time_s and the required columns of a CSV, with errors that name the file, line and column."""
    path = Path(path)
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read CSV ({exc.strerror})", file=str(path)) from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0].strip() != "time_s":
            raise ConfigError("the first column must be time_s", file=str(path), line=1,
                              expected="a header starting with time_s", found=header[:3] if header else None)
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise ConfigError(f"missing column(s): {', '.join(missing)}", file=str(path), line=1,
                              expected="columns " + ", ".join(required), found=header)
        idx = [header.index(c) for c in ["time_s", *required]]
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            vals = []
            for name, i in zip(["time_s", *required], idx, strict=True):
                try:
                    v = float(row[i])
                except (ValueError, IndexError):
                    raise ConfigError("not a number", file=str(path), line=lineno, field=name,
                                      expected="a finite number", found=row[i] if i < len(row) else None) from None
                if not math.isfinite(v):
                    raise ConfigError("not finite", file=str(path), line=lineno, field=name,
                                      expected="a finite number", found=row[i])
                vals.append(v)
            rows.append(vals)
    if len(rows) < 2:
        raise ConfigError("need at least two data rows", file=str(path), expected=">= 2 rows", found=len(rows))
    data = np.array(rows)
    return data[:, 0], {c: data[:, j + 1] for j, c in enumerate(required)}


def simulate_csv(model: str, inputs: str, out: str, *, backend: str = "numpy", dtype: str = "float64",
                 dt: float | None = None) -> int:
    net = load_building(model)
    cols = [i.name for i in net.inputs] + list(net.disturbances)
    t, data = read_columns(inputs, cols)
    steps = np.diff(t)
    step = float(steps[0]) if dt is None else float(dt)
    if step <= 0 or (dt is None and not np.allclose(steps, step)):
        raise ConfigError("time_s must increase in equal steps", file=inputs, field="time_s",
                          expected="a uniform step", found=f"steps between {steps.min()} and {steps.max()} s")
    sim = net.compile(step, backend=backend, dtype=dtype)
    u = np.stack([data[c] for c in sim.input_names], -1)[None]
    lo, hi = sim.u_min, sim.u_max
    bad = np.nonzero((u[0] < lo - 1e-9) | (u[0] > hi + 1e-9))
    if bad[0].size:
        k, j = int(bad[0][0]), int(bad[1][0])
        raise ConfigError("input outside the actuator's bounds", file=inputs, line=k + 2, field=sim.input_names[j],
                          expected=f"between {lo[j]:g} and {hi[j]:g} {sim.input_units[j]}", found=float(u[0, k, j]))
    d = np.stack([data[c] for c in sim.disturbance_names], -1)[None] if sim.nd else np.zeros((1, len(t), 0))
    tr = sim.simulate(sim.initial_state(1), u, d)
    to_host = (lambda a: a.get()) if backend == "cupy" else np.asarray
    zones, sensors, el, gas = (to_host(a)[0] for a in (tr.zones, tr.sensors, tr.p_el, tr.p_gas))
    header = (["time_s"] + [f"{z}" for z in sim.zone_names] + [f"{s}" for s in sim.sensor_names]
              + [f"{a}.electric_w" for a in sim.actuator_names] + [f"{a}.gas_w" for a in sim.actuator_names])
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for k in range(len(t)):
            values = np.concatenate([zones[k], sensors[k], el[k], gas[k]])
            w.writerow([f"{t[k] + step:g}"] + [f"{v:.6g}" for v in values])
    print(f"wrote {out}: {len(t)} steps of {step:g} s, {len(sim.zone_names)} zones")
    return 0
