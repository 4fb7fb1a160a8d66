"""`state_space` blocks: identified linear models (A, B, E, C) added beside the RC network.

Users who already have an identified model (from system identification or a vendor) declare it inline or
point at a `.npz` (arrays A, B, E, C) or `.csv` files (`<stem>_A.csv`, ...). `arrays: {A: Ad, B: Bd, C: Cz}`
names the arrays inside the .npz, or the .csv files next to the model, when they are named otherwise.
A discrete A may be unstable (a warning; an integrator with an eigenvalue at 1 is fine), but it must have
no eigenvalue on the negative real axis: such a block has no continuous-time equivalent.
Continuous-time matrices are used as given; discrete-time ones (with their step `dt`) are converted to
continuous time through the eigenbasis (exact for the zero-order hold), so the block runs at any control step.

    state_space:
      - name: annex
        time: discrete            # or continuous
        dt: 15 min
        A: [[0.95, 0.02], [0.01, 0.97]]
        B: [[0.001], [0.0]]       # per input, in K per W per step
        E: [[0.03, 0.0], [0.02, 0.001]]
        C: [[1.0, 0.0]]           # each row is a zone
        inputs: [{name: annex_heater, min: 0 W, max: 5 kW, cop_heating: 3.0}]
        disturbances: [outdoor_temperature, solar_irradiance]
        zones: [{name: annex, floor_area: 80 m2}]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import components as comp
from models.network import InputSpec, Zone
from models.yamlio import Cursor


def _at(cur: Cursor, key: str) -> Cursor:
    """Where matrix `key` was given: its own field when inline, else the `file` field it came from."""
    if cur.has(key) or not cur.has("file"):
        return cur.get(key)
    return cur.get("file")


def _matrix(b: Any, cur: Cursor, key: str, arrays: dict[str, np.ndarray] | None) -> np.ndarray:
    if arrays is not None and key in arrays:
        try:
            m = np.asarray(arrays[key], dtype=float)
        except (TypeError, ValueError):
            raise cur.get("file").error(f"matrix {key} in the file is not numeric",
                                        expected="numeric arrays A, B, E, C", found=str(arrays[key].dtype)) from None
    else:
        c = cur.get(key)
        try:
            m = np.array(c.value, dtype=float)
        except (TypeError, ValueError):
            raise c.error("not a numeric matrix", expected="a list of equal-length lists of numbers") from None
        if m.ndim == 1:
            m = m[None, :] if key == "C" else m[:, None]
    if m.ndim != 2:
        raise _at(cur, key).error(f"matrix {key} must be 2-dimensional", field=f"{cur.field}.{key}",
                                  expected="a matrix (list of rows)", found=f"shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise _at(cur, key).error(f"matrix {key} has non-finite entries", field=f"{cur.field}.{key}",
                                  expected="finite numbers", found="NaN, Inf or an empty entry")
    return m


def parse_state_space(b: Any, cur: Cursor, index: int) -> None:
    """Add one identified block to the network being built by models.building._Builder `b`."""
    cur.only_keys({"name", "time", "dt", "A", "B", "E", "C", "file", "arrays", "inputs", "disturbances", "zones"})
    names = {k: k for k in "ABEC"}
    if cur.has("arrays"):
        # Which array of the .npz (or which .csv file, relative to the model) holds each matrix.
        cur.get("arrays").only_keys(set("ABEC"))
        for k, c in cur.get("arrays").items():
            names[k] = c.as_str()
        if not cur.has("file"):
            raise cur.get("arrays").error("'arrays' names the matrices inside 'file', which is missing",
                                          expected="a 'file' (.npz, or any one of the .csv files)", found=None)
    name = cur.get("name").as_str()
    if f"ss:{name}[0]" in b.net.nodes:
        raise cur.get("name").error(f"state_space block '{name}' is declared twice", expected="a unique name")
    arrays = None
    if cur.has("file"):
        path = (b.base / cur.get("file").as_str()).resolve()
        if path.suffix == ".npz":
            try:
                with np.load(path) as data:
                    present = set(data.files)
                    arrays = {k: data[names[k]] for k in "ABEC" if names[k] in present}
            except (OSError, ValueError) as exc:
                raise cur.get("file").error(f"cannot read {path}: {exc}",
                                            expected="an .npz with arrays A, B, E, C") from None
            for k in "ABC":
                if k not in arrays and not cur.has(k):
                    where = cur.get("arrays").get(k) if cur.has("arrays") and cur.get("arrays").has(k) \
                        else cur.get("file")
                    raise where.error(f"the .npz has no array '{names[k]}' for matrix {k}",
                                      expected="one of its arrays: " + ", ".join(sorted(present)),
                                      found=names[k])
        elif path.suffix == ".csv":
            arrays = {}
            for key in "ABEC":
                p = path.with_name(names[key] if names[key] != key else f"{path.stem}_{key}.csv")
                if key == "E" and not p.exists() and not cur.get("disturbances", []).value:
                    continue
                try:
                    arrays[key] = np.loadtxt(p, delimiter=",", ndmin=2)  # a one-column file stays a column
                except (OSError, ValueError) as exc:
                    raise cur.get("file").error(f"cannot read {p}: {exc}",
                                                expected=f"files {path.stem}_A.csv ... _C.csv with numbers") from None
        else:
            raise cur.get("file").error("unsupported file type", expected=".npz or .csv")
    A, B, E, C = (_matrix(b, cur, k, arrays) for k in "ABEC")
    n = A.shape[0]
    inputs = list(cur.get("inputs"))
    dists = list(cur.get("disturbances", []))
    zones = list(cur.get("zones"))
    for key, m, shape in (("A", A, (n, n)), ("B", B, (n, len(inputs))), ("E", E, (n, len(dists))),
                          ("C", C, (len(zones), n))):
        if m.shape != shape and not (key == "E" and not dists and m.size == 0):
            raise _at(cur, key).error(f"matrix {key} has the wrong shape", field=f"{cur.field}.{key}",
                            expected=f"shape {shape} (states x inputs/disturbances, zones x states)",
                            found=f"shape {m.shape}")
    time = cur.get("time", "continuous").as_str()
    if time not in ("continuous", "discrete"):
        raise cur.get("time").error("unknown time base", expected="continuous or discrete")
    if time == "discrete":
        dt = cur.get("dt").as_float(unit="s", positive=True)
        lam, V = np.linalg.eig(A)
        if np.any((lam.real <= 0) & (np.abs(lam.imag) < 1e-12)):
            # exp(Ac dt) is never real-negative or zero: such a block has no continuous-time equivalent.
            raise _at(cur, "A").error("discrete A has an eigenvalue on the negative real axis or at zero, so it "
                                      "has no continuous-time equivalent to run at another step",
                                      field=f"{cur.field}.A", expected="no real eigenvalue <= 0",
                                      found=np.round(lam, 4).tolist())
        if np.any(np.abs(lam) >= 1):
            b._warn(_at(cur, "A"), f"state_space block '{name}': discrete A is unstable (eigenvalues "
                    f"{np.round(lam, 4).tolist()} on or outside the unit circle); its states grow without feedback")
        if np.linalg.cond(V) > 1e10:
            raise _at(cur, "A").error("discrete A is not diagonalisable (repeated eigenvalues without a full set "
                                      "of eigenvectors), so it has no continuous-time equivalent here",
                                      field=f"{cur.field}.A", expected="a diagonalisable A",
                                      found=np.round(lam, 6).tolist())
        Vi = np.linalg.inv(V)
        lc = np.log(lam.astype(complex)) / dt
        Ac = (V @ np.diag(lc) @ Vi).real
        # Bd = V diag(phi) V^-1 Bc with phi = (e^(lc dt) - 1) / lc (dt where lc = 0): the exact ZOH inverse,
        # also for eigenvalues at 1 (integrators) where (A - I) is singular.
        small = np.abs(lc * dt) < 1e-12
        phi = np.where(small, dt, (lam - 1) / np.where(small, 1, lc))
        BE = (V @ np.diag(1 / phi) @ Vi @ (np.hstack([B, E]) if E.size else B)).real
        B, E = BE[:, :B.shape[1]], BE[:, B.shape[1]:] if E.size else E
        A = Ac
    elif np.any(np.linalg.eigvals(A).real >= 0):
        b._warn(_at(cur, "A"), f"state_space block '{name}': continuous A is unstable (eigenvalues "
                f"{np.round(np.linalg.eigvals(A), 6).tolist()} with real part >= 0); its states grow without feedback")
    net = b.net
    # The block's states are nodes of unit "capacitance": its matrices are rates already.
    base = net.n
    for i in range(n):
        net.add_node(f"ss:{name}[{i}]", 0.0, cur.line)
        net.caps.append((base + i, lambda th: 1.0))
    for i in range(n):
        for j in range(n):
            if A[i, j] != 0:
                net.rates.append((base + i, base + j, b.reg(f"{name}.A[{i}][{j}]", A[i, j], lower=-np.inf, unit="1/s")))
    for j, ic in enumerate(inputs):
        ic.only_keys({"name", "min", "max", "cop_heating", "cop_cooling"})
        iname = ic.get("name").as_str()
        lo = ic.get("min").as_float(unit="W")
        hi = ic.get("max").as_float(unit="W", low=lo)
        k = len(net.inputs)
        net.inputs.append(InputSpec(iname, "W", lo, hi, iname))
        for i in range(n):
            if B[i, j] != 0:
                net.input_heat.append((base + i, k, b.reg(f"{name}.B[{i}][{j}]", B[i, j], lower=-np.inf,
                                                          unit="K/J")))
        b.num(ic, "cop_heating", iname, None, default=1.0, positive=True)
        b.num(ic, "cop_cooling", iname, None, default=3.0, positive=True)
        b.reg(f"{iname}.efficiency", 1.0, cur=ic.get("name"))
        net.actuators.append(comp.IdealHVAC(iname, "ideal_hvac", [k], "W",
                                            params=b._pidx(iname, "cop_heating", "cop_cooling", "efficiency")))
    for j, dc in enumerate(dists):
        dj = b.ref_dist(dc)
        for i in range(n):
            if E.size and E[i, j] != 0:
                net.dist_heat.append((base + i, dj, b.reg(f"{name}.E[{i}][{j}]", E[i, j], lower=-np.inf,
                                                           unit=f"K/s per {net.disturbance_units[dj]}")))
    for r, zc in enumerate(zones):
        zc.only_keys({"name", "floor_area"})
        zname = zc.get("name").as_str()
        weights = {base + i: C[r, i] for i in range(n) if C[r, i] != 0}
        if len(weights) == 1 and abs(next(iter(weights.values())) - 1.0) < 1e-12:
            node = next(iter(weights))
        else:
            raise zc.error("each zone must read exactly one state with weight 1 (transform the model so it does)",
                           expected="C rows that are unit vectors", found=C[r].tolist())
        net.zones.append(Zone(zname, node, zc.get("floor_area").as_float(unit="m2", positive=True)))
        net.sensors.append((f"{zname}_temperature", {node: 1.0}))
    net.state_space.append(name)
