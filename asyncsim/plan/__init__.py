"""What-if capacity planning: sweep a scenario over a grid of hardware values and policies.

>>> from asyncsim.plan import PlanSpec, run_plan, make_backend            # doctest: +SKIP
>>> import asyncsim
>>> plan = PlanSpec(asyncsim.load_scenario("scenarios/homogeneous-8.yaml"),
...                 vary=[("workers.0.count", [4, 8, 16])], policies=["async", "backup"],
...                 updates=2000, base_lr=0.1)                              # doctest: +SKIP
>>> res = run_plan(plan, "plan-out", make_backend("local"))               # doctest: +SKIP
>>> res.rows[0]["speedup_throughput"]                                        # doctest: +SKIP

Modules: :mod:`~asyncsim.plan.grid` (``--vary`` and plan files → points),
:mod:`~asyncsim.plan.point` (one point: simulate → stability → lr → train),
:mod:`~asyncsim.plan.backends` (local pool / Ray), :mod:`~asyncsim.plan.store`
(resumable results, the table), :mod:`~asyncsim.plan.report` (HTML/Markdown).
"""

from .backends import LocalBackend, RayBackend, SerialBackend, make_backend
from .grid import GridPoint, PlanSpec, Task, expand, load_plan_file, parse_vary, policy_defaults
from .run import PlanResult, run_plan
from .store import ResultStore, read_table

__all__ = ["PlanSpec", "GridPoint", "Task", "expand", "parse_vary", "load_plan_file", "policy_defaults",
           "run_plan", "PlanResult", "LocalBackend", "RayBackend", "SerialBackend", "make_backend",
           "ResultStore", "read_table"]
