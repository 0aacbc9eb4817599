"""A user-defined step rule: gradient descent with heavy-ball momentum (Polyak 1964).

One class in one file, registered nowhere: a sweep file names it by import path, and its
fields (``step_size``, ``beta``) are overrides like any built-in rule's::

    generators:
      momentum:
        preset: generic
        step_rule: {kind: "examples.momentum_step:Momentum", step_size: 0.05, beta: 0.5}

Run it with ``--py-modules examples`` so that the workers can import it too. From Python:
``create("generic", step_rule={"kind": "examples.momentum_step:Momentum", "beta": 0.5})``.
It satisfies :class:`recourse_ray.generators.StepRule` (``init`` and ``step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recourse_ray._config import check_real


@dataclass(frozen=True, kw_only=True)
class Momentum:
    """Heavy-ball steps: ``v <- beta * v + grad``, ``delta = -step_size * v``, with ``v = 0`` at the start.

    With ``beta = 0`` every step is plain gradient descent's ``-step_size * grad``.

    Attributes:
        step_size: the learning rate, > 0.
        beta: how much of the previous velocity each step keeps, in [0, 1).
    """

    step_size: float = 0.01
    beta: float = 0.9

    def __post_init__(self) -> None:
        problems = [
            msg
            for msg in (
                check_real(self.step_size, "step_size", "Momentum", 0, low_open=True),
                check_real(self.beta, "beta", "Momentum", 0, 1, high_open=True),
            )
            if msg
        ]
        if problems:
            raise ValueError(" ".join(problems))

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """The velocity, (n, K, D) zeros: one row per individual, as the engine requires."""
        return {"velocity": torch.zeros_like(states)}

    def step(self, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(delta (m, K, D), the new velocity) from the gradient (m, K, D) of the active individuals."""
        velocity = self.beta * state["velocity"] + grad
        return -self.step_size * velocity, {"velocity": velocity}
