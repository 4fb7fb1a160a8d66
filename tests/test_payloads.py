"""Payload codecs: the contract cases by hand, then fuzzing where only PayloadError may escape."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import payloads
from drivers.payloads import (
    MAX_FORECAST_VALUES,
    MAX_PAYLOAD_BYTES,
    Forecast,
    PayloadError,
    encode_clock,
    encode_cycle_ack,
    encode_json,
    encode_setpoint,
    parse_clock,
    parse_cycle_ack,
    parse_forecast,
    parse_sensor,
    parse_setpoint,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARSERS = [parse_sensor, parse_forecast, parse_clock, parse_setpoint]
# The fuzz tests call the parsers underneath the `_never_raises_other` wrapper, which would turn any
# exception into PayloadError by construction: a parser bug must show as a failure here.
RAW_PARSERS = [parse.__wrapped__ for parse in PARSERS]  # type: ignore[attr-defined]


# -- sensor --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "expected"), [
    (b"21.5", (21.5, None)),
    (b" -3 \n", (-3.0, None)),
    (b'{"value": 21.5, "ts": 1700000000}', (21.5, 1700000000.0)),
    (b'{"ts": 1700000000.25, "value": 0}', (0.0, 1700000000.25)),
    (b'{"value": 1e3}', (1000.0, None)),
])
def test_sensor_accepts_contract_forms(payload: bytes, expected: tuple) -> None:
    assert parse_sensor(payload) == expected


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "empty"),
    (b"NaN", "NaN"),
    (b"Infinity", "Infinity"),
    (b"-Infinity", "Infinity"),
    (b"1e400", "not finite"),
    (b"1" * 400, "not finite"),
    (b"true", "boolean"),
    (b"null", "null"),
    (b'"21.5"', "string"),
    (b"[21.5]", "array"),
    (b'{"value": true}', "boolean"),
    (b'{"value": "21"}', "string"),
    (b'{"value": 21, "ts": "now"}', "'ts' must be a number"),
    (b'{"value": 21, "ts": null}', "'ts' must be a number"),
    (b'{"value": 21, "ts": 1700000000000}', "milliseconds"),
    (b'{"value": 21, "ts": -1}', "negative"),
    (b'{"value": 21, "timestamp": 1700000000}', "unknown key"),
    (b'{"ts": 1700000000}', "missing key"),
    (b'{"value": 1, "value": 2}', "duplicate"),
    (b"21,5", "not valid JSON"),
    (b"\xff\xfe21", "UTF-8"),
    (b"[" * 9 + b"]" * 9, "nested too deeply"),
    (b'{"value": [[[[[[[[[1]]]]]]]]]}', "nested too deeply"),
    (b" " * (MAX_PAYLOAD_BYTES + 1), "too large"),
])
def test_sensor_rejects_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_sensor(payload)
    assert info.value.kind == "sensor"
    assert reason in info.value.reason


def test_depth_counts_brackets_inside_strings_as_text() -> None:
    # Brackets inside a string are not nesting; the error must be about the key, not depth.
    with pytest.raises(PayloadError, match="unknown key"):
        parse_sensor(b'{"value": 1, "[[[[[[[[[[[[": 2}')


# -- forecast ------------------------------------------------------------------------------------------
def test_forecast_roundtrip() -> None:
    fc = parse_forecast(b'{"start": 1700000000, "step": 900, "values": [1, 2.5, -3]}')
    assert isinstance(fc, Forecast)
    assert (fc.start, fc.step) == (1700000000.0, 900.0)
    assert fc.values.dtype == np.float64
    np.testing.assert_array_equal(fc.values, [1.0, 2.5, -3.0])
    np.testing.assert_array_equal(fc.times, [1700000000.0, 1700000900.0, 1700001800.0])
    assert fc.end == 1700001800.0
    with pytest.raises(ValueError):
        fc.values[0] = 5.0  # read-only: shared between consumers


def test_forecast_accepts_the_maximum_length() -> None:
    payload = json.dumps({"start": 0, "step": 60, "values": [20.123456789] * MAX_FORECAST_VALUES}).encode()
    assert parse_forecast(payload).values.size == MAX_FORECAST_VALUES


@pytest.mark.parametrize(("obj", "reason"), [
    ({"start": 0, "step": 0, "values": [1]}, "> 0"),
    ({"start": 0, "step": -900, "values": [1]}, "> 0"),
    ({"start": 0, "step": 900, "values": []}, "1..10000"),
    ({"start": 0, "step": 900, "values": [0.0] * (MAX_FORECAST_VALUES + 1)}, "1..10000"),
    ({"start": 0, "step": 900, "values": [1, None]}, "values[1]"),
    ({"start": 0, "step": 900, "values": [1, True]}, "values[1]"),
    ({"start": 0, "step": 900, "values": [1, "2"]}, "values[1]"),
    ({"start": 0, "step": 900, "values": 5}, "array"),
    ({"start": 0, "step": 900}, "missing"),
    ({"start": 0, "step": 900, "values": [1], "unit": "degC"}, "unknown"),
    ({"start": "today", "step": 900, "values": [1]}, "'start'"),
    ([1, 2, 3], "expected an object"),
])
def test_forecast_rejects(obj: object, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_forecast(json.dumps(obj).encode())
    assert info.value.kind == "forecast"
    assert reason in info.value.reason


def test_forecast_rejects_non_finite_value_literal() -> None:
    with pytest.raises(PayloadError, match=r"not finite|NaN"):
        parse_forecast(b'{"start": 0, "step": 900, "values": [1, NaN]}')
    with pytest.raises(PayloadError, match=r"values\[1\]"):
        parse_forecast(b'{"start": 0, "step": 900, "values": [1, 1e999]}')


# -- clock -----------------------------------------------------------------------------------------------
def test_clock_forms() -> None:
    assert parse_clock(b"1700000000") == 1700000000.0
    assert parse_clock(b'{"ts": 1700000900.5}') == 1700000900.5
    assert parse_clock(encode_clock(1700000900.5)) == 1700000900.5
    for bad in (b'{"time": 1}', b'{"ts": "x"}', b'{"t": "x"}', b'{"ts": 1, "t": 1}', b"false", b"-5", b"nan"):
        with pytest.raises(PayloadError) as info:
            parse_clock(bad)
        assert info.value.kind == "clock"


def test_cycle_ack_forms() -> None:
    raw = encode_cycle_ack(1700000900.0, 12, "hold", "solver_hung", "hung")
    assert json.loads(raw) == {"ts": 1700000900.0, "seq": 12, "status": "hold", "reason": "solver_hung",
                               "solver_status": "hung"}
    assert parse_cycle_ack(raw) == 1700000900.0
    assert parse_cycle_ack(b"1700000900") == 1700000900.0
    for bad in (b'{"seq": 1}', b'{"ts": -1}', b'{"ts": 1700000900000}', b"[]"):
        with pytest.raises(PayloadError) as info:
            parse_cycle_ack(bad)
        assert info.value.kind == "cycle"


def test_legacy_t_is_read_for_one_release_with_one_warning(caplog, monkeypatch) -> None:
    monkeypatch.setattr(payloads, "_LEGACY_T_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="edge_mpc.payloads"):
        assert parse_clock(b'{"t": 1700000900.5}') == 1700000900.5
        assert parse_clock(b'{"t": 1700001800}') == 1700001800.0
        assert parse_cycle_ack(b'{"t": 1700000900, "seq": 3, "status": "mpc"}') == 1700000900.0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all('now "ts"' in w for w in warnings), warnings
    assert warnings[0].startswith("clock") and warnings[1].startswith("cycle")


# -- setpoint ----------------------------------------------------------------------------------------------
def test_setpoint_encode_fields() -> None:
    raw = encode_setpoint(21.5, "degC", 1700000000.0, np.int64(7), 1700000900.0, "mpc")
    obj = json.loads(raw)
    assert list(obj) == ["value", "unit", "ts", "seq", "valid_until", "source"]
    assert obj == {"value": 21.5, "unit": "degC", "ts": 1700000000.0, "seq": 7,
                   "valid_until": 1700000900.0, "source": "mpc"}
    assert parse_setpoint(raw).seq == 7


def test_setpoint_relinquish_is_null_value() -> None:
    sp = parse_setpoint(encode_setpoint(None, "W", 10.0, 0, 20.0, "relinquish"))
    assert sp.value is None and sp.source == "relinquish"


@pytest.mark.parametrize(("args", "reason"), [
    ((math.nan, "degC", 0.0, 1, 10.0, "mpc"), "not finite"),
    ((math.inf, "degC", 0.0, 1, 10.0, "mpc"), "not finite"),
    ((True, "degC", 0.0, 1, 10.0, "mpc"), "boolean"),
    ((21.0, "", 0.0, 1, 10.0, "mpc"), "'unit'"),
    ((21.0, "degC", 0.0, 1, 10.0, ""), "'source'"),
    ((21.0, "degC", 10.0, 1, 10.0, "mpc"), "after"),
    ((21.0, "degC", 0.0, -1, 10.0, "mpc"), ">= 0"),
    ((21.0, "degC", 0.0, 1.5, 10.0, "mpc"), "integer"),
    ((21.0, "degC", 0.0, True, 10.0, "mpc"), "integer"),
    ((21.0, "degC", math.nan, 1, 10.0, "mpc"), "'ts'"),
])
def test_setpoint_encode_rejects(args: tuple, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        encode_setpoint(*args)
    assert reason in info.value.reason


# -- encode_json -----------------------------------------------------------------------------------------
def test_encode_json_numpy_and_nan() -> None:
    assert json.loads(encode_json({"x": np.arange(3.0), "n": np.float32(1.5), "k": np.int64(2)})) == {
        "x": [0.0, 1.0, 2.0], "n": 1.5, "k": 2}
    with pytest.raises(PayloadError, match="NaN"):
        encode_json({"x": float("nan")})
    with pytest.raises(PayloadError, match="NaN"):
        encode_json({"x": np.array([1.0, np.inf])})
    with pytest.raises(PayloadError, match="not JSON serialisable"):
        encode_json({"x": object()})


# -- fuzzing: whatever the bytes, only PayloadError -------------------------------------------------------
def _only_payload_error(payload: bytes) -> None:
    for parse in RAW_PARSERS:
        try:
            parse(payload)
        except PayloadError:
            pass


def test_wrapper_is_only_a_last_line_of_defence() -> None:
    """The public parsers keep the wrapper; the raw ones let an unforeseen error through (so fuzzing them
    can fail), and the wrapper turns it into PayloadError."""
    from drivers.payloads import _never_raises_other

    def buggy(payload: bytes) -> None:
        raise KeyError("bug")

    wrapped = _never_raises_other("sensor")(buggy)
    with pytest.raises(PayloadError, match="unreadable"):
        wrapped(b"1")
    with pytest.raises(KeyError):
        wrapped.__wrapped__(b"1")  # type: ignore[attr-defined]
    assert all(raw is not parse for raw, parse in zip(RAW_PARSERS, PARSERS, strict=True))


def _depth_by_hand(text: str) -> int:
    """Reference for the bracket scan: one character at a time, strings (even unterminated) skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


