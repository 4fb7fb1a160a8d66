"""The daemon: the service loop and its edges (settings files, clocks, metrics, state files, sd_notify).

Everything here may do I/O (files, sockets, clocks, the environment). It drives the pure core in
`controller` (cycle, estimator, MPC, fallback policy) and talks to devices through `drivers`.
It may import `controller` (the core), `drivers` and `models`; never `controller.tools`.
"""
