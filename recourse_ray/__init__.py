"""recourse_ray: simulate the dynamics of algorithmic recourse at scale.

Layers (each a subpackage): ``data`` and ``models`` -> ``generators`` and ``metrics`` ->
``simulation`` (one system) -> ``sweep`` (Ray) -> ``store`` (results dataset) ->
``report``. ``simulate`` and ``plot_system`` are the single-system Python API;
``run_sweep``, ``load_results`` and ``build_report`` do what ``recourse-ray run`` and
``recourse-ray report`` do, from a script or a notebook.
"""

from typing import TYPE_CHECKING

from recourse_ray import data, generators, metrics, models
from recourse_ray._lazy import lazy_getattr
from recourse_ray.constraints import Constraints

if TYPE_CHECKING:
    from recourse_ray._api import SimulationResult, plot_system, simulate
    from recourse_ray._sweep_api import build_report, load_results, run_sweep

# The Python API loads on first use: a Ray worker, which only unpickles specs and runs a
# system, then never imports polars and pyarrow (about 100 MB of resident memory each).
_LAZY = {"simulate": "_api", "plot_system": "_api", "SimulationResult": "_api",
         "run_sweep": "_sweep_api", "load_results": "_sweep_api", "build_report": "_sweep_api"}
__getattr__ = lazy_getattr("recourse_ray", _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

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
