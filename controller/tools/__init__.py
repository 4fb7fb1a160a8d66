"""The commands of `edge-mpc`: the CLI, demo, benchmarks, calibration, simulation, the lockstep emulator,
baseline controllers and KPIs.

Tools may import everything else (`controller`, `controller.daemon`, `drivers`, `models`); nothing
outside `controller.tools` imports them.
"""
