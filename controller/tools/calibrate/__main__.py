"""``python -m controller.tools.calibrate``: the same as ``edge-mpc calibrate``."""

from controller.tools.calibrate.command import main

raise SystemExit(main())
