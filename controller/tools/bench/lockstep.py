"""Lockstep round-trip benchmark: the real daemon (`edge-mpc run`, clock.mode=lockstep) against a private
mosquitto on loopback, driven by `controller.tools.emulator.LockstepEmulator` with a mismatched virtual building.

What is measured, per cycle (the first `--warmup` cycles are dropped):

- ``rt``: wall time from the emulator publishing ``<root>/clock`` to the ``<root>/cycle`` ack reaching it:
  four MQTT hops (emulator → broker → daemon, daemon → broker → emulator), the daemon's thread hand-offs,
  the whole controller call (estimator, horizon data, solve), fallback and clamp, and the publishing of
  the setpoints that precede the ack. Plan, health, metrics and the state file come after the ack.
- ``solve``: the solver time the daemon reports for that cycle (``solve_s`` of the health message with
  the same ``t``, published right after the ack and collected by the end of the run).
- ``overhead = rt - solve``: the round trip excluding the solve. It still contains the estimator and the
  horizon data of the controller call (not part of ``solve_s``); that is the honest figure the 5 ms
  target is about. The house-1 site (one zone, a ~10 ms solve) gives a cross-check where the solve is small.

The daemon's resident memory is read from ``/proc/<pid>/status`` (VmRSS) after the run. Both the broker
(``set_tcp_nodelay true``) and both clients (``TCP_NODELAY`` in ``drivers.mqtt``) have Nagle off;
``--broker-nagle`` leaves it on in the broker to show what that costs.

``--sites N`` runs N copies of the site (own names and topic roots) as N daemon processes on one broker,
each driven back to back by its own emulator, for sizing a server: it reports the daemons' CPU time per
cycle (``/proc/<pid>/stat`` utime+stime over the measured cycles, so everything a cycle costs the daemon:
MQTT, estimator, solve, plan/health JSON, metrics, state file), hence cycles per second per fully used
core, and the aggregate cycles per wall second of the N together. The emulators share the bench process
(one GIL), so the aggregate is a lower bound of what the daemons could do; the per-core figure is not
affected by that.

The helpers here (`Mosquitto`, `DaemonProcess`, `make_plant`) are also what the daemon's lockstep and fault
tests use to run the real daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from controller.tools import paths
from controller.tools.harness import Broker, DaemonProcess, mosquitto_binary

SITES = {"office-20": paths.SITES / "office-20.yaml", "house-1": paths.SITES / "house-1.yaml",
         "radiant": paths.SITES / "radiant.yaml", "radiant-loop": paths.SITES / "radiant-loop.yaml"}
ROOT = paths.ROOT
PROBLEM = {"office-20": "R1", "house-1": "house-1"}
START = _dt.datetime(2026, 1, 12, tzinfo=ZoneInfo("America/Chicago")).timestamp()  # a winter Monday


def lockstep_overrides(port: int, state_dir: str | Path, *extra: str) -> list[str]:
    return ["clock.mode=lockstep", f"mqtt.port={port}", "mqtt.host=127.0.0.1", f"state.dir={state_dir}",
            "metrics.port=0", *extra]


def make_plant(site: Any, *, mismatch: bool = True, seed: int = 0, noise_k: float = 0.05) -> tuple[Any, Any]:
    """(VirtualBuilding, LocalThermostat) for a site config: real weather, a deliberately different model."""
    from controller.daemon.forecast_sources import builder_from_site
    from controller.tools.emulator import LocalThermostat
    from drivers.virtual_building import VirtualBuilding, mismatch_scale
    from models import load_building
    from models.schedules import parse_schedules

    net = load_building(site.model_path)
    # The emulated building is the model with its physics off by realistic amounts (as in `edge-mpc demo`).
    scale = mismatch_scale(net.params.names) if mismatch else {}
    sim = net.compile(site.control.step_s)
    x0 = np.full(sim.n, 21.0)
    plant = VirtualBuilding(net, dt=site.control.step_s, disturbances=builder_from_site(site, sim),
                            param_scale=scale, noise_k=noise_k, quantisation_k=0.1, seed=seed, substeps=3, x0=x0)
    schedules = parse_schedules(site.schedules) if site.schedules.value else {}
    c = site.comfort
    fallback = LocalThermostat(plant, schedule=schedules.get(c.schedule), tz=site.timezone,
                               occupied=(c.occupied.low, c.occupied.high),
                               unoccupied=(c.unoccupied.low, c.unoccupied.high))
    return plant, fallback


def wait_online(bus: Any, topics: Any, timeout: float) -> bool:
    """Wait for the daemon's retained `online` status (its subscriptions follow in the same packet burst)."""
    online = threading.Event()
    bus.subscribe(topics.status, lambda _t, p: online.set() if p == b"online" else None)
    return online.wait(timeout)


