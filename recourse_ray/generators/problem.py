"""What the pieces of a generator see: the search request and one iteration's batch.

:class:`Problem` is one validated call of ``Generator.search`` (what spaces and terms read
once, in ``initial_states`` / ``prepare``); :class:`Batch` is what terms read at every
iteration, for the individuals still searching; :func:`model_outputs` is the one forward
pass of the classifier that fills a batch. This module imports no other piece of the
package but the random streams, so terms, spaces and the engine can all depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recourse_ray.generators._streams import stream_rng

__all__ = ["Problem", "Batch", "model_outputs"]


@dataclass(frozen=True, kw_only=True, eq=False)
class Problem:
    """One validated search request (what terms and spaces may read in ``prepare``).

    Attributes:
        factuals: (n, d) float32 tensor.
        n_counterfactuals: K.
        seeds: (n,) per-individual seeds.
        data_X, data_y: the current training data (numpy, (N, d) float32 and (N,)), or None.
        vae: the generative model for latent-space search, or None.
        max_iterations: ``T``, the generator's step budget, for pieces that draw their
            per-iteration randomness up front (one row of draws per possible step); None
            when the problem was not built by a generator.
        constraints: the :class:`~recourse_ray.constraints.Feasibility` every point of
            this search is projected onto (docs/constraints.md), or None (no constraints).
    """

    factuals: torch.Tensor
    n_counterfactuals: int
    seeds: np.ndarray
    data_X: np.ndarray | None = None
    data_y: np.ndarray | None = None
    vae: Any = None
    max_iterations: int | None = None
    constraints: Any = None
    _rng_cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """The number of individuals."""
        return int(self.factuals.shape[0])

    @property
    def n_features(self) -> int:
        """d, the number of features."""
        return int(self.factuals.shape[1])

    def step_budget(self, what: str) -> int:
        """``max_iterations``, for a piece that draws one row of randomness per step.

        Raises:
            ValueError: if the problem does not know the step budget (``what`` names the piece).
        """
        if self.max_iterations is None:
            raise ValueError(f"{what} draws its randomness per step and needs Problem.max_iterations; got None.")
        return int(self.max_iterations)

    def rngs(self, stream: str) -> list[np.random.Generator]:
        """One fresh numpy Generator per individual for ``stream`` (see :func:`stream_rng`).

        Raises:
            RuntimeError: if ``stream`` was already used in this search (two pieces
                sharing a stream would make each one's draws depend on the other).
        """
        if stream in self._rng_cache:
            raise RuntimeError(f"The random stream {stream!r} was already used in this search.")
        self._rng_cache[stream] = True
        return [stream_rng(stream, s) for s in self.seeds]


@dataclass(frozen=True, kw_only=True, eq=False)
class Batch:
    """What terms see at one iteration, for the ``m`` individuals still searching.

    Attributes:
        states: (m, K, D) search variables (features or latent codes), requiring grad.
        points: (m, K, d) the states mapped to feature space (``f(s)``).
        factuals: (m, d).
        logits: (m, K) search logit (mean of member logits for ensembles).
        proba: (m, K) target-class probability.
        member_logits: (M, m, K) logits of each ensemble member (M = 1 for single models).
        iteration: ``t``, the index of this iteration (0 for the first step). Every
            individual still searching has taken exactly ``t`` steps, so a piece that drew
            one row of randomness per step up front reads row ``t`` of each individual.
    """

    states: torch.Tensor
    points: torch.Tensor
    factuals: torch.Tensor
    logits: torch.Tensor
    proba: torch.Tensor
    member_logits: torch.Tensor
    iteration: int = 0


def model_outputs(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classifier's outputs at ``x``, in one forward pass when it exposes its members.

    Args:
        model: a classifier with ``member_logits``, or with ``logits`` and ``proba``.
        x: (N, d) points.

    Returns:
        (logits (N,), proba (N,), member logits (M, N)): the search logit is the mean of
        the member logits and the probability the mean of the member sigmoids.
    """
    member = getattr(model, "member_logits", None)
    if member is not None:
        ml = member(x)
        if ml.shape[0] == 1:
            # One member: the means over members are its own values (a mean of one value
            # is that value, and so is its gradient), two reductions fewer per iteration.
            return ml[0], torch.sigmoid(ml[0]), ml
        return ml.mean(dim=0), torch.sigmoid(ml).mean(dim=0), ml
    logits = model.logits(x)
    return logits, model.proba(x), logits.unsqueeze(0)
