"""The site file's `mqtt:` section: parsed with units, secrets only from files/env, errors that point."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings
from models.errors import ConfigError
from models.yamlio import Cursor, load_yaml, loads_yaml

REPO = Path(__file__).resolve().parents[2]


def _settings(text: str, filename: str = "<site>") -> MqttSettings:
    doc = loads_yaml(text, filename)
    return MqttSettings.from_cursor(Cursor(doc, filename).get("mqtt"))


def _error(text: str, filename: str = "<site>") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _settings(text, filename)
    return info.value


def test_example_site_config_parses() -> None:
    path = REPO / "config/sites/office-20.yaml"
    s = MqttSettings.from_cursor(Cursor(load_yaml(path), str(path)).get("mqtt"))
    assert (s.host, s.port, s.root, s.keepalive_s) == ("127.0.0.1", 1883, "edge-mpc/v1/office-20", 30)
    assert s.username is None and not s.tls and not s.ha_discovery
    assert s.topics("office-20").status == "edge-mpc/v1/office-20/status"


def test_defaults_and_units() -> None:
    s = _settings("mqtt: {host: broker.local, keepalive: 1 min}")
    assert (s.host, s.port, s.keepalive_s, s.root) == ("broker.local", 1883, 60, None)
    assert s.topics("site-a").root == "edge-mpc/v1/site-a"
    assert _settings("mqtt: {keepalive: 45}").keepalive_s == 45
    assert _settings("mqtt: {tls: true}").port == 8883  # TLS changes the default port
    assert _settings("mqtt: {tls: {}, port: 9000}").port == 9000


def test_literal_password_is_refused_without_echoing_it() -> None:
    err = _error("site: x\nmqtt:\n  host: h\n  username: u\n  password: hunter2\n")
    text = str(err)
    assert "password_file" in text and "password_env" in text
    assert err.line == 5 and err.field == "mqtt.password"
    assert "hunter2" not in text


@pytest.mark.parametrize(("yaml_text", "field", "fragment"), [
    ("mqtt: {keepalive: 30 kW}", "mqtt.keepalive", "s"),
    ("mqtt: {keepalive: 1 s}", "mqtt.keepalive", "5 s"),
    ("mqtt: {port: 70000}", "mqtt.port", "65535"),
    ("mqtt: {port: '1883'}", "mqtt.port", "integer"),
    ("mqtt: {usrname: x}", "mqtt.usrname", "did you mean 'username'"),
    ("mqtt: {root: 'a/+/b'}", "mqtt.root", "wildcards"),
    ("mqtt: {username: u, password_file: a, password_env: B}", "mqtt.password_env", "not both"),
    ("mqtt: {password_env: B}", "mqtt.username", "needs a username"),
    ("mqtt: {tls: {cert: c.pem}}", "mqtt.tls", "both"),
    ("mqtt: {tls: {ca: a, crt: b}}", "mqtt.tls.crt", "did you mean 'cert'"),
    ("mqtt: {ha_discovery: yes please}", "mqtt.ha_discovery", "true or false"),
    ("mqtt: [1, 2]", "mqtt", "mapping"),
])
def test_errors_name_the_field(yaml_text: str, field: str, fragment: str) -> None:
    err = _error(yaml_text)
    assert err.field == field, str(err)
    assert fragment in str(err)
    assert err.line == 1


def test_password_file_is_relative_to_the_config_and_newline_stripped(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("mqtt:\n  username: edge-mpc\n  password_file: secrets/mqtt.pass\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/mqtt.pass").write_text("s3cret with space \n")
    (tmp_path / "secrets/mqtt.pass").chmod(0o600)
    s = MqttSettings.from_cursor(Cursor(load_yaml(site), str(site)).get("mqtt"))
    assert s.password_file == tmp_path / "secrets/mqtt.pass"
    assert s.resolve_password() == "s3cret with space "
    assert "s3cret" not in repr(s)


def test_missing_password_file_points_at_the_yaml_line(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("mqtt:\n  username: u\n  password_file: /nonexistent/mqtt.pass\n")
    s = MqttSettings.from_cursor(Cursor(load_yaml(site), str(site)).get("mqtt"))
    with pytest.raises(ConfigError) as info:
        MqttBus(s, client_id="x", status_topic="s", start=False)
    assert (info.value.file, info.value.line, info.value.field) == (str(site), 3, "mqtt.password_file")


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings("mqtt: {username: u, password_env: EDGE_MPC_TEST_PW}")
    monkeypatch.delenv("EDGE_MPC_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="EDGE_MPC_TEST_PW is not set"):
        s.resolve_password()
    monkeypatch.setenv("EDGE_MPC_TEST_PW", "from-env")
    assert s.resolve_password() == "from-env"


def test_repr_masks_secrets() -> None:
    s = MqttSettings(username="u", password="topsecret")
    assert "topsecret" not in repr(s) and "***" in repr(s)
    bus = MqttBus(s, client_id="x", status_topic="s", start=False)
    assert "topsecret" not in repr(bus)


def test_tls_paths_relative_to_config(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("mqtt:\n  tls: {ca: certs/ca.crt, cert: /abs/c.pem, key: k.pem}\n")
    s = MqttSettings.from_cursor(Cursor(load_yaml(site), str(site)).get("mqtt"))
    assert (s.tls, s.tls_ca, s.tls_cert, s.tls_key) == (True, tmp_path / "certs/ca.crt", Path("/abs/c.pem"),
                                                         tmp_path / "k.pem")
    assert s.port == 8883
