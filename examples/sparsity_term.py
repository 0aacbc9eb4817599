"""A user-defined penalty term: L1 sparsity of the change, to prefer counterfactuals that
move few features (a smooth stand-in for counting changed features).

Named in a sweep file by import path, no registration needed::

    generators:
      sparse: {preset: generic, add_terms: [{term: "examples.sparsity_term:L1Sparsity", weight: 0.5}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recourse_ray.generators import Term


@dataclass(frozen=True, kw_only=True)
class L1Sparsity(Term):
    """``sum_j |f(s)_j - x_j|``: the L1 norm of the change, per counterfactual state.

    ``value`` returns one number per state, shape (m, K); the engine multiplies it by
    ``weight`` and adds it to the objective of every state.
    """

    name: ClassVar[str] = "l1_sparsity"
    weight: float = 0.5

    def value(self, batch, aux):
        return (batch.points - batch.factuals[:, None, :]).abs().sum(dim=-1)
