"""Loss terms of counterfactual search: small, named, weighted pieces (SPEC §4).

A generator's objective for one individual ``x`` with K states ``s_1..s_K`` is

    sum_terms  weight * term(f(s_1..s_K), x, ...)

Each term is a frozen dataclass that owns its ``weight`` (and any parameter of its own)
and is evaluated on a whole :class:`Batch` of individuals at once. A term returns either
one value per state ``(m, K)`` or one value per individual ``(m,)`` (e.g. the DiCE
diversity, which couples an individual's K states); the engine sums everything into one
scalar, so one backward pass gives every state its gradient. Because each summand
depends only on one individual's states, gradients never mix individuals.

A term that needs per-search information (the MAD of the training data, an individual's
gravitational centroid) computes it once in :meth:`Term.prepare`, which returns tensors
with one row per individual; the engine hands the rows of the individuals still being
searched to :meth:`Term.value` as ``aux``.

Terms are registered by name in :data:`TERMS`; presets and overrides refer to them by
that name, and a term registered nowhere is named by its import path
(``add_terms: [{term: "examples.sparsity_term:L1Sparsity", weight: 0.5}]``). Terms read
:class:`~recourse_ray.generators.problem.Problem` and
:class:`~recourse_ray.generators.problem.Batch`; they never import the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from recourse_ray._config import check_int, check_real, is_real, param_message
from recourse_ray._registry import Registry
from recourse_ray.generators._components import added_option, raise_problems
from recourse_ray.generators._norm import safe_norm
from recourse_ray.generators.problem import Batch, Problem

__all__ = [
    "Term",
    "TERMS",
    "register_term",
    "safe_norm",
    "Validity",
    "PredictiveEntropy",
    "L2Distance",
    "MADDistance",
    "Diversity",
    "ClassifierLoss",
    "Gravitational",
]

TERMS: Registry[type["Term"]] = Registry("term")


def register_term(cls: type["Term"]) -> type["Term"]:
    """Class decorator: register a :class:`Term` subclass under its ``name``."""
    TERMS.register(cls.name, cls)
    return cls


@dataclass(frozen=True, kw_only=True)
class Term:
    """One weighted piece of the search objective.

    Subclasses set the class variable ``name`` (the registry and override key), may set
    ``needs_data`` (the term reads the current training data), and implement
    :meth:`value`. The weight must be finite and >= 0.

    Attributes:
        weight: multiplier of the term in the objective.
    """

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    weight: float = 1.0

    def __post_init__(self) -> None:
        raise_problems(self.problems())
        object.__setattr__(self, "weight", float(self.weight))

    def problems(self) -> list[str]:
        """One message per invalid setting (empty when valid); subclasses extend the list."""
        msg = check_real(self.weight, "weight", f"the {self.name!r} term", 0)
        return [msg] if msg else []

    def prepare(self, problem: Problem) -> dict[str, torch.Tensor]:
        """Per-search constants, as tensors with one row per individual (default: none)."""
        return {}

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unweighted term: (m, K) per state or (m,) per individual."""
        raise NotImplementedError


@register_term
@dataclass(frozen=True, kw_only=True)
class Validity(Term):
    """Binary cross-entropy of the logit against the target ``y* = 1``: ``log(1 + e^-z)``.

    ``z`` is the model's search logit (the mean of member logits for an ensemble).

    Attributes:
        reduction: ``"sum"``: one BCE per state, summed over the K states (each state's
            gradient is its own BCE's); ``"mean"``: one value per individual, the BCE
            averaged over its K states, as the reference CE.jl 0.1.x computes it (Flux's
            ``logitbinarycrossentropy`` with its default mean over all K), which scales
            each state's gradient by 1 / K. An added option (``validity={"reduction": "mean"}``).
    """

    name: ClassVar[str] = "validity"
    weight: float = 1.0
    reduction: str = added_option("sum")

    def problems(self) -> list[str]:
        """The weight's and the reduction's problems."""
        bad = self.reduction not in ("sum", "mean")
        msg = param_message("reduction", f"the {self.name!r} term", "one of 'sum', 'mean'", self.reduction)
        return super().problems() + ([msg] if bad else [])

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        bce = F.softplus(-batch.logits)
        return bce.mean(dim=1) if self.reduction == "mean" else bce