def run_one(site_path: Path, cycles: int, warmup: int, *, nodelay: bool = True,
            backend: str = "numpy", gap_s: float = 0.0) -> dict[str, Any]:
    from controller.daemon.settings import load_site
    from controller.tools.emulator import LockstepEmulator
    from drivers.mqtt import MqttBus
    from drivers.mqtt_settings import MqttSettings

    site = load_site(site_path, [f"control.backend={backend}"], environ={})
    with tempfile.TemporaryDirectory(prefix="edge-mpc-bench-") as tmp, \
            Broker(Path(tmp) / "broker", nodelay=nodelay) as broker:
        daemon = DaemonProcess(site_path, lockstep_overrides(broker.port, Path(tmp) / "state",
                                                             f"control.backend={backend}"), log_level="WARNING")
        settings = MqttSettings(port=broker.port, keepalive_s=30)
        topics = MqttSettings.from_cursor(site.mqtt).topics(site.site)
        bus = MqttBus(settings, client_id=f"bench-emulator-{os.getpid()}",
                      status_topic=f"{topics.root}/emulator/status")
        solve: dict[float, float] = {}

        def on_health(_topic: str, payload: bytes) -> None:
            try:
                h = json.loads(payload)
                if isinstance(h.get("solve_s"), int | float):
                    solve[float(h["ts"])] = float(h["solve_s"])
            except (ValueError, KeyError, TypeError):
                pass

        try:
            if not wait_online(bus, topics, 180.0):
                raise RuntimeError("the daemon did not come online:\n" + daemon.output())
            bus.subscribe(topics.health, on_health)
            plant, fallback = make_plant(site)
            emu = LockstepEmulator(bus, topics, plant, ack_timeout_s=60.0, fallback=fallback, resend_s=5.0)
            if not bus.wait_subscribed(10):
                raise RuntimeError("emulator subscriptions not acknowledged")
            res = emu.run(steps=warmup + cycles, start=START,
                          on_step=(lambda k, t: time.sleep(gap_s)) if gap_s > 0 else None)
            rss = daemon.rss_bytes()
        finally:
            bus.close()
            daemon.stop()
    keep = slice(warmup, None)
    rt = res.ack_wait_s[keep]
    sv = np.array([solve.get(float(t), np.nan) for t in res.t[keep]])
    ok = np.isfinite(rt) & np.isfinite(sv)
    over = rt[ok] - sv[ok]

    def q(a: np.ndarray, p: float) -> float:
        return float(np.percentile(a, p)) if a.size else float("nan")

    return {"suite": "lockstep", "problem": PROBLEM.get(site.site, site.site), "site": site.site,
            "backend": backend, "dtype": site.control.dtype, "batch": 1, "horizon": site.control.horizon,
            "cycles": int(ok.sum()), "misses": res.misses, "broker_nodelay": nodelay, "gap_s": gap_s,
            "rt_median_s": q(rt[ok], 50), "rt_p95_s": q(rt[ok], 95),
            "overhead_median_s": q(over, 50), "overhead_p95_s": q(over, 95),
            "solve_median_s": q(sv[ok], 50), "rss_bytes": rss}


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_many(site_path: Path, n: int, cycles: int, warmup: int, *, backend: str = "numpy") -> dict[str, Any]:
    """N copies of a site as N daemons on one broker, all driven at once; CPU per cycle and throughput."""
    from controller.daemon.settings import load_site
    from controller.tools.emulator import LockstepEmulator
    from drivers.mqtt import MqttBus
    from drivers.mqtt_settings import MqttSettings

    base = load_site(site_path, [f"control.backend={backend}"], environ={})
    names = [f"{base.site}-{k}" for k in range(n)]
    with tempfile.TemporaryDirectory(prefix="edge-mpc-bench-") as tmp, \
            Broker(Path(tmp) / "broker") as broker:
        daemons = [DaemonProcess(site_path, lockstep_overrides(
            broker.port, Path(tmp) / "state", f"control.backend={backend}", f"site={name}",
            f"mqtt.root=edge-mpc/v1/{name}"), log_level="WARNING") for name in names]
        rows: list[dict[str, Any]] = [{} for _ in names]
        errors: list[str] = []
        started = threading.Barrier(n)

        def drive(k: int) -> None:
            site = load_site(site_path, [f"control.backend={backend}", f"site={names[k]}",
                                         f"mqtt.root=edge-mpc/v1/{names[k]}"], environ={})
            topics = MqttSettings.from_cursor(site.mqtt).topics(site.site)
            bus = MqttBus(MqttSettings(port=broker.port, keepalive_s=30), client_id=f"bench-emu-{k}-{os.getpid()}",
                          status_topic=f"{topics.root}/emulator/status")
            row = rows[k]
            try:
                if not wait_online(bus, topics, 300.0):
                    raise RuntimeError(f"{names[k]} did not come online:\n" + daemons[k].output())
                plant, fallback = make_plant(site, seed=k)
                emu = LockstepEmulator(bus, topics, plant, ack_timeout_s=120.0, fallback=fallback, resend_s=10.0)
                if not bus.wait_subscribed(10):
                    raise RuntimeError("emulator subscriptions not acknowledged")
                started.wait(600)  # every daemon up before anyone starts: the measured phases overlap

                def mark(step: int, _t: float) -> None:
                    if step == warmup - 1:
                        row["cpu0"], row["wall0"] = cpu_seconds(daemons[k].pid), time.monotonic()

                if warmup == 0:
                    mark(-1, 0.0)
                res = emu.run(steps=warmup + cycles, start=START, on_step=mark)
                row["cpu1"], row["wall1"] = cpu_seconds(daemons[k].pid), time.monotonic()
                row["misses"], row["rss"] = res.misses, daemons[k].rss_bytes()
            except Exception as exc:  # reported after all threads are done
                errors.append(f"{names[k]}: {exc}")
                with contextlib.suppress(threading.BrokenBarrierError):
                    started.abort()
            finally:
                bus.close()

        threads = [threading.Thread(target=drive, args=(k,), daemon=True) for k in range(n)]
        try:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            for d in daemons:
                d.stop()
        if errors:
            raise RuntimeError("; ".join(errors))
    cpu = np.array([r["cpu1"] - r["cpu0"] for r in rows]) / cycles
    wall = max(r["wall1"] for r in rows) - min(r["wall0"] for r in rows)
    rss = [r["rss"] for r in rows if r.get("rss")]
    cpu_med = float(np.median(cpu))
    return {"suite": "lockstep-sites", "problem": PROBLEM.get(base.site, base.site), "site": base.site,
            "backend": backend, "sites": n, "cycles": n * cycles, "misses": int(sum(r["misses"] for r in rows)),
            "cpu_per_cycle_s": cpu_med, "cpu_per_cycle_max_s": float(cpu.max()),
            "cycles_per_core_s": 1.0 / cpu_med if cpu_med > 0 else float("nan"),
            "aggregate_cycles_per_s": n * cycles / wall if wall > 0 else float("nan"),
            "rss_bytes": int(np.median(rss)) if rss else None}


