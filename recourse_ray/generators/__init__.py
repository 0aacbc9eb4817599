"""Counterfactual generators: one batched search engine and the study's presets.

``create(name, **overrides)`` builds a registered preset (``names()`` lists them); a
:class:`Generator` composes loss :mod:`terms`, a search space, a step rule and a
convergence rule, and its ``search(model, factuals, n_counterfactuals=K, seeds=...)``
returns a :class:`SearchResult` for all individuals at once. See ``docs/generators.md``.
"""

from __future__ import annotations

from recourse_ray.generators import terms
from recourse_ray.generators.engine import (
    CONVERGENCE,
    SPACES,
    STEP_RULES,
    Batch,
    FeatureSpace,
    FullSearch,
    Generator,
    GradientDescent,
    Greedy,
    LatentSpace,
    Problem,
    SearchResult,
    ThresholdConvergence,
    individual_seeds,
    stream_rng,
)
from recourse_ray.generators.presets import OVERRIDES, PRESETS, create, names, register
from recourse_ray.generators.terms import (
    TERMS,
    ClassifierLoss,
    Diversity,
    Gravitational,
    L2Distance,
    MADDistance,
    PredictiveEntropy,
    Term,
    Validity,
    register_term,
)

__all__ = [
    "create",
    "names",
    "register",
    "PRESETS",
    "OVERRIDES",
    "Generator",
    "SearchResult",
    "Problem",
    "Batch",
    "FeatureSpace",
    "LatentSpace",
    "GradientDescent",
    "Greedy",
    "ThresholdConvergence",
    "FullSearch",
    "SPACES",
    "STEP_RULES",
    "CONVERGENCE",
    "TERMS",
    "Term",
    "register_term",
    "Validity",
    "PredictiveEntropy",
    "L2Distance",
    "MADDistance",
    "Diversity",
    "ClassifierLoss",
    "Gravitational",
    "individual_seeds",
    "stream_rng",
    "terms",
]
