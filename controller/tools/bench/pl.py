"""The PL problem of `edge-mpc bench gradient`: PassiveLogic's BuildingSimulation benchmark.

The problem: the tank-pipe-slab loop of config/buildings/passivelogic.yaml, 20 steps of 0.1 s, the loss
sum_b |T_slab,b(20) - 27.344767|, and its gradient with respect to all 15 parameters and the three
initial temperatures of every scenario. Scenarios differ in their initial temperatures.

Three implementations of the same computation run in the same process:
- edge-mpc: `Simulator.simulate` + `Simulator.gradient(params=all)` on the step-map path;
- numpy-loop: the straightforward implementation, a per-step NumPy loop over the batch with a
  hand-written reverse loop (written here from the published equations);
- torch: the same equations in PyTorch with autograd (only when torch is installed, `pip install
  edge-mpc[bench]`), on the CPU in float64, with one thread like the others.
All three must agree on the loss and the gradient before their times are reported.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from controller.tools.paths import BUILDINGS
from models import load_building

MODEL = BUILDINGS / "passivelogic.yaml"
TARGET = 27.344767
STEPS = 20
DT = 0.1
KEYS = ("tube_spacing", "tube_diameter", "tube_thickness", "tube_resistivity", "geometry_coefficient", "slab_area",
        "slab_specific_heat", "slab_density", "slab_thickness", "flow", "fluid_density", "fluid_specific_heat",
        "tank_volume", "tank_density", "tank_specific_heat")


class EdgeMPC:
    name = "edge-mpc"

    def __init__(self) -> None:
        self.net = load_building(MODEL)
        self.sim = self.net.compile(DT)
        self.names = list(self.net.params.names)

    def params(self) -> dict[str, float]:
        return {k: float(self.sim.theta[self.net.params.index[f"loop.{k}"]]) for k in KEYS}

    def forward(self, x0: np.ndarray) -> float:
        B = x0.shape[0]
        empty = np.zeros((B, STEPS, 0))
        tr = self.sim.simulate(x0, empty, empty)
        return float(np.abs(tr.x[:, -1, 2] - TARGET).sum())

    def fwd_grad(self, x0: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        B = x0.shape[0]
        empty = np.zeros((B, STEPS, 0))
        tr = self.sim.simulate(x0, empty, empty)
        t = tr.x[:, -1, 2] - TARGET
        g_states = np.zeros((B, STEPS + 1, 3))
        g_states[:, -1, 2] = np.sign(t)
        g = self.sim.gradient(tr, g_states=g_states, params=self.names)
        return float(np.abs(t).sum()), np.array([g.params[f"loop.{k}"] for k in KEYS]), np.asarray(g.x0)


class NumpyLoop:
    """Straightforward: a per-step loop over the batch storing what the reverse loop needs."""

    name = "numpy-loop"

    def __init__(self, p: dict[str, float]) -> None:
        self.p = p

    def _run(self, x0: np.ndarray, grad: bool):
        p = self.p
        mdot = p["flow"] * p["fluid_density"]
        mc = mdot * p["fluid_specific_heat"]
        a_t = DT / (p["tank_specific_heat"] * p["tank_volume"] * p["tank_density"])
        a_q = 1.0 / (p["fluid_specific_heat"] * mdot)
        area_t = p["slab_area"] / p["tube_spacing"] * math.pi * p["tube_diameter"]
        g = area_t / (p["tube_resistivity"] * p["tube_thickness"] * p["geometry_coefficient"])
        a_s = DT / (p["slab_specific_heat"] * p["slab_area"] * p["slab_thickness"] * p["slab_density"])
        tt, tq, ts = x0[:, 0].copy(), x0[:, 1].copy(), x0[:, 2].copy()
        tape = []
        for _ in range(STEPS):
            e1 = tt - tq
            p1 = mc * e1
            tw = tq + a_q * p1
            e2 = ts - tw
            p2 = g * e2
            tape.append((e1, p1, e2, p2))
            tt = tt + a_t * p1
            tq = tw + a_q * p2
            ts = ts - a_s * p2
        loss = float(np.abs(ts - TARGET).sum())
        if not grad:
            return loss, None, None
        gt, gq, gs = np.zeros_like(tt), np.zeros_like(tq), np.sign(ts - TARGET)
        s_mc = s_aq = s_g = s_at = s_as = 0.0
        for e1, p1, e2, p2 in reversed(tape):
            # tt' = tt + a_t p1; tq' = tw + a_q p2; ts' = ts - a_s p2
            g_p2 = a_q * gq - a_s * gs
            s_aq += float(np.dot(gq, p2))
            s_as -= float(np.dot(gs, p2))
            s_g += float(np.dot(g_p2, e2))
            g_e2 = g * g_p2
            g_tw = gq - g_e2
            s_aq += float(np.dot(g_tw, p1))
            g_p1 = a_q * g_tw + a_t * gt
            s_at += float(np.dot(gt, p1))
            s_mc += float(np.dot(g_p1, e1))
            g_e1 = mc * g_p1
            gt, gq, gs = gt + g_e1, g_tw - g_e1, gs + g_e2
        l_mc, l_g, l_at, l_as = s_mc * mc - s_aq * a_q, s_g * g, s_at * a_t, s_as * a_s
        gp = np.array([
            -l_g / p["tube_spacing"], l_g / p["tube_diameter"], -l_g / p["tube_thickness"],
            -l_g / p["tube_resistivity"], -l_g / p["geometry_coefficient"], (l_g - l_as) / p["slab_area"],
            -l_as / p["slab_specific_heat"], -l_as / p["slab_density"], -l_as / p["slab_thickness"],
            l_mc / p["flow"], l_mc / p["fluid_density"], l_mc / p["fluid_specific_heat"],
            -l_at / p["tank_volume"], -l_at / p["tank_density"], -l_at / p["tank_specific_heat"]])
        return loss, gp, np.stack([gt, gq, gs], axis=1)

    def forward(self, x0: np.ndarray) -> float:
        return self._run(x0, False)[0]

    def fwd_grad(self, x0: np.ndarray):
        return self._run(x0, True)


class Torch:
    """The published equations in PyTorch, autograd for the gradient (float64, CPU)."""

    name = "torch"

    def __init__(self, p: dict[str, float]) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.p0 = p

    def _loss(self, x0: np.ndarray, grad: bool):
        torch = self.torch
        p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=grad) for k, v in self.p0.items()}
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=grad)
        tt, tq, ts = x[:, 0], x[:, 1], x[:, 2]
        for _ in range(STEPS):
            m_per_t = p["flow"] * p["fluid_density"]
            power = (tt - tq) * m_per_t * p["fluid_specific_heat"]
            tt = tt + power * DT / p["tank_specific_heat"] / (p["tank_volume"] * p["tank_density"])
            working_mass = p["flow"] * DT * p["fluid_density"]
            tq = tq + power * DT / p["fluid_specific_heat"] / working_mass
            surface = p["slab_area"] / p["tube_spacing"] * math.pi * p["tube_diameter"]
            resistance = p["tube_resistivity"] * p["tube_thickness"] / surface * p["geometry_coefficient"]
            power = (ts - tq) / resistance
            tq = tq + power * DT / p["fluid_specific_heat"] / working_mass
            ts = ts - power * DT / p["slab_specific_heat"] / (p["slab_area"] * p["slab_thickness"] * p["slab_density"])
        return (ts - TARGET).abs().sum(), p, x

    def forward(self, x0: np.ndarray) -> float:
        with self.torch.no_grad():
            return float(self._loss(x0, False)[0])

    def fwd_grad(self, x0: np.ndarray):
        loss, p, x = self._loss(x0, True)
        loss.backward()
        return float(loss.detach()), np.array([float(p[k].grad) for k in KEYS]), x.grad.numpy()


def contenders() -> list[Any]:
    ours = EdgeMPC()
    out = [ours, NumpyLoop(ours.params())]
    try:
        out.append(Torch(ours.params()))
    except ImportError:
        pass
    return out


def scenarios(B: int, seed: int = 0) -> np.ndarray:
    x0 = np.tile([70.0, 60.0, 33.3], (B, 1))
    if B > 1:
        x0 = x0 + np.random.default_rng(seed).normal(0, 1.0, (B, 3))
    return x0


def agree(results: dict[str, tuple]) -> float:
    """Largest relative difference of loss and gradients between the contenders and edge-mpc."""
    ref = results["edge-mpc"]
    worst = 0.0
    for name, (loss, gp, gx) in results.items():
        if name == "edge-mpc":
            continue
        worst = max(worst, abs(loss - ref[0]) / abs(ref[0]),
                    float(np.max(np.abs(gp - ref[1]) / np.maximum(np.abs(ref[1]), 1e-300))),
                    float(np.abs(gx - ref[2]).max() / np.abs(ref[2]).max()))
    return worst


def interleaved(fns: dict[str, Any], rounds: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each function over `rounds` interleaved rounds of `reps` timed calls.

    Every call is timed on its own and the median is over all of them, so a pause (another process, the
    allocator) moves no figure much. The order of the contenders rotates from round to round. The cyclic
    garbage collector is off while timing, as in timeit: the autograd graphs of one contender must not be
    collected inside another's timed call.
    """
    import gc

    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up (caches, allocator, torch's dispatcher)
        f()
        f()
    enabled = gc.isenabled()
    try:
        keys = list(fns)
        for r in range(rounds):
            gc.collect()
            gc.disable()
            # The order rotates every round: no contender always runs right after the one that fills the caches.
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                f = fns[k]
                for _ in range(reps):
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return {k: float(np.median(v)) for k, v in times.items()}
