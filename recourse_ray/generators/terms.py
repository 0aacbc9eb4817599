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

from recourse_ray._config import check_int, check_real
from recourse_ray._registry import Registry
from recourse_ray.generators._components import raise_problems
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
    """

    name: ClassVar[str] = "validity"
    weight: float = 1.0

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.softplus(-batch.logits)


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
    """Euclidean distance ``||f(s) - x||_2`` of the (decoded) state to the factual (Wachter et al. 2017)."""

    name: ClassVar[str] = "distance"
    weight: float = 0.1

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        return safe_norm(batch.points - batch.factuals[:, None, :])


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
    counterfactual is ``generic``. The reference draws a random jitter of size 1e-5;
    ours is the deterministic ``jitter``.
    """

    name: ClassVar[str] = "diversity"
    weight: float = 1.0
    jitter: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "jitter", float(self.jitter))

    def problems(self) -> list[str]:
        """The weight's and the jitter's problems."""
        msg = check_real(self.jitter, "jitter", f"the {self.name!r} term", 0)
        return super().problems() + ([msg] if msg else [])

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        pts = batch.points  # (m, K, d)
        dist = safe_norm(pts[:, :, None, :] - pts[:, None, :, :])  # (m, K, K)
        kmat = 1.0 / (1.0 + dist)
        K = pts.shape[1]
        kmat = kmat + self.jitter * torch.eye(K, dtype=pts.dtype, device=pts.device)
        return -torch.linalg.det(kmat)


@register_term
@dataclass(frozen=True, kw_only=True)
class ClassifierLoss(Term):
    """ClaPROAR's penalty: the classifier's loss at the counterfactual against ``y* = 1`` (Altmeyer et al. 2023).

    Binary cross-entropy averaged over the members of an ensemble (each member's own
    logit), as the reference computes it; for a single model it equals ``validity``.
    """

    name: ClassVar[str] = "classifier_loss"
    weight: float = 5.0

    def value(self, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.softplus(-batch.member_logits).mean(dim=0)


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
