"""`edge-mpc check FILE` semantics: every bad model gives one clear ConfigError line, never a traceback.

Each file in tests/models/bad/ is a small model with exactly one mistake. Its header says what is wrong and
what the error must contain:

    # BAD: <what is wrong, in words>
    # field: <dotted field path, or '-' for file-level errors>
    # expected: <text that must follow 'expected '>
    # found: <text that must follow 'found '>        (optional)
    # message: <text the message must contain>       (optional)
    # line: <n>                                       (only where no line carries the marker)

and the offending line carries the comment `# <-- error`. The test checks that load_building raises
ConfigError (no other exception type), that its string names the file and that line, the field, what was
expected and what was found, and that it is a single line.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import ConfigError, building_from_text, load_building
from models.custom import CustomComponent, register_component

BAD = Path(__file__).parent / "bad"
BUILDINGS = Path(__file__).resolve().parents[2] / "config" / "buildings"
BAD_FILES = sorted(BAD.glob("*.yaml"))
MARKER = b"# <-- error"


def _spec(path: Path) -> dict[str, object]:
    raw = path.read_bytes()
    spec: dict[str, object] = {}
    for line in raw.splitlines():
        m = re.match(rb"^# (BAD|field|expected|found|message|line): (.*)$", line)
        if m:
            spec[m.group(1).decode()] = m.group(2).decode("utf-8", "replace")
    marked = [i + 1 for i, line in enumerate(raw.splitlines()) if line.rstrip().endswith(MARKER)]
    if "line" in spec:
        spec["line"] = int(str(spec["line"]))
    else:
        assert len(marked) == 1, f"{path.name}: exactly one line must carry '# <-- error'"
        spec["line"] = marked[0]
    return spec


def test_enough_distinct_bad_files():
    assert len(BAD_FILES) >= 30
    for path in BAD_FILES:
        spec = _spec(path)
        assert spec.get("BAD") and spec.get("expected"), f"{path.name}: header must say what is wrong"


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_model_gives_one_clear_error(path: Path):
    spec = _spec(path)
    with pytest.raises(ConfigError) as info:
        load_building(path)
    exc = info.value
    assert type(exc) is ConfigError
    msg = str(exc)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert msg.startswith(f"{path}:{spec['line']}: "), f"wrong file/line: {msg}"
    assert exc.file == str(path) and exc.line == spec["line"]
    field = spec["field"]
    if field == "-":
        assert exc.field is None, msg
    else:
        assert exc.field == field, msg
        assert f"field '{field}'" in msg
    assert f"expected {spec['expected']}" in msg, msg
    if "found" in spec:
        assert f"found {spec['found']}" in msg, msg
    if "message" in spec:
        assert str(spec["message"]) in exc.message, msg
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), "chained traceback"


def test_zero_byte_file(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty\.yaml:1: file is empty"):
        load_building(path)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_building(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_building(tmp_path)


def test_control_character_names_line():
    text = "model: x\ndescription: 'a\x07b'\n"
    with pytest.raises(ConfigError) as info:
        building_from_text(text, "ctl.yaml")
    assert str(info.value).startswith("ctl.yaml:2: ")


def test_absolute_temperature_in_kelvin_is_converted():
    base = (BAD / "unknown_zone.yaml").read_text().replace("zone: z1  # <-- error", "zone: z01")
    net = building_from_text(base.replace("    volume: 180 m3\n",
                                          "    volume: 180 m3\n    initial_temperature: 294.15 K\n"))
    assert net.initial[0] == pytest.approx(21.0)


def test_state_space_errors_from_npz_point_at_file(tmp_path: Path):
    """Matrices read from a file: a bad matrix is reported at the 'file' field, not as a missing 'A'."""
    np.savez(tmp_path / "annex.npz", A=np.array([[-0.5]]), B=np.array([[1e-3]]), E=np.zeros((1, 0)),
             C=np.array([[1.0]]))
    text = """model: ss-file
