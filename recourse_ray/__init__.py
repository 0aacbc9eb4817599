"""recourse_ray: simulate the dynamics of algorithmic recourse at scale.

Layers (each a subpackage): ``data`` and ``models`` -> ``generators`` and ``metrics`` ->
``simulation`` (one system) -> ``sweep`` (Ray) -> ``store`` (results dataset) ->
``report``. ``simulate`` and ``plot_system`` are the single-system Python API;
``run_sweep``, ``load_results`` and ``build_report`` do what ``recourse-ray run`` and
``recourse-ray report`` do, from a script or a notebook.
"""

from recourse_ray import data, generators, metrics, models
from recourse_ray.constraints import Constraints
from recourse_ray._api import SimulationResult, plot_system, simulate
from recourse_ray._sweep_api import build_report, load_results, run_sweep

__version__ = "0.1.0"
__all__ = [
    "data",
    "models",
    "generators",
    "metrics",
    "Constraints",
    "simulate",
    "plot_system",
    "SimulationResult",
    "run_sweep",
    "load_results",
    "build_report",
    "__version__",
]