@register_term
@dataclass(frozen=True, kw_only=True)
class PredictiveEntropy(Term):
    """Entropy of the predictive distribution ``-p log p - (1-p) log(1-p)`` (CLUE).

    CLUE (Antorán et al., ICLR 2021) replaces the validity loss by this term: it seeks
    points where the classifier is *certain*, in either class. It has no pull towards
    ``y* = 1``, so it only flips individuals that start near the boundary.
    ``p`` is the model's probability (mean of member sigmoids), clipped to
    ``[1e-6, 1 - 1e-6]`` so the logarithms stay finite.
    """

    name: ClassVar[str] = "entropy"
    weight: float = 1.0

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        p = batch.proba.clamp(1e-6, 1.0 - 1e-6)
        return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


@register_term
@dataclass(frozen=True, kw_only=True)
class L2Distance(Term):
    """Euclidean distance ``||f(s) - x||_2`` of the (decoded) state to the factual (Wachter et al. 2017).

    Attributes:
        joint: one value per individual, the Frobenius norm ``||X - X'||_F`` of the K
            points against the factual repeated K times, as the reference CE.jl 0.1.x
            (``norm(x .- x')`` over its whole d x 1 x K array) instead of one norm per
            state. Its gradient is 0 where all K points sit on the factual. An added
            option (``distance={"joint": True}``).
    """

    name: ClassVar[str] = "distance"
    weight: float = 0.1
    joint: bool = added_option(False)

    def problems(self) -> list[str]:
        """The weight's and the joint flag's problems."""
        if isinstance(self.joint, (bool, np.bool_)):
            return super().problems()
        return super().problems() + [param_message("joint", f"the {self.name!r} term", "a bool", self.joint)]

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        diff = batch.points - batch.factuals[:, None, :]
        if self.joint:
            return safe_norm(diff.reshape(diff.shape[0], -1))
        return safe_norm(diff)


@register_term
@dataclass(frozen=True, kw_only=True)
class MADDistance(Term):
    """L1 distance weighted by the inverse median absolute deviation (Wachter et al. 2017).

    ``sum_j |f(s)_j - x_j| / MAD_j`` with ``MAD_j = median_i |X_ij - median(X_j)|`` over the
    current training data. A feature with zero MAD (e.g. a one-hot column that is mostly
    0) gets MAD 1, as DiCE does, rather than an infinite weight.
    """

    name: ClassVar[str] = "mad_distance"
    needs_data: ClassVar[bool] = True
    weight: float = 0.1

    def prepare(self, problem: Problem) -> dict[str, torch.Tensor]:
        X = problem.data_X
        mad = np.median(np.abs(X - np.median(X, axis=0)), axis=0)
        mad = np.where(mad > 0, mad, 1.0).astype(np.float32)
        inv = torch.from_numpy(1.0 / mad)
        return {"inverse_mad": inv.expand(problem.n, -1)}

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        diff = (batch.points - batch.factuals[:, None, :]).abs()
        return (diff * aux["inverse_mad"][:, None, :]).sum(dim=-1)


@register_term
@dataclass(frozen=True, kw_only=True)
class Diversity(Term):
    """DiCE diversity ``-det(Kmat + jitter I)``, ``Kmat_ij = 1 / (1 + ||s_i - s_j||)`` (Mothilal et al. 2020).

    One value per individual, over its K (decoded) states. With K = 1 the determinant is
    the constant ``1 + jitter`` and the term has no gradient, so ``dice`` with one
    counterfactual is ``generic``. By default the jitter is the deterministic ``jitter``.

    The reference CE.jl 0.1.x (``ddp_diversity``) differs in two ways, each an added
    option: it measures the distances between the *states* (in standardized or latent
    units), not the decoded points (``over="states"``); and its diagonal is
    ``jitter * N(0, 1)``, drawn afresh at every evaluation (``random_jitter=True``: each
    individual draws ``(T, K)`` normals from its ``"diversity"`` stream up front and uses
    row ``t`` at iteration ``t``). Its penalty is ``lambda_2 * -det``, this term with weight
    ``lambda_2``.

    Attributes:
        jitter: the diagonal added to ``Kmat`` (or the scale of the random one), >= 0.
        over: ``"points"`` or ``"states"``: what the pairwise distances are between.
        random_jitter: draw the diagonal at random at every evaluation.
    """

    name: ClassVar[str] = "diversity"
    weight: float = 1.0
    jitter: float = 1e-5
    over: str = added_option("points")
    random_jitter: bool = added_option(False)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "jitter", float(self.jitter))

    def problems(self) -> list[str]:
        """The weight's, the jitter's and the options' problems."""
        owner = f"the {self.name!r} term"
        msgs = [check_real(self.jitter, "jitter", owner, 0)]
        if self.over not in ("points", "states"):
            msgs.append(param_message("over", owner, "one of 'points', 'states'", self.over))
        if not isinstance(self.random_jitter, (bool, np.bool_)):
            msgs.append(param_message("random_jitter", owner, "a bool", self.random_jitter))
        return super().problems() + [m for m in msgs if m]

    def prepare(self, problem: Problem) -> dict[str, torch.Tensor]:
        """With ``random_jitter``: (n, T, K) standard normal draws, one row per step."""
        if not self.random_jitter:
            return {}
        T, K = problem.step_budget("Diversity(random_jitter=True)"), problem.n_counterfactuals
        draws = np.stack([rng.standard_normal((T, K)) for rng in problem.rngs("diversity")])
        return {"jitter_noise": torch.from_numpy(draws.astype(np.float32))}

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        pts = batch.states if self.over == "states" else batch.points  # (m, K, D)
        dist = safe_norm(pts[:, :, None, :] - pts[:, None, :, :])  # (m, K, K)
        kmat = 1.0 / (1.0 + dist)
        K = pts.shape[1]
        if self.random_jitter:
            diagonal = self.jitter * aux["jitter_noise"][:, batch.iteration, :].to(pts.dtype)  # (m, K)
            kmat = kmat + torch.diag_embed(diagonal)
        else:
            kmat = kmat + self.jitter * torch.eye(K, dtype=pts.dtype, device=pts.device)
        return -torch.linalg.det(kmat)