disturbances:
  outdoor_temperature: {unit: degC}
state_space:
  - name: annex
    time: discrete
    dt: 900
    file: annex.npz
    inputs: [{name: h, min: 0, max: 1000}]
    zones: [{name: annex, floor_area: 20}]
"""
    with pytest.raises(ConfigError) as info:
        building_from_text(text, str(tmp_path / "m.yaml"), base_dir=tmp_path)
    assert info.value.line == 8 and info.value.field == "state_space[0].A", str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        building_from_text(text.replace("annex.npz", "missing.npz"), "m.yaml", base_dir=tmp_path)


def test_duplicate_state_space_block_and_input_names():
    block = """  - name: annex
    A: [[-1.0e-4]]
    B: [[1.0e-6]]
    E: [[1.0e-4]]
    C: [[1.0]]
    inputs: [{{name: {inp}, min: 0, max: 1000}}]
    disturbances: [outdoor_temperature]
    zones: [{{name: {zone}, floor_area: 20}}]
"""
    head = "model: x\ndisturbances:\n  outdoor_temperature: {unit: degC}\nstate_space:\n"
    with pytest.raises(ConfigError, match="declared twice"):
        building_from_text(head + block.format(inp="h1", zone="a") + block.format(inp="h2", zone="b"))
    twice = head + block.format(inp="h", zone="a") + block.replace("name: annex", "name: annex2").format(
        inp="h", zone="b")
    with pytest.raises(ConfigError, match="generated twice"):
        building_from_text(twice)


def test_did_you_mean_for_registered_custom_type():
    @register_component("validation_probe")
    class Probe(CustomComponent):
        pass

    text = (BAD / "custom_unregistered.yaml").read_text().replace("thermal_bridge", "validation_prob")
    with pytest.raises(ConfigError, match="did you mean 'validation_probe'"):
        building_from_text(text, "c.yaml")


# -- fuzz: mutate one scalar of a valid building; only ConfigError (or success) may come out ------------
_JUNK = st.one_of(
    st.sampled_from(["", "-1", "0", ".nan", ".inf", "-.inf", "yes", "null", "[]", "{}", "[1, 2]", "'4 kWh'",
                     "'3 m'", "'4 kQ'", "'inf'", "'1e400'", "z99", "outdoor_temperature", "'-'", "'1,5 kW'",
                     "!!binary aGk=", "2020-01-01", "~", "'294.15 K'", "[[1]]", "&a 1", "*a", "0x10", "'%'"]),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="abcz0189 .-_:[]{}", max_size=8).map(lambda s: repr(s)),
)
_HOUSE = (BUILDINGS / "house-1.yaml").read_text().splitlines()
_RADIANT = (BUILDINGS / "radiant.yaml").read_text().splitlines()


def _mutate(lines: list[str], index: int, junk: str) -> str:
    """Replace the first scalar value (after ': ') at or after line `index` with junk."""
    out = list(lines)
    for k in range(len(out)):
        i = (index + k) % len(out)
        line = out[i]
        if line.lstrip().startswith("#"):
            continue
        m = re.search(r"(: )([^{}\[\],#]+?)(\s*(?:[,}\]]|#|$))", line)
        if m:
            out[i] = line[:m.start(2)] + junk + line[m.end(2):]
            return "\n".join(out) + "\n"
    return "\n".join(out) + "\n"


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.booleans(), index=st.integers(0, 200), junk=_JUNK)
def test_fuzz_only_config_errors(which: bool, index: int, junk: str):
    lines = _HOUSE if which else _RADIANT
    text = _mutate(lines, index % len(lines), junk)
    try:
        net = building_from_text(text, "fuzz.yaml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml") and "\n" not in msg
        return
    # Accepted: it must still compile into a finite simulator.
    sim = net.compile(900.0)
    assert np.all(np.isfinite(sim.x_initial))
