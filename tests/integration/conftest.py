"""Real-broker fixtures: a private mosquitto per test on 127.0.0.1 and a free port.

Tests here are about the broker (reconnects, last will, TLS, ACLs), so they use the real thing. They skip
only when the mosquitto binary is absent (deploy/dev.sh installs it; CI has it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.tools.harness import HOST, Broker, TlsFiles, free_port, mosquitto_binary

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = mosquitto_binary()
OPENSSL = shutil.which("openssl")
USERS = {"edge-mpc": "daemon-pw", "building": "building-pw", "emulator": "emulator-pw",
         "intruder": "intruder-pw"}

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed "
                                     "(apt-get install mosquitto, or bash deploy/dev.sh test)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain, anonymous broker."""
    yield from _run(Broker(tmp_path / "broker"))


def _run(b: Broker) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto, or bash deploy/dev.sh test)")
    try:
        b.start()
    except RuntimeError:
        # The port chosen may have been taken between picking and binding; one retry on another.
        b.port = free_port()
        b.start()
    try:
        yield b
    finally:
        b.kill()


# -- TLS -----------------------------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL or "openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_tls(directory: Path, cn: str = "edge-mpc test CA") -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 (EC keys: fast to generate)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
             cwd=directory)
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)
    return TlsFiles(ca=directory / "ca.crt", cert=directory / "server.crt", key=directory / "server.key")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Broker]:
    yield from _run(Broker(tmp_path / "tls-broker", tls=tls_files))


# -- users and ACL -------------------------------------------------------------------------------------------
def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """With mosquitto_passwd when present; otherwise write mosquitto 2.0's own PBKDF2 format ($7$)."""
    tool = shutil.which("mosquitto_passwd")
    path.write_text("")
    path.chmod(0o600)
    for user, password in users.items():
        if tool:
            subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
        else:
            salt = os.urandom(12)
            digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
            with path.open("a") as f:
                f.write(f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n")
    return path


@pytest.fixture
def secure_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Broker]:
    """The shipped deploy/mosquitto/mosquitto.conf and acl, with paths and port moved into tmp_path."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed")
    work = tmp_path / "secure-broker"
    work.mkdir()
    passwd = make_password_file(work / "passwd", USERS)
    acl = work / "acl"
    shutil.copy(REPO / "deploy/mosquitto/acl", acl)
    text = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    replacements = {
        "listener 8883": f"listener {{port}} {HOST}",
        "/etc/mosquitto/certs/ca.crt": str(tls_files.ca),
        "/etc/mosquitto/certs/server.crt": str(tls_files.cert),
        "/etc/mosquitto/certs/server.key": str(tls_files.key),
        "/etc/mosquitto/passwd": str(passwd),
        "/etc/mosquitto/acl": str(acl),
        "/var/lib/mosquitto/": str(work) + "/",
        "log_dest syslog": f"log_dest stderr\nuser {pwd.getpwuid(os.getuid()).pw_name}",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/mosquitto/mosquitto.conf no longer contains {old!r}"
        text = text.replace(old, new)
    b = Broker(work, config=text, tls=tls_files, password_file=passwd, acl_file=acl)
    yield from _run(b)


# -- a plain paho client for looking at what is on the wire (QoS, retain, v5 properties) ----------------------
class Observer:
    """Raw paho client recording full MQTTMessage objects, for checks the Bus API deliberately hides."""

    def __init__(self, broker: Broker, *, username: str | None = None, password: str | None = None,
                 client_id: str = "observer") -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.subacks: dict[int, list] = {}
        self._suback = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_subscribe = self._on_subscribe
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls.ca))
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert connected.wait(5), f"observer {client_id} could not connect"

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, codes: list,
                      properties: object) -> None:
        with self._suback:
            self.subacks[mid] = codes
            self._suback.notify_all()

    def subscribe(self, topic_filter: str, qos: int = 1) -> list:
        """Subscribe and wait for the SUBACK (so a message published next cannot be missed)."""
        rc, mid = self.client.subscribe(topic_filter, qos=qos)
        assert rc == paho.MQTT_ERR_SUCCESS
        with self._suback:
            assert self._suback.wait_for(lambda: mid in self.subacks, timeout=5), "no SUBACK"
            return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)

    def get(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def wait_for(self, topic: str, timeout: float = 5.0, payload: bytes | None = None) -> paho.MQTTMessage:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on {topic!r}" + (f" with {payload!r}" if payload else ""))
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg.topic == topic and (payload is None or msg.payload == payload):
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
