"""With `mqtt.ha_discovery: true` the daemon announces zone temperatures and setpoints to Home Assistant."""

import json

from controller.daemon.service import Service
from drivers.memory_bus import MemoryBus

from .conftest import write_site


def test_discovery_configs_are_retained_for_every_zone_and_actuator(tmp_path):
    path = write_site(tmp_path, extra={"  root: edge-mpc/v1/office-20": "  root: edge-mpc/v1/office-20\n"
                                                                        "  ha_discovery: true"})
    bus = MemoryBus()
    svc = Service(path, [], environ={}, bus_factory=lambda cfg, topics, m: bus)
    svc.start()
    try:
        configs = {m.topic: json.loads(m.payload) for m in bus.messages("homeassistant/#")}
        temps = [c for c in configs.values() if c.get("device_class") == "temperature"]
        assert len(temps) == 20
        assert {c["state_topic"] for c in temps} == {f"edge-mpc/v1/office-20/sensor/z{i:02d}_temperature"
                                                    for i in range(1, 21)}
        setpoint_topics = {c["state_topic"] for c in configs.values() if "/setpoint/" in c.get("state_topic", "")}
        assert setpoint_topics == {f"edge-mpc/v1/office-20/setpoint/z{i:02d}_hvac" for i in range(1, 21)}
        assert all(bus.retained(t) is not None for t in configs)
    finally:
        svc.request_stop()
