"""Fault injection for the `--sites` test, loaded by every child daemon through PYTHONPATH (Python imports
`sitecustomize` at start-up). With EDGE_MPC_TEST_HANG_FLAG=<file>: the first solve of site
EDGE_MPC_TEST_HANG_SITE that starts while <file> exists deletes it and never returns (a hung solver)."""

from __future__ import annotations

import os
import sys
import threading

_FLAG = os.environ.get("EDGE_MPC_TEST_HANG_FLAG")
_SITE = os.environ.get("EDGE_MPC_TEST_HANG_SITE")

if _FLAG and _SITE:
    from controller.daemon import assemble

    _build = assemble.build_site_controller

    def _build_hanging(site):  # type: ignore[no-untyped-def]
        ctrl = _build(site)
        if site.site != _SITE:
            return ctrl
        real = ctrl.cycle

        def cycle(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                os.unlink(_FLAG)
            except FileNotFoundError:
                return real(*args, **kwargs)
            sys.stderr.write(f"HANG-INJECTED in {_SITE}\n")
            sys.stderr.flush()
            threading.Event().wait()  # forever

        ctrl.cycle = cycle
        return ctrl

    assemble.build_site_controller = _build_hanging
