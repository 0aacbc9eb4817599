"""Ray orchestration of sweeps: the only Ray-aware layer of recourse_ray.

``run_sweep(spec, results_dir, address=None)`` runs every system of a validated sweep
(``recourse_ray.spec.load``) that is not yet committed, as Ray tasks, and streams their
rows into the results dataset (``recourse_ray.store``).
"""

from recourse_ray.sweep._cluster import ClusterError
from recourse_ray.sweep._driver import SpecChanged, SweepOutcome, connect, plan, run_sweep

__all__ = ["run_sweep", "plan", "connect", "SweepOutcome", "SpecChanged", "ClusterError"]
