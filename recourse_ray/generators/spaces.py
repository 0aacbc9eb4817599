"""Search spaces: where a generator's states live and how they map to features (SPEC §4).

A search space is any frozen dataclass that satisfies :class:`SearchSpace`; the engine
optimises the states it starts and scores the points ``f(s)`` it decodes. The built-in
spaces are registered in :data:`SPACES` (``"feature"``, ``"latent"``, ``"standardized"``);
a user space is one class in one file, named by import path
(``space: {kind: "mypkg.spaces:Box", ...}``).

A space whose map ``f`` depends on the search (the standardized space's mean and scale
come from the current training data) has a ``bind(problem)`` method: the engine calls it
once per search and uses the object it returns (with ``initial_states`` and ``decode``)
for that search, so the space itself stays a plain, comparable setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from recourse_ray._config import check_real, param_message
from recourse_ray._registry import Registry
from recourse_ray.generators._components import added_option, raise_problems
from recourse_ray.generators.problem import Problem

__all__ = [
    "SearchSpace", "SPACES", "FeatureSpace", "LatentSpace", "LatentSearch", "StandardizedSpace", "Standardization",
]


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


# An optional member, looked up by name: ``from_features(points (m, K, d)) -> states``, the
# inverse of ``decode`` for a space whose states are an increasing elementwise map of
# the points. With constraints, the engine projects such a space's states after every
# step and masks the gradient of the coordinates that may not move; a space without it
# (latent) has its decoded points projected instead (docs/constraints.md).


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

    def from_features(self, points: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`decode` (the identity), for projecting states onto constraints."""
        return points


#: What a latent search gives an individual whose factual is already valid (``LatentSpace.valid_factuals``).
VALID_FACTUALS = ("encode", "factual")


@SPACES.register("latent")
@dataclass(frozen=True, kw_only=True)
class LatentSpace:
    """Search over a VAE's latent codes (REVISE, Joshi et al. 2019; CLUE); ``f = vae.decode``.

    By default all K states start at the encoder mean of ``x`` (no noise). With
    ``start="sample"`` each state starts at its own draw from ``q(z|x)``,
    ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn as
    ``stream_rng("init", seed).standard_normal((K, L))``: the reference CE.jl 0.1.x maps the
    factual to the latent space by sampling its encoder (``z = mu + exp(log sigma) * eps``;
    our VAE returns the log-variance, hence the half).

    ``valid_factuals`` says what an individual gets whose factual the model already
    places in the target class, when the generator's ``skip_valid_factuals`` returns such
    an individual at its start (the engine calls :meth:`LatentSearch.start_valid_factuals`;
    without ``skip_valid_factuals`` the option changes nothing). ``"encode"`` (the
    default): its states are encoded like everyone's and it gets their decoded points,
    i.e. VAE reconstructions of itself. ``"factual"``: it never enters the latent space:
    its K points are the factual plus ``N(0, factual_noise^2)`` per feature, drawn as
    ``stream_rng("init-valid", seed).normal(0, factual_noise, (K, d))``, as the reference
    (CE.jl 0.1.x) encodes a factual only when it does not already reach the threshold and
    otherwise returns its perturbed start in feature space.

    Attributes:
        start: ``"mean"`` (the encoder mean) or ``"sample"`` (a sample of ``q(z|x)``); an
            added option, set in the space's mapping (``{"kind": "latent", "start": "sample"}``).
        valid_factuals: ``"encode"`` or ``"factual"`` (above); an added option.
        factual_noise: with ``valid_factuals="factual"``, the standard deviation (feature
            units, >= 0) of the perturbation of a valid factual's points; an added option.
    """

    needs_vae: ClassVar[bool] = True
    start: str = added_option("mean")
    valid_factuals: str = added_option("encode")
    factual_noise: float = added_option(0.0)

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "factual_noise", float(self.factual_noise))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = []
        if self.start not in ("mean", "sample"):
            msgs.append(param_message("start", "LatentSpace", "one of 'mean', 'sample'", self.start))
        if self.valid_factuals not in VALID_FACTUALS:
            expected = "one of " + ", ".join(map(repr, VALID_FACTUALS))
            msgs.append(param_message("valid_factuals", "LatentSpace", expected, self.valid_factuals))
        msgs.append(check_real(self.factual_noise, "factual_noise", "LatentSpace", 0))
        return [m for m in msgs if m]

    def bind(self, problem: Problem) -> LatentSearch:
        """The space for one search (it holds what ``valid_factuals`` keeps)."""
        return LatentSearch(space=self)

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """(n, K, L): K copies of each factual's encoder mean, or K samples of ``q(z|x)``."""
        if self.start == "sample":
            return self._sampled_states(problem)
        with torch.no_grad():
            mu = problem.vae.encode(problem.factuals)
        return mu[:, None, :].expand(-1, problem.n_counterfactuals, -1).clone()

    def _sampled_states(self, problem: Problem) -> torch.Tensor:
        moments = getattr(problem.vae, "encode_moments", None)
        if moments is None:
            raise ValueError(
                "LatentSpace(start='sample') needs a VAE with encode_moments(x) -> (mean, log-variance); "
                f"got {type(problem.vae).__name__}."
            )
        with torch.no_grad():
            mu, logvar = moments(problem.factuals)
        K, L = problem.n_counterfactuals, mu.shape[1]
        eps = np.stack([rng.standard_normal((K, L)) for rng in problem.rngs("init")])
        eps_t = torch.from_numpy(eps.astype(np.float32)).to(mu.device)
        return (mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps_t).detach()

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """(m, K, L) codes -> (m, K, d) decoded points, all states in one decoder pass."""
        m, K, L = states.shape
        return vae.decode(states.reshape(m * K, L)).reshape(m, K, -1)


