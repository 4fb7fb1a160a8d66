"""Site config loading: the shipped example, overrides from env and --set, and errors that point at the spot."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from controller.daemon.settings import load_config, load_site
from models.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sites" / "office-20.yaml"


def test_example_loads():
    site = load_site(EXAMPLE, environ={})
    assert site.site == "office-20"
    assert site.control.step_s == 900 and site.control.horizon == 96 and site.control.deadline_s == 20
    assert site.model_path == (EXAMPLE.parent / "../buildings/office-20.yaml").resolve()
    assert site.comfort.occupied.low == 21 and site.comfort.unoccupied.high == 28
    assert site.sensors.max_age_s == 1800
    assert site.fallback.max_plan_age_s == 7200 and site.fallback.occupied_setpoint == 21.5
    assert site.clock.mode == "wall" and site.metrics.port == 9108
    assert site.schedules.get("office_hours").has("weekly")  # left as a Cursor for models.schedules
    assert str(site.timezone) == "America/Chicago"


def test_env_then_set_override_order():
    env = {"EDGE_MPC__MQTT__PORT": "18830", "EDGE_MPC__CLOCK__MODE": "lockstep", "EDGE_MPC_OTHER": "x"}
    site = load_site(EXAMPLE, ["mqtt.port=18831", "control.deadline=5 s"], environ=env)
    assert site.mqtt.get("port").value == 18831  # --set wins over the environment
    assert site.clock.mode == "lockstep"
    assert site.control.deadline_s == 5.0
    site = load_site(EXAMPLE, environ=env)
    assert site.mqtt.get("port").value == 18830


@pytest.mark.parametrize("override, message", [
    ("mqtt.prot=1", "did you mean 'port'"),
    ("control.stpe=5 min", "did you mean 'step'"),
    ("contrl.step=5 min", "did you mean 'control'"),
    ("actuators.z1.mx=3", "did you mean 'max'"),
    ("clock.mode=sometimes", "expected wall or lockstep"),
    ("control.deadline=20 min", "shorter than the control step"),
    ("justakey", "key.path=value"),
])
def test_bad_overrides_name_their_origin(override, message):
    with pytest.raises(ConfigError) as exc:
        load_site(EXAMPLE, [override], environ={})
    text = str(exc.value)
    assert message in text and "Traceback" not in text
    assert "--set" in text


def test_bad_env_override():
    with pytest.raises(ConfigError, match=r"environment EDGE_MPC__METRICS__PROT.*did you mean 'port'"):
        load_site(EXAMPLE, environ={"EDGE_MPC__METRICS__PROT": "1"})


def _write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text().replace("../", str(EXAMPLE.parent.parent) + "/")
    assert old in text
    return _write(tmp_path, text.replace(old, new))


def test_file_errors_have_file_line_field(tmp_path):
    p = _example_with(tmp_path, "  horizon: 96", "  horizon: lots")
    with pytest.raises(ConfigError) as exc:
        load_site(p, environ={})
    e = exc.value
    assert e.file == str(p) and e.line == 9 and e.field == "control.horizon" and e.found == "lots"
    p = _example_with(tmp_path, "sensors:\n  max_age", "sensors:\n  maxage")
    with pytest.raises(ConfigError, match=r"unknown field 'maxage'.*did you mean 'max_age'"):
        load_site(p, environ={})
    p = _example_with(tmp_path, "timezone: America/Chicago", "timezone: Mars/Olympus")
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_site(p, environ={})


def test_state_dir_precedence(tmp_path):
    site = load_site(EXAMPLE, environ={"STATE_DIRECTORY": "/var/lib/edge-mpc:/other"})
    assert site.state.dir == Path("/var/lib/edge-mpc")
    site = load_site(EXAMPLE, ["state.dir=st"], environ={})
    assert site.state.dir == EXAMPLE.parent / "st"
    assert load_site(EXAMPLE, environ={}).state.dir == Path("state").resolve()


def test_world_writable_warns(tmp_path, caplog):
    p = _example_with(tmp_path, "port: 9108", "port: 9109")
    os.chmod(p, 0o666)
    with caplog.at_level(logging.WARNING):
        load_site(p, environ={})
    assert "world-writable" in caplog.text


def test_multi_site(tmp_path):
    a = _example_with(tmp_path, "site: office-20", "site: a")
    b = _write(tmp_path, a.read_text().replace("site: a", "site: b"), "b.yaml")
    top = _write(tmp_path, f"sites: [{a.name}, {b.name}]\nmetrics: {{port: 9200}}\n", "all.yaml")
    cfg = load_config(top, ["mqtt.port=1999"], environ={})
    assert [s.site for s in cfg.sites] == ["a", "b"] and cfg.metrics.port == 9200
    assert all(s.mqtt.get("port").value == 1999 for s in cfg.sites)
    dup = _write(tmp_path, f"sites: [{a.name}, {a.name}]\n", "dup.yaml")
    with pytest.raises(ConfigError, match="unique"):
        load_config(dup, environ={})
    with pytest.raises(ConfigError, match="multi-site"):
        load_site(top, environ={})


@pytest.mark.parametrize("value, message", [
    ("[" * 3000 + "]" * 3000, "nested more than 64 levels deep"),      # was a RecursionError traceback
    ("{a: " * 100 + "1" + "}" * 100, "nested more than 64 levels deep"),
    ("&a [*a]", "refers to a collection that contains it"),
    ("9" * 5000, "too many digits"),                                   # was Python's int-conversion ValueError
    ("x" * (5 * 1024 * 1024), "too large"),
    ("[1, 2", "YAML syntax error"),
])
def test_hostile_override_values_are_one_clear_error(value, message):
    """`--set` values and EDGE_MPC__ variables go through the same limits as a site file."""
    for overrides, environ, origin in ((["comfort.margin=" + value], {}, "--set comfort.margin"),
                                       ([], {"EDGE_MPC__COMFORT__MARGIN": value},
                                        "environment EDGE_MPC__COMFORT__MARGIN")):
        with pytest.raises(ConfigError) as exc:
            load_site(EXAMPLE, overrides, environ=environ)
        text = str(exc.value)
        assert text.startswith(f"{origin}: cannot parse override value (") and message in text, text
        assert "\n" not in text and len(text) < 400, text


def test_hostile_site_file_is_one_clear_error(tmp_path):
    p = _example_with(tmp_path, "  horizon: 96", "  horizon: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ConfigError, match=rf"^{p}:\d+: YAML nested more than 64 levels deep; field 'control.horizon'"):
        load_site(p, environ={})
