"""Strict codecs for the MQTT payloads (the README's "MQTT topics" table lists each one).

Anything can arrive on a topic: a gateway bug, a fuzzer, a wrong unit. Every parser here either returns
validated, finite numbers or raises `PayloadError` with a reason a person can act on. No other exception
escapes, whatever the bytes, so one bad message can never take down the network thread or the cycle.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

MAX_PAYLOAD_BYTES = 64 * 1024
# A forecast of 10000 values at ~20 characters each needs more than 64 KiB.
MAX_FORECAST_BYTES = 1024 * 1024
MAX_DEPTH = 8
MAX_FORECAST_VALUES = 10_000
# Unix seconds above this are year 5138: almost always milliseconds sent by mistake.
MAX_UNIX_S = 1e11

log = logging.getLogger("edge_mpc.payloads")
# Lockstep `clock` and `cycle` payloads carried their time as "t" before they took "ts" like every other
# payload. "t" is still read, for one release, with one warning per kind and process.
_LEGACY_T_WARNED: set[str] = set()

# A JSON string, or an unterminated one up to the end of the text. The optional closing quote keeps the
# scan linear: without it, every quote of '"\\"\\"\\"…' would start a scan to the end that then fails
# (quadratic: a 1 MiB forecast payload took hours, blocking the network thread).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class PayloadError(ValueError):
    """A payload that does not follow the contract; `kind` names the codec, `reason` says what is wrong."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"bad {kind} payload: {reason}")


@dataclass(frozen=True, eq=False)
class Forecast:
    """A forecast series: values[i] holds at start + i * step (unix seconds)."""

    start: float
    step: float
    values: np.ndarray

    @property
    def times(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.values.size, dtype=np.float64)

    @property
    def end(self) -> float:
        """Time of the last value."""
        return self.start + self.step * (self.values.size - 1)


@dataclass(frozen=True)
class Setpoint:
    """A decoded setpoint message; `value` None means "relinquish to local control"."""

    value: float | None
    unit: str
    ts: float
    seq: int
    valid_until: float
    source: str


_F = TypeVar("_F", bound=Callable[..., Any])


def _never_raises_other(kind: str) -> Callable[[_F], _F]:
    """Last line of defence: an unforeseen exception becomes a PayloadError, never a crash.

    The parsers underneath (`parse_sensor.__wrapped__`, ...) are what the fuzz tests exercise: they must
    raise nothing but PayloadError by themselves, so a bug cannot hide behind this wrapper.
    """

    def wrap(func: _F) -> _F:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except PayloadError:
                raise
            except Exception as exc:
                raise PayloadError(kind, f"unreadable ({type(exc).__name__}: {_short(str(exc))})") from None

        return inner  # type: ignore[return-value]

    return wrap


# -- decoding helpers ----------------------------------------------------------------------------------
def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def _no_duplicates(kind: str) -> Callable[[list[tuple[str, Any]]], dict]:
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                # json keeps the last one silently; a duplicated "value" is a gateway bug worth seeing.
                raise PayloadError(kind, f"duplicate key {key!r}")
            out[key] = value
        return out

    return hook


def _big_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise PayloadError("setpoint", f"integer too large ({len(text)} digits)")
    return int(text)


