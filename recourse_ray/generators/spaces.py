"""Search spaces: where a generator's states live and how they map to features (SPEC §4).

A search space is any frozen dataclass that satisfies :class:`SearchSpace`; the engine
optimises the states it starts and scores the points ``f(s)`` it decodes. The built-in
spaces are registered in :data:`SPACES` (``"feature"``, ``"latent"``); a user space is
one class in one file, named by import path (``space: {kind: "mypkg.spaces:Box", ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from recourse_ray._config import check_real
from recourse_ray._registry import Registry
from recourse_ray.generators._components import raise_problems
from recourse_ray.generators.problem import Problem

__all__ = ["SearchSpace", "SPACES", "FeatureSpace", "LatentSpace"]


@runtime_checkable
class SearchSpace(Protocol):
    """Where the states of a search live.

    Attributes:
        needs_vae: whether ``search`` must be given a VAE (a class variable).
    """

    needs_vae: bool

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """The starting states, (n, K, D) float32 on ``problem.factuals``' device.

        Random draws must come from ``problem.rngs(stream)`` (one Generator per individual).
        """

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """The map ``f`` from states (m, K, D) to feature-space points (m, K, d), differentiable."""


SPACES: Registry[type[SearchSpace]] = Registry("search space")


@SPACES.register("feature")
@dataclass(frozen=True, kw_only=True)
class FeatureSpace:
    """Search directly over features; ``f`` is the identity.

    Each individual's K states start at ``x + noise``, ``noise ~ N(0, init_noise^2)``,
    drawn as ``stream_rng("init", seed).normal(0, init_noise, (K, d))`` (float64, then
    cast to float32 and added to the float32 factual).

    Attributes:
        init_noise: the standard deviation of the starting noise, >= 0.
    """

    needs_vae: ClassVar[bool] = False
    init_noise: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "init_noise", float(self.init_noise))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msg = check_real(self.init_noise, "init_noise", "FeatureSpace", 0)
        return [msg] if msg else []

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """(n, K, d): each factual plus its own noise from its ``"init"`` stream."""
        K, d = problem.n_counterfactuals, problem.n_features
        noise = np.stack([rng.normal(0.0, self.init_noise, size=(K, d)) for rng in problem.rngs("init")])
        return problem.factuals[:, None, :] + torch.from_numpy(noise.astype(np.float32)).to(problem.factuals.device)

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """The identity: states are points."""
        return states


@SPACES.register("latent")
@dataclass(frozen=True, kw_only=True)
class LatentSpace:
    """Search over a VAE's latent codes (REVISE, Joshi et al. 2019; CLUE); ``f = vae.decode``.

    All K states start at the encoder mean of ``x`` (no noise, as the reference).
    """

    needs_vae: ClassVar[bool] = True

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """(n, K, L): K copies of each factual's encoder mean."""
        with torch.no_grad():
            mu = problem.vae.encode(problem.factuals)
        return mu[:, None, :].expand(-1, problem.n_counterfactuals, -1).clone()

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """(m, K, L) codes -> (m, K, d) decoded points, all states in one decoder pass."""
        m, K, L = states.shape
        return vae.decode(states.reshape(m * K, L)).reshape(m, K, -1)
