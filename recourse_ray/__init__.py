"""recourse_ray: simulate the dynamics of algorithmic recourse at scale."""

from recourse_ray import data, models

__version__ = "0.1.0"
__all__ = ["data", "models", "__version__"]
