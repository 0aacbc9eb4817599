"""recourse_ray: simulate the dynamics of algorithmic recourse at scale.

Layers (each a subpackage): ``data`` and ``models`` -> ``generators`` and ``metrics`` ->
``simulation`` (one system) -> ``sweep`` (Ray) -> ``store`` (results dataset) ->
``report``. ``simulate`` and ``plot_system`` are the single-system Python API.
"""

from recourse_ray import data, generators, metrics, models
from recourse_ray._api import SimulationResult, plot_system, simulate

__version__ = "0.1.0"
__all__ = [
    "data",
    "models",
    "generators",
    "metrics",
    "simulate",
    "plot_system",
    "SimulationResult",
    "__version__",
]