@FUZZ
@given(st.text(alphabet='[]{}"\\a,1 ', max_size=60))
def test_depth_scan_matches_a_character_scan(text: str) -> None:
    from drivers.payloads import _max_depth

    assert _max_depth(text) == _depth_by_hand(text)


def test_unterminated_strings_are_scanned_in_linear_time() -> None:
    """'"\\"\\"…' of 1 MiB: each quote used to start a regex scan to the end (quadratic, hours of CPU on
    the network thread). It must be an ordinary rejection."""
    payload = b'"' + b'\\"' * (MAX_PAYLOAD_BYTES * 7)
    assert len(payload) < 1024 * 1024
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_forecast.__wrapped__(payload)  # type: ignore[attr-defined]


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(payload: bytes) -> None:
    _only_payload_error(payload)


keys = st.sampled_from(["value", "ts", "t", "start", "step", "values", "seq", "x"]) | st.text(max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**400), max_value=10**400) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        keys, children, max_size=5),
    max_leaves=30,
)


def _to_json_text(obj: object) -> str:
    # json.dumps writes NaN/Infinity literals and huge ints: exactly the hostile inputs we want.
    return json.dumps(obj)


@FUZZ
@given(json_values)
def test_fuzz_structured_json(obj: object) -> None:
    _only_payload_error(_to_json_text(obj).encode())


