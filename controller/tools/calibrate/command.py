"""``edge-mpc calibrate``: the command line (arguments, printing, exit codes) around ``calibrate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller.tools.calibrate.data import CalibrationError
from controller.tools.calibrate.fit import calibrate
from controller.tools.calibrate.yaml_rewrite import write_calibrated_model
from models.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-mpc calibrate MODEL --data CSV --params NAMES --out FILE``: 0 ok, 2 bad input."""
    parser = argparse.ArgumentParser(prog="edge-mpc calibrate", description=(
        "Fit model parameters (and the initial state) to logged data by adjoint-gradient Levenberg-Marquardt, "
        "and write a model file that differs from MODEL only in the fitted values."))
    parser.add_argument("model", help="building model YAML")
    parser.add_argument("--data", required=True, help="CSV: time_s, then input, disturbance and sensor columns")
    parser.add_argument("--params", required=True,
                        help="comma-separated parameter names (see `edge-mpc check MODEL`) or shared fields "
                             "such as materials.brick.conductivity")
    parser.add_argument("--out", help="where to write the calibrated model YAML")
    parser.add_argument("--dt", type=float, help="data step in seconds (default: from time_s)")
    parser.add_argument("--holdout", type=float, default=0.25, help="fraction of the data held out (default 0.25)")
    parser.add_argument("--max-iterations", type=int, default=40)
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.params.split(",") if p.strip()]
    show = sys.stderr.isatty()
    try:
        result = calibrate(args.model, args.data, names, dt=args.dt, holdout_fraction=args.holdout,
                           max_iterations=args.max_iterations,
                           progress=(lambda i, c: print(f"\riteration {i}: cost {c:.6g}", end="", file=sys.stderr))
                           if show else None)
        if show:
            print(file=sys.stderr)
        print(result.table())
        if args.out:
            write_calibrated_model(args.model, result.updates, args.out)
            print(f"wrote {args.out}")
    except (CalibrationError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

