"""Atomic, self-checking state file: a restart continues from it, a torn or tampered file is discarded.

Write path: temp file in the same directory → fsync → rename over the old file → fsync the directory, so
after a crash at any instant the file is either the old state or the new one. The sha256 of the canonical
body still guards against what rename cannot (disk corruption, a hand edit, a copy cut short).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = "edge-mpc-state"
VERSION = 1


@dataclass(frozen=True)
class Loaded:
    seq: int
    saved_at: float
    body: dict[str, Any]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8")


class StateStore:
    """`<dir>/<name>.state.json` for one site. Not thread-safe: one writer (the site's cycle loop)."""

    def __init__(self, directory: str | os.PathLike, name: str) -> None:
        self.dir = Path(directory)
        self.path = self.dir / f"{name}.state.json"
        self._name = name
        self.seq = 0  # highest sequence number ever saved or read, even from state too old to use
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_leftover_temps()
        peek = self._read()
        if peek is not None:
            self.seq = peek.seq

    def next_seq(self) -> int:
        """A sequence number larger than any used before, across restarts."""
        self.seq += 1
        return self.seq

    def reserve(self, n: int = 1) -> None:
        """Durably move the sequence number on by `n`, keeping the saved state and its age as they are.

        Setpoints go out before the state recording their seq is saved. Skipping one on start covers one
        crash in between; writing the skip down covers the same crash twice in a row (else the second
        restart would skip to the number the first restart already used).
        """
        got = self._read()
        body, saved_at = (got.body, got.saved_at) if got is not None else ({}, 0.0)  # 0.0: too old to use
        self.save(body, now=saved_at, seq=self.seq + n)

    def save(self, body: dict[str, Any], *, now: float, seq: int | None = None) -> None:
        seq = self.seq if seq is None else seq
        if seq < self.seq:
            raise ValueError(f"sequence number went backwards: {seq} < {self.seq}")
        self.seq = seq
        doc = {"format": FORMAT, "version": VERSION, "saved_at": float(now), "seq": int(seq), "body": body}
        doc["sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
        data = _canonical(doc)
        tmp = self.dir / f".{self._name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._fsync_dir()

    def load(self, max_age_s: float, now: float) -> Loaded | None:
        """The saved state if intact and at most `max_age_s` old, else None (with a log line saying why)."""
        got = self._read()
        if got is None:
            return None
        age = now - got.saved_at
        if not got.body:  # only sequence numbers were reserved (a restart before any cycle saved state)
            log.info("state file %s holds no controller state yet; starting fresh", self.path)
            return None
        if age > max_age_s:
            log.warning("state file %s is %.0f s old (limit %.0f s); starting fresh", self.path, age, max_age_s)
            return None
        if age < -300:
            log.warning("state file %s is dated %.0f s in the future; starting fresh", self.path, -age)
            return None
        return got

    # -- internals ----------------------------------------------------------------------------------
    def _read(self) -> Loaded | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read state file %s (%s); starting fresh", self.path, exc.strerror)
            return None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not an edge-mpc state file")
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            digest = doc.pop("sha256", None)
            if digest != hashlib.sha256(_canonical(doc)).hexdigest():
                raise ValueError("checksum mismatch (torn or corrupted file)")
            seq, saved_at, body = doc["seq"], doc["saved_at"], doc["body"]
            if not isinstance(seq, int) or not isinstance(saved_at, float) or not isinstance(body, dict):
                raise ValueError("malformed header")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("discarding state file %s: %s", self.path, exc)
            self._quarantine()
            return None
        return Loaded(seq, saved_at, body)

    def _quarantine(self) -> None:
        # Keep the bad file for a post-mortem instead of deleting evidence; one copy is enough.
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_suffix(".json.corrupt"))

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_leftover_temps(self) -> None:
        for tmp in self.dir.glob(f".{self._name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
