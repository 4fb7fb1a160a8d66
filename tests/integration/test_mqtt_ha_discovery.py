"""Home Assistant discovery: the config messages, and that they land retained on a real broker."""

from __future__ import annotations

import json

from drivers.ha_discovery import discovery_messages, object_id, removal_messages
from drivers.mqtt import MqttBus
from drivers.topics import Topics

from .conftest import Broker, Observer

TOPICS = Topics.for_site("office-20")


def test_discovery_messages_shape() -> None:
    msgs = discovery_messages("office-20", TOPICS, zone_sensors={"zone 01": "zone_01_temp"},
                              setpoints={"zone_01_heater": "W"})
    assert [t for t, _ in msgs] == ["homeassistant/sensor/office-20_zone_01/config",
                                    "homeassistant/sensor/office-20_zone_01_heater_setpoint/config"]
    temp = json.loads(msgs[0][1])
    assert temp["state_topic"] == "edge-mpc/v1/office-20/sensor/zone_01_temp"
    assert temp["device_class"] == "temperature" and temp["unit_of_measurement"] == "°C"
    assert temp["unique_id"] == "office-20_zone_01"
    assert temp["availability"] == [{"topic": TOPICS.status, "payload_available": "online",
                                     "payload_not_available": "offline"}]
    sp = json.loads(msgs[1][1])
    assert sp["state_topic"] == TOPICS.setpoint("zone_01_heater")
    assert sp["unit_of_measurement"] == "W" and sp["device_class"] == "power"
    assert sp["device"] == temp["device"]  # one HA device per site
    assert removal_messages(msgs) == [(msgs[0][0], b""), (msgs[1][0], b"")]
    assert object_id("a.b", "c/d") == "a_b_c_d"


def test_discovery_published_retained(broker: Broker) -> None:
    msgs = discovery_messages("office-20", TOPICS, zone_sensors={"z1": "z1_temp", "z2": "z2_temp"},
                              setpoints=["z1_heater"])
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status)
    try:
        assert bus.wait_connected(5)
        for topic, payload in msgs:
            bus.publish(topic, payload, qos=1, retain=True)
    finally:
        bus.close()  # waits for the PUBACK of "offline"; the broker handled the earlier ones first
    ha = Observer(broker, client_id="home-assistant")
    try:
        ha.subscribe("homeassistant/#")
        got = {}
        for _ in msgs:
            m = ha.get()
            assert m.retain
            got[m.topic] = m.payload
        assert got == dict(msgs)
    finally:
        ha.close()
