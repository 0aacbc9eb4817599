"""Metrics of recourse systems (SPEC §6): MMD shift tests, model and performance metrics.

``mmd`` / ``mmd_test`` are the two-sample statistics; ``evaluate`` computes every
registered metric of one system at one evaluation round from an ``EvaluationContext``
(whose models are ``recourse_ray.models.Classifier``). See ``docs/metrics.md`` for the
definitions.
"""

from recourse_ray.metrics.mmd import gaussian_kernel, mmd, mmd_test
from recourse_ray.metrics.system import (
    METRICS,
    SCOPES,
    EvaluationContext,
    Metric,
    MetricInputs,
    MetricSettings,
    MetricValue,
    RecourseStats,
    evaluate,
    macro_f1,
    make_grid,
    register,
)

__all__ = [
    "mmd",
    "mmd_test",
    "gaussian_kernel",
    "METRICS",
    "SCOPES",
    "EvaluationContext",
    "Metric",
    "MetricInputs",
    "MetricSettings",
    "MetricValue",
    "RecourseStats",
    "evaluate",
    "macro_f1",
    "make_grid",
    "register",
]
