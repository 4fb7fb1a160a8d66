"""The MQTT topic layout (README, "MQTT topics"), in one place, so no module builds topic strings by hand."""

from __future__ import annotations

from drivers.bus import validate_topic

DEFAULT_ROOT_PREFIX = "edge-mpc/v1"


def default_root(site: str) -> str:
    """`edge-mpc/v1/<site>`: the root used when the site config does not name one."""
    return f"{DEFAULT_ROOT_PREFIX}/{check_id(site, 'site')}"


def check_id(value: str, what: str = "id") -> str:
    """An id that is used as exactly one topic level.

    '+', '#' would turn a topic into a filter, '/' would silently add a level (so `sensor/a/b` would not
    match `sensor/+`), and NUL is forbidden by MQTT.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid {what} {value!r}: expected a non-empty string")
    bad = [c for c in ("+", "#", "/", "\x00") if c in value]
    if bad:
        raise ValueError(f"invalid {what} {value!r}: must not contain {' '.join(repr(c) for c in bad)}")
    if value != value.strip():
        raise ValueError(f"invalid {what} {value!r}: leading or trailing whitespace")
    return value


class Topics:
    """All topics of one site under `root` (for example `edge-mpc/v1/office-20`)."""

    def __init__(self, root: str) -> None:
        validate_topic(root)
        if root.startswith("/") or root.endswith("/") or "//" in root:
            raise ValueError(f"invalid topic root {root!r}: empty topic level")
        if root.startswith("$"):
            # '$' topics are reserved for the broker and not matched by '#' subscriptions.
            raise ValueError(f"invalid topic root {root!r}: must not start with '$'")
        self.root = root

    @classmethod
    def for_site(cls, site: str, root: str | None = None) -> Topics:
        return cls(root if root is not None else default_root(site))

    def __repr__(self) -> str:
        return f"Topics({self.root!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topics) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # -- inputs ---------------------------------------------------------------------------------------
    def sensor(self, sensor_id: str) -> str:
        return f"{self.root}/sensor/{check_id(sensor_id, 'sensor id')}"

    @property
    def sensor_filter(self) -> str:
        return f"{self.root}/sensor/+"

    def forecast(self, name: str) -> str:
        return f"{self.root}/forecast/{check_id(name, 'forecast name')}"

    @property
    def forecast_filter(self) -> str:
        return f"{self.root}/forecast/+"

    @property
    def clock(self) -> str:
        return f"{self.root}/clock"

    # -- outputs --------------------------------------------------------------------------------------
    def setpoint(self, actuator: str) -> str:
        return f"{self.root}/setpoint/{check_id(actuator, 'actuator')}"

    @property
    def setpoint_filter(self) -> str:
        return f"{self.root}/setpoint/+"

    @property
    def plan(self) -> str:
        return f"{self.root}/plan"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def cycle(self) -> str:
        return f"{self.root}/cycle"

    # -- parsing received topics ------------------------------------------------------------------------
    def sensor_id(self, topic: str) -> str | None:
        """The id in `<root>/sensor/<id>`, or None if `topic` is not a sensor topic of this site."""
        return self._leaf(topic, "sensor")

    def forecast_name(self, topic: str) -> str | None:
        return self._leaf(topic, "forecast")

    def actuator(self, topic: str) -> str | None:
        return self._leaf(topic, "setpoint")

    def _leaf(self, topic: str, kind: str) -> str | None:
        prefix = f"{self.root}/{kind}/"
        if not topic.startswith(prefix):
            return None
        leaf = topic[len(prefix):]
        return leaf if leaf and "/" not in leaf else None
