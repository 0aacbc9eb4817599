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
that name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from recourse_ray._registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from recourse_ray.generators.engine import Batch, Problem

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


def safe_norm(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean norm along ``dim`` whose gradient at a zero vector is 0, not NaN.

    ``sqrt`` has an infinite derivative at 0, yet states that coincide with the factual
    or with each other are common (latent-space states all start at the same code).
    ``torch.linalg.vector_norm`` returns the zero subgradient there (checked by
    ``test_distance_gradients_are_finite_at_zero_distance``), in one fused kernel.
    """
    return torch.linalg.vector_norm(v, dim=dim)


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
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w) or w < 0:
            raise ValueError(
                f"The 'weight' parameter of the {self.name!r} term must be a finite float in the range [0, inf). "
                f"Got {w!r} instead."
            )
        object.__setattr__(self, "weight", float(w))

    def prepare(self, problem: "Problem") -> dict[str, torch.Tensor]:
        """Per-search constants, as tensors with one row per individual (default: none)."""
        return {}

    def value(self, batch: "Batch", aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unweighted term: (m, K) per state or (m,) per individual."""
        raise NotImplementedError

    def params(self) -> dict:
        """The term's parameters (weight included), for ``to_dict`` and overrides."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@register_term
@dataclass(frozen=True, kw_only=True)
class Validity(Term):
    """Binary cross-entropy of the logit against the target ``y* = 1``: ``log(1 + e^-z)``.

    ``z`` is the model's search logit (the mean of member logits for an ensemble).
    """

    name: ClassVar[str] = "validity"
    weight: float = 1.0

    def value(self, batch, aux):
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

    def value(self, batch, aux):
        p = batch.proba.clamp(1e-6, 1.0 - 1e-6)
        return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


@register_term
@dataclass(frozen=True, kw_only=True)
class L2Distance(Term):
    """Euclidean distance ``||f(s) - x||_2`` of the (decoded) state to the factual (Wachter et al. 2017)."""

    name: ClassVar[str] = "distance"
    weight: float = 0.1

    def value(self, batch, aux):
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

    def prepare(self, problem):
        X = problem.data_X
        mad = np.median(np.abs(X - np.median(X, axis=0)), axis=0)
        mad = np.where(mad > 0, mad, 1.0).astype(np.float32)
        inv = torch.from_numpy(1.0 / mad)
        return {"inverse_mad": inv.expand(problem.n, -1)}

    def value(self, batch, aux):
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
        if not (isinstance(self.jitter, (int, float)) and math.isfinite(self.jitter) and self.jitter >= 0):
            raise ValueError(
                f"The 'jitter' parameter of the 'diversity' term must be a float in the range [0, inf). "
                f"Got {self.jitter!r} instead."
            )

    def value(self, batch, aux):
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

    def value(self, batch, aux):
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
        k = self.n_points
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"The 'n_points' parameter of the 'gravitational' term must be an int in the range [1, inf). "
                f"Got {k!r} instead."
            )

    def prepare(self, problem):
        targets = problem.data_X[problem.data_y == 1]
        if targets.shape[0] == 0:
            raise ValueError("The 'gravitational' term needs target-class rows, but data has no target-class (y = 1) rows.")
        rows = np.stack([rng.integers(0, targets.shape[0], size=self.n_points) for rng in problem.rngs("gravitational")])
        centroids = targets[rows].mean(axis=1, dtype=np.float64).astype(np.float32)  # (n, d)
        return {"centroid": torch.from_numpy(centroids)}

    def value(self, batch, aux):
        return safe_norm(batch.points - aux["centroid"][:, None, :])