def main(argv: Sequence[str] | None = None) -> int:
    from controller.tools.bench.measure import Report, machine_line

    ap = argparse.ArgumentParser(prog="edge-mpc bench lockstep", description=(
        "Clock -> cycle-ack round trip of the real daemon over a private mosquitto on loopback, with the "
        "solve time the daemon reports subtracted, and the daemon's resident memory."))
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--cycles", type=int, default=100, help="measured cycles per site (default 100)")
    ap.add_argument("--warmup", type=int, default=5, help="cycles dropped at the start (default 5)")
    ap.add_argument("--site", action="append", default=None,
                    help="office-20 (R1, default), house-1, or a site YAML path; repeatable")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--gap", type=float, default=0.0, metavar="S",
                    help="pause between an ack and the next clock (default 0: back to back, so a cycle may "
                         "also wait for the previous one's state write)")
    ap.add_argument("--sites", type=int, default=None, metavar="N",
                    help="sizing mode: N copies of each --site as N daemons on one broker, driven at once; "
                         "reports daemon CPU per cycle, cycles per second per core and aggregate cycles/s")
    ap.add_argument("--broker-nagle", action="store_true",
                    help="leave Nagle on in the broker (set_tcp_nodelay false), to see what it costs")
    args = ap.parse_args(argv)
    if args.cycles < 1 or args.warmup < 0:
        ap.error("--cycles must be >= 1 and --warmup >= 0")
    if args.sites is not None and args.sites < 1:
        ap.error("--sites must be >= 1")
    if mosquitto_binary() is None:
        print("error: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    if args.sites is not None:
        return _sizing(args)
    rep = Report([("problem", "problem", ""), ("cycles", "cycles", "d"), ("rt_median_ms", "rt med ms", ".2f"),
                  ("rt_p95_ms", "rt p95 ms", ".2f"), ("solve_median_ms", "solve med ms", ".2f"),
                  ("overhead_median_ms", "rt-solve med ms", ".2f"), ("overhead_p95_ms", "rt-solve p95 ms", ".2f"),
                  ("rss_mb", "daemon RSS MB", ".1f"), ("misses", "misses", "d")], args.json)
    if not args.json:
        print(machine_line(args.backend))
    for name in args.site or ["office-20"]:
        path = SITES.get(name, Path(name))
        if not Path(path).is_file():
            print(f"error: no site '{name}' (office-20, house-1 or a YAML path)", file=sys.stderr)
            return 2
        row = run_one(Path(path), args.cycles, args.warmup, nodelay=not args.broker_nagle, backend=args.backend,
                      gap_s=args.gap)
        if args.json:
            rep.row(**row)
        else:
            rep.row(**row, **{k.replace("_s", "_ms"): v * 1e3 for k, v in row.items() if k.endswith("_s")},
                    rss_mb=(row["rss_bytes"] or 0) / 2**20)
    return 0


def _sizing(args: argparse.Namespace) -> int:
    from controller.tools.bench.measure import Report, machine_line

    rep = Report([("problem", "problem", ""), ("sites", "sites", "d"), ("cycles", "cycles", "d"),
                  ("cpu_ms", "CPU ms/cycle", ".2f"), ("cpu_max_ms", "max site", ".2f"),
                  ("cycles_per_core_s", "cycles/s/core", ".1f"), ("aggregate_cycles_per_s", "all cycles/s", ".1f"),
                  ("rss_mb", "RSS MB/site", ".1f"), ("misses", "misses", "d")], args.json)
    if not args.json:
        print(machine_line(args.backend) + f", {os.cpu_count()} cores shared by all {args.sites} daemons, "
              "the broker and the emulators")
    for name in args.site or ["office-20"]:
        path = SITES.get(name, Path(name))
        if not Path(path).is_file():
            print(f"error: no site '{name}' (office-20, house-1 or a YAML path)", file=sys.stderr)
            return 2
        row = run_many(Path(path), args.sites, args.cycles, args.warmup, backend=args.backend)
        if args.json:
            rep.row(**row)
        else:
            rep.row(**row, cpu_ms=row["cpu_per_cycle_s"] * 1e3, cpu_max_ms=row["cpu_per_cycle_max_s"] * 1e3,
                    rss_mb=(row["rss_bytes"] or 0) / 2**20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
