"""I/O and plants: the `Bus` protocol with its MQTT and in-memory implementations, MQTT payload codecs and
topics, Home Assistant discovery, and the `Plant` protocol with the virtual building.

Drivers import `models` (the virtual building runs the simulator) and each other, never `controller`.
"""
