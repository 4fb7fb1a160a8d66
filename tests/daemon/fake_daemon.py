"""`edge-mpc run` with the fault-injecting controller from fakes.py, as a real process (signals, sd_notify,
MQTT, state file). FAKE_MODE selects the fault: ok | hang | raise | nan."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakes import FakeController

from controller.core import CycleInputs
from controller.daemon.run import _setup_logging
from controller.daemon.service import Service


def main() -> int:
    _setup_logging("INFO")
    mode = os.environ.get("FAKE_MODE", "ok")
    args = [a for a in sys.argv[2:] if a != "--once"]
    svc = Service(sys.argv[1], args, make_inputs=CycleInputs,
                  controller_factory=lambda cfg: FakeController(step_s=cfg.control.step_s, mode=mode))
    svc.install_signal_handlers()
    svc.start()
    return svc.run(once="--once" in sys.argv)


if __name__ == "__main__":
    sys.exit(main())
