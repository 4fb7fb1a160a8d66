"""Logged data for calibration: the CSV reader and the mapping of its columns onto the model's step grid.

CSV format: ``time_s`` then one column per input, disturbance and sensor id (zone names are
accepted as measured zone temperatures too). Rows must lie on a grid of the step ``dt``; missing rows and
empty/NaN cells are gaps. Gaps in measurements are skipped in the residual; gaps in inputs and
disturbances hold the last value (the first value before it). Other columns are ignored and reported.
Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class CalibrationError(ValueError):
    """Bad input to calibration (data, parameter names, model file): a one-line message for the user."""


@dataclass
class CalibrationData:
    """Logged data on a uniform grid: rows k = 0..N-1 at ``t[k]``.

    ``u[k]``/``d[k]`` are held over ``[t[k], t[k+1])`` (gaps already filled); ``y`` holds the measurements
    (NaN = gap) of ``measured`` outputs; ``kinds[i]`` is ``sensor`` or ``zone``.
    """

    t: np.ndarray
    u: np.ndarray
    d: np.ndarray
    y: np.ndarray
    measured: list[str]
    kinds: list[str]
    dt: float
    ignored_columns: list[str] = field(default_factory=list)
    filled_input_cells: int = 0

    def slice(self, start: int, stop: int) -> CalibrationData:
        return CalibrationData(self.t[start:stop], self.u[start:stop], self.d[start:stop], self.y[start:stop],
                               self.measured, self.kinds, self.dt, self.ignored_columns, self.filled_input_cells)


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Header and a float matrix; empty cells and 'nan' are NaN. Errors name the file, line and column."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rows: list[list[float]] = []
    with handle:
        reader = csv.reader(line for line in handle if not line.lstrip().startswith("#"))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CalibrationError(f"{path}: empty file, expected a header starting with time_s") from None
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise CalibrationError(f"{path}: duplicate column(s) {', '.join(dup)}")
        for n, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise CalibrationError(f"{path}: data row {n}: {len(row)} fields, header has {len(header)}")
            vals = []
            for col, text in zip(header, row, strict=True):
                text = text.strip()
                try:
                    vals.append(float(text) if text else math.nan)
                except ValueError:
                    raise CalibrationError(f"{path}: data row {n}, column '{col}': not a number: {text!r}") from None
                if math.isinf(vals[-1]):
                    raise CalibrationError(f"{path}: data row {n}, column '{col}': infinite value")
            rows.append(vals)
    if not rows:
        raise CalibrationError(f"{path}: no data rows")
    return header, np.array(rows, dtype=float)


def load_data(source: str | Path | dict[str, np.ndarray], sim: Any, dt: float | None = None) -> CalibrationData:
    """CSV path or ``{column: array}`` -> ``CalibrationData`` for the simulator's inputs and outputs."""
    if isinstance(source, dict):
        header = list(source)
        table = np.column_stack([np.asarray(source[c], dtype=float).ravel() for c in header])
        where = "data"
    else:
        header, table = read_csv(source)
        where = str(source)
    if "time_s" not in header:
        raise CalibrationError(f"{where}: no 'time_s' column (first column must be time_s, seconds)")
    t = table[:, header.index("time_s")]
    if np.any(~np.isfinite(t)):
        raise CalibrationError(f"{where}: time_s has empty or non-finite cells")
    steps = np.diff(t)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        raise CalibrationError(f"{where}: time_s does not increase at data row {k + 3} ({t[k + 1]:g} after {t[k]:g})")
    if dt is None:
        if t.size < 2:
            raise CalibrationError(f"{where}: at least two rows are needed")
        dt = float(np.min(steps))
    grid = (t - t[0]) / dt
    if np.any(np.abs(grid - np.round(grid)) > 1e-6):
        k = int(np.argmax(np.abs(grid - np.round(grid)) > 1e-6))
        raise CalibrationError(f"{where}: row at time_s={t[k]:g} is not on the {dt:g} s grid starting at {t[0]:g}")
    idx = np.round(grid).astype(int)
    N = int(idx[-1]) + 1

    def column(name: str) -> np.ndarray:
        out = np.full(N, np.nan)
        out[idx] = table[:, header.index(name)]
        return out

    missing = [n for n in list(sim.input_names) + list(sim.disturbance_names) if n not in header]
    if missing:
        raise CalibrationError(f"{where}: missing column(s) {', '.join(missing)} (inputs and disturbances of the "
                               "model are needed)")
    filled = 0
    held = []
    for name in list(sim.input_names) + list(sim.disturbance_names):
        col = column(name)
        ok = np.isfinite(col)
        if not ok.any():
            raise CalibrationError(f"{where}: column '{name}' has no values")
        filled += int((~ok).sum())
        # Hold the last value over gaps (a logger that missed a sample did not change the command);
        # leading gaps take the first value.
        pos = np.where(ok, np.arange(N), 0)
        np.maximum.accumulate(pos, out=pos)
        first = int(np.argmax(ok))
        col = col[np.where(ok[pos], pos, first)]
        held.append(col)
    nu = len(sim.input_names)
    measured, kinds = [], []
    for name in header:
        if name in sim.sensor_names:
            measured.append(name)
            kinds.append("sensor")
        elif name in sim.zone_names and name not in sim.input_names:
            measured.append(name)
            kinds.append("zone")
    if not measured:
        raise CalibrationError(f"{where}: no measurement column; expected one of the sensors "
                               f"{', '.join(sim.sensor_names) or '(none)'} or zones {', '.join(sim.zone_names)}")
    y = np.column_stack([column(n) for n in measured])
    used = {"time_s", *sim.input_names, *sim.disturbance_names, *measured}
    ignored = [h for h in header if h not in used]
    return CalibrationData(t[0] + dt * np.arange(N), np.column_stack(held[:nu]) if nu else np.zeros((N, 0)),
                           np.column_stack(held[nu:]) if len(held) > nu else np.zeros((N, 0)), y, measured, kinds,
                           float(dt), ignored, filled)