@register_term
@dataclass(frozen=True, kw_only=True)
class ClassifierLoss(Term):
    """ClaPROAR's penalty: the classifier's loss at the counterfactual against ``y* = 1`` (Altmeyer et al. 2023).

    Binary cross-entropy averaged over the members of an ensemble (each member's own
    logit), as the reference computes it; for a single model it equals ``validity``.
    Like the reference (ClaPROAR's ``h``: ``all(target_probs .>= 0.5)``), the penalty is
    switched on for an individual only at iterations where all its K states are
    predicted as the target class, ``p(y*) >= gate``: until then the search is
    ``generic``'s; once there, the penalty pulls the states further into the target
    class, away from the boundary. The gate is a constant of the iteration (no gradient
    flows through it).

    Attributes:
        gate: the probability every state of an individual must reach for the penalty to
            apply, in (0, 1); None applies it from the first step (this project's rule
            before December 2026).
    """

    name: ClassVar[str] = "classifier_loss"
    weight: float = 5.0
    gate: float | None = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate is not None and is_real(self.gate):
            object.__setattr__(self, "gate", float(self.gate))

    def problems(self) -> list[str]:
        """The weight's and the gate's problems."""
        msg = None
        if self.gate is not None:
            msg = check_real(self.gate, "gate", f"the {self.name!r} term", 0, 1, low_open=True, high_open=True)
        return super().problems() + ([msg] if msg else [])

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = F.softplus(-batch.member_logits).mean(dim=0)  # (m, K)
        if self.gate is None:
            return loss
        inside = (batch.proba.detach() >= self.gate).all(dim=1, keepdim=True)  # (m, 1)
        return torch.where(inside, loss, torch.zeros_like(loss))


@register_term
@dataclass(frozen=True, kw_only=True)
class Gravitational(Term):
    """Distance to a centroid of target-class points (Altmeyer et al. 2023, "Gravitational").

    ``||f(s) - c_x||_2`` where ``c_x`` is the mean of ``n_points`` points drawn at random
    (with replacement, as the reference) from the rows of the current training data
    labelled ``y* = 1``. Each individual draws its own points from its own search seed,
    once per search.
    """

    name: ClassVar[str] = "gravitational"
    needs_data: ClassVar[bool] = True
    weight: float = 5.0
    n_points: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "n_points", int(self.n_points))

    def problems(self) -> list[str]:
        """The weight's and the number of points' problems."""
        msg = check_int(self.n_points, "n_points", f"the {self.name!r} term", 1)
        return super().problems() + ([msg] if msg else [])

    def prepare(self, problem: Problem) -> dict[str, torch.Tensor]:
        targets = problem.data_X[problem.data_y == 1]
        if targets.shape[0] == 0:
            raise ValueError("The 'gravitational' term needs target-class rows, but data has no target-class (y = 1) rows.")
        rows = np.stack([rng.integers(0, targets.shape[0], size=self.n_points) for rng in problem.rngs("gravitational")])
        centroids = targets[rows].mean(axis=1, dtype=np.float64).astype(np.float32)  # (n, d)
        return {"centroid": torch.from_numpy(centroids)}

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        return safe_norm(batch.points - aux["centroid"][:, None, :])
