"""``edge-mpc calibrate``: the command line (arguments, printing, exit codes) around ``calibrate``.

It prints the fitted values and the identifiability report, and appends both, as YAML comments, to the
model it writes (``--out``); ``--report`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.tools.calibrate.data import CalibrationError
from controller.tools.calibrate.fit import calibrate
from controller.tools.calibrate.params import DEFAULT_PRIOR_REL_SIGMA
from controller.tools.calibrate.yaml_rewrite import write_calibrated_model
from models.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-mpc calibrate MODEL --data CSV --params NAMES --out FILE``: 0 ok, 2 bad input."""
    parser = argparse.ArgumentParser(prog="edge-mpc calibrate", description=(
        "Fit model parameters (and the initial state) to logged data by adjoint-gradient Levenberg-Marquardt, "
        "with priors around the values in MODEL (MAP); print the fit and an identifiability report (posterior "
        "correlations, parameters the data cannot pin down); and write a model file that differs from MODEL "
        "only in the fitted values (plus the report as comments at its end)."))
    parser.add_argument("model", help="building model YAML")
    parser.add_argument("--data", required=True, help="CSV: time_s, then input, disturbance and sensor columns")
    parser.add_argument("--params", required=True,
                        help="comma-separated parameter names (listed by `edge-mpc check --params MODEL`) or "
                             "shared fields such as materials.brick.conductivity")
    parser.add_argument("--out", help="where to write the calibrated model YAML")
    parser.add_argument("--dt", type=float, help="data step in seconds (default: from time_s)")
    parser.add_argument("--holdout", type=float, default=0.25, help="fraction of the data held out (default 0.25)")
    parser.add_argument("--max-iterations", type=int, default=40)
    parser.add_argument("--prior", action="append", default=[], metavar="NAME=REL_SIGMA",
                        help="prior relative 1-sigma for one fitted parameter around its value in MODEL, for "
                             "example living.air_capacity=0.2; 'none' fits it without a prior (repeatable)")
    parser.add_argument("--prior-sigma", type=float, default=DEFAULT_PRIOR_REL_SIGMA, metavar="REL_SIGMA",
                        help="default prior relative 1-sigma for every fitted parameter "
                             f"(default {DEFAULT_PRIOR_REL_SIGMA})")
    parser.add_argument("--no-priors", action="store_true",
                        help="no priors except those given with --prior (a plain least-squares fit)")
    parser.add_argument("--report", help="write the fit and the identifiability report to this JSON file")
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.params.split(",") if p.strip()]
    show = sys.stderr.isatty()
    try:
        overrides = _prior_overrides(args.prior)
        result = calibrate(args.model, args.data, names, dt=args.dt, holdout_fraction=args.holdout,
                           max_iterations=args.max_iterations, priors=not args.no_priors,
                           prior_rel_sigma=args.prior_sigma, prior_overrides=overrides,
                           progress=(lambda i, c: print(f"\riteration {i}: cost {c:.6g}", end="", file=sys.stderr))
                           if show else None)
        if show:
            print(file=sys.stderr)
        summary = f"{result.table()}\n{result.identifiability()}"
        print(summary)
        if args.out:
            write_calibrated_model(args.model, result.updates, args.out,
                                   note=f"edge-mpc calibrate --data {args.data}\n{summary}")
            print(f"wrote {args.out}")
        if args.report:
            try:
                Path(args.report).write_text(json.dumps(result.report(), indent=1) + "\n", encoding="utf-8")
            except OSError as exc:
                raise CalibrationError(f"{args.report}: cannot write ({exc.strerror or exc})") from None
            print(f"wrote {args.report}")
    except (CalibrationError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _prior_overrides(items: list[str]) -> dict[str, float | None]:
    """``NAME=REL_SIGMA`` (or ``NAME=none``) items -> overrides; a bad item is a one-line CalibrationError."""
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise CalibrationError(f"--prior {item!r}: expected NAME=REL_SIGMA (for example living.air_capacity=0.2) "
                                   "or NAME=none")
        if text.lower() == "none":
            out[name] = None
            continue
        try:
            out[name] = float(text)
        except ValueError:
            raise CalibrationError(f"--prior {item!r}: relative sigma is not a number: {text!r}") from None
    return out
