"""A daemon stand-in for the last-will test: connect an MqttBus, say so, then sleep until killed.

Run as: python mqtt_client_proc.py HOST PORT STATUS_TOPIC CLIENT_ID
"""

from __future__ import annotations

import sys
import time

from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings


def main() -> int:
    host, port, status_topic, client_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    bus = MqttBus(MqttSettings(host=host, port=port, keepalive_s=10), client_id=client_id,
                  status_topic=status_topic)
    if not bus.wait_connected(10):
        print("not connected", flush=True)
        return 1
    print("connected", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
