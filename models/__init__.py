"""Building physics: YAML model language -> differentiable simulator (numpy or cupy).

Pure array code plus the YAML loader; imports nothing from `controller` or `drivers`.
"""

import models.steplib  # noqa: F401  (registers the built-in step components, e.g. tank_pipe_slab)
from models.building import building_from_text, load_building
from models.errors import ConfigError
from models.simulator import Gradient, Simulator, Trajectory

__all__ = ["ConfigError", "Gradient", "Simulator", "Trajectory", "building_from_text", "load_building"]
