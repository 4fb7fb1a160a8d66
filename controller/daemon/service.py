"""The daemon process: `Service` loads the config, builds one `Site` per building, serves metrics, handles
signals (SIGTERM/SIGINT stop, SIGHUP reloads) and talks to systemd (READY, STATUS, WATCHDOG).

A site's cycle is `controller.daemon.site`; its inbound MQTT handling `controller.daemon.inbound`; its
outbound messages and state file `controller.daemon.publish`. The names below re-export what callers
used to import from here.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller.daemon import sdnotify
from controller.daemon.clocks import LockstepClock
from controller.daemon.inbound import FORECAST_RANGES, MAX_FORECAST_ABS, MAX_FUTURE_S, SENSOR_RANGE_C, SensorCache
from controller.daemon.metrics import Health, Metrics, MetricsServer, SiteMetrics
from controller.daemon.settings import Config, SiteConfig, load_config
from controller.daemon.site import SOLVER_GRACE_S, CycleReport, Site, _topics_for
from drivers.bus import Bus
from drivers.topics import Topics
from models.errors import ConfigError

__all__ = ["FORECAST_RANGES", "MAX_FORECAST_ABS", "MAX_FUTURE_S", "SENSOR_RANGE_C", "SOLVER_GRACE_S", "CycleReport",
           "SensorCache", "Service", "Site", "StartInterruptedError", "default_bus_factory",
           "default_controller_factory"]

log = logging.getLogger("edge_mpc.service")

ControllerFactory = Callable[[SiteConfig], Any]
BusFactory = Callable[[SiteConfig, Topics, SiteMetrics], Bus]


def default_controller_factory(cfg: SiteConfig) -> Any:
    from controller.daemon.assemble import build_site_controller  # heavy: numpy/cupy model code

    return build_site_controller(cfg)


def default_bus_factory(cfg: SiteConfig, topics: Topics, metrics: SiteMetrics) -> Bus:
    from drivers.mqtt import MqttBus
    from drivers.mqtt_settings import MqttSettings

    settings = MqttSettings.from_cursor(cfg.mqtt)

    def on_error(topic: str, exc: BaseException) -> None:
        log.warning("%s: message handler failed on %s: %s", cfg.site, topic, exc)

    return MqttBus(settings, client_id=settings.client_id or f"edge-mpc-{cfg.site}-{socket.gethostname()}",
                   status_topic=topics.status, on_message_error=on_error)



class StartInterruptedError(Exception):
    """SIGTERM/SIGINT arrived before the service was running (during model build or warm-up)."""



# -- the process ------------------------------------------------------------------------------------------
class Service:
    """Loads config, builds the sites, serves metrics, handles signals, talks to systemd."""

    def __init__(self, config_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                 environ: Mapping[str, str] | None = None,
                 controller_factory: ControllerFactory = default_controller_factory,
                 bus_factory: BusFactory = default_bus_factory,
                 wall_time: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 make_inputs: Callable[..., Any] | None = None) -> None:
        import os

        self.config_path = Path(config_path)
        self.overrides = list(overrides)
        self.environ = os.environ if environ is None else environ
        self.controller_factory, self.bus_factory = controller_factory, bus_factory
        self.wall, self.mono = wall_time, monotonic
        self.make_inputs = make_inputs
        self.sites: list[Site] = []
        self.metrics: Metrics | None = None
        self.server: MetricsServer | None = None
        self.health = Health(monotonic)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.config: Config | None = None

    def _status(self, text: str) -> None:
        sdnotify.status(text, self.environ)

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Config → model → warm-up → metrics → bus; raises ConfigError for bad input."""
        self._status("loading configuration")
        cfg = load_config(self.config_path, self.overrides, self.environ)
        self.config = cfg
        first = cfg.sites[0]
        self.metrics = Metrics([s.control.deadline_s for s in cfg.sites], backend=first.control.backend,
                               dtype=first.control.dtype)
        controllers = []
        for s in cfg.sites:
            self._status(f"building model for {s.site}")
            ctrl = self.controller_factory(s)
            self._status(f"warming up {s.site}")
            t0 = self.mono()
            ctrl.warm_up()
            log.info("%s: model built and warmed up in %.2f s", s.site, self.mono() - t0)
            controllers.append(ctrl)
        if cfg.metrics.enabled:
            self.server = MetricsServer(self.metrics, self.health, cfg.metrics.address, cfg.metrics.port)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics.address, self.server.port)
        for s, ctrl in zip(cfg.sites, controllers, strict=True):
            sm = self.metrics.site(s.site, s.control.deadline_s)
            bus = self.bus_factory(s, _topics_for(s), sm)
            site = Site(s, ctrl, bus, sm, self.health, wall_time=self.wall, monotonic=self.mono,
                        make_inputs=self.make_inputs)
            site.subscribe()
            self.health.register(s.site, period_s=s.control.step_s if s.clock.mode == "wall" else None,
                                 deadline_s=s.control.deadline_s)
            self.sites.append(site)
        wd = sdnotify.watchdog_interval(self.environ)
        for s in cfg.sites:
            if wd is not None and s.control.deadline_s + SOLVER_GRACE_S >= wd:
                log.warning("%s: deadline %.0f s + %.0f s grace exceeds WatchdogSec=%.0f s: a slow solve "
                            "will get the service restarted", s.site, s.control.deadline_s, SOLVER_GRACE_S, wd)
        for site in self.sites:
            wait = getattr(site.bus, "wait_connected", None)
            if wait is not None and not wait(5.0):
                log.warning("%s: MQTT broker not reachable yet; continuing (fallbacks apply)", site.name)

    # -- run ------------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(*_: object) -> None:
            self.request_stop()
            if not self._running:
                # Still building or warming up (minutes on a GPU): leave now rather than after warm-up.
                raise StartInterruptedError

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def run(self, once: bool = False) -> int:
        self._running = True
        for site in self.sites:
            if site.cfg.clock.mode == "wall":
                site.settle(min(10.0, site.cfg.control.step_s / 10))
            th = threading.Thread(target=site.run, kwargs={"once": once}, name=f"site-{site.name}", daemon=True)
            th.start()
            self._threads.append(th)
        sdnotify.ready(self.environ)
        self._status(f"running {len(self.sites)} site(s)")
        wd = sdnotify.watchdog_interval(self.environ)
        ping_every = wd / 3 if wd else None
        last_ping = last_status = 0.0
        while not self._stop.is_set():
            self._stop.wait(0.2 if ping_every is None else min(0.2, ping_every))
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if once and not any(th.is_alive() for th in self._threads):
                break
            now = self.mono()
            if ping_every is not None and now - last_ping >= ping_every:
                # Only while every site beats: a stuck solver silences its site and systemd restarts us.
                if all(now - s.last_beat < ping_every * 2 for s in self.sites):
                    sdnotify.watchdog(self.environ)
                    last_ping = now
            if now - last_status >= 5.0:
                self._status(self._summary())
                last_status = now
        return self.shutdown()

    def _summary(self) -> str:
        parts = []
        for s in self.sites:
            r = s.last_report
            parts.append(f"{s.name}: " + ("waiting for first cycle" if r is None else
                                          f"seq {r.seq} {r.outcome}" + (f" ({r.reason})" if r.reason else "")))
        return "; ".join(parts)

    def shutdown(self) -> int:
        sdnotify.stopping(self.environ)
        self._status("stopping")
        for site in self.sites:
            site.stop_event.set()
            if isinstance(site.clock, LockstepClock):
                site.clock.interrupt()
        for th in self._threads:
            th.join(timeout=2.0)
        for site in self.sites:
            site.flush_state()
            try:
                site.bus.publish(site.topics.status, b"offline", qos=1, retain=True)
            except Exception as exc:
                log.warning("%s: could not publish offline: %s", site.name, exc)
            with contextlib.suppress(Exception):
                site.bus.close()
        if self.server is not None:
            self.server.close()
        log.info("stopped")
        return 0

    # -- reload ---------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """SIGHUP: validate the new config fully before touching the running sites; keep the old if bad."""
        sdnotify.reloading(self.environ)
        self._status("reloading configuration")
        try:
            new = load_config(self.config_path, self.overrides, self.environ)
            old_names = [s.name for s in self.sites]
            if [s.site for s in new.sites] != old_names:
                raise ConfigError("adding, removing or renaming sites needs a restart", file=str(self.config_path),
                                  expected=", ".join(old_names), found=", ".join(s.site for s in new.sites))
            built = []
            for s in new.sites:
                ctrl = self.controller_factory(s)
                ctrl.warm_up()
                built.append((s, ctrl))
        except ConfigError as exc:
            log.error("reload rejected, still running the previous configuration: %s", exc)
            sdnotify.ready(self.environ)
            self._status("running; last reload rejected: " + str(exc)[:200])
            return False
        except Exception as exc:
            log.error("reload rejected (%s: %s), still running the previous configuration",
                      type(exc).__name__, exc)
            sdnotify.ready(self.environ)
            self._status("running; last reload rejected")
            return False
        for site, (s, ctrl) in zip(self.sites, built, strict=True):
            later = site.swap(s, ctrl)
            if later:
                log.warning("%s: changes to %s take effect after a restart", site.name, ", ".join(later))
            # What alerts and /healthz compare against: the site's new deadline and period.
            if self.metrics is not None:
                self.metrics.deadline.labels(s.site).set(site.cfg.control.deadline_s)
            self.health.update(s.site, period_s=site.cfg.control.step_s if site.cfg.clock.mode == "wall" else None,
                               deadline_s=site.cfg.control.deadline_s)
        log.info("configuration reloaded from %s", self.config_path)
        sdnotify.ready(self.environ)
        self._status("running; configuration reloaded")
        return True
