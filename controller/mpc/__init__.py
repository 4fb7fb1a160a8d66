"""Model-predictive control: the problem, its solvers and their results.

- `MPCProblem` / `MPCData` (problem.py): what is decided, what it costs, what bounds it.
- `LQSolver` (lqsolver.py): interior point + Riccati for linear models, with active-set polishing for warm
  starts (polish.py), to a gap certified by a dual bound (dual_bound.py).
- `SCPSolver` (scp.py): sequential convex programming for temperature-dependent meters on a linear network.
- `SQPSolver` (sqp.py): sequential quadratic programming over the exact nonlinear step, for networks that are
  not linear in the inputs (pumped loops, VAV), its condensed QPs solved by denseqp.py. Both judge plans
  by their simulation (shooting.py: the true objective and rated devices' capacity).
- `GenericSolver` (generic.py): projected quasi-Newton for nonlinear models driven by f_and_grad.
- `MPCResult`, `Status`, `shift_plan` (result.py).
"""

from controller.mpc.lqsolver import LQOptions, LQSolver
from controller.mpc.problem import MPCData, MPCProblem, PowerCoeffs, Weights
from controller.mpc.result import MPCResult, Status, shift_plan

__all__ = ["LQOptions", "LQSolver", "MPCData", "MPCProblem", "MPCResult", "PowerCoeffs", "Status", "Weights",
           "shift_plan"]
