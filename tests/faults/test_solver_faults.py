"""Solver faults injected into the real office-20 SiteController inside the service (lockstep, MemoryBus):
a NaN in the model, a deadline overrun, an exception in the solver, a hung solver thread.

The fallback engages within the same cycle (the cycle's own ack already carries it, and the setpoints of that
seq are finite and in range). The watchdog is pinged only while cycles complete: with a hung solver no
`WATCHDOG=1` reaches a real AF_UNIX datagram socket given as NOTIFY_SOCKET, so systemd (WatchdogSec) would
kill and restart the process; pings resume when the solver returns.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from daemon.conftest import (
    JumpClock,
    assert_watchdog_silent,
    notify_socket,  # noqa: F401  (fixture: a real AF_UNIX datagram socket)
)

from controller.daemon import site as site_mod

from ._common import SITE, T0, TOPICS, Harness, check_published, real_site


def _boot(tmp_path, env=None, overrides=(), monotonic=None):
    h = Harness(real_site(tmp_path), env, overrides=overrides, monotonic=monotonic)
    h.sensors(T0 - 5, 21.0)
    first = h.tick(T0)
    assert first["status"] in ("mpc", "hold") or first["solver_status"] == "deadline"
    return h


def _finite_setpoints(h, seq):
    sp = h.setpoints(seq)
    assert len(sp) == 20
    for s in sp.values():
        assert s.value is None or math.isfinite(s.value)
    check_published(h.bus, h.site.actuators)
    return sp


@pytest.mark.parametrize("fault", ["nan_in_estimator_model", "nan_in_plan", "exception"])
def test_fault_falls_back_in_the_same_cycle(tmp_path, fault):
    h = _boot(tmp_path)
    try:
        assert h.tick(T0 + 900)["status"] == "mpc"
        solve = h.ctrl.solver.solve
        if fault == "nan_in_estimator_model":
            h.ctrl.estimator.F[0, 0] = np.nan  # the state transition matrix of the estimator's model
        elif fault == "nan_in_plan":
            def nan_plan(*a, **kw):
                res = solve(*a, **kw)
                res.u = np.array(res.u)
                res.u[0, 3] = np.nan
                return res
            h.ctrl.solver.solve = nan_plan
        else:
            def boom(*a, **kw):
                raise FloatingPointError("injected: factorisation failed")
            h.ctrl.solver.solve = boom
        h.sensors(T0 + 1795, 21.0)
        ack = h.tick(T0 + 1800)
        expected = {"nan_in_estimator_model": ("divergence", "nonfinite"), "nan_in_plan": ("nonfinite",),
                    "exception": ("solver_error",)}[fault]
        assert ack["status"] == "hold" and ack["reason"] in expected, ack  # this very cycle
        sp = _finite_setpoints(h, ack["seq"])
        assert all(s.source == "hold" for s in sp.values())
        text = h.metrics()
        assert f'edge_mpc_fallback_active{{reason="{ack["reason"]}",site="{SITE}"}} 1.0' in text
    finally:
        h.stop()


@pytest.mark.parametrize(("status", "reason"), [("stalled", "uncertified"), ("infeasible", "infeasible"),
                                               ("deadline", "deadline")])
def test_a_plan_the_solver_does_not_vouch_for_goes_down_the_chain(tmp_path, status, reason):
    """res.success False (stalled, infeasible, no feasible iterate by the deadline): a finite plan, but not
    published as MPC; the chain takes over in the same cycle, with the solver's status as the reason."""
    h = _boot(tmp_path)
    try:
        assert h.tick(T0 + 900)["status"] == "mpc"
        solve = h.ctrl.solver.solve

        def unvouched(*a, **kw):
            res = solve(*a, **kw)
            res.status, res.success = status, False
            return res
        h.ctrl.solver.solve = unvouched
        h.sensors(T0 + 1795, 21.0)
        ack = h.tick(T0 + 1800)
        assert ack["status"] == "hold" and ack["reason"] == reason and ack["solver_status"] == status, ack
        sp = _finite_setpoints(h, ack["seq"])
        assert all(s.source == "hold" for s in sp.values())
        health = json.loads(h.bus.retained(TOPICS.health))
        assert status in health["detail"], health
        assert f'edge_mpc_fallback_active{{reason="{reason}",site="{SITE}"}} 1.0' in h.metrics()
    finally:
        h.stop()


def test_deadline_overrun(tmp_path, monkeypatch):
    monkeypatch.setattr(site_mod, "SOLVER_GRACE_S", 5.0)
    h = _boot(tmp_path, overrides=("control.deadline=0.3 s",))
    try:
        solve = h.ctrl.solver.solve
        before = h.svc.metrics.registry.get_sample_value("edge_mpc_deadline_misses_total", {"site": SITE}) or 0

        def overrun(data, u0=None, *, active=None, timer=None, deadline_s=math.inf):
            time.sleep(0.4)  # past the 0.3 s deadline (but inside the grace: not hung)
            return solve(data, u0, active=active, timer=timer, deadline_s=0.0)
        h.ctrl.solver.solve = overrun
        h.sensors(T0 + 895, 21.0)
        ack = h.tick(T0 + 900)
        assert ack["solver_status"] == "deadline", ack
        # Either the best feasible iterate at the deadline is used, or the chain takes over, in this cycle.
        assert ack["status"] == "mpc" or ack["reason"] == "deadline", ack
        _finite_setpoints(h, ack["seq"])
        after = h.svc.metrics.registry.get_sample_value("edge_mpc_deadline_misses_total", {"site": SITE})
        assert after == before + 1
    finally:
        h.stop()


def test_hung_solver_silences_the_watchdog(tmp_path, notify_socket, monkeypatch):  # noqa: F811
    monkeypatch.setattr(site_mod, "SOLVER_GRACE_S", 0.3)
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "600000"}
    clock = JumpClock()
    h = _boot(tmp_path, env, overrides=("control.deadline=2 s",), monotonic=clock)
    release = threading.Event()
    try:
        assert notify_socket.wait_for("READY=1")
        assert notify_socket.wait_for("WATCHDOG=1")
        solve = h.ctrl.solver.solve
        calls = []

        def hang(*a, **kw):
            calls.append(1)
            release.wait(60)
            return solve(*a, **kw)
        h.ctrl.solver.solve = hang
        h.site.cfg = _with_deadline(h.site.cfg, 0.2)
        h.sensors(T0 + 895, 21.0)
        ack = h.tick(T0 + 900)
        assert ack["status"] == "hold" and ack["reason"] == "solver_hung"  # the fallback, in this cycle
        _finite_setpoints(h, ack["seq"])
        ack = h.tick(T0 + 1800)  # still stuck: no second solver thread, the plant still gets setpoints
        assert ack["reason"] == "solver_hung" and len(calls) == 1
        _finite_setpoints(h, ack["seq"])
        assert_watchdog_silent(notify_socket, clock)  # no WATCHDOG=1 while the solver thread is hung
        release.set()  # the solver returns at last: cycles complete again, pings resume
        assert notify_socket.wait_for("WATCHDOG=1", timeout=20)
        h.sensors(T0 + 2695, 21.0)
        assert h.tick(T0 + 2700)["reason"] != "solver_hung"
    finally:
        release.set()
        h.stop()


def _with_deadline(cfg, deadline_s):
    import dataclasses

    return dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, deadline_s=deadline_s))
