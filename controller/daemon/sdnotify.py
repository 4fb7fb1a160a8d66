"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET (path or '@' abstract name).

Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op returning False, so the daemon code never
needs to know how it was started.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(msg: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `msg` (e.g. "READY=1") to the service manager; False if not under systemd or on error."""
    addr = environ.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(msg.encode("utf-8"))
        return True
    except OSError:
        return False  # systemd gone or socket full: never let a notification take the daemon down


def ready(environ: Mapping[str, str] = os.environ) -> bool:
    return notify("READY=1", environ)


def watchdog(environ: Mapping[str, str] = os.environ) -> bool:
    return notify("WATCHDOG=1", environ)


def status(text: str, environ: Mapping[str, str] = os.environ) -> bool:
    # STATUS= is one line in `systemctl status`; a newline would end the assignment.
    return notify("STATUS=" + " ".join(text.split()), environ)


def stopping(environ: Mapping[str, str] = os.environ) -> bool:
    return notify("STOPPING=1", environ)


def reloading(environ: Mapping[str, str] = os.environ) -> bool:
    return notify("RELOADING=1", environ)


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds systemd waits for WATCHDOG=1 (WatchdogSec=), or None when no watchdog is armed for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked from the main PID)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
