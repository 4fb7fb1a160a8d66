"""`edge-mpc run --sites DIR`: every site file in a folder, each in its own daemon process, supervised.

Isolation is by process, the only kind that holds for every failure: a site file that does not validate
is reported (one line naming file and field) and left out; a site process that crashes (an exception
that escapes, a segfault in a native library, the OOM killer) is restarted with exponential backoff; a
site whose solver hangs stops its watchdog pings, exactly as under systemd's WatchdogSec, and its process
is stopped and restarted. None of these touches the other sites' processes, their brokers or metrics.

A multi-site file (`sites: [...]`) in the folder runs its sites in one process: less memory per site, with
isolation per group rather than per site. The site files it lists go in a sub-folder (a file found both at
the top and in a group would run twice, and is refused).

Each child is the ordinary `edge-mpc run FILE` (same overrides and log level), with its own
`NOTIFY_SOCKET` pointing at this supervisor, so everything a single-site daemon does (SIGHUP reload,
state file, last will, metrics endpoint, /healthz) holds per site. Children write their logs to the
supervisor's stderr; their lines name the site.

Signals: SIGTERM/SIGINT stop every child (SIGTERM, then SIGKILL after a grace) and exit 0. SIGHUP rescans
the folder: new files start, removed ones stop, a file that failed validation is tried again, running
children get SIGHUP and reload themselves (a bad edit is rejected by that child, which keeps running).
Under systemd, the supervisor itself speaks sd_notify: READY once the children are launched, WATCHDOG
while its own loop runs, STATUS with a per-site summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controller.daemon import sdnotify
from controller.daemon.settings import load_config
from models.errors import ConfigError

log = logging.getLogger("edge_mpc.fleet")

SITE_SUFFIXES = (".yaml", ".yml")
# Restart backoff: 1 s after the first failure, doubling up to 60 s; a child that has run this long
# without failing starts over at 1 s.
BACKOFF_S = (1.0, 60.0)
STABLE_AFTER_S = 300.0
# After SIGTERM, a child gets this long to publish `offline` and save its state before SIGKILL.
STOP_GRACE_S = 5.0


def site_files(directory: Path) -> list[Path]:
    """The site files of a folder, in name order (hidden files and editor backups are not sites)."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in SITE_SUFFIXES and not p.name.startswith("."))


