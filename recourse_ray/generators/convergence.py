"""Convergence rules: when an individual stops searching (SPEC §5).

A convergence rule is any frozen dataclass that satisfies :class:`ConvergenceRule`; the
engine asks it before each step (may an individual stop before moving?) and after it
(has it stopped moving?). The built-in rules are registered in :data:`CONVERGENCE`
(``"threshold"``, ``"full"``); a user rule is one class in one file, named by import path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from recourse_ray._config import check_real
from recourse_ray._registry import Registry
from recourse_ray.generators._components import raise_problems
from recourse_ray.generators._norm import safe_norm

__all__ = ["ConvergenceRule", "CONVERGENCE", "ThresholdConvergence", "FullSearch"]


@runtime_checkable
class ConvergenceRule(Protocol):
    """Decides, per individual, when its search stops (the engine then freezes it)."""

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        """(m,) bool: stop now, without this step, given the probabilities (m, K)."""

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        """(m,) bool: stop after this step, given the steps (m, K, D) just taken."""


CONVERGENCE: Registry[type[ConvergenceRule]] = Registry("convergence rule")


@CONVERGENCE.register("threshold")
@dataclass(frozen=True, kw_only=True)
class ThresholdConvergence:
    """An individual stops once all its K states reach ``p(y*) >= decision_threshold``."""

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        """Whether every state of an individual is valid."""
        return (proba >= decision_threshold).all(dim=1)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        """Never."""
        return torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)


@CONVERGENCE.register("full")
@dataclass(frozen=True, kw_only=True)
class FullSearch:
    """Ignore the threshold; stop once every state's step is shorter than ``tolerance`` (L2).

    Attributes:
        tolerance: the step length (in the search space) below which a state has stopped, >= 0.
    """

    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "tolerance", float(self.tolerance))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msg = check_real(self.tolerance, "tolerance", "FullSearch", 0)
        return [msg] if msg else []

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        """Never: the threshold does not stop a full search."""
        # On proba's device: the engine combines this mask with tensors there.
        return torch.zeros(proba.shape[0], dtype=torch.bool, device=proba.device)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        """Whether all K steps of an individual are shorter than ``tolerance``."""
        return (safe_norm(delta) < self.tolerance).all(dim=1)
