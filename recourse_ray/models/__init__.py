"""Classifiers and the VAE: creation by name, training, and the classifier interface.

``create(name, input_dim=..., seed=..., **params)`` builds a registered classifier.
Built-in classifiers are :class:`FeedForwardClassifier` instances (logistic regression,
MLP, deep ensemble) whose ``fit`` runs a fused compiled training loop by default;
any other model implementing :class:`Classifier` is trained by its own ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from recourse_ray._registry import Registry
from recourse_ray._rng import as_rng, spawn_seed
from recourse_ray.models._feedforward import FeedForwardClassifier
from recourse_ray.models._torch import TorchClassifier
from recourse_ray.models.vae import VAE

__all__ = [
    "Classifier",
    "FeedForwardClassifier",
    "TorchClassifier",
    "MODELS",
    "create",
    "names",
    "register",
    "defaults",
    "VAE",
]


@runtime_checkable
class Classifier(Protocol):
    """What the simulation, the generators and the metrics need from a classifier."""

    input_dim: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) logit of the target class, differentiable in x."""

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) probability of the target class, differentiable in x."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) probabilities as numpy."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, d) -> (n,) labels in {0, 1}."""

    def fit(self, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, seed, lr: float = 1e-3):
        """Continue training from the current parameters with a fresh optimizer state."""

    def parameter_arrays(self) -> list[np.ndarray]:
        """Copies of each parameter tensor (for the perturbation metric)."""

    def clone(self) -> "Classifier":
        """An independent copy."""


Factory = Callable[..., Classifier]
MODELS: Registry[Factory] = Registry("model")

_DEFAULTS: dict[str, dict] = {}


def register(name: str, factory: Factory | None = None, *, defaults: dict | None = None):
    """Register a classifier factory ``(input_dim, *, seed, **params) -> Classifier``."""
    _DEFAULTS[name] = dict(defaults or {})
    return MODELS.register(name, factory)


def names() -> list[str]:
    """Names of all registered classifiers."""
    return MODELS.names()


def defaults(name: str) -> dict:
    """The default parameters of a registered classifier."""
    MODELS.get(name)
    return dict(_DEFAULTS.get(name, {}))


def create(name: str, *, input_dim: int, seed: int | np.random.Generator = 0, **params) -> Classifier:
    """Create the classifier registered under ``name`` with fresh (seeded) weights.

    Args:
        name: a registered name (``names()``) or an import path ``"package.module:factory"``
            of a factory ``(input_dim, *, seed, **params)`` returning a ``torch.nn.Module``
            (wrapped in :class:`TorchClassifier`) or a Classifier.
        input_dim: number of features.
        seed: int or numpy Generator for the initial weights.
        **params: overrides of the model's defaults (e.g. ``hidden=[64, 64]``, ``dropout=0.1``).
    """
    factory = MODELS.get(name)  # a registered name, or an import path "package.module:factory"
    allowed = _DEFAULTS.get(name)
    if allowed is not None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            from recourse_ray._registry import suggest

            hints = "".join(suggest(k, list(allowed)) for k in unknown)
            raise ValueError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for model {name!r}.{hints} "
                f"Valid parameters: {', '.join(sorted(allowed))}."
            )
    if name in MODELS:
        return factory(input_dim, seed=seed, **{**_DEFAULTS.get(name, {}), **params})
    # A user factory: its default torch initialisation draws from torch's global RNG, so
    # run it inside fork_rng with a seed derived from ours (deterministic, globals untouched).
    rng = as_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spawn_seed(rng))
        model = factory(input_dim, seed=rng, **params)
    if isinstance(model, torch.nn.Module):
        model = TorchClassifier(model, input_dim=input_dim, name=name)
    missing = [m for m in ("logits", "predict_proba", "fit", "clone", "parameter_arrays") if not hasattr(model, m)]
    if missing:
        raise TypeError(
            f"The model factory {name!r} returned {type(model).__name__}, which lacks {', '.join(missing)}: return a "
            "torch.nn.Module (features -> logits) or an object with the Classifier interface (docs/guide.md)."
        )
    return model


def _feedforward(name: str, **fixed) -> Factory:
    def factory(input_dim: int, *, seed=0, **params) -> FeedForwardClassifier:
        return FeedForwardClassifier(input_dim, seed=seed, name=name, **fixed, **params)

    return factory


register(
    "logistic_regression",
    _feedforward("logistic_regression", hidden=()),
    defaults={"backend": "auto"},
)
register(
    "mlp",
    _feedforward("mlp"),
    defaults={"hidden": [32], "dropout": 0.0, "backend": "auto"},
)
register(
    "deep_ensemble",
    _feedforward("deep_ensemble"),
    defaults={"hidden": [32], "dropout": 0.0, "n_members": 5, "backend": "auto"},
)
