"""BOPTEST key performance indicators from trajectories sampled at a fixed step, pure NumPy.

Convention (used for every input): sample ``k`` is the value *held over step k*, i.e. over the interval
``[k·dt, (k+1)·dt)`` (zero-order hold), and integrals use the left-rectangle rule ``Σ_k x[k]·dt``. A
trajectory of K samples therefore covers K·dt seconds. Feed the zone temperature at the start of each
step (or the step mean) together with the power applied during that step.

KPIs (as defined by BOPTEST, https://ibpsa.github.io/project1-boptest/):

- ``tdis_tot`` (K·h/zone): Σ_zones ∫ max(0, low − T) + max(0, T − high) dt, divided by the number of zones;
- ``ener_tot`` (kWh/m²): ∫ Σ_actuators (P_el + P_gas) dt / floor area;
- ``cost_tot`` (<currency>/m²): ∫ price_el·ΣP_el + price_gas·ΣP_gas dt / floor area, prices in
  <currency>/kWh (the tariff's currency, a label: ``Kpis.currency``);
- ``pele_tot`` (kW/m²): the largest 15-minute mean of total electric power / floor area. The 15-minute
  windows are fixed, back to back from the start of the trajectory (as utility demand meters and
  BOPTEST's resampling do); a trailing partial window is averaged over the time it covers;
- ``time_rat`` (1): mean computation time per control step / control step.

Absolute figures (K·h summed over zones, kWh, currency, kW) are reported alongside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PEAK_WINDOW_S = 900.0
_J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Kpis:
    """BOPTEST KPIs (per m² / per zone) and absolute values. Units in the field names' comments."""

    tdis_tot: float  # K·h per zone
    ener_tot: float  # kWh/m²
    cost_tot: float  # <currency>/m²
    pele_tot: float  # kW/m²
    time_rat: float | None  # 1 (None without compute times)
    tdis_kh: float  # K·h summed over zones
    tdis_zone_kh: tuple[float, ...]  # K·h per zone
    energy_kwh: float  # kWh, electric + gas
    energy_el_kwh: float  # kWh
    energy_gas_kwh: float  # kWh
    cost: float  # <currency>
    peak_el_kw: float  # kW (largest 15-minute mean)
    duration_h: float  # h covered by the trajectories
    floor_area_m2: float  # m²
    currency: str = "USD"  # the tariff's currency: a label on the cost figures, never a conversion

    def as_dict(self) -> dict[str, float | tuple[float, ...] | None]:
        """All fields as a plain dict (JSON-friendly)."""
        return asdict(self)


