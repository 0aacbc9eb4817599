"""Convergence rules: when an individual stops searching (SPEC §5).

A convergence rule is any frozen dataclass that satisfies :class:`ConvergenceRule`; the
engine asks it before each step (may an individual stop before moving?), optionally once
the step is proposed (``stop_on_step``: may it stop instead of taking that step?), and
after it (has it stopped moving?). The built-in rules are registered in :data:`CONVERGENCE`
(``"threshold"``, ``"full"``); a user rule is one class in one file, named by import path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from recourse_ray._config import check_real, param_message
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

    # Optional: ``stop_on_step(proba, delta, decision_threshold) -> (m,) bool``: stop now,
    # without taking the proposed steps ``delta``, given both (FullSearch uses it).


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
    """The mitigation generators' rule: search on past the threshold until the steps vanish.

    With ``needs_threshold`` (the default, the reference's rule: CE.jl's
    ``converge_when = :generator_conditions``), an individual stops, without taking its
    step, at the first iteration where all its K states reach ``p(y*) >=
    decision_threshold`` **and** every coordinate of each of the K proposed steps is
    shorter than ``tolerance`` in absolute value (``measure = "max"``). Without
    ``needs_threshold`` the threshold plays no part: an individual stops once the step it
    just took is shorter than ``tolerance`` (``measure = "l2"``: the L2 norm of each of the
    K steps; ``"max"``: every coordinate), this project's rule before December 2026.

    Attributes:
        tolerance: the step length (in the search space) below which a state has stopped, >= 0.
        needs_threshold: whether the states must also be valid for the individual to stop.
        measure: ``"max"`` (every coordinate, the reference's) or ``"l2"`` (the step's norm).
    """

    tolerance: float = 1e-3
    needs_threshold: bool = True
    measure: str = "max"

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "tolerance", float(self.tolerance))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = [check_real(self.tolerance, "tolerance", "FullSearch", 0)]
        if not isinstance(self.needs_threshold, bool):
            msgs.append(param_message("needs_threshold", "FullSearch", "true or false", self.needs_threshold))
        if self.measure not in ("max", "l2"):
            msgs.append(param_message("measure", "FullSearch", "one of 'max', 'l2'", self.measure))
        return [m for m in msgs if m]

    def _short(self, delta: torch.Tensor) -> torch.Tensor:
        """(m,) bool: all K steps of an individual are shorter than ``tolerance``."""
        if self.measure == "l2":
            return (safe_norm(delta) < self.tolerance).all(dim=1)
        return (delta.abs() < self.tolerance).flatten(1).all(dim=1)

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        """Never on the probabilities alone: the threshold does not stop a full search."""
        # On proba's device: the engine combines this mask with tensors there.
        return torch.zeros(proba.shape[0], dtype=torch.bool, device=proba.device)

    def stop_on_step(self, proba: torch.Tensor, delta: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        """(m,) bool: stop now, without the proposed steps ``delta`` (m, K, D), at probabilities (m, K)."""
        if not self.needs_threshold:
            return torch.zeros(proba.shape[0], dtype=torch.bool, device=proba.device)
        return (proba >= decision_threshold).all(dim=1) & self._short(delta)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        """Without ``needs_threshold``: whether all K steps just taken were short."""
        if self.needs_threshold:
            return torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)
        return self._short(delta)
