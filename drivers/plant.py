"""The one protocol every plant (virtual building, emulator-side building, hardware gateway) implements.

A plant is stepped one control step at a time with the actuator commands held over the step (zero-order
hold, as the MPC plans them). It answers with what its sensors read at the end of the step, where a
dropped reading is ``None`` (a gateway that lost a packet, a sensor with a flat battery). True zone
temperatures and the powers drawn are separate calls: only KPI code and tests may look at them, never the
controller. This is the httpx transport shape: one small protocol, an in-process implementation
(``drivers.virtual_building.VirtualBuilding``) and an MQTT one (``controller.tools.emulator``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Plant(Protocol):
    """A building that can be stepped by one control step."""

    def step(self, u: dict[str, float] | np.ndarray, t: float) -> dict[str, float | None]:
        """Hold inputs ``u`` (by input name, or an array in the model's input order) over ``[t, t + dt)``
        and return the sensor readings at ``t + dt`` (``None`` for a dropped reading)."""
        ...

    def sensors(self) -> dict[str, float | None]:
        """The most recent sensor readings (those returned by the last ``step``, or the initial ones)."""
        ...

    def zone_temperatures(self) -> dict[str, float]:
        """True zone air temperatures now (°C), for KPIs: no noise, no quantisation, no dropouts."""
        ...

    def powers(self) -> dict[str, dict[str, float]]:
        """Last step's mean powers per actuator (W): ``{"electric": {...}, "gas": {...}, "thermal": {...}}``."""
        ...
