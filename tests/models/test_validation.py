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


def test_document_size_limit(tmp_path: Path):
    """Over 4 MiB is refused before parsing, from a file (read no further) and from text."""
    from models.yamlio import MAX_DOCUMENT_BYTES

    path = tmp_path / "big.yaml"
    path.write_text("model: x\ndescription: '" + "x" * MAX_DOCUMENT_BYTES + "'\n")
    with pytest.raises(ConfigError) as info:
        load_building(path)
    assert str(info.value) == (f"{path}: YAML document too large; expected at most 4 MiB of text; "
                               "found 'more than 4 MiB'")
    with pytest.raises(ConfigError, match=r"t\.yaml: YAML document too large.*found '4\.0 MiB'"):
        building_from_text(path.read_text(), "t.yaml")
    # Multi-byte characters count as bytes: 1.5 Mi characters of 3 bytes each is 4.5 MiB.
    with pytest.raises(ConfigError, match=r"found '4\.5 MiB'"):
        building_from_text("description: '" + "\u20ac" * (3 * 1024 * 512) + "'", "t.yaml")


def test_depth_and_node_limits_at_the_edge():
    """64 levels and 200,000 values load; one more level or value is one clear error."""
    from models.yamlio import MAX_DEPTH, MAX_NODES, loads_yaml

    assert (MAX_DEPTH, MAX_NODES) == (64, 200_000)  # documented in models/yamlio.py and the README
    ok = loads_yaml("a: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1))
    assert ok["a"][0][0][0] is not None
    with pytest.raises(ConfigError, match=r"^d\.yaml:3: YAML nested more than 64 levels deep; field 'b\.c'"):
        loads_yaml("a: 1\nb:\n  c: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH, "d.yaml")
    # Exactly MAX_NODES values, most of them through aliases (cheap to compose): root, key x, x's list of
    # 999 items (1000), key y, y's list, 198 aliases of x (1000 each) and 996 plain items.
    def doc(extra: int) -> str:
        return ("x: &x [" + ",".join(["1"] * 999) + "]\ny: [" + ",".join(["*x"] * 198 + ["2"] * (996 + extra))
                + "]\n")
    assert 4 + 1000 + 198 * 1000 + 996 == MAX_NODES
    assert len(loads_yaml(doc(0))["y"]) == 198 + 996
    with pytest.raises(ConfigError, match=r"^<string>:1: YAML document has more than 200000 values.*"
                                          r"found '200001 here'"):
        loads_yaml(doc(1))
    # an alias inside a sequence counts its target's depth too
    shallow = "x: &x " + "[" * 40 + "]" * 40 + "\n"
    with pytest.raises(ConfigError, match="through aliases"):
        loads_yaml(shallow + "y: " + "[" * 30 + "*x" + "]" * 30)


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
    # hostile structure: nesting around the depth limit and far beyond it, huge integers
    st.integers(60, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(60, 3000).map(lambda n: "{a: " * n + "1" + "}" * n),
    st.integers(4000, 6000).map(lambda n: "7" * n),
    # values that match a YAML type's pattern but are not valid (PyYAML raised bare ValueError/KeyError)
    st.sampled_from(["2026-02-30", "2026-01-01 25:00:00", "!!float x", "!!int 0x", "!!bool maybe",
                     "!!timestamp 2026", "!!binary '@@'"]),
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


# -- fuzz: the loader itself on token soup; only ConfigError, always one line ----------------------------
_TOKENS = st.sampled_from([
    "a", ": ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "!!int ", "!!float ", "!!bool ",
    "!!timestamp ", "!!binary ", "!!str ", "!!null ", "!!set ", "!!omap ", "!!pairs ", "<<: ", "? ",
    "2026-02-30", "1e400", "0x", "0o", "0b1", "1:2:3", "'q'", '"\\u00"', "|", ">", "#c", "---", "...", "~",
    ".nan", "-", "\t", "%YAML 1.1\n", "!x ", "[" * 70, "]" * 70, "9" * 4500,
])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_fuzz_loader_only_config_errors(text: str):
    from models.yamlio import loads_yaml

    try:
        loads_yaml(text, "f.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("f.yaml") and "\n" not in str(exc), str(exc)
