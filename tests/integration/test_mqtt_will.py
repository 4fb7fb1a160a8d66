"""Last will: a daemon process that dies without a word leaves a retained 'offline' behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from drivers.topics import Topics

from .conftest import REPO, Broker, Observer

TOPICS = Topics.for_site("will-site")
HELPER = Path(__file__).with_name("mqtt_client_proc.py")


def test_sigkill_leaves_retained_offline(broker: Broker) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(HELPER), broker.host, str(broker.port), TOPICS.status,
                             "doomed-daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "connected", f"helper said {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"

        watcher = Observer(broker, client_id="watcher")
        try:
            watcher.subscribe(TOPICS.status)
            msg = watcher.wait_for(TOPICS.status)
            assert (msg.payload, msg.retain) == (b"online", True)

            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
            # The kernel closes the dead process's socket, so the broker sends the will at once.
            msg = watcher.wait_for(TOPICS.status, payload=b"offline")
            assert msg.qos == 1
        finally:
            watcher.close()

        newcomer = Observer(broker, client_id="newcomer")
        try:
            newcomer.subscribe(TOPICS.status)
            msg = newcomer.wait_for(TOPICS.status)
            assert (msg.payload, msg.retain) == (b"offline", True)
        finally:
            newcomer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
