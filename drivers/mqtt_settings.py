"""The site config's `mqtt:` section: broker address, topic root, TLS files and credentials.

Secrets are read from a file or the environment, never from YAML, and never appear in reprs or logs.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from drivers.topics import Topics
from models.errors import ConfigError
from models.yamlio import Cursor

log = logging.getLogger("edge_mpc.mqtt")

# The keys of the `mqtt:` section; the daemon's settings check overrides against this one list.
SETTINGS_KEYS = frozenset({"host", "port", "root", "keepalive", "client_id", "username", "password_file",
                   "password_env", "tls", "ha_discovery"})
_TLS_KEYS = frozenset({"ca", "cert", "key"})


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MqttSettings:
    """Broker connection settings. `password` is only for programmatic use (tests); configs use a file/env."""

    host: str = "127.0.0.1"
    port: int = 1883
    root: str | None = None  # None: the daemon uses Topics.for_site(site)
    keepalive_s: int = 30
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ha_discovery: bool = False
    # field -> (file, line) so errors found at connect time still point into the YAML.
    where: dict[str, tuple[str, int | None]] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name == "where":
                continue
            value = getattr(self, f.name)
            if f.name == "password":
                value = None if value is None else "***"
            parts.append(f"{f.name}={value!r}")
        return f"MqttSettings({', '.join(parts)})"

    def topics(self, site: str) -> Topics:
        return Topics.for_site(site, self.root)

    @classmethod
    def from_cursor(cls, cur: Cursor) -> MqttSettings:
        """Parse the site file's `mqtt:` section; every error names file, line, field, expected, found."""
        cur.expect_mapping()
        if cur.has("password"):
            raise cur.get("password").error(
                "a literal password is not allowed in the config file (secrets never go in YAML)",
                expected="password_file: <path> or password_env: <ENV_VAR>", found="<hidden>")
        cur.only_keys(SETTINGS_KEYS)
        where: dict[str, tuple[str, int | None]] = {}

        def child(key: str, default: Any = ...) -> Cursor:
            c = cur.get(key, default)
            where[key] = (c.file, c.line)
            return c

        host = child("host", "127.0.0.1").as_str()
        if any(ch.isspace() for ch in host) or "/" in host:
            raise cur.get("host").error("not a host name", expected="a host name or IP address")
        root = None
        if cur.has("root"):
            c = child("root")
            try:
                root = Topics(c.as_str()).root
            except ValueError as exc:
                raise c.error(str(exc), expected="a topic root like edge-mpc/v1/<site>") from None

        keepalive_c = child("keepalive", 30)
        keepalive = keepalive_c.as_float(unit="s")
        if not 5 <= keepalive <= 65535:
            raise keepalive_c.error("out of range", expected="between 5 s and 65535 s")

        client_id = child("client_id").as_str() if cur.has("client_id") else None
        username = child("username").as_str() if cur.has("username") else None
        password_file = _path(child("password_file")) if cur.has("password_file") else None
        password_env = child("password_env").as_str() if cur.has("password_env") else None
        if password_file is not None and password_env is not None:
            raise cur.get("password_env").error(
                "give either password_file or password_env, not both", expected="one password source")
        if (password_file or password_env) and username is None:
            raise cur.error("a password needs a username", field=_field(cur, "username"),
                            expected="username: <name>", found=None)

        tls = False
        ca = cert = key = None
        if cur.has("tls"):
            tls_c = child("tls")
            if isinstance(tls_c.value, bool):
                tls = tls_c.value  # `tls: true`: the system's CA store
            else:
                tls_c.expect_mapping()
                tls_c.only_keys(_TLS_KEYS)
                tls = True
                for name in _TLS_KEYS:
                    if tls_c.has(name):
                        c = tls_c.get(name)
                        where[f"tls.{name}"] = (c.file, c.line)
                ca = _path(tls_c.get("ca")) if tls_c.has("ca") else None
                cert = _path(tls_c.get("cert")) if tls_c.has("cert") else None
                key = _path(tls_c.get("key")) if tls_c.has("key") else None
                if (cert is None) != (key is None):
                    raise tls_c.error("a client certificate needs both 'cert' and 'key'",
                                      expected="both cert and key, or neither")

        port_default = 8883 if tls else 1883
        port = child("port", port_default).as_int(minimum=1)
        if port > 65535:
            raise cur.get("port").error("out of range", expected="a TCP port 1..65535")
        ha = child("ha_discovery", False).as_bool()
        return cls(host=host, port=port, root=root, keepalive_s=math.ceil(keepalive), client_id=client_id,
                   username=username, password_file=password_file, password_env=password_env, tls=tls,
                   tls_ca=ca, tls_cert=cert, tls_key=key, ha_discovery=ha, where=where)

    def resolve_password(self) -> str | None:
        """The password from `password`, the file (trailing newline stripped) or the environment."""
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            path = self.password_file
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise self._error("password_file", f"cannot read password file ({exc.strerror})",
                                  expected="a readable file holding the password", found=str(path)) from None
            except UnicodeDecodeError:
                raise self._error("password_file", "password file is not valid UTF-8",
                                  expected="a UTF-8 text file", found=str(path)) from None
            # Editors add a final newline; it is never part of the password. Other whitespace may be.
            password = text.rstrip("\r\n")
            if not password:
                raise self._error("password_file", "password file is empty",
                                  expected="a file holding the password", found=str(path))
            _warn_if_readable_by_others(path)
            return password
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise self._error("password_env",
                                  f"environment variable {self.password_env} is not set or empty",
                                  expected=f"the password in ${self.password_env}", found=None)
            return value
        return None

    def _error(self, key: str, message: str, *, expected: str, found: object) -> ConfigError:
        file, line = self.where.get(key, (None, None))
        return ConfigError(message, file=file, line=line, field=f"mqtt.{key}", expected=expected, found=found)


def _field(cur: Cursor, key: str) -> str:
    return f"{cur.field}.{key}" if cur.field else key


def _path(cur: Cursor) -> Path:
    """Relative paths are relative to the config file, as the site file's header promises."""
    p = Path(cur.as_str()).expanduser()
    if not p.is_absolute() and cur.file and not cur.file.startswith("<"):
        p = Path(cur.file).parent / p
    return p


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("password file %s is readable by group/others; chmod 600 it", path)


# -- the bus ---------------------------------------------------------------------------------------
