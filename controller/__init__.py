"""The controller. This package itself (and `controller.mpc`) is the pure decision core; two subpackages
hold what does I/O.

- core (here): `core` (one site's cycle: estimate -> MPC -> plan), `estimator` (Kalman filter with offset
  states), `disturbances` (the horizon's disturbance matrix from configured and MQTT sources), `fallback`
  (the fallback chain and the final setpoint clamp), `site_config` (a validated site as plain data), and
  `mpc/` (the problem, the interior point solver with Riccati steps, the dual bound). Pure array code: it
  reads no clock, socket, file or environment variable, and imports only `models` and itself.
- `controller.daemon`: the service loop and its edges (settings files, clocks, metrics, state files,
  sd_notify). May import the core, `drivers` and `models`.
- `controller.tools`: the `edge-mpc` commands (CLI, demo, benchmarks, calibration, simulation, the lockstep
  emulator, baselines, KPIs). May import everything; nothing imports them.

tests/test_layout.py enforces these rules on every module, lazy imports included.
"""
