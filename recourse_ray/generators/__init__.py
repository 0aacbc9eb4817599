"""Counterfactual generators: one batched search engine and the study's presets.

``create(name, **overrides)`` builds a registered preset (``names()`` lists them); a
:class:`Generator` composes loss :mod:`terms`, a search space, a step rule and a
convergence rule, and its ``search(model, factuals, n_counterfactuals=K, seeds=...)``
returns a :class:`SearchResult` for all individuals at once. ``Generator.to_dict()`` is
the canonical JSON description of a built generator and ``Generator.from_dict`` rebuilds
it in another process. See ``docs/generators.md``.

Layout: ``problem`` (what the pieces read), ``terms``, ``spaces``, ``steps``,
``convergence`` (each piece with its protocol and registry), ``engine`` (Generator,
SearchResult), ``presets`` (create, the study's aliases), ``reference`` (the overrides of
the reference-compatible mode, mechanism by mechanism); private helpers ``_streams``
(random streams), ``_device``, ``_norm``, ``_components`` (kinds, descriptions, checks).
"""

from __future__ import annotations

from recourse_ray.generators import terms
from recourse_ray.generators._streams import individual_seeds, stream_rng
from recourse_ray.generators.convergence import CONVERGENCE, ConvergenceRule, FullSearch, ThresholdConvergence
from recourse_ray.generators.engine import Generator, SearchResult
from recourse_ray.generators.presets import OVERRIDES, PRESETS, create, names, register, valid_overrides
from recourse_ray.generators.problem import Batch, Problem
from recourse_ray.generators.reference import (
    MECHANISMS,
    RUN_SETTINGS,
    ReferenceMechanism,
    merge_overrides,
    reference_bugs,
    reference_mechanisms,
    reference_overrides,
    reference_presets,
)
from recourse_ray.generators.spaces import (
    SPACES,
    FeatureSpace,
    LatentSpace,
    SearchSpace,
    Standardization,
    StandardizedSpace,
)
from recourse_ray.generators.steps import STEP_RULES, GradientDescent, Greedy, StepRule
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
    "valid_overrides",
    "PRESETS",
    "OVERRIDES",
    "Generator",
    "SearchResult",
    "Problem",
    "Batch",
    "SearchSpace",
    "StepRule",
    "ConvergenceRule",
    "FeatureSpace",
    "LatentSpace",
    "StandardizedSpace",
    "Standardization",
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
    "reference_overrides",
    "reference_mechanisms",
    "reference_presets",
    "reference_bugs",
    "merge_overrides",
    "MECHANISMS",
    "RUN_SETTINGS",
    "ReferenceMechanism",
]
