"""Metrics of recourse systems (SPEC §6): MMD shift tests, model and performance metrics.

``mmd`` / ``mmd_test`` are the two-sample statistics; ``evaluate`` computes every
registered metric of one system at one evaluation round from an ``EvaluationContext``
(whose models are ``recourse_ray.models.Classifier``). ``MetricSettings`` switches single
mechanisms to the reference implementation's behaviour; ``benchmark_round`` computes
the reference's per-round recourse measures. See ``docs/metrics.md`` for the
definitions.
"""

from recourse_ray.metrics.mmd import gaussian_kernel, mmd, mmd_test
from recourse_ray.metrics.system import (
    METRICS,
    OPTIONAL_METRICS,
    SCOPES,
    EvaluationContext,
    Metric,
    MetricInputs,
    MetricSettings,
    MetricValue,
    RecourseStats,
    RoundBenchmark,
    benchmark_round,
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
    "OPTIONAL_METRICS",
    "SCOPES",
    "EvaluationContext",
    "Metric",
    "MetricInputs",
    "MetricSettings",
    "MetricValue",
    "RecourseStats",
    "RoundBenchmark",
    "benchmark_round",
    "evaluate",
    "macro_f1",
    "make_grid",
    "register",
]
