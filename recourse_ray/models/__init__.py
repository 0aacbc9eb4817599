"""Classifiers and the VAE: creation by name, training, and the classifier interface.

``create(name, input_dim=..., seed=..., **params)`` builds a registered classifier.
Built-in classifiers are :class:`FeedForwardClassifier` instances (logistic regression,
MLP, deep ensemble) whose ``fit`` runs a fused compiled training loop by default;
any other model implementing :class:`Classifier` (the one interface the search, the
metrics and the simulation depend on; ``_protocol.py``) is trained by its own ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recourse_ray._registry import Registry, suggest
from recourse_ray._rng import as_rng, spawn_seed
from recourse_ray.models._feedforward import FeedForwardClassifier
from recourse_ray.models._protocol import (
    Classifier,
    SupportsMemberLogits,
    SupportsOnDevice,
    missing_fit_keywords,
    missing_members,
)
from recourse_ray.models._torch import TorchClassifier
from recourse_ray.models.vae import VAE

__all__ = [
    "Classifier",
    "SupportsMemberLogits",
    "SupportsOnDevice",
    "FeedForwardClassifier",
    "TorchClassifier",
    "MODELS",
    "create",
    "check_classifier",
    "names",
    "register",
    "defaults",
    "VAE",
]


Factory = Callable[..., Classifier]
MODELS: Registry[Factory] = Registry("model")

_DEFAULTS: dict[str, dict[str, Any]] = {}


def register(
    name: str, factory: Factory | None = None, *, defaults: dict[str, Any] | None = None
) -> Callable[[Factory], Factory] | Factory:
    """Register a classifier factory ``(input_dim, *, seed, **params) -> Classifier``.

    Args:
        name: the registry name (duplicates raise).
        factory: the factory; omitted, ``register`` returns a decorator.
        defaults: the factory's parameters and their defaults; ``create`` rejects any
            other parameter (with a did-you-mean).
    """
    _DEFAULTS[name] = dict(defaults or {})
    return MODELS.register(name, factory)


def names() -> list[str]:
    """Names of all registered classifiers."""
    return MODELS.names()


def defaults(name: str) -> dict[str, Any]:
    """The default parameters of a registered classifier."""
    MODELS.get(name)
    return dict(_DEFAULTS.get(name, {}))


def create(name: str, *, input_dim: int, seed: int | np.random.Generator = 0, **params: Any) -> Classifier:
    """Create the classifier registered under ``name`` with fresh (seeded) weights.

    Args:
        name: a registered name (``names()``) or an import path ``"package.module:factory"``
            of a factory ``(input_dim, *, seed, **params)`` returning a ``torch.nn.Module``
            (wrapped in :class:`TorchClassifier`) or a Classifier.
        input_dim: number of features.
        seed: int or numpy Generator for the initial weights.
        **params: overrides of the model's defaults (e.g. ``hidden=[64, 64]``, ``dropout=0.1``).

    Raises:
        ValueError: a parameter the registered model does not have.
        TypeError: a user factory returned something that is no :class:`Classifier`.
    """
    factory = MODELS.get(name)  # a registered name, or an import path "package.module:factory"
    allowed = _DEFAULTS.get(name)
    if allowed is not None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
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
    check_classifier(model, source=f"The model factory {name!r} returned")
    return model


def check_classifier(model: object, *, source: str) -> None:
    """Raise TypeError unless ``model`` is a :class:`Classifier` the simulation can train.

    Beyond the protocol's members, ``fit`` must take the keywords the simulation passes
    (``epochs``, ``batch_size``, ``seed``, ``lr``, ``device``), or ``**kwargs``.

    Args:
        model: the object to check.
        source: the start of the message, naming where ``model`` came from (e.g.
            ``"The model factory 'x' returned"``); the type name and what it lacks follow.
    """
    lacking = [] if isinstance(model, Classifier) else missing_members(model)
    lacking += [f"fit(..., {k}=...)" for k in missing_fit_keywords(model)]
    if lacking:
        raise TypeError(
            f"{source} {type(model).__name__}, which lacks {', '.join(lacking)}: a classifier needs the "
            "interface of recourse_ray.models.Classifier (docs/guide.md); a model factory may also return a "
            "torch.nn.Module (features -> logits)."
        )


def _feedforward(name: str, **fixed: Any) -> Factory:
    def factory(input_dim: int, *, seed: int | np.random.Generator = 0, **params: Any) -> FeedForwardClassifier:
        return FeedForwardClassifier(input_dim, seed=seed, name=name, **fixed, **params)

    return factory


# ``init``: "glorot_uniform" (Flux's Dense default, as the reference initialises) or
# "torch" (torch.nn.Linear's default); see FeedForwardClassifier.
register(
    "logistic_regression",
    _feedforward("logistic_regression", hidden=()),
    defaults={"backend": "auto", "init": "glorot_uniform"},
)
register(
    "mlp",
    _feedforward("mlp"),
    defaults={"hidden": [32], "dropout": 0.0, "backend": "auto", "init": "glorot_uniform"},
)
register(
    "deep_ensemble",
    _feedforward("deep_ensemble"),
    defaults={"hidden": [32], "dropout": 0.0, "n_members": 5, "backend": "auto", "init": "glorot_uniform"},
)