@dataclass(kw_only=True, eq=False)
class LatentSearch:
    """A :class:`LatentSpace` bound to one search.

    Attributes:
        space: the settings.
        kept: with ``valid_factuals="factual"``, after :meth:`start_valid_factuals`: the
            (n,) mask of the individuals whose factual is valid and the (n, K, d) points
            returned for them; None otherwise.
    """

    space: LatentSpace
    kept: tuple[torch.Tensor, torch.Tensor] | None = None

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """The space's starting codes (:meth:`LatentSpace.initial_states`)."""
        return self.space.initial_states(problem)

    def start_valid_factuals(self, problem: Problem, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Keep the perturbed factuals of the ``valid`` individuals (``valid_factuals="factual"``).

        Args:
            problem: the search's problem. states: (n, K, L) starting codes.
            valid: (n,) bool, the individuals whose factual already reaches the threshold.

        Returns:
            ``states`` unchanged (the kept points replace those individuals' decoded
            points in :meth:`decode`).
        """
        if self.space.valid_factuals == "factual":
            K, d = states.shape[1], problem.n_features
            sd = self.space.factual_noise
            noise = np.stack([rng.normal(0.0, sd, size=(K, d)) for rng in problem.rngs("init-valid")])
            points = problem.factuals[:, None, :] + torch.from_numpy(noise.astype(np.float32)).to(states.device)
            self.kept = (valid.clone(), points)
        return states

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """(m, K, L) codes -> (m, K, d) points (:meth:`LatentSpace.decode`).

        With kept factuals, a call with all n individuals returns the kept points of the
        valid ones; a call with fewer rows holds searching individuals only (the valid
        ones never search), so it is decoded as it is.
        """
        decoded = self.space.decode(states, vae)
        if self.kept is not None and states.shape[0] == self.kept[0].shape[0]:
            valid, points = self.kept
            decoded = torch.where(valid[:, None, None], points.to(decoded.dtype), decoded)
        return decoded


class _StraightThrough(torch.autograd.Function):
    """``mean + scale * s`` forward, the identity backward (the reference's gradient rule)."""

    @staticmethod
    def forward(ctx: Any, states: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return mean + scale * states

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


@dataclass(frozen=True, kw_only=True, eq=False)
class Standardization:
    """A :class:`StandardizedSpace` bound to one search: the z-scores of its training data.

    Attributes:
        mean: (d,) float32 feature means of the data (0 for a constant feature).
        scale: (d,) float32 feature standard deviations, ddof 1 (1 for a constant feature).
        init_noise: the standard deviation of the starting noise, in standardized units.
        reference_gradient: apply ``dL/dx'`` to the state (see :class:`StandardizedSpace`).
    """

    mean: torch.Tensor
    scale: torch.Tensor
    init_noise: float
    reference_gradient: bool

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """(n, K, d): each standardized factual plus its own noise from its ``"init"`` stream."""
        K, d = problem.n_counterfactuals, problem.n_features
        mean = self.mean.cpu().double().numpy()
        scale = self.scale.cpu().double().numpy()
        z = (problem.factuals.cpu().double().numpy() - mean) / scale
        noise = np.stack([rng.normal(0.0, self.init_noise, size=(K, d)) for rng in problem.rngs("init")])
        states = (z[:, None, :] + noise).astype(np.float32)
        return torch.from_numpy(states).to(problem.factuals.device)

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """(m, K, d) standardized states -> (m, K, d) points ``mean + scale * s``."""
        if self.reference_gradient:
            return _StraightThrough.apply(states, self.mean, self.scale)
        return self.mean + self.scale * states

    def from_features(self, points: torch.Tensor) -> torch.Tensor:
        """(m, K, d) points -> standardized states ``(x - mean) / scale``, the inverse of :meth:`decode`.

        The engine projects a constrained search's states through it: the projection runs
        on the points, in feature units, and the states follow (docs/constraints.md).
        """
        return (points - self.mean) / self.scale


@SPACES.register("standardized")
@dataclass(frozen=True, kw_only=True)
class StandardizedSpace:
    """Search over z-scored features, as the reference CE.jl 0.1.x did (``CounterfactualData``).

    A state is ``s = (x - mu) / sigma`` with ``mu``, ``sigma`` the per-feature mean and
    standard deviation (ddof 1) of the current training data given to the search
    (``data=``, recomputed at every search, i.e. every round, as the reference rebuilt its
    data each round); a constant feature is left as it is (``mu = 0``, ``sigma = 1``), as
    the reference transforms only features that vary. Each individual's K states start at
    ``(x - mu) / sigma + noise``, ``noise ~ N(0, init_noise^2)`` drawn as
    ``stream_rng("init", seed).normal(0, init_noise, (K, d))``, and the points are
    ``x' = mu + sigma * s``. Greedy steps here move ``step_size * sigma_j`` in feature units.

    The gradient: by default the chain rule, ``dL/ds = sigma * dL/dx'``. With
    ``reference_gradient=True`` the state takes the gradient with respect to the point,
    ``s <- s - eta * dL/dx'``: the reference inverse-transforms the state outside
    automatic differentiation (``ignore_derivatives``), so its map is the identity to the
    backward pass (forward ``mu + sigma * s``, backward the identity).

    Attributes:
        init_noise: the standard deviation of the starting noise in standardized units,
            >= 0; set in the space's mapping (``{"kind": "standardized", "init_noise": 0.2}``).
        reference_gradient: the reference's gradient rule (a flat override key).
    """

    needs_vae: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True
    # init_noise is the feature space's flat key; here it is set in the space's mapping.
    override_keys: ClassVar[tuple[str, ...]] = ("reference_gradient",)
    init_noise: float = 0.1
    reference_gradient: bool = False

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "init_noise", float(self.init_noise))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid)."""
        msgs = [check_real(self.init_noise, "init_noise", "StandardizedSpace", 0)]
        if not isinstance(self.reference_gradient, (bool, np.bool_)):
            msgs.append(param_message("reference_gradient", "StandardizedSpace", "a bool", self.reference_gradient))
        return [m for m in msgs if m]

    def bind(self, problem: Problem) -> Standardization:
        """The space for this search: the mean and scale of ``problem.data_X``.

        Raises:
            ValueError: if the problem carries no training data.
        """
        X = problem.data_X
        if X is None:
            raise ValueError("The 'standardized' space needs the current training data: pass data=(X, y) to search.")
        X64 = np.asarray(X, dtype=np.float64)
        constant = (X64 == X64[:1]).all(axis=0)
        mean = np.where(constant, 0.0, X64.mean(axis=0))
        scale = np.where(constant, 1.0, X64.std(axis=0, ddof=1) if X64.shape[0] > 1 else 1.0)
        device = problem.factuals.device
        return Standardization(
            mean=torch.from_numpy(mean.astype(np.float32)).to(device),
            scale=torch.from_numpy(scale.astype(np.float32)).to(device),
            init_noise=self.init_noise,
            reference_gradient=bool(self.reference_gradient),
        )

    def initial_states(self, problem: Problem) -> torch.Tensor:
        """(n, K, d) standardized starting states (see :meth:`bind`)."""
        return self.bind(problem).initial_states(problem)

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        """Not defined before a search: the map needs the search's data (use :meth:`bind`)."""
        raise RuntimeError(
            "StandardizedSpace.decode needs the mean and scale of a search's data: call bind(problem) and decode "
            "with the object it returns (the engine does)."
        )
