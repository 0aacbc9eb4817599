"""Step rules: how a gradient becomes a step of the search (SPEC §4).

A step rule is any frozen dataclass that satisfies :class:`StepRule`. The built-in rules
are registered in :data:`STEP_RULES` (``"gradient_descent"``, ``"greedy"``); a user rule
is one class in one file, named by import path in a sweep file
(``step_rule: {kind: "examples.momentum_step:Momentum", step_size: 0.05, beta: 0.5}``),
its fields usable as flat overrides (see ``examples/momentum_step.py``).

A rule that needs per-individual randomness may also have ``prepare(problem) -> dict of
tensors`` (one row per individual, drawn from ``problem.rngs(stream)``): the engine
calls it once per search and adds its tensors to the rule's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from recourse_ray._config import check_int, check_real, param_message
from recourse_ray._registry import Registry
from recourse_ray.generators._components import added_option, raise_problems
from recourse_ray.generators.problem import Problem

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
        zero_nan_steps: set every NaN component of a step to 0 (the reference CE.jl's
            ``_replace_nans``, its stop-gap against exploding gradients: only NaN, an
            infinite component is kept). An added option, set in the rule's mapping
            (``{"kind": "gradient_descent", "zero_nan_steps": True}``).
    """

    step_size: float = 0.01
    zero_nan_steps: bool = added_option(False)

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "step_size", float(self.step_size))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = [check_real(self.step_size, "step_size", "GradientDescent", 0, low_open=True)]
        if not isinstance(self.zero_nan_steps, (bool, np.bool_)):
            msgs.append(param_message("zero_nan_steps", "GradientDescent", "a bool", self.zero_nan_steps))
        return [m for m in msgs if m]

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """No state."""
        return {}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """``-step_size * grad`` (NaN components 0 with ``zero_nan_steps``)."""
        delta = -self.step_size * grad
        if self.zero_nan_steps:
            delta = torch.where(torch.isnan(delta), torch.zeros_like(delta), delta)
        return delta, state


@STEP_RULES.register("greedy")
@dataclass(frozen=True, kw_only=True)
class Greedy:
    """JSMA-style greedy steps (Schut et al., AISTATS 2021).

    Each step moves only the most salient coordinate (largest ``|grad|``) of each state,
    by ``step_size`` against the sign of its gradient. A coordinate that has moved
    ``max_changes`` times is skipped until every coordinate of that state has, then the
    state's counts reset (the reference's ``JSMADescent``). Ties go to the first
    coordinate; a zero gradient moves nothing and counts nothing.

    ``max_changes=None`` lifts the limit: the reference CE.jl 0.1.x counted a feature as
    changed whenever its *inverse-transformed* step was non-zero, which in standardized
    space is every feature at every step, so all counts stay equal and its limit never
    binds (the reference's bug, reproduced by this setting). ``random_ties=True`` breaks
    ties uniformly at random among the tied coordinates with a non-zero gradient, as the
    reference does: each state draws one uniform number per step, from the individual's
    ``"greedy_ties"`` stream, all T of them up front.

    Attributes:
        step_size: ``eps``, the size of one move, > 0.
        max_changes: ``n``, the moves of one coordinate before it waits for the others,
            >= 1, or None for no limit.
        random_ties: break ties at random (an added option, set in the rule's mapping:
            ``{"kind": "greedy", "random_ties": True}``).
    """

    step_size: float = 0.1
    max_changes: int | None = 10
    random_ties: bool = added_option(False)

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "step_size", float(self.step_size))
        if self.max_changes is not None:
            object.__setattr__(self, "max_changes", int(self.max_changes))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = [check_real(self.step_size, "step_size", "Greedy", 0, low_open=True)]
        if self.max_changes is not None and check_int(self.max_changes, "max_changes", "Greedy", 1):
            expected = "None or an int in the range [1, inf)"
            msgs.append(param_message("max_changes", "Greedy", expected, self.max_changes))
        if not isinstance(self.random_ties, (bool, np.bool_)):
            msgs.append(param_message("random_ties", "Greedy", "a bool", self.random_ties))
        return [m for m in msgs if m]

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-coordinate move counts, (n, K, D) int32 zeros (none without a limit)."""
        if self.max_changes is None:
            return {}
        return {"counts": torch.zeros(states.shape, dtype=torch.int32, device=states.device)}

    def prepare(self, problem: Problem) -> dict[str, torch.Tensor]:
        """With ``random_ties``: (n, T, K) uniform tie draws and a (n, 1, 1) step counter."""
        if not self.random_ties:
            return {}
        T, K = problem.step_budget("Greedy(random_ties=True)"), problem.n_counterfactuals
        draws = np.stack([rng.random((T, K)) for rng in problem.rngs("greedy_ties")])
        device = problem.factuals.device
        return {
            "tie_draws": torch.from_numpy(draws.astype(np.float32)).to(device),
            "steps": torch.zeros((problem.n, 1, 1), dtype=torch.int64, device=device),
        }

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Move each state's most salient unsaturated coordinate by ``step_size``."""
        saliency = grad.abs()
        if self.max_changes is not None:
            saliency = saliency.masked_fill(state["counts"] >= self.max_changes, -1.0)
        if self.random_ties:
            chosen = self._random_tie(saliency, state)
        else:
            chosen = saliency.argmax(dim=-1, keepdim=True)  # (m, K, 1)
        direction = -torch.sign(grad.gather(-1, chosen))
        delta = torch.zeros_like(grad).scatter_(-1, chosen, self.step_size * direction)
        new_state = dict(state)
        if self.random_ties:
            new_state["steps"] = state["steps"] + 1
        if self.max_changes is not None:
            counts = state["counts"]
            moved = torch.zeros_like(counts).scatter_(-1, chosen, (direction != 0).to(counts.dtype))
            counts = counts + moved
            saturated = (counts >= self.max_changes).all(dim=-1, keepdim=True)
            new_state["counts"] = torch.where(saturated, torch.zeros_like(counts), counts)
        return delta, new_state

    @staticmethod
    def _random_tie(saliency: torch.Tensor, state: dict) -> torch.Tensor:
        """(m, K, 1): a uniformly drawn coordinate among those of largest saliency."""
        m, K, _ = saliency.shape
        top = saliency.amax(dim=-1, keepdim=True)
        tied = saliency == top  # (m, K, D); all-zero gradients tie everywhere and move nothing
        n_tied = tied.sum(dim=-1, keepdim=True)  # (m, K, 1), >= 1
        row = state["steps"].clamp(max=state["tie_draws"].shape[1] - 1).expand(m, 1, K)
        u = state["tie_draws"].gather(1, row).transpose(1, 2)  # (m, K, 1)
        rank = torch.minimum((u * n_tied).to(torch.int64), n_tied - 1)  # 0-based among the tied
        order = torch.cumsum(tied.to(torch.int64), dim=-1) - 1
        return (tied & (order == rank)).to(torch.int64).argmax(dim=-1, keepdim=True)