@dataclass
class Child:
    """One site file and the process running it."""

    path: Path
    name: str
    mtime: float
    state: str = "new"  # starting, running, stopping, waiting (backoff), bad-config, done
    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None
    sock_path: str = ""
    started: float = 0.0
    last_ping: float = 0.0
    kill_at: float | None = None
    failures: int = 0
    next_start: float = 0.0
    restart: bool = True
    rc: int | None = None
    error: str | None = None
    ports: tuple = field(default_factory=tuple)
    sites: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Fleet:
    """Runs and supervises one `edge-mpc run FILE` process per site file of a folder."""

    def __init__(self, directory: str | Path, overrides: Sequence[str] = (), *,
                 environ: Mapping[str, str] | None = None, log_level: str = "INFO", once: bool = False,
                 watchdog_s: float = 120.0, start_timeout_s: float = 600.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.overrides = list(overrides)
        self.environ = dict(os.environ if environ is None else environ)
        self.log_level, self.once = log_level, once
        self.watchdog_s, self.start_timeout_s = watchdog_s, start_timeout_s
        self.mono = monotonic
        self.children: dict[Path, Child] = {}
        self._stop = False
        self._reload = False
        self._tmp: str | None = None  # the children's notify sockets, made on first launch
        self._sockets = 0

    # -- files ----------------------------------------------------------------------------------------
    def validate(self, path: Path) -> tuple[str, tuple[str, ...], tuple]:
        """(process name, site names, metrics endpoint) of a file; ConfigError if it cannot run beside the
        others. A multi-site file (`sites: [...]`) runs its sites in one process (less memory, isolation
        per group); the files it lists must not also sit in the folder, or they would run twice."""
        cfg = load_config(path, self.overrides, self._child_environ_base())
        names = tuple(s.site for s in cfg.sites)
        multi = len(cfg.sites) != 1 or cfg.sites[0].path.resolve() != path.resolve()
        if multi:
            top = {p.resolve() for p in site_files(self.directory)}
            for s in cfg.sites:
                if s.path.resolve() in top:
                    raise ConfigError(f"lists {s.path.name}, which is itself a site file of the folder and would "
                                      "run twice", file=str(path), field="sites",
                                      expected="the group's site files in a sub-folder", found=s.path.name)
        endpoint: tuple = ()
        if cfg.metrics.enabled and cfg.metrics.port:
            endpoint = (cfg.metrics.address, cfg.metrics.port)
        for other in self.children.values():
            if other.path == path or other.state in ("bad-config", "done"):
                continue
            for name in set(names) & set(other.sites):
                raise ConfigError(f"site name '{name}' is already run from {other.path.name}",
                                  file=str(path), field="site", expected="a name no other file uses", found=name)
            if endpoint and other.ports == endpoint:
                raise ConfigError(f"metrics port {endpoint[1]} is already used by {other.name} "
                                  f"({other.path.name})", file=str(path), field="metrics.port",
                                  expected="a free port per process, or 0 for any", found=endpoint[1])
        return (names[0] if not multi else path.stem), names, endpoint

    def _child_environ_base(self) -> dict[str, str]:
        env = dict(self.environ)
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)
        return env

    def scan(self) -> None:
        """Bring the children in line with the folder: start new files, stop removed ones, retry bad ones."""
        now = self.mono()
        present = {p.resolve(): p for p in site_files(self.directory)}
        for key, child in list(self.children.items()):
            if key in present:
                continue
            if child.proc is None:  # nothing running for it (any more): forget it
                del self.children[key]
                continue
            log.info("%s removed from %s; stopping site %s", child.path.name, self.directory, child.name)
            child.restart = False
            self._terminate(child, now)
        for key, path in present.items():
            child = self.children.get(key)
            mtime = path.stat().st_mtime
            if child is None:
                child = Child(path=path, name=path.stem, mtime=mtime)
                self.children[key] = child
                self._launch(child, now)
            elif child.state == "bad-config" or (child.state == "done" and not self.once):
                child.mtime = mtime
                child.restart = True
                self._launch(child, now)

    # -- processes ------------------------------------------------------------------------------------
    def _launch(self, child: Child, now: float) -> None:
        try:
            child.name, child.sites, child.ports = self.validate(child.path)
        except ConfigError as exc:
            child.state, child.error = "bad-config", str(exc)
            log.error("site file not started: %s", exc)
            return
        except Exception as exc:  # an unreadable file, a YAML library error: still only this site
            child.state, child.error = "bad-config", f"{child.path}: {type(exc).__name__}: {exc}"
            log.error("site file not started: %s", child.error)
            return
        try:
            self._spawn(child, now)
        except OSError as exc:  # no socket or process to be had now (fd or process limits): back off
            log.error("site %s could not be started: %s", child.name, exc)
            self._close_socket(child)
            child.failures += 1
            child.state = "waiting"
            child.next_start = now + min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (child.failures - 1))

    def _spawn(self, child: Child, now: float) -> None:
        self._close_socket(child)
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="edge-mpc-fleet-")
        self._sockets += 1
        child.sock_path = os.path.join(self._tmp, f"{self._sockets}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(child.sock_path)
        sock.setblocking(False)
        child.sock = sock
        env = self._child_environ_base()
        env["NOTIFY_SOCKET"] = child.sock_path
        env["WATCHDOG_USEC"] = str(int(self.watchdog_s * 1e6))
        args = [sys.executable, "-m", "controller.tools.cli", "run", str(child.path), "--log-level", self.log_level]
        if self.once:
            args.append("--once")
        for item in self.overrides:
            args += ["--set", item]
        child.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        child.state, child.started, child.last_ping, child.kill_at, child.error = "starting", now, now, None, None
        log.info("site %s (%s) started as pid %d", child.name, child.path.name, child.proc.pid)

    def _close_socket(self, child: Child) -> None:
        if child.sock is not None:
            child.sock.close()
            child.sock = None
            with contextlib.suppress(OSError):
                os.unlink(child.sock_path)

    def _terminate(self, child: Child, now: float, *, why: str | None = None) -> None:
        if child.proc is None or child.proc.poll() is not None:
            if child.state == "waiting":
                child.state = "done"
            return
        if why:
            log.error("site %s (pid %d): %s; stopping it", child.name, child.proc.pid, why)
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        child.state, child.kill_at = "stopping", now + STOP_GRACE_S

    def _drain(self, child: Child, now: float) -> None:
        while child.sock is not None:
            try:
                data = child.sock.recv(4096).decode("utf-8", "replace")
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for line in data.splitlines():
                if line == "READY=1":
                    if child.state == "starting":
                        log.info("site %s ready", child.name)
                        child.state = "running"
                    child.last_ping = now
                elif line == "WATCHDOG=1":
                    child.last_ping = now

    def _check(self, child: Child, now: float) -> None:
        self._drain(child, now)
        proc = child.proc
        if proc is not None:
            rc = proc.poll()
            if rc is None:
                if child.state == "stopping" and child.kill_at is not None and now >= child.kill_at:
                    log.error("site %s (pid %d) did not stop in %.0f s; killing it", child.name, proc.pid,
                              STOP_GRACE_S)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    child.kill_at = None
                elif child.state == "running" and now - child.last_ping > self.watchdog_s:
                    self._terminate(child, now, why=f"no watchdog ping for {now - child.last_ping:.0f} s "
                                    "(a hung solver or a stuck process)")
                elif child.state == "starting" and now - child.started > self.start_timeout_s:
                    self._terminate(child, now, why=f"not ready after {self.start_timeout_s:.0f} s")
                return
            self._exited(child, rc, now)
        elif child.state == "waiting" and now >= child.next_start and child.restart and not self._stop:
            self._launch(child, now)

    def _exited(self, child: Child, rc: int, now: float) -> None:
        assert child.proc is not None
        pid, ran = child.proc.pid, now - child.started
        child.proc, child.rc = None, rc
        self._close_socket(child)
        if self.once or self._stop or not child.restart:
            child.state = "done"
            log.info("site %s (pid %d) exited with %d", child.name, pid, rc)
            return
        if rc == 2:
            # Bad input found by the daemon itself (model file, a value only it checks): restarting would
            # fail the same way. It is retried on SIGHUP or when its file changes.
            child.state, child.error = "bad-config", f"exit 2 (see its log above): {child.path}"
            log.error("site %s (pid %d) refused its configuration; not restarted until %s changes or "
                      "SIGHUP", child.name, pid, child.path.name)
            return
        child.failures = 1 if ran > STABLE_AFTER_S else child.failures + 1
        delay = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (child.failures - 1))
        child.state, child.next_start = "waiting", now + delay
        log.error("site %s (pid %d) exited with %s after %.0f s; restarting in %.0f s", child.name, pid,
                  _describe(rc), ran, delay)

    def _retry_changed(self, now: float) -> None:
        for child in self.children.values():
            if child.state != "bad-config":
                continue
            with contextlib.suppress(OSError):
                mtime = child.path.stat().st_mtime
                if mtime != child.mtime:
                    child.mtime = mtime
                    log.info("%s changed; trying it again", child.path.name)
                    self._launch(child, now)

    # -- the loop -------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def request_stop(self) -> None:
        self._stop = True

    def request_reload(self) -> None:
        self._reload = True

    def summary(self) -> str:
        parts = [f"{c.name}: {c.state}" + (f" (pid {c.pid})" if c.pid else "") for c in self.children.values()]
        return "; ".join(parts) or "no site files"

    def start(self) -> None:
        """Launch a process for every valid site file; ConfigError if the folder holds no site file."""
        if not self.directory.is_dir():
            raise ConfigError("not a folder", file=str(self.directory), expected="a folder of site files")
        if not site_files(self.directory):
            raise ConfigError("no site files in the folder", file=str(self.directory),
                              expected="one or more *.yaml site files")
        self.scan()

    def run(self) -> int:
        sdnotify.ready(self.environ)
        wd = sdnotify.watchdog_interval(self.environ)
        last_ping = last_status = last_mtime = 0.0
        try:
            while True:
                now = self.mono()
                if self._reload:
                    self._reload = False
                    log.info("SIGHUP: rescanning %s and reloading the running sites", self.directory)
                    self.scan()
                    for child in self.children.values():
                        # Only to children past start-up: before its handlers are installed, SIGHUP would
                        # end a child (one still starting reads the folder's current file anyway).
                        if child.proc is not None and child.state == "running":
                            with contextlib.suppress(ProcessLookupError):
                                child.proc.send_signal(signal.SIGHUP)
                if self._stop:
                    for child in self.children.values():
                        child.restart = False
                        if child.state != "stopping":
                            self._terminate(child, now)
                for child in list(self.children.values()):
                    self._check(child, now)
                if not self.once and not self._stop and now - last_mtime >= 2.0:
                    self._retry_changed(now)
                    last_mtime = now
                if (self._stop or self.once) and all(c.proc is None for c in self.children.values()):
                    break
                if wd is not None and now - last_ping >= wd / 3:
                    sdnotify.watchdog(self.environ)
                    last_ping = now
                if now - last_status >= 5.0:
                    sdnotify.status(self.summary(), self.environ)
                    last_status = now
                time.sleep(0.1)
        finally:
            self._kill_all()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
        if self.once:
            codes = [c.rc if c.rc is not None else 2 for c in self.children.values()]
            return max(codes, default=0) if any(codes) else 0
        return 0

    def _kill_all(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(5)
            self._close_socket(child)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies (SIGKILL, OOM) so no site runs unsupervised
    beside the one a restarted supervisor starts. Linux only; elsewhere a no-op."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _describe(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-rc).name}"
    return f"code {rc}"
