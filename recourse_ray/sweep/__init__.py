"""Ray orchestration of sweeps: the only Ray-aware layer of recourse_ray.

``run_sweep(spec, results_dir, address=None)`` runs every system of a validated sweep
(``recourse_ray.spec.load``) that is not yet committed, as Ray tasks, and streams their
rows into the results dataset (``recourse_ray.store``).
"""

from typing import TYPE_CHECKING

from recourse_ray._lazy import lazy_getattr

if TYPE_CHECKING:
    from recourse_ray.sweep._cluster import ClusterError
    from recourse_ray.sweep._driver import SpecChanged, SweepOutcome, connect, plan, run_sweep

__all__ = ["run_sweep", "plan", "connect", "SweepOutcome", "SpecChanged", "ClusterError"]

# The driver's names load on first use: a Ray worker imports recourse_ray.sweep._tasks
# (this package first) and so never loads the driver, the store, pyarrow or polars.
_LAZY = {"ClusterError": "_cluster", "SpecChanged": "_driver", "SweepOutcome": "_driver", "connect": "_driver",
         "plan": "_driver", "run_sweep": "_driver"}
__getattr__ = lazy_getattr("recourse_ray.sweep", _LAZY, globals())
