"""Calibrate named model parameters (and the initial state) against logged data, and write the result back.

The package is split by concern:

- ``data``: reading the logged CSV (or a dict of arrays) onto the model's step grid;
- ``yaml_rewrite``: where each parameter lives in the model file, and writing fitted values back there;
- ``params``: turning the names asked for into fitted numbers (network parameters or tied shared fields);
- ``fit``: the Levenberg-Marquardt fit (``calibrate``) and its result;
- ``command``: ``edge-mpc calibrate`` (argparse, printing, exit codes).

The public names are re-exported here.
"""

from controller.tools.calibrate.command import main
from controller.tools.calibrate.data import CalibrationData, CalibrationError, load_data, read_csv
from controller.tools.calibrate.fit import CalibrationResult, calibrate
from controller.tools.calibrate.params import FitParam, resolve_params
from controller.tools.calibrate.yaml_rewrite import FieldRef, locate_parameters, write_calibrated_model

__all__ = ["CalibrationData", "CalibrationError", "CalibrationResult", "FieldRef", "FitParam", "calibrate",
           "load_data", "locate_parameters", "main", "read_csv", "resolve_params", "write_calibrated_model"]