@FUZZ
@given(st.integers(min_value=0, max_value=3000), st.sampled_from(["[", "{\"value\":", "{\"a\":["]))
def test_fuzz_deep_nesting(depth: int, opener: str) -> None:
    _only_payload_error((opener * depth).encode())
    closer = {"[": "]", "{\"value\":": "}", "{\"a\":[": "]}"}[opener]
    _only_payload_error((opener * depth + "1" + closer * depth).encode())


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_text_with_mutations(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    _only_payload_error(data)
    _only_payload_error(b'{"value": ' + data + b"}")
    _only_payload_error(data + b"\xc3")  # truncated multi-byte sequence


@FUZZ
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_fuzz_sensor_numbers_are_finite_when_accepted(value: float, ts: float) -> None:
    payload = json.dumps({"value": value, "ts": ts}).encode()
    try:
        v, t = parse_sensor(payload)
    except PayloadError:
        return
    assert math.isfinite(v) and t is not None and math.isfinite(t)
    assert v == value and t == ts


def test_huge_payloads_rejected_fast() -> None:
    for parse in RAW_PARSERS:
        with pytest.raises(PayloadError, match="too large"):
            parse(b"1" * (4 * 1024 * 1024))


def test_non_bytes_input_is_payload_error() -> None:
    for parse in RAW_PARSERS:
        with pytest.raises(PayloadError):
            parse(None)  # type: ignore[arg-type]
        with pytest.raises(PayloadError):
            parse(12)  # type: ignore[arg-type]
