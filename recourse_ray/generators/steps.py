"""Step rules: how a gradient becomes a step of the search (SPEC §4).

A step rule is any frozen dataclass that satisfies :class:`StepRule`. The built-in rules
are registered in :data:`STEP_RULES` (``"gradient_descent"``, ``"greedy"``); a user rule
is one class in one file, named by import path in a sweep file
(``step_rule: {kind: "examples.momentum_step:Momentum", step_size: 0.05, beta: 0.5}``),
its fields usable as flat overrides (see ``examples/momentum_step.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from recourse_ray._config import check_int, check_real
from recourse_ray._registry import Registry
from recourse_ray.generators._components import raise_problems

__all__ = ["StepRule", "STEP_RULES", "GradientDescent", "Greedy"]


@runtime_checkable
class StepRule(Protocol):
    """Turns the objective's gradient into a step, possibly with a state of its own.

    The rule's state is a dict of tensors whose first dimension is the individual
    (n, ...), broadcastable against ``(n, 1, 1)``: the engine hands :meth:`step` the rows
    of the individuals still searching and keeps the new rows only for those that move.
    """

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rule's initial state for the starting states (n, K, D)."""

    def step(self, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(delta (m, K, D) to add to the states, the new state) from the gradient (m, K, D)."""


STEP_RULES: Registry[type[StepRule]] = Registry("step rule")


@STEP_RULES.register("gradient_descent")
@dataclass(frozen=True, kw_only=True)
class GradientDescent:
    """Plain gradient descent: ``s <- s - step_size * grad``.

    Attributes:
        step_size: the learning rate, > 0.
    """

    step_size: float = 0.01

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "step_size", float(self.step_size))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msg = check_real(self.step_size, "step_size", "GradientDescent", 0, low_open=True)
        return [msg] if msg else []

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """No state."""
        return {}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """``-step_size * grad``."""
        return -self.step_size * grad, state


@STEP_RULES.register("greedy")
@dataclass(frozen=True, kw_only=True)
class Greedy:
    """JSMA-style greedy steps (Schut et al., AISTATS 2021).

    Each step moves only the most salient coordinate (largest ``|grad|``) of each state,
    by ``step_size`` against the sign of its gradient. A coordinate that has moved
    ``max_changes`` times is skipped until every coordinate of that state has, then the
    state's counts reset (the reference's ``JSMADescent``). Ties go to the first
    coordinate; a zero gradient moves nothing and counts nothing.

    Attributes:
        step_size: ``eps``, the size of one move, > 0.
        max_changes: ``n``, the moves of one coordinate before it waits for the others, >= 1.
    """

    step_size: float = 0.1
    max_changes: int = 10

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "step_size", float(self.step_size))
        object.__setattr__(self, "max_changes", int(self.max_changes))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = [
            check_real(self.step_size, "step_size", "Greedy", 0, low_open=True),
            check_int(self.max_changes, "max_changes", "Greedy", 1),
        ]
        return [m for m in msgs if m]

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-coordinate move counts, (n, K, D) int32 zeros."""
        return {"counts": torch.zeros(states.shape, dtype=torch.int32, device=states.device)}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Move each state's most salient unsaturated coordinate by ``step_size``."""
        counts = state["counts"]
        saliency = grad.abs().masked_fill(counts >= self.max_changes, -1.0)
        chosen = saliency.argmax(dim=-1, keepdim=True)  # (m, K, 1)
        direction = -torch.sign(grad.gather(-1, chosen))
        delta = torch.zeros_like(grad).scatter_(-1, chosen, self.step_size * direction)
        moved = torch.zeros_like(counts).scatter_(-1, chosen, (direction != 0).to(counts.dtype))
        counts = counts + moved
        saturated = (counts >= self.max_changes).all(dim=-1, keepdim=True)
        return delta, {"counts": torch.where(saturated, torch.zeros_like(counts), counts)}
