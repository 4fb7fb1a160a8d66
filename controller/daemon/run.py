"""`edge-mpc run CONFIG [--once] [--set key.path=value]...`: the daemon entry point.

`edge-mpc run --sites DIR` runs every site file of a folder, one supervised process per site
(controller.daemon.fleet): a site's bad config, crash or hung solver never stops the others.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT, or --once done), 2 bad input (config, model),
1 anything unexpected. Errors in input are one line naming file/line/field, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

log = logging.getLogger("edge_mpc")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run the controller daemon for a site config",
        description="Run the MPC daemon: read sensors over MQTT, plan, publish setpoints, export metrics. "
                    "Under systemd it speaks sd_notify (READY, WATCHDOG, STATUS). SIGHUP reloads the "
                    "config (an invalid one is rejected and the old one keeps running); SIGTERM stops.")
    p.add_argument("config", nargs="?", help="site YAML file (or a file with `sites: [...]`)")
    p.add_argument("--sites", metavar="DIR",
                   help="run every site file (*.yaml) in DIR, each in its own supervised process: a bad "
                        "config is reported and skipped, a crashed or hung site is restarted, the others "
                        "carry on. SIGHUP rescans DIR")
    p.add_argument("--site-watchdog", type=float, default=120.0, metavar="S",
                   help="with --sites: restart a site whose process sent no watchdog ping for S seconds "
                        "(its solver is stuck); more than its deadline + 5 s (default 120)")
    p.add_argument("--once", action="store_true", help="run one cycle, publish, save state, and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set mqtt.port=1884 (repeatable; applied after "
                        "EDGE_MPC__SECTION__KEY environment variables)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log verbosity (default INFO: one line per cycle)")
    p.set_defaults(func=main)
    return p


def _setup_logging(level: str) -> None:
    import os

    # journald adds its own timestamps; a terminal or file gets them from us.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("INVOCATION_ID") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stderr)
    root.setLevel(getattr(logging, level))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-mpc")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["run", *(sys.argv[1:] if argv is None else argv)])


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run the daemon; `args` is a parsed namespace (from add_parser) or the arguments after `run`."""
    from controller.daemon.service import Service, StartInterruptedError
    from models.errors import ConfigError

    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    _setup_logging(getattr(args, "log_level", "INFO"))
    if getattr(args, "sites", None) is not None:
        if args.config is not None:
            print("edge-mpc run: give either a CONFIG file or --sites DIR, not both", file=sys.stderr)
            return 2
        return _run_sites(args)
    if args.config is None:
        print("edge-mpc run: a site CONFIG file or --sites DIR is required", file=sys.stderr)
        return 2
    service = Service(args.config, args.overrides)
    service.install_signal_handlers()
    try:
        service.start()
    except StartInterruptedError:
        log.info("stopped during start-up")
        return service.shutdown()
    except ConfigError as exc:
        print(f"edge-mpc run: {exc}", file=sys.stderr)
        service.shutdown()
        return 2
    except Exception as exc:
        log.exception("start-up failed: %s", exc)
        service.shutdown()
        return 1
    return service.run(once=args.once)


def _run_sites(args: argparse.Namespace) -> int:
    from controller.daemon.fleet import Fleet
    from models.errors import ConfigError

    if not args.site_watchdog > 0:
        print("edge-mpc run: --site-watchdog must be positive", file=sys.stderr)
        return 2
    fleet = Fleet(args.sites, args.overrides, log_level=args.log_level, once=args.once,
                  watchdog_s=args.site_watchdog)
    fleet.install_signal_handlers()
    try:
        fleet.start()
    except ConfigError as exc:
        print(f"edge-mpc run: {exc}", file=sys.stderr)
        return 2
    return fleet.run()


if __name__ == "__main__":
    sys.exit(main())
