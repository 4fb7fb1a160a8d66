"""Prometheus metrics for the daemon (README, "Metrics and dashboard") and the endpoint serving them plus /healthz.

One `CollectorRegistry` per process, created here and passed around: nothing goes to prometheus_client's
global default registry, so tests and a multi-site process never collide. Every per-site series carries a
`site` label; names use base units (seconds, celsius, kelvin) as promtool expects.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

PREFIX = "edge_mpc_"
OUTCOMES = ("mpc", "hold", "schedule", "relinquish")
FALLBACK_REASONS = ("stale_sensor", "missing_sensor", "nonfinite", "deadline", "divergence", "solver_error",
                    "solver_hung", "infeasible", "uncertified", "no_plan")
FORECAST_SOURCES = ("mqtt", "csv", "persistence")
# Dense at the low end where a warm-started solve lives, coarser up to a minute.
_MS_BUCKETS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.015, 0.020, 0.025, 0.030,
               0.040, 0.050, 0.060, 0.080, 0.100, 0.120, 0.150, 0.200, 0.250, 0.300, 0.400, 0.500, 0.600,
               0.800, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0,
               40.0, 50.0, 60.0, 90.0, 120.0)


def buckets_with(deadlines: Iterable[float]) -> tuple[float, ...]:
    """The dense buckets plus one exactly at each deadline, so `le="<deadline>"` counts in-time solves."""
    return tuple(sorted(set(_MS_BUCKETS) | {round(float(d), 6) for d in deadlines if d > 0}))


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("edge-mpc")
    except Exception:
        return "unknown"


class Metrics:
    """All metric families of one process, in one registry."""

    def __init__(self, deadlines_s: Iterable[float] = (), *, registry: CollectorRegistry | None = None,
                 backend: str = "numpy", dtype: str = "float64") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, b = self.registry, buckets_with(deadlines_s)
        self.solve_seconds = Histogram(PREFIX + "solve_seconds", "MPC solve wall time per cycle.", ["site"],
                                       buckets=b, registry=r)
        self.cycle_seconds = Histogram(PREFIX + "cycle_seconds",
                                       "Whole cycle wall time: sensors to published setpoints.", ["site"],
                                       buckets=b, registry=r)
        self.solver_iterations = Gauge(PREFIX + "solver_iterations", "Solver iterations in the last cycle.",
                                       ["site"], registry=r)
        self.objective = Gauge(PREFIX + "objective", "Last plan's objective by cost term (tariff currency).",
                               ["site", "term"], registry=r)
        self.cycles = Counter(PREFIX + "cycles", "Completed cycles by what was published.",
                              ["site", "outcome"], registry=r)
        self.fallback_active = Gauge(PREFIX + "fallback_active",
                                     "1 while the fallback chain is engaged for this reason.",
                                     ["site", "reason"], registry=r)
        self.deadline_misses = Counter(PREFIX + "deadline_misses", "Solves stopped by the cycle deadline.",
                                       ["site"], registry=r)
        self.mqtt_messages = Counter(PREFIX + "mqtt_messages", "MQTT messages by direction, kind, result.",
                                     ["site", "direction", "kind", "result"], registry=r)
        self.sensor_age = Gauge(PREFIX + "sensor_age_seconds", "Age of the latest accepted reading at the "
                                "last cycle (+Inf if none).", ["site", "sensor"], registry=r)
        self.zone_temperature = Gauge(PREFIX + "zone_temperature_celsius", "Estimated zone air temperature.",
                                      ["site", "zone"], registry=r)
        self.comfort_band = Gauge(PREFIX + "comfort_band_celsius", "Comfort band in force now.",
                                  ["site", "bound"], registry=r)
        self.setpoint = Gauge(PREFIX + "setpoint", "Last published setpoint (actuator's SI unit); NaN when "
                              "relinquished.", ["site", "actuator"], registry=r)
        self.innovation = Gauge(PREFIX + "estimator_innovation_kelvin",
                                "Largest absolute estimator innovation in the last cycle.", ["site"], registry=r)
        self.forecast_source = Gauge(PREFIX + "forecast_source", "1 for the source each forecast came from.",
                                     ["site", "name", "source"], registry=r)
        self.last_cycle = Gauge(PREFIX + "last_cycle_timestamp_seconds",
                                "Unix time (cycle clock) of the last completed cycle.", ["site"], registry=r)
        self.ticks_skipped = Counter(PREFIX + "ticks_skipped", "Clock ticks skipped after a stall.", ["site"],
                                     registry=r)
        # For alerts that compare the solve time with what the site allows (a fleet mixes deadlines).
        self.deadline = Gauge(PREFIX + "deadline_seconds", "The site's solve deadline (control.deadline).",
                              ["site"], registry=r)
        self.build_info = Info(PREFIX.rstrip("_") + "_build", "Version and numeric backend.", registry=r)
        self.build_info.info({"version": _version(), "python": platform.python_version(),
                              "backend": backend, "dtype": dtype})

    def site(self, name: str, deadline_s: float | None = None) -> SiteMetrics:
        sm = SiteMetrics(self, name)
        if deadline_s is not None:
            self.deadline.labels(name).set(deadline_s)
        return sm

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class SiteMetrics:
    """The children of one site, with the label sets pre-created so dashboards see zeros, not gaps."""

    def __init__(self, m: Metrics, site: str) -> None:
        self.m, self.site = m, site
        for outcome in OUTCOMES:
            m.cycles.labels(site, outcome)
        for reason in FALLBACK_REASONS:
            m.fallback_active.labels(site, reason).set(0)
        m.deadline_misses.labels(site)
        m.ticks_skipped.labels(site)
        for kind in ("sensor", "forecast", "clock"):
            for result in ("accepted", "rejected", "ignored"):
                m.mqtt_messages.labels(site, "in", kind, result)
        for kind in ("setpoint", "plan", "health", "cycle", "status"):
            m.mqtt_messages.labels(site, "out", kind, "sent")

    def message(self, direction: str, kind: str, result: str) -> None:
        self.m.mqtt_messages.labels(self.site, direction, kind, result).inc()

    def cycle(self, *, outcome: str, reason: str | None, cycle_s: float, solve_s: float | None,
              iterations: int | None, objective: dict[str, float], deadline_miss: bool,
              zone_temps: dict[str, float], setpoints: dict[str, float | None], innovation_k: float | None,
              sensor_ages: dict[str, float], forecast_sources: dict[str, str], band: tuple[float, float],
              t: float) -> None:
        m, s = self.m, self.site
        m.cycles.labels(s, outcome).inc()
        m.cycle_seconds.labels(s).observe(cycle_s)
        if solve_s is not None:
            m.solve_seconds.labels(s).observe(solve_s)
        if iterations is not None:
            m.solver_iterations.labels(s).set(iterations)
        for term, value in objective.items():
            m.objective.labels(s, term).set(value)
        if deadline_miss:
            m.deadline_misses.labels(s).inc()
        for r in FALLBACK_REASONS:
            m.fallback_active.labels(s, r).set(1 if r == reason else 0)
        for zone, temp in zone_temps.items():
            m.zone_temperature.labels(s, zone).set(temp)
        for act, value in setpoints.items():
            m.setpoint.labels(s, act).set(float("nan") if value is None else value)
        if innovation_k is not None:
            m.innovation.labels(s).set(innovation_k)
        for sensor, age in sensor_ages.items():
            m.sensor_age.labels(s, sensor).set(age)
        for name, src in forecast_sources.items():
            for cand in (*FORECAST_SOURCES, *((src,) if src not in FORECAST_SOURCES else ())):
                m.forecast_source.labels(s, name, cand).set(1 if cand == src else 0)
        m.comfort_band.labels(s, "low").set(band[0])
        m.comfort_band.labels(s, "high").set(band[1])
        m.last_cycle.labels(s).set(t)

    def skipped(self, n: int) -> None:
        if n > 0:
            self.m.ticks_skipped.labels(self.site).inc(n)


# -- health ----------------------------------------------------------------------------------------------
@dataclass
class _SiteHealth:
    max_silence_s: float | None  # None: cycles are driven from outside (lockstep), silence is fine
    hung_after_s: float
    last_done: float
    deadline_s: float
    in_flight_since: float | None = None  # since the first cycle that has not completed
    stuck_since: float | None = None  # when the solve now stuck past its deadline started


class Health:
    """/healthz: 200 while every site completes cycles within ~2 periods and none is stuck mid-cycle.

    Red also while a solver runs past its deadline and grace (`solver_stuck` until `solver_returned`), and
    when cycles keep starting without completing: in lockstep each clock starts a cycle that publishes the
    fallback, but a hung solver must not look healthy because cycles keep coming.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._now = monotonic
        self._sites: dict[str, _SiteHealth] = {}
        self._lock = threading.Lock()

    def register(self, site: str, *, period_s: float | None, deadline_s: float) -> None:
        with self._lock:
            silence = None if period_s is None else 2 * period_s + deadline_s
            self._sites[site] = _SiteHealth(silence, 2 * deadline_s + 10.0, self._now(), deadline_s)

    def update(self, site: str, *, period_s: float | None, deadline_s: float) -> None:
        """A reloaded site's period and deadline; what the site is doing (in flight, stuck) is kept."""
        with self._lock:
            h = self._sites[site]
            h.max_silence_s = None if period_s is None else 2 * period_s + deadline_s
            h.hung_after_s, h.deadline_s = 2 * deadline_s + 10.0, deadline_s

    def started(self, site: str) -> None:
        with self._lock:
            h = self._sites[site]
            if h.in_flight_since is None:  # a cycle that never completed still counts from its start
                h.in_flight_since = self._now()

    def solver_stuck(self, site: str, since: float) -> None:
        """The solve started at `since` (monotonic) ran past its deadline and grace."""
        with self._lock:
            self._sites[site].stuck_since = since

    def solver_returned(self, site: str) -> None:
        with self._lock:
            self._sites[site].stuck_since = None

    def completed(self, site: str) -> None:
        with self._lock:
            h = self._sites[site]
            h.in_flight_since, h.last_done = None, self._now()

    def check(self) -> tuple[bool, dict]:
        now, ok, detail = self._now(), True, {}
        with self._lock:
            for name, h in self._sites.items():
                problems = []
                if h.max_silence_s is not None and now - h.last_done > h.max_silence_s:
                    problems.append(f"no completed cycle for {now - h.last_done:.0f} s")
                if h.stuck_since is not None:
                    problems.append(f"solver stuck for {now - h.stuck_since:.0f} s (deadline {h.deadline_s:g} s)")
                if h.in_flight_since is not None and now - h.in_flight_since > h.hung_after_s:
                    problems.append(f"no cycle completed since one started {now - h.in_flight_since:.0f} s ago")
                detail[name] = {"ok": not problems, "problems": problems,
                                "since_last_cycle_s": round(now - h.last_done, 3)}
                ok = ok and not problems
        return ok, detail


# -- HTTP ------------------------------------------------------------------------------------------------
class MetricsServer:
    """/metrics (Prometheus text format) and /healthz on one address, served from daemon threads."""

    def __init__(self, metrics: Metrics, health: Health, address: str = "127.0.0.1", port: int = 9108) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    ok, detail = health.check()
                    body = json.dumps({"ok": ok, "sites": detail}).encode() + b"\n"
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found; try /metrics or /healthz\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s", format % args)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

        self._httpd = Server((address, port), Handler)
        self.address = address
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
