"""The comfort band the controller core plans with: a step's end state stands for the whole step, so a step
during which people are still there (they leave at its end) keeps the occupied band."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.settings import load_site
from controller.tools import paths


def test_the_last_occupied_step_keeps_the_occupied_band() -> None:
    site = load_site(paths.SITES / "house-1.yaml", environ={})  # home mon-fri 06:00-08:30 and 17:00-23:00
    ctrl = build_site_controller(site)
    t = datetime(2026, 1, 12, 22, 0, tzinfo=site.timezone).timestamp()  # a Monday
    out = ctrl.cycle(CycleInputs(t, {s: (21.0, t) for s in ctrl.sensor_ids}), lambda: 0.0, 1e9)
    low = np.array(out.plan["comfort_low"])
    m = site.comfort.margin
    # Steps 0-3 end at 22:15 ... 23:00; step 3 (22:45-23:00) is occupied throughout, step 4 is not.
    np.testing.assert_allclose(low[:4], site.comfort.occupied.low + m)
    np.testing.assert_allclose(low[4:8], site.comfort.unoccupied.low + m)
    # Arrival: the step ending at 06:00 must already be warm (people arrive at its end).
    arrive = round((datetime(2026, 1, 13, 6, 0, tzinfo=site.timezone).timestamp() - t) / 900) - 1
    assert low[arrive] == site.comfort.occupied.low + m and low[arrive - 1] == site.comfort.unoccupied.low + m