def _as_2d(name: str, x: np.ndarray, K: int, cols: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != K:
        raise ValueError(f"{name} must have shape (K={K}, n); got {np.shape(x)}")
    if cols is not None:
        try:
            a = np.broadcast_to(a, (K, cols))
        except ValueError:
            raise ValueError(f"{name} must have shape (K={K}, {cols}) or (K, 1); got {np.shape(x)}") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def _power(name: str, p: np.ndarray | None, K: int) -> np.ndarray:
    """Total power over actuators per step (W); consumption must not be negative."""
    if p is None:
        return np.zeros(K)
    a = _as_2d(name, p, K)
    if np.any(a < 0):
        raise ValueError(f"{name} must be consumed power >= 0 W (pass |thermal power| / efficiency, "
                         "not a signed heating/cooling command)")
    return a.sum(axis=1)


def peak_window_mean(dt: float, power_w: np.ndarray, window_s: float = PEAK_WINDOW_S) -> float:
    """Largest mean of a held-per-step power ``power_w`` (W, shape (K,)) over fixed back-to-back windows
    of ``window_s`` starting at the trajectory start; works for any ``dt`` (s). Returns W."""
    p = np.asarray(power_w, dtype=float)
    if p.size == 0:
        return 0.0
    duration = p.size * dt
    t_steps = np.arange(p.size + 1) * dt
    energy = np.concatenate(([0.0], np.cumsum(p * dt)))  # J at step edges, piecewise linear in between
    edges = np.arange(0.0, duration, window_s)
    edges = np.append(edges, duration)
    e = np.interp(edges, t_steps, energy)
    return float(np.max(np.diff(e) / np.diff(edges)))


def comfort_band(site: Any, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) degC of a site's comfort band at times `t` (unix s), occupied or not by its comfort
    schedule: what the KPIs score zone temperatures against (the full band, without the plan's margin)."""
    from models.schedules import parse_schedules

    cs = site.comfort
    occ = parse_schedules(site.schedules)[cs.schedule].values(np.asarray(t, dtype=float), site.timezone) > 0.5
    return np.where(occ, cs.occupied.low, cs.unoccupied.low), np.where(occ, cs.occupied.high, cs.unoccupied.high)


def compute_kpis(
    dt: float,
    zone_temps: np.ndarray,
    band_low: np.ndarray,
    band_high: np.ndarray,
    p_el: np.ndarray | None,
    p_gas: np.ndarray | None,
    price_el: np.ndarray | float,
    price_gas: np.ndarray | float,
    floor_area_m2: float,
    compute_s: np.ndarray | None = None,
    *,
    control_step_s: float | None = None,
    currency: str = "USD",
) -> Kpis:
    """BOPTEST KPIs from trajectories held over steps of ``dt`` seconds (left-rectangle rule).

    Args:
        dt: sample step (s).
        zone_temps: (K, Z) zone temperatures (°C).
        band_low, band_high: comfort band (°C), shape (K, Z), (K, 1) or (K,).
        p_el, p_gas: (K, A) electric / gas power drawn per actuator (W, >= 0); ``None`` for none.
        price_el, price_gas: (K,) or scalar prices (<currency>/kWh).
        floor_area_m2: conditioned floor area (m²).
        compute_s: (C,) computation time of each control step (s), or ``None``.
        control_step_s: control step (s) for ``time_rat``; default ``dt``.
        currency: the prices' currency, carried as the label of the cost figures.
    """
    if not dt > 0:
        raise ValueError(f"dt must be > 0 s; got {dt}")
    if not floor_area_m2 > 0:
        raise ValueError(f"floor_area_m2 must be > 0; got {floor_area_m2}")
    T = np.asarray(zone_temps, dtype=float)
    if T.ndim == 1:
        T = T[:, None]
    K, Z = T.shape
    T = _as_2d("zone_temps", T, K)
    low = _as_2d("band_low", band_low, K, Z)
    high = _as_2d("band_high", band_high, K, Z)
    if np.any(low > high):
        raise ValueError("band_low must not exceed band_high")
    el = _power("p_el", p_el, K)
    gas = _power("p_gas", p_gas, K)
    pr_el = np.broadcast_to(np.asarray(price_el, dtype=float), (K,))
    pr_gas = np.broadcast_to(np.asarray(price_gas, dtype=float), (K,))
    if not (np.all(np.isfinite(pr_el)) and np.all(np.isfinite(pr_gas))):
        raise ValueError("prices contain non-finite values")

    dt_h = dt / 3600.0
    dev = np.maximum(low - T, 0.0) + np.maximum(T - high, 0.0)  # K
    tdis_zone = dev.sum(axis=0) * dt_h  # K·h per zone
    e_el = float(el.sum()) * dt / _J_PER_KWH
    e_gas = float(gas.sum()) * dt / _J_PER_KWH
    cost = float(np.sum(pr_el * el + pr_gas * gas)) * dt / _J_PER_KWH
    peak_kw = peak_window_mean(dt, el) / 1e3
    time_rat = None
    if compute_s is not None:
        c = np.asarray(compute_s, dtype=float)
        if c.size:
            time_rat = float(np.mean(c)) / (control_step_s if control_step_s is not None else dt)
    area = float(floor_area_m2)
    return Kpis(
        tdis_tot=float(tdis_zone.sum()) / Z if Z else 0.0,
        ener_tot=(e_el + e_gas) / area,
        cost_tot=cost / area,
        pele_tot=peak_kw / area,
        time_rat=time_rat,
        tdis_kh=float(tdis_zone.sum()),
        tdis_zone_kh=tuple(float(x) for x in tdis_zone),
        energy_kwh=e_el + e_gas,
        energy_el_kwh=e_el,
        energy_gas_kwh=e_gas,
        cost=cost,
        peak_el_kw=peak_kw,
        duration_h=K * dt_h,
        floor_area_m2=area,
        currency=currency,
    )


_TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("tdis_tot", "thermal discomfort", "K·h/zone"),
    ("ener_tot", "energy", "kWh/m²"),
    ("cost_tot", "cost", "{currency}/m²"),
    ("pele_tot", "peak electric demand", "kW/m²"),
    ("time_rat", "computation time ratio", "1"),
    ("energy_kwh", "energy", "kWh"),
    ("cost", "cost", "{currency}"),
    ("peak_el_kw", "peak electric demand", "kW"),
    ("tdis_kh", "thermal discomfort (all zones)", "K·h"),
)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def format_comparison(mpc: Kpis, baseline: Kpis, labels: tuple[str, str] = ("MPC", "baseline")) -> str:
    """A plain-text table of KPIs, MPC next to baseline, with the change in percent relative to the
    baseline (negative = MPC lower). The change is "n/a" where the baseline is zero or missing."""
    header = ("KPI", "unit", labels[1], labels[0], "change")
    rows = [header]
    for key, name, unit in _TABLE_ROWS:
        a, b = getattr(mpc, key), getattr(baseline, key)
        if a is None and b is None:
            continue
        if a is None or b is None or b == 0:
            change = "n/a"
        else:
            change = f"{100.0 * (a - b) / abs(b):+.1f} %"
        rows.append((f"{key} ({name})", unit.format(currency=mpc.currency), _fmt(b), _fmt(a), change))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(r[2:], widths[2:],
                                                                                             strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
