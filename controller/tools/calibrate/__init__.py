"""Calibrate named model parameters (and the initial state) against logged data, and write the result back.

The package is split by concern:

- ``data``: reading the logged CSV (or a dict of arrays) onto the model's step grid;
- ``yaml_rewrite``: where each parameter lives in the model file, and writing fitted values back there;
- ``params``: turning the names asked for into fitted numbers (network parameters or tied shared fields),
  and their priors;
- ``fit``: the Levenberg-Marquardt (MAP) fit, ``calibrate``;
- ``result``: what a fit found, its summary table and its identifiability report;
- ``command``: ``edge-mpc calibrate`` (argparse, printing, exit codes).

The public names are re-exported here.
"""

from controller.tools.calibrate.command import main
from controller.tools.calibrate.data import CalibrationData, CalibrationError, load_data, read_csv
from controller.tools.calibrate.fit import calibrate
from controller.tools.calibrate.params import DEFAULT_PRIOR_REL_SIGMA, FitParam, resolve_params
from controller.tools.calibrate.result import CalibrationResult
from controller.tools.calibrate.yaml_rewrite import FieldRef, locate_parameters, write_calibrated_model

__all__ = ["DEFAULT_PRIOR_REL_SIGMA", "CalibrationData", "CalibrationError", "CalibrationResult", "FieldRef",
           "FitParam", "calibrate", "load_data", "locate_parameters", "main", "read_csv", "resolve_params",
           "write_calibrated_model"]
