"""Processes that `edge-mpc bench lockstep` and the tests run beside the daemon: a private mosquitto broker
on loopback, and the real daemon as a child process.

One copy, used by the bench and by the tests (tests/integration, tests/daemon, tests/faults), so that what
the bench measures is what the tests check.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.tools.paths import ROOT
from drivers.mqtt_settings import MqttSettings

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    # Debian installs the broker in /usr/sbin, which is not on a normal user's PATH.
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


def rss_of(pid: int) -> int | None:
    """VmRSS of a process in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Broker:
    """One mosquitto process on loopback; `kill`/`start`/`restart` keep the port so clients can reconnect.

    `config` is a whole config text with `{port}` left to fill; without it one is generated: anonymous or
    with a password file and ACL, optionally TLS, `set_tcp_nodelay` on unless `nodelay=False`.
    """

    def __init__(self, workdir: str | Path, *, port: int | None = None, config: str | None = None,
                 tls: TlsFiles | None = None, password_file: Path | None = None, acl_file: Path | None = None,
                 nodelay: bool = True) -> None:
        self.exe = mosquitto_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.tls, self.password_file, self.acl_file, self.nodelay = tls, password_file, acl_file, nodelay
        self._config = config
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def config_text(self) -> str:
        if self._config is not None:
            return self._config.replace("{port}", str(self.port))
        lines = ["per_listener_settings false", f"listener {self.port} {HOST}",
                 f"set_tcp_nodelay {'true' if self.nodelay else 'false'}", "persistence false",
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
                 "log_type information",
                 # As root, mosquitto would switch to the 'mosquitto' user and lose access to its workdir.
                 f"user {pwd.getpwuid(os.getuid()).pw_name}"]
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
                      "require_certificate false"]
        if self.password_file or self.acl_file:
            lines.append("allow_anonymous false")
            if self.password_file:
                lines.append(f"password_file {self.password_file}")
            if self.acl_file:
                lines.append(f"acl_file {self.acl_file}")
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        if self.exe is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.conf_path.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf_path)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    self.starts += 1
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port}:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to say goodbye, as in a crash or power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def settings(self, **overrides: object) -> MqttSettings:
        """Client settings for this broker (TLS with its CA when it has one)."""
        base: dict = {"host": HOST, "port": self.port, "keepalive_s": 10}
        if self.tls:
            base.update(tls=True, tls_ca=self.tls.ca)
        base.update(overrides)
        return MqttSettings(**base)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class CliProcess:
    """`python -m controller.tools.cli ARGS` as a child process, its output lines kept with their arrival
    time (time.monotonic()) for assertions and benchmarks."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        e = dict(os.environ if env is None else env)
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY"):
            e.pop(var, None)
        e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        self.lines: list[tuple[float, str]] = []  # (time.monotonic(), line)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "controller.tools.cli", *args], cwd=ROOT, env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name="cli-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int | None:
        return rss_of(self.proc.pid)

    def grep(self, pattern: str, since: float = 0.0) -> list[tuple[float, str]]:
        rx = re.compile(pattern)
        with self._lock:
            return [(t, s) for t, s in self.lines if t >= since and rx.search(s)]

    def matches(self, pattern: str) -> list[re.Match]:
        rx = re.compile(pattern)
        with self._lock:
            return [m for m in (rx.search(s) for _, s in self.lines) if m]

    def wait_line(self, pattern: str, timeout: float, since: float = 0.0) -> tuple[float, str] | None:
        """The first matching line (and when it came), or None at the timeout or once the process is gone."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.grep(pattern, since)
            if got:
                return got[0]
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def wait_match(self, pattern: str, timeout: float, count: int = 1) -> re.Match:
        """The `count`-th match of `pattern`; AssertionError with the recent output if it does not come."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.matches(pattern)
            if len(got) >= count:
                return got[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no line /{pattern}/ (x{count}) within {timeout} s:\n{self.output()}")

    def output(self, last: int = 60) -> str:
        with self._lock:
            return "\n".join(s for _, s in self.lines[-last:])

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(2)


class DaemonProcess(CliProcess):
    """`edge-mpc run CONFIG --log-level L --set ...` as a child process."""

    def __init__(self, config: str | Path, overrides: Sequence[str] = (), *, log_level: str = "INFO",
                 env: dict[str, str] | None = None) -> None:
        args = ["run", str(config), "--log-level", log_level]
        for item in overrides:
            args += ["--set", item]
        super().__init__(args, env)
