"""The classifier interface: what the search, the metrics and the simulation need from a model.

Where it sits in the flow: :class:`Classifier` is the one type every consumer of a
classifier depends on. ``models.create`` checks each model it builds against it; the
counterfactual search (``generators``) calls ``logits``/``proba`` (or ``member_logits``);
the metrics call ``predict_proba``, ``predict`` and ``parameter_arrays``; the simulation
calls ``predict``, ``fit`` and ``clone``. ``FeedForwardClassifier`` (the built-in models)
and ``TorchClassifier`` (any user ``torch.nn.Module``) implement it; so can any user
object.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "Classifier",
    "SupportsMemberLogits",
    "SupportsOnDevice",
    "CLASSIFIER_MEMBERS",
    "FIT_KEYWORDS",
    "missing_members",
    "missing_fit_keywords",
]


@runtime_checkable
class Classifier(Protocol):
    """A binary classifier of float32 feature rows, as the whole package uses one.

    Attributes:
        input_dim: number of features ``d``.

    Optional capabilities (not part of the protocol, so ``isinstance`` does not ask for
    them; consumers look them up with ``getattr(model, name, None)``):

    - ``member_logits(x) -> (n_members, N)``: the logits of each ensemble member
      (:class:`SupportsMemberLogits`). The search then takes one forward pass for the
      search logit (mean of member logits), the probability (mean of member sigmoids) and
      the per-member terms (``classifier_loss``); without it the model counts as one
      member whose logits are ``logits(x)``.
    - ``on_device(device) -> Classifier``: a copy whose weights live on a torch device
      (:class:`SupportsOnDevice`), leaving the model itself unchanged. Needed only to
      search on a device other than the CPU (``simulation.device``); a model without it
      can only be searched on the CPU.
    - ``parameters_vector() -> (n_params,) float32``: all weights as one array, stored in
      a system's final state when present.

    Training: ``fit`` continues from the current weights with a fresh optimizer state
    and takes the device to train on; the model chooses its own backend. A model with a
    faster path that ignores the device (the built-in models' fused CPU kernel) may take
    it; any other training runs on ``device`` (None or ``"cpu"``: the CPU, in place).
    """

    input_dim: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 -> (N,) logit of the target class, differentiable in ``x``."""
        ...

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 -> (N,) probability of the target class, differentiable in ``x``."""
        ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n,) target-class probabilities as numpy."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n,) int64 labels in {0, 1}."""
        ...

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        seed: int | np.random.Generator,
        lr: float = 1e-3,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """Continue training from the current weights with a fresh optimizer state.

        Args:
            X: (n, d) float32 features. y: (n,) labels in {0, 1}.
            epochs: passes over the data (>= 0). batch_size: rows per step (>= 1).
            seed: int or numpy Generator; the only source of randomness.
            lr: learning rate.
            device: torch device to train on; None or a CPU device trains in place on
                the CPU. The model may ignore it where it has a faster CPU path.

        Returns:
            (n_members, epochs) float64 mean batch loss of each epoch (n_members = 1 for
            a single model).
        """
        ...

    def parameter_arrays(self) -> list[np.ndarray]:
        """Copies of each parameter tensor (weight matrices, bias vectors), for ``perturbation``."""
        ...

    def clone(self) -> Classifier:
        """An independent copy (weights copied)."""
        ...


@runtime_checkable
class SupportsMemberLogits(Protocol):
    """An ensemble that exposes its members (see :class:`Classifier`, optional capabilities)."""

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 -> (n_members, N) logit of each member, differentiable in ``x``."""
        ...


@runtime_checkable
class SupportsOnDevice(Protocol):
    """A model that can be copied to a torch device (see :class:`Classifier`, optional capabilities)."""

    def on_device(self, device: str | torch.device) -> Classifier:
        """A copy whose weights live on ``device``; this model is not changed."""
        ...


#: Every member :class:`Classifier` requires, in the order it declares them.
CLASSIFIER_MEMBERS: tuple[str, ...] = tuple(Classifier.__annotations__) + tuple(
    name for name, value in vars(Classifier).items() if callable(value) and not name.startswith("_")
)
#: The keyword arguments the simulation passes to ``fit``.
FIT_KEYWORDS: tuple[str, ...] = ("epochs", "batch_size", "seed", "lr", "device")


def missing_members(obj: object) -> list[str]:
    """The :data:`CLASSIFIER_MEMBERS` that ``obj`` lacks (empty for a :class:`Classifier`)."""
    return [name for name in CLASSIFIER_MEMBERS if not hasattr(obj, name)]


def missing_fit_keywords(obj: object) -> list[str]:
    """The :data:`FIT_KEYWORDS` that ``obj.fit`` cannot take by name.

    Empty when ``fit`` takes ``**kwargs``, when it has no signature Python can read, or
    when ``obj`` has no ``fit`` (:func:`missing_members` reports that).
    """
    fit = getattr(obj, "fit", None)
    if fit is None:
        return []
    try:
        parameters = inspect.signature(fit).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [k for k in FIT_KEYWORDS if k not in parameters or parameters[k].kind not in by_name]
