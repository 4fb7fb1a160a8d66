"""The demo's figure (matplotlib from the [plot] extra): comfort, power, price and setpoints of both runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot(path: Path, log_mpc: Any, log_ts: Any, site: Any, price: Any, args: Any) -> None:
    from models.schedules import parse_schedules

    tz = site.timezone
    t0 = log_mpc.t[0]
    h_m = (log_mpc.t - t0) / 3600
    h_t = (log_ts.t - t0) / 3600
    sched = parse_schedules(site.schedules)[site.comfort.schedule]
    occ = sched.values(log_ts.t, tz) > 0.5
    cs = site.comfort
    low = np.where(occ, cs.occupied.low, cs.unoccupied.low)
    high = np.where(occ, cs.occupied.high, cs.unoccupied.high)
    fig, ax = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    ax[0].fill_between(h_t, low, high, color="0.9", label="comfort band")
    ax[0].plot(h_t, log_ts.zones_start.mean(1), color="tab:orange", lw=1, label="thermostat (zone mean)")
    ax[0].plot(h_m, log_mpc.zones_start.mean(1), color="tab:blue", lw=1.2, label="MPC (zone mean)")
    ax[0].plot(h_m, log_mpc.zones_start.min(1), color="tab:blue", lw=0.5, ls=":", label="MPC (coldest zone)")
    ax[0].set_ylabel("zone temperature (°C)")
    ax[0].set_ylim(min(low.min(), log_mpc.zones_start.min()) - 1, 26)
    ax[0].legend(loc="upper right", fontsize=8, ncol=2)
    ax[1].plot(h_t, log_ts.p_el.sum(1) / 1000, color="tab:orange", lw=0.6, label="thermostat")
    ax[1].plot(h_m, log_mpc.p_el.sum(1) / 1000, color="tab:blue", lw=1.2, label="MPC")
    ax[1].set_ylabel("electric power (kW)")
    ax[1].legend(loc="upper right", fontsize=8)
    ax[2].step(h_t, price.sample(log_ts.t, tz), where="post", color="k", lw=1)
    ax[2].set_ylabel(f"price ({price.unit})")
    out_t = log_ts.d[:, 0] if log_ts.d.shape[1] else None
    if out_t is not None:
        a2 = ax[2].twinx()
        a2.plot(h_t, out_t, color="tab:green", lw=0.6)
        a2.set_ylabel("outdoor (°C)", color="tab:green")
    ax[3].plot(h_t, log_ts.u.sum(1) / 1000, color="tab:orange", lw=0.6, label="thermostat")
    ax[3].plot(h_m, log_mpc.u.sum(1) / 1000, color="tab:blue", lw=1.2, label="MPC")
    ax[3].set_ylabel("heating setpoints, sum (kW thermal)")
    ax[3].set_xlabel("hours from start")
    ax[3].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"edge-mpc demo: {args.building}, {args.days:g} days {args.season}, {args.price} prices")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
