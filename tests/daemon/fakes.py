"""A fault-injecting stand-in for `controller.core.SiteController`, for testing the daemon's handling of
solver exceptions, hangs, NaNs and divergence, which the real core cannot be made to produce on demand.
Tests of the daemon with the real core live in test_process.py.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from controller.core import ActuatorSpec, CycleOutput


@dataclass
class FakeController:
    """Heats each zone in proportion to how far it is below 21 °C. `mode` injects faults."""

    step_s: float = 900.0
    mode: str = "ok"  # ok | raise | hang | nan | diverge | infeasible
    zone_names: list = field(default_factory=lambda: ["z1", "z2"])
    sensor_ids: list = field(default_factory=lambda: ["t_z1", "t_z2"])
    calls: int = 0
    state: dict = field(default_factory=lambda: {"x": [20.0, 20.0]})
    release: threading.Event = field(default_factory=threading.Event)
    applied: list = field(default_factory=list)  # what the service reported as published, per cycle

    def __post_init__(self) -> None:
        self.actuators = [ActuatorSpec(f"heat_{z}", "W", 0.0, 5000.0, 0.0, 4000.0, 1500.0, zone=z)
                          for z in self.zone_names]

    def warm_up(self) -> None:
        pass

    def record_applied(self, t: float, values: dict, valid_until: float) -> None:
        self.applied.append((t, dict(values), valid_until))

    def export_state(self) -> dict:
        return dict(self.state, calls=self.calls)

    def import_state(self, state: dict) -> None:
        self.state = dict(state)
        self.calls = int(state.get("calls", 0))

    def cycle(self, inputs, timer, deadline_s: float) -> CycleOutput:
        start = timer()
        self.calls += 1
        self.last_inputs = inputs
        if self.mode == "raise":
            raise RuntimeError("solver blew up")
        if self.mode == "hang":
            print("fake controller: solver hangs", flush=True)  # what test_process.py waits for
            self.release.wait(60)
        temps = {z: inputs.sensors.get(f"t_{z}", (20.0, 0.0))[0] for z in self.zone_names}
        sp = {f"heat_{z}": max(0.0, (21.0 - temps[z]) * 2000.0) for z in self.zone_names}
        if self.mode == "nan":
            sp["heat_z1"] = math.nan
        K = 4
        plan_sp = np.tile([sp[a.name] for a in self.actuators], (K, 1)).astype(float)
        plan_sp[1:] *= 0.5
        status, ok, reason = "converged", True, None
        if self.mode == "infeasible":
            status, ok, reason = "deadline", False, "no feasible iterate before the deadline"
        innov = 9.0 if self.mode == "diverge" else 0.05
        return CycleOutput(setpoints=sp, units={a.name: a.unit for a in self.actuators},
                   plan={"times": [inputs.t + k * self.step_s for k in range(K)],
                         "setpoints": plan_sp.tolist()},
                   status=status, ok=ok, reason=reason,
                   diagnostics={"solve_s": timer() - start, "iterations": 3, "objective": 1.25,
                                "objective_terms": {"energy": 1.0, "comfort": 0.25}, "innovation_k": innov,
                                "zone_temps": temps, "forecast_sources": {"outdoor_temperature": "csv"}},
                   plan_setpoints=plan_sp)
