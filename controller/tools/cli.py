"""`edge-mpc` command line: check, simulate, calibrate, run, demo, bench.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (config, model or arguments).
"""

from __future__ import annotations

import os

# Small dense products dominate here; BLAS worker threads only add contention and latency jitter on an
# edge box (and on shared CI runners). Operators can still override this in the environment.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from models.errors import ConfigError  # noqa: E402


def _check(args: argparse.Namespace) -> int:
    from models import load_building

    net = load_building(args.file)
    for w in net.warnings:
        print(w, file=sys.stderr)
    print(f"{args.file}: OK — model '{net.name}': {len(net.zones)} zones, {net.n} states, "
          f"{len(net.inputs)} inputs, {len(net.disturbances)} disturbances, {len(net.params.names)} parameters")
    print(f"edge-mpc run: {_controllable(net)}")
    if args.params:  # the names that gradients and `calibrate --params` refer to
        p, w = net.params, max((len(n) for n in net.params.names), default=0)
        for name, value, unit in zip(p.names, p.values, p.units, strict=True):
            print(f"{name:<{w}}  {value:>12.6g}  {unit}")
    return 0


def _controllable(net: object) -> str:
    """Whether the daemon's MPC takes this model, and how (controller.core decides the same way)."""
    if not net.zones:
        return ("not applicable: a plant-only model without zones (simulate, calibrate and bench work; the "
                "daemon controls zone comfort)")
    bilinear = sorted({f.input for f in net.flows})
    if bilinear or net.custom:
        names = [net.inputs[j].name for j in bilinear] + [type(c).__name__ for c in net.custom]
        return ("supported: the thermal network is not linear in the inputs (flow x temperature inputs or custom "
                f"components: {', '.join(names)}), solved by nonlinear MPC (SQP) over the exact step, with an "
                "extended Kalman filter")
    if any(len(a.inputs) != 1 or a.reads_x or a.reads_d for a in net.actuators):
        return "supported: meters depend on temperatures, solved by sequential convex programming"
    return "supported: linear network and meters, solved as one convex QP per cycle"


def _simulate(args: argparse.Namespace) -> int:
    from controller.tools.simulate import simulate_csv

    return simulate_csv(args.model, args.inputs, args.out, backend=args.backend, dtype=args.dtype, dt=args.dt)


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.suite == "gradient":
        from controller.tools.bench.gradient import main as bench
    elif args.suite == "mpc":
        from controller.tools.bench.mpc import main as bench
    elif args.suite == "lockstep":
        from controller.tools.bench.lockstep import main as bench
    else:
        raise ConfigError(f"unknown benchmark suite '{args.suite}'", expected="gradient, mpc or lockstep")
    return bench(rest)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-mpc", description="Model-predictive control of building HVAC.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="validate a building model file")
    p.add_argument("file")
    p.add_argument("--params", action="store_true", help="list every parameter: name, value (SI) and unit")
    p = sub.add_parser("simulate", help="simulate a building model on inputs from a CSV")
    p.add_argument("model")
    p.add_argument("--inputs", required=True, help="CSV: time_s, then one column per input and disturbance")
    p.add_argument("--out", required=True, help="CSV to write: time_s, zones, sensors, powers")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--dt", type=float, default=None, help="step in seconds (default: the CSV's time step)")
    p = sub.add_parser("bench", help="benchmarks: gradient | mpc | lockstep (extra options after the suite: --help)",
                       add_help=False)
    p.add_argument("suite", nargs="?", default="gradient")
    sub.add_parser("calibrate", help="fit model parameters to logged data (see: edge-mpc calibrate --help)",
                   add_help=False)
    sub.add_parser("run", help="run the control daemon for a site config (see: edge-mpc run --help)",
                   add_help=False)
    sub.add_parser("demo", help="closed-loop MPC vs thermostat demo on a virtual building (edge-mpc demo --help)",
                   add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from controller.daemon.heap import keep_freed_memory

    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Sub-commands with their own parsers get their arguments untouched.
        if argv and argv[0] in ("calibrate", "run", "demo"):
            if argv[0] == "calibrate":
                from controller.tools.calibrate import main as cmd
            elif argv[0] == "run":
                from controller.daemon.run import main as cmd
            else:
                from controller.tools.demo import main as cmd
            return int(cmd(argv[1:]) or 0)
        ap = build_parser()
        args, rest = ap.parse_known_args(argv)
        if args.command == "bench":
            return int(_bench(args, rest) or 0)
        if rest:
            ap.error(f"unrecognised arguments: {' '.join(rest)}")
        return int({"check": _check, "simulate": _simulate}[args.command](args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