def _max_depth(text: str) -> int:
    """Nesting depth of arrays/objects, computed without recursion (strings removed first)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii"), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return max(0, int(np.cumsum(steps).max()))


def _decode(kind: str, payload: object, limit: int, *, ints_as_float: bool = True) -> Any:
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise PayloadError(kind, f"expected bytes, found {type(payload).__name__}")
    data = bytes(payload)
    if len(data) > limit:
        raise PayloadError(kind, f"payload too large ({len(data)} bytes, limit {limit})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(kind, f"not valid UTF-8 (bad byte at offset {exc.start})") from None
    text = text.strip()
    if not text:
        raise PayloadError(kind, "empty payload")
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise PayloadError(kind, f"JSON nested too deeply (depth {depth}, limit {MAX_DEPTH})")
    try:
        # Integers become floats for measurements so a 5000-digit integer is just inf (rejected below)
        # instead of Python's int-conversion limit error.
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates(kind),
                          parse_int=float if ints_as_float else _big_int)
    except PayloadError:
        raise
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity literal refused by _reject_constant
        raise PayloadError(kind, f"not valid JSON ({_short(str(exc))})") from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number(kind: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(kind, f"'{field}' must be a number, found {_type_name(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise PayloadError(kind, f"'{field}' is not finite ({x})")
    return x


def _time(kind: str, field: str, value: object) -> float:
    t = _number(kind, field, value)
    if t < 0:
        raise PayloadError(kind, f"'{field}' is negative ({t}); expected unix seconds")
    if t > MAX_UNIX_S:
        raise PayloadError(kind, f"'{field}' = {t:.0f} looks like milliseconds; expected unix seconds")
    return t


def _object(kind: str, obj: dict, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        raise PayloadError(kind, f"missing key(s) {', '.join(map(repr, missing))}")
    # Unknown keys are refused: {"value": 21, "timestamp": ...} silently ignored would make a stale
    # reading look fresh.
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        names = _short(", ".join(map(repr, unknown)))
        raise PayloadError(kind, f"unknown key(s) {names}; allowed: {allowed}")


# -- inbound ---------------------------------------------------------------------------------------------
@_never_raises_other("sensor")
def parse_sensor(payload: bytes) -> tuple[float, float | None]:
    """(value, ts) from `{"value": x, "ts": unix_s}` (ts optional) or a bare number (ts None)."""
    obj = _decode("sensor", payload, MAX_PAYLOAD_BYTES)
    if isinstance(obj, dict):
        _object("sensor", obj, {"value"}, frozenset({"ts"}))
        value = _number("sensor", "value", obj["value"])
        ts = _time("sensor", "ts", obj["ts"]) if "ts" in obj else None
        return value, ts
    if isinstance(obj, bool) or not isinstance(obj, float):
        raise PayloadError("sensor", f"expected a number or an object {{\"value\", \"ts\"}}, "
                                     f"found {_type_name(obj)}")
    return _number("sensor", "value", obj), None


@_never_raises_other("forecast")
def parse_forecast(payload: bytes) -> Forecast:
    """`{"start": unix_s, "step": s, "values": [...]}` with step > 0 and 1..10000 finite values."""
    obj = _decode("forecast", payload, MAX_FORECAST_BYTES)
    if not isinstance(obj, dict):
        raise PayloadError("forecast", f"expected an object {{\"start\", \"step\", \"values\"}}, "
                                       f"found {_type_name(obj)}")
    _object("forecast", obj, {"start", "step", "values"})
    start = _time("forecast", "start", obj["start"])
    step = _number("forecast", "step", obj["step"])
    if not step > 0:
        raise PayloadError("forecast", f"'step' must be > 0 seconds, found {step}")
    values = obj["values"]
    if not isinstance(values, list):
        raise PayloadError("forecast", f"'values' must be an array, found {_type_name(values)}")
    if not 1 <= len(values) <= MAX_FORECAST_VALUES:
        raise PayloadError("forecast", f"'values' must hold 1..{MAX_FORECAST_VALUES} numbers, "
                                       f"found {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v):
            what = f"{v}" if isinstance(v, float) else _type_name(v)
            raise PayloadError("forecast", f"'values[{i}]' must be a finite number, found {what}")
    arr = np.asarray(values, dtype=np.float64)
    arr.flags.writeable = False  # shared between consumers; nobody may edit it in place
    end = start + step * (arr.size - 1)
    if not math.isfinite(end) or end > MAX_UNIX_S:
        # A step of 1e300 s would stretch the first value over the whole horizon, forever.
        raise PayloadError("forecast", f"forecast end time {end:.4g} is not a plausible unix time")
    return Forecast(start, step, arr)


def _legacy_t(kind: str, obj: dict) -> dict:
    """`{"t": ...}` read as `{"ts": ...}` (deprecated, one release), with a warning the first time."""
    if "t" not in obj or "ts" in obj:
        return obj  # both keys: "t" is refused as unknown by the caller's key check
    if kind not in _LEGACY_T_WARNED:
        _LEGACY_T_WARNED.add(kind)
        log.warning('%s payload with "t": the key is now "ts" (as in every other payload); "t" is still '
                    "accepted in this release and will be refused in the next", kind)
    return {("ts" if k == "t" else k): v for k, v in obj.items()}


@_never_raises_other("clock")
def parse_clock(payload: bytes) -> float:
    """Simulated time (unix seconds) from `{"ts": unix_s}` or a bare number (`{"t": ...}`: deprecated)."""
    obj = _decode("clock", payload, MAX_PAYLOAD_BYTES)
    if isinstance(obj, dict):
        obj = _legacy_t("clock", obj)
        _object("clock", obj, {"ts"})
        return _time("clock", "ts", obj["ts"])
    if isinstance(obj, bool) or not isinstance(obj, float):
        raise PayloadError("clock", f"expected a number or an object {{\"ts\"}}, found {_type_name(obj)}")
    return _time("clock", "ts", obj)


@_never_raises_other("cycle")
def parse_cycle_ack(payload: bytes) -> float:
    """The simulated time a lockstep `cycle` ack answers, from `{"ts": unix_s, ...}` (other keys: see
    `encode_cycle_ack`; `{"t": ...}` from an older daemon: deprecated) or a bare number."""
    obj = _decode("cycle", payload, MAX_PAYLOAD_BYTES)
    if isinstance(obj, dict):
        obj = _legacy_t("cycle", obj)
        if "ts" not in obj:
            raise PayloadError("cycle", "missing key 'ts'")
        return _time("cycle", "ts", obj["ts"])
    if isinstance(obj, bool) or not isinstance(obj, float):
        raise PayloadError("cycle", f"expected a number or an object {{\"ts\", ...}}, found {_type_name(obj)}")
    return _time("cycle", "ts", obj)


@_never_raises_other("setpoint")
def parse_setpoint(payload: bytes) -> Setpoint:
    """Decode what `encode_setpoint` produces (for gateways, emulators and tests)."""
    obj = _decode("setpoint", payload, MAX_PAYLOAD_BYTES, ints_as_float=False)
    if not isinstance(obj, dict):
        raise PayloadError("setpoint", f"expected an object, found {_type_name(obj)}")
    _object("setpoint", obj, {"value", "unit", "ts", "seq", "valid_until", "source"})
    raw_value = obj["value"]
    value = None if raw_value is None else _number("setpoint", "value", raw_value)
    for key in ("unit", "source"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise PayloadError("setpoint", f"'{key}' must be a non-empty string")
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise PayloadError("setpoint", f"'seq' must be an integer >= 0, found {_short(repr(seq))}")
    ts = _time("setpoint", "ts", obj["ts"])
    valid_until = _time("setpoint", "valid_until", obj["valid_until"])
    return Setpoint(value, obj["unit"], ts, seq, valid_until, obj["source"])


# -- outbound ----------------------------------------------------------------------------------------------
def encode_setpoint(value: float | None, unit: str, ts: float, seq: int, valid_until: float,
                    source: str) -> bytes:
    """The setpoint JSON for `setpoint/<actuator>`. `value` None means "relinquish": local controllers take over.

    Consumers must drop a setpoint whose `valid_until` has passed: a QoS 1 message queued during an
    outage is delivered late.
    """
    kind = "setpoint"
    if value is not None:
        value = _number(kind, "value", value)
    for name, text in (("unit", unit), ("source", source)):
        if not isinstance(text, str) or not text:
            raise PayloadError(kind, f"'{name}' must be a non-empty string, found {text!r}")
    ts = _time(kind, "ts", ts)
    valid_until = _time(kind, "valid_until", valid_until)
    if not valid_until > ts:
        raise PayloadError(kind, f"'valid_until' ({valid_until}) must be after 'ts' ({ts})")
    if isinstance(seq, bool):
        raise PayloadError(kind, "'seq' must be an integer, found a boolean")
    try:
        seq = operator.index(seq)  # accepts numpy integers, refuses 1.5
    except TypeError:
        raise PayloadError(kind, f"'seq' must be an integer, found {seq!r}") from None
    if seq < 0:
        raise PayloadError(kind, f"'seq' must be >= 0, found {seq}")
    return encode_json({"value": value, "unit": unit, "ts": ts, "seq": seq, "valid_until": valid_until,
                        "source": source})


def encode_clock(ts: float) -> bytes:
    """The lockstep `clock` message: run the cycle for simulated time `ts` (unix seconds)."""
    return encode_json({"ts": _time("clock", "ts", ts)})


def encode_cycle_ack(ts: float, seq: int, status: str, reason: str | None, solver_status: str) -> bytes:
    """The lockstep `cycle` ack, published after the cycle's setpoints: `ts` of the clock it answers, the
    `seq` its setpoints carry, `status` the outcome (mpc | hold | schedule | relinquish), `reason` why not
    mpc (null when mpc), `solver_status` the solver's own status (or hung | error)."""
    return encode_json({"ts": _time("cycle", "ts", ts), "seq": seq, "status": status, "reason": reason,
                        "solver_status": solver_status})


def _json_default(obj: object) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_json(obj: object) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity refused (they are not JSON and break other consumers)."""
    try:
        text = json.dumps(obj, allow_nan=False, separators=(",", ":"), ensure_ascii=False,
                          default=_json_default)
    except ValueError as exc:
        reason = str(exc)
        if "not JSON compliant" in reason:
            reason = "contains NaN or Infinity (not allowed in JSON)"
        raise PayloadError("json", reason) from None
    except (TypeError, RecursionError) as exc:
        raise PayloadError("json", _short(str(exc))) from None
    return text.encode("utf-8", "surrogatepass")
