"""Home Assistant MQTT discovery: config messages so zone temperatures and setpoints appear in HA.

Pure: returns (topic, payload) pairs; the caller publishes them retained (QoS 1) after connecting, and
publishes `removal_messages` (empty retained payloads) when a zone or actuator disappears from the site.
HA reads the values straight from our own topics, so nothing else has to be published for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from drivers.payloads import encode_json
from drivers.topics import Topics

DEFAULT_PREFIX = "homeassistant"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Sensor payloads may be a bare number or {"value": x, "ts": t}; HA parses both as JSON.
_SENSOR_TEMPLATE = "{{ value_json.value if value_json is mapping else value_json }}"
# A relinquished setpoint has value null, which renders as None: HA's MQTT sensor shows that as unknown
# rather than a stale number.
_SETPOINT_TEMPLATE = "{{ value_json.value }}"


def object_id(*parts: str) -> str:
    """HA object ids may only hold [A-Za-z0-9_-]; anything else becomes '_'."""
    return "_".join(_UNSAFE.sub("_", p).strip("_") or "x" for p in parts)


def discovery_messages(site: str, topics: Topics, *, zone_sensors: Mapping[str, str],
                       setpoints: Mapping[str, str] | Iterable[str] = (),
                       prefix: str = DEFAULT_PREFIX) -> list[tuple[str, bytes]]:
    """Config messages for HA.

    zone_sensors: zone name -> sensor id of its air temperature (read from `sensor/<id>`).
    setpoints: actuator -> unit (for example {"zone_01_heater": "W"}), or just actuator names (unit °C).
    """
    device = {
        "identifiers": [object_id("edge-mpc", site)],
        "name": f"edge-mpc {site}",
        "manufacturer": "edge-mpc",
        "model": "MPC controller",
    }
    availability = {"topic": topics.status, "payload_available": "online",
                    "payload_not_available": "offline"}
    out: list[tuple[str, bytes]] = []
    for zone, sensor_id in zone_sensors.items():
        oid = object_id(site, zone)
        config = {
            "name": f"{zone} temperature",
            "unique_id": oid,
            "object_id": oid,
            "state_topic": topics.sensor(sensor_id),
            "value_template": _SENSOR_TEMPLATE,
            "device_class": "temperature",
            "state_class": "measurement",
            "unit_of_measurement": "°C",
            "availability": [availability],
            "device": device,
        }
        out.append((f"{prefix}/sensor/{oid}/config", encode_json(config)))
    units = setpoints if isinstance(setpoints, Mapping) else dict.fromkeys(setpoints, "°C")
    for actuator, unit in units.items():
        oid = object_id(site, actuator, "setpoint")
        config = {
            "name": f"{actuator} setpoint",
            "unique_id": oid,
            "object_id": oid,
            "state_topic": topics.setpoint(actuator),
            "value_template": _SETPOINT_TEMPLATE,
            "unit_of_measurement": _ha_unit(unit),
            "availability": [availability],
            "device": device,
        }
        device_class = _device_class(unit)
        if device_class:
            config["device_class"] = device_class
        out.append((f"{prefix}/sensor/{oid}/config", encode_json(config)))
    return out


def removal_messages(messages: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Empty retained payloads on the same topics: HA then deletes the entities."""
    return [(topic, b"") for topic, _ in messages]


def _ha_unit(unit: str) -> str:
    return {"degC": "°C", "K": "K"}.get(unit, unit)


def _device_class(unit: str) -> str | None:
    return {"degC": "temperature", "°C": "temperature", "K": "temperature", "W": "power",
            "kW": "power"}.get(unit)
