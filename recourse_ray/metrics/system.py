"""The metrics of a recourse system at an evaluation round (SPEC §6).

The simulation builds one :class:`EvaluationContext` per evaluation round (the round-0
and current data and models, the evaluation grid, the round's recourse outcomes) and
calls :func:`evaluate`, which returns one :class:`MetricValue` per metric. Metrics are
registered by name with a scope (``domain``, ``model``, ``performance``, ``recourse``)
in :data:`METRICS`; :func:`register` adds user metrics the same way.

Model outputs (probabilities and labels of the round-0 and current model on the
original points, the grid and the test split) are computed at most once per
:func:`evaluate` call and shared by all metrics through :class:`MetricInputs`.

A reference-compatible mode reproduces the metrics of AlgorithmicRecourseDynamics.jl
v0.1.0: single switches of :class:`MetricSettings`, the code's ``decisiveness_code``,
and the optional recourse measures of :data:`OPTIONAL_METRICS`, whose per-round inputs
the simulation computes with :func:`benchmark_round` after each retraining.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from recourse_ray._config import check_int, check_real, is_real, param_message
from recourse_ray._registry import Registry, is_import_path, suggest
from recourse_ray._rng import as_rng, make_rng
from recourse_ray.metrics.mmd import mmd_test
from recourse_ray.models import Classifier

__all__ = [
    "SCOPES",
    "METRICS",
    "OPTIONAL_METRICS",
    "Metric",
    "MetricSettings",
    "RecourseStats",
    "RoundBenchmark",
    "benchmark_round",
    "EvaluationContext",
    "MetricInputs",
    "MetricValue",
    "evaluate",
    "make_grid",
    "register",
    "macro_f1",
]

SCOPES = ("domain", "model", "performance", "recourse")

#: What a metric function may return: a value, a (value, p-value) pair, or None when
#: the metric does not apply to this context (it is then left out of the results).
MetricResult = Union[float, tuple[float, float | None], None]


# The methods of a models.Classifier that the metrics call. The models of an
# EvaluationContext are checked for these alone, so a stand-in with only these evaluates.
_MODEL_METHODS = ("predict_proba", "predict", "parameter_arrays")


# The string-valued settings of MetricSettings and their allowed values; the first is
# the default. The second values reproduce AlgorithmicRecourseDynamics.jl v0.1.0.
_CHOICES = {
    "domain_baseline": ("train", "train_test"),
    "mmd_subsample": ("independent", "match_first"),
    "grid": ("uniform", "linspace"),
    "p_value": ("corrected", "reference"),
}


def _choice_problem(value: object, name: str, owner: str, choices: Sequence[str]) -> str | None:
    if isinstance(value, str) and value in choices:
        return None
    return param_message(name, owner, "one of " + ", ".join(repr(c) for c in choices), value)


@dataclass(frozen=True, kw_only=True)
class MetricSettings:
    """How the metrics are computed (SPEC §6).

    The defaults are this project's choices. Each setting below the first four switches
    one mechanism to the behaviour of the reference implementation
    (AlgorithmicRecourseDynamics.jl v0.1.0, see ``docs/metrics.md``), so that the
    reference's numbers can be reproduced one difference at a time.

    Attributes:
        n_samples: maximum points per side of every MMD (random subsample), >= 2 (paper: 1000).
        n_permutations: permutations of every MMD test, >= 0; 0 skips the test and gives
            p-value nan (study's reported p-values: 100; its runs used 1).
        n_grid: points of the evaluation grid of ``model_mmd_grid``, >= 1 (paper: 1000).
        lengthscale: Gaussian kernel lengthscale ``l``, > 0 (paper: 0.5).
        domain_baseline: the round-0 side of ``domain_mmd`` / ``domain_mmd_negative``:
            ``"train"`` (default) the round-0 training points of the class;
            ``"train_test"`` the round-0 training and test points of the class (the
            reference).
        mmd_subsample: how the two sides of an MMD are cut to ``n_samples``:
            ``"independent"`` (default) each side to at most ``n_samples``;
            ``"match_first"`` the first (round-0) side to at most ``n_samples`` and the
            second to at most as many points as the first then has (the reference).
        grid: how grid points are drawn by :func:`make_grid`: ``"uniform"`` (default)
            each coordinate uniform in the feature's [min, max]; ``"linspace"`` each
            coordinate one of ``grid_steps`` evenly spaced values in [min, max], chosen
            uniformly (the reference).
        grid_steps: values per feature of the ``"linspace"`` grid, >= 2 (reference: 100).
        grid_redraw: False (default): one grid per system, drawn before round 0; True: a
            new grid at every evaluation round (the reference). Read by the simulation,
            which builds the grid.
        p_value: ``"corrected"`` (default) ``(1 + #{null >= observed}) / (1 + P)``;
            ``"reference"`` ``#{null >= observed} / P``, which is 0 or 1 with ``P = 1``.
        n_individuals_offset: added to the ``n_individuals`` metric, >= 0 (default 0;
            the reference's count is 1 too high, a bug: offset 1 reproduces it).
        reference_recourse_metrics: False (default); True: the simulation computes
            :func:`benchmark_round` after every retraining and passes the history and
            the count of rows chosen so far in :class:`RecourseStats`, so that the
            :data:`OPTIONAL_METRICS` (``success_rate_reference``, ``distance_reference``,
            ``redundancy_reference``, ``n_individuals``, ``share_individuals``) are
            reported. Read by the simulation; the metrics themselves appear whenever
            their inputs are given.
    """

    n_samples: int = 1000
    n_permutations: int = 100
    n_grid: int = 1000
    lengthscale: float = 0.5
    domain_baseline: str = "train"
    mmd_subsample: str = "independent"
    grid: str = "uniform"
    grid_steps: int = 100
    grid_redraw: bool = False
    p_value: str = "corrected"
    n_individuals_offset: int = 0
    reference_recourse_metrics: bool = False

    def __post_init__(self) -> None:
        owner = "MetricSettings"
        found = [
            check_int(self.n_samples, "n_samples", owner, 2),
            check_int(self.n_permutations, "n_permutations", owner, 0),
            check_int(self.n_grid, "n_grid", owner, 1),
            check_real(self.lengthscale, "lengthscale", owner, 0.0, None, low_open=True),
            check_int(self.grid_steps, "grid_steps", owner, 2),
            check_int(self.n_individuals_offset, "n_individuals_offset", owner, 0),
        ]
        found += [_choice_problem(getattr(self, name), name, owner, choices) for name, choices in _CHOICES.items()]
        for name in ("grid_redraw", "reference_recourse_metrics"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                found.append(param_message(name, owner, "a bool", getattr(self, name)))
        problems = [p for p in found if p]
        if problems:
            raise ValueError(" ".join(problems))


@dataclass(frozen=True)
class RoundBenchmark:
    """The reference's recourse measures of one round, taken after that round's retraining.

    Built by :func:`benchmark_round`; see it for the definitions.

    Attributes:
        success_rate: share of counterfactuals valid under the retrained model, in [0, 1].
        distance: mean absolute coordinate difference between factual and counterfactual.
        redundancy: share of counterfactual coordinates that are exactly 0, in [0, 1].
    """

    success_rate: float
    distance: float
    redundancy: float


@dataclass(frozen=True, kw_only=True)
class RecourseStats:
    """Outcomes of the recourse given in one round (SPEC §5-6).

    Attributes:
        n_recourse: individuals who received recourse this round, >= 0.
        validity: share of them whose applied counterfactual is valid, in [0, 1]
            (nan when ``n_recourse == 0``).
        cost: mean L2 distance between factual and applied counterfactual (nan if none).
        iterations: mean search steps used (nan if none).
        share_recourse: cumulative share of round-0 negatives who have received
            recourse so far, in [0, 1].
        n_chosen: distinct training rows selected for recourse in rounds 1..t (whether
            or not their counterfactual was applied), >= 0; None (default) when not
            tracked. Input of ``n_individuals`` and ``share_individuals``.
        round_benchmarks: one :func:`benchmark_round` per round 1..t in which somebody
            was selected, in round order; empty (default) when not tracked. Input of
            ``success_rate_reference``, ``distance_reference``, ``redundancy_reference``.
        constraint_violation_share: share of this round's implemented counterfactuals
            that violate a constraint of the dataset (0 by construction; nan when none was
            implemented); None (default) when the dataset has no constraints. Input of
            ``constraint_violation_share``.
        no_feasible_share: share of this round's selected individuals for whom none of
            the K counterfactuals is finite, valid and feasible (nan when nobody was
            selected); None (default) without constraints. Input of ``no_feasible_share``.
    """

    n_recourse: int
    validity: float
    cost: float
    iterations: float
    share_recourse: float
    n_chosen: int | None = None
    round_benchmarks: tuple[RoundBenchmark, ...] = ()
    constraint_violation_share: float | None = None
    no_feasible_share: float | None = None

    def __post_init__(self) -> None:
        found = [check_int(self.n_recourse, "n_recourse", "RecourseStats", 0)]
        if self.n_chosen is not None:
            found.append(check_int(self.n_chosen, "n_chosen", "RecourseStats", 0))
        benchmarks = self.round_benchmarks
        if isinstance(benchmarks, (list, tuple)) and all(isinstance(b, RoundBenchmark) for b in benchmarks):
            object.__setattr__(self, "round_benchmarks", tuple(benchmarks))
        else:
            found.append(param_message("round_benchmarks", "RecourseStats", "a tuple of RoundBenchmark", benchmarks))
        # (name, low, high, expected): inclusive bounds; inf is a valid cost or iteration
        # count, and every field but the cumulative share may be nan (no recourse given).
        for name, low, high, expected in (
            ("validity", 0.0, 1.0, "a float in the range [0, 1], or nan"),
            ("cost", 0.0, math.inf, "a float in the range [0, inf], or nan"),
            ("iterations", 0.0, math.inf, "a float in the range [0, inf], or nan"),
            ("share_recourse", 0.0, 1.0, "a float in the range [0, 1]"),
            ("constraint_violation_share", 0.0, 1.0, "None, or a float in the range [0, 1], or nan"),
            ("no_feasible_share", 0.0, 1.0, "None, or a float in the range [0, 1], or nan"),
        ):
            value = getattr(self, name)
            if value is None and name in ("constraint_violation_share", "no_feasible_share"):
                continue
            nan_ok = name != "share_recourse"
            if not is_real(value) or not ((nan_ok and math.isnan(float(value))) or low <= float(value) <= high):
                found.append(param_message(name, "RecourseStats", expected, value))
        problems = [p for p in found if p]
        if problems:
            raise ValueError(" ".join(problems))


@dataclass(frozen=True, kw_only=True)
class EvaluationContext:
    """Everything the metrics of one system at one evaluation round look at.

    Attributes:
        initial_model: the round-0 classifier. model: the current classifier. Both are
            :class:`recourse_ray.models.Classifier`; the metrics call only their
            ``predict_proba``, ``predict`` and ``parameter_arrays``.
        X_train0: (n_train, d) round-0 training features. y_train0: (n_train,) their labels.
        X_train: (n_train, d) current training features. y_train: (n_train,) current labels.
        X_test: (n_test, d) untouched test features. y_test: (n_test,) test labels.
        grid: (n_grid, d) evaluation grid of this round, from :func:`make_grid` (drawn
            once per system, or at every evaluation with ``settings.grid_redraw``).
        settings: :class:`MetricSettings`.
        rng: numpy Generator for MMD subsampling and permutations; :func:`evaluate`
            draws exactly one number from it per call.
        recourse: this round's :class:`RecourseStats`; None at round 0.
    """

    initial_model: Classifier
    model: Classifier
    X_train0: np.ndarray
    y_train0: np.ndarray
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    grid: np.ndarray
    settings: MetricSettings = field(default_factory=MetricSettings)
    rng: np.random.Generator
    recourse: RecourseStats | None = None

    def __post_init__(self) -> None:
        problems = []
        widths = {}
        for name in ("X_train0", "X_train", "X_test", "grid"):
            arr = np.asarray(getattr(self, name))
            object.__setattr__(self, name, arr)
            if arr.ndim != 2:
                problems.append(f"'{name}' must be 2-D (n, n_features); got shape {arr.shape}")
            else:
                widths[name] = arr.shape[1]
        if len(set(widths.values())) > 1:
            problems.append("feature counts differ: " + ", ".join(f"{k} has {v}" for k, v in widths.items()))
        for x_name, y_name in (("X_train0", "y_train0"), ("X_train", "y_train"), ("X_test", "y_test")):
            y = np.asarray(getattr(self, y_name))
            object.__setattr__(self, y_name, y)
            X = getattr(self, x_name)
            n_rows = X.shape[0] if X.ndim else -1
            if y.ndim != 1 or y.shape[0] != n_rows:
                problems.append(f"'{y_name}' must have shape ({n_rows},) to match '{x_name}'; got {y.shape}")
            elif y.size and not np.isin(y, (0, 1)).all():
                problems.append(f"'{y_name}' must contain only 0 and 1")
        if not isinstance(self.settings, MetricSettings):
            problems.append(f"'settings' must be a MetricSettings; got {type(self.settings).__name__}")
        if not isinstance(self.rng, np.random.Generator):
            problems.append(f"'rng' must be a numpy.random.Generator; got {type(self.rng).__name__}")
        if self.recourse is not None and not isinstance(self.recourse, RecourseStats):
            problems.append(f"'recourse' must be a RecourseStats or None; got {type(self.recourse).__name__}")
        for name in ("initial_model", "model"):
            model = getattr(self, name)
            missing = [m for m in _MODEL_METHODS if not hasattr(model, m)]
            if missing:
                problems.append(f"'{name}' lacks {', '.join(missing)}")
        if problems:
            raise ValueError("Invalid EvaluationContext: " + "; ".join(problems) + ".")

    @property
    def X_original(self) -> np.ndarray:
        """(n_train + n_test, d): the original points, round-0 training then test features."""
        return np.concatenate([self.X_train0, self.X_test])

    @property
    def y_original(self) -> np.ndarray:
        """(n_train + n_test,): the labels of the original points, in the same order."""
        return np.concatenate([self.y_train0, self.y_test])


@dataclass(frozen=True)
class MetricValue:
    """One metric of one system at one round.

    Attributes:
        name: registry name. scope: one of :data:`SCOPES`.
        value: the metric (nan when undefined, e.g. an MMD with a class of < 2 points).
        p_value: permutation-test p-value for MMD metrics (nan when not computed);
            None for metrics without a test.
    """

    name: str
    scope: str
    value: float
    p_value: float | None = None


class MetricInputs:
    """A metric's view of the context, with model outputs shared across metrics.

    Attributes:
        ctx: the :class:`EvaluationContext`.
        rng: a Generator for this metric alone, keyed by the metric's name and one draw
            from ``ctx.rng``, so a metric's value does not depend on which other metrics
            are evaluated in the same call.
    """

    def __init__(self, ctx: EvaluationContext, rng: np.random.Generator, cache: dict | None = None) -> None:
        self.ctx = ctx
        self.rng = rng
        self._cache = {} if cache is None else cache

    def points(self, where: str) -> np.ndarray:
        """``"original"`` (round-0 train + test), ``"grid"`` or ``"test"`` features."""
        key = ("points", where)
        if key not in self._cache:
            if where == "original":
                self._cache[key] = self.ctx.X_original
            elif where == "grid":
                self._cache[key] = self.ctx.grid
            elif where == "test":
                self._cache[key] = self.ctx.X_test
            else:
                raise ValueError(f"Unknown point set {where!r}; use 'original', 'grid' or 'test'.")
        return self._cache[key]

    def _model(self, which: str) -> Classifier:
        if which == "initial":
            return self.ctx.initial_model
        if which == "current":
            return self.ctx.model
        raise ValueError(f"Unknown model {which!r}; use 'initial' or 'current'.")

    def proba(self, which: str, where: str) -> np.ndarray:
        """(n,) float64 target-class probabilities of the ``"initial"``/``"current"`` model."""
        key = ("proba", which, where)
        if key not in self._cache:
            self._cache[key] = np.asarray(self._model(which).predict_proba(self.points(where)), dtype=np.float64)
        return self._cache[key]

    def labels(self, which: str, where: str) -> np.ndarray:
        """(n,) int64 predicted labels of the ``"initial"``/``"current"`` model."""
        key = ("labels", which, where)
        if key not in self._cache:
            self._cache[key] = np.asarray(self._model(which).predict(self.points(where))).astype(np.int64)
        return self._cache[key]


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``compute(inputs) -> value | (value, p) | None``."""

    name: str
    scope: str
    compute: Callable[[MetricInputs], MetricResult]
    order: int


METRICS: Registry[Metric] = Registry("metric")
#: Metrics that apply only when the simulation passes the inputs they need (the
#: reference-compatible recourse measures of :class:`RecourseStats`). Kept apart from
#: :data:`METRICS`, every entry of which applies to every round after round 0;
#: :func:`evaluate` computes them after those, and leaves out the ones without inputs.
OPTIONAL_METRICS: Registry[Metric] = Registry("metric")
_registration_order = itertools.count()


def register(
    name: str, scope: str, *, optional: bool = False
) -> Callable[[Callable[[MetricInputs], MetricResult]], Callable]:
    """Decorator registering ``fn(inputs: MetricInputs)`` as metric ``name`` of ``scope``.

    The function returns a float, a ``(value, p_value)`` pair, or None when the metric
    does not apply (e.g. recourse metrics at round 0). Metrics are evaluated in
    registration order.

    Args:
        name: unique over :data:`METRICS` and :data:`OPTIONAL_METRICS`.
        scope: one of :data:`SCOPES`.
        optional: register in :data:`OPTIONAL_METRICS` (a metric whose inputs only some
            simulations provide) instead of :data:`METRICS`.

    Raises:
        ValueError: for an unknown scope or a name that is already registered.
    """
    if scope not in SCOPES:
        raise ValueError(f"The 'scope' parameter of register must be one of {', '.join(SCOPES)}. Got {scope!r} instead.")
    target, other = (OPTIONAL_METRICS, METRICS) if optional else (METRICS, OPTIONAL_METRICS)

    def add(fn: Callable[[MetricInputs], MetricResult]) -> Callable[[MetricInputs], MetricResult]:
        if name in other:
            raise ValueError(f"The metric {name!r} is already registered.")
        target.register(name, Metric(name=name, scope=scope, compute=fn, order=next(_registration_order)))
        return fn

    return add


def _lookup(name: str) -> Metric:
    """The metric ``name`` from either registry (or an import path), else a KeyError naming all."""
    if name in OPTIONAL_METRICS:
        return OPTIONAL_METRICS.get(name)
    if name in METRICS or is_import_path(name):
        return METRICS.get(name)
    names = sorted(METRICS.names() + OPTIONAL_METRICS.names())
    raise KeyError(
        f"Unknown metric {name!r}.{suggest(str(name), names)} Valid metric names: {', '.join(names)} "
        "(or an import path 'package.module:attribute')."
    )


def evaluate(ctx: EvaluationContext, names: Sequence[str] | None = None) -> list[MetricValue]:
    """Compute metrics for one system at one evaluation round.

    Args:
        ctx: the :class:`EvaluationContext`.
        names: metric names to compute, in this order; None for every metric of
            :data:`METRICS` in registration order (SPEC §6 order for the built-in
            ones), then every metric of :data:`OPTIONAL_METRICS`.

    Returns:
        One :class:`MetricValue` per applicable metric; recourse metrics are left out
        when ``ctx.recourse`` is None (round 0), optional metrics when their inputs
        are missing.

    Raises:
        KeyError: for an unknown metric name (with the valid names and closest match).
        ValueError: for a repeated name.
    """
    if names is None:
        metrics = sorted((m for _, m in METRICS.items()), key=lambda m: m.order)
        metrics += sorted((m for _, m in OPTIONAL_METRICS.items()), key=lambda m: m.order)
    else:
        names = list(names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"Metric names must be unique; repeated: {', '.join(repeated)}.")
        metrics = [_lookup(n) for n in names]
    base_seed = int(ctx.rng.integers(0, 2**63 - 1))
    cache: dict = {}
    out = []
    for metric in metrics:
        result = metric.compute(MetricInputs(ctx, make_rng("metric", base_seed, metric.name), cache))
        if result is None:
            continue
        if isinstance(result, tuple):
            value, p_value = result
            p_value = None if p_value is None else float(p_value)
        else:
            value, p_value = result, None
        out.append(MetricValue(metric.name, metric.scope, float(value), p_value))
    return out


def make_grid(
    X_original: np.ndarray,
    n_grid: int,
    rng: int | np.random.Generator,
    *,
    kind: str = "uniform",
    steps: int = 100,
) -> np.ndarray:
    """Points in the per-feature [min, max] box of ``X_original`` (for ``model_mmd_grid``).

    ``kind="uniform"`` (default) draws every coordinate uniformly from the continuous
    interval. ``kind="linspace"`` draws every coordinate uniformly from ``steps`` evenly
    spaced values ``min + (max - min) i / (steps - 1)``, ``i = 0..steps-1`` (the
    reference's grid: ``rand(range(min, max, length=100))`` per coordinate). The
    simulation draws it once per system, or at every evaluation round when
    ``MetricSettings.grid_redraw`` is set.

    Args:
        X_original: (n, d) original points (round-0 training + test features), n >= 1.
        n_grid: number of grid points, >= 1 (paper: 1000).
        rng: int seed or numpy Generator.
        kind: ``"uniform"`` or ``"linspace"`` (``MetricSettings.grid``).
        steps: values per feature of the ``"linspace"`` grid, >= 2
            (``MetricSettings.grid_steps``; reference: 100).

    Returns:
        (n_grid, d) float32.
    """
    X = np.asarray(X_original, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(
            f"The 'X_original' parameter of make_grid must be a non-empty 2-D array. Got shape {X.shape} instead."
        )
    if not np.isfinite(X).all():
        raise ValueError("The 'X_original' parameter of make_grid contains NaN or infinite values.")
    found = [
        check_int(n_grid, "n_grid", "make_grid", 1),
        _choice_problem(kind, "kind", "make_grid", _CHOICES["grid"]),
        check_int(steps, "steps", "make_grid", 2),
    ]
    problems = [p for p in found if p]
    if problems:
        raise ValueError(" ".join(problems))
    rng = as_rng(rng)
    low, high = X.min(axis=0), X.max(axis=0)
    if kind == "linspace":
        # (steps, d): column j holds the evenly spaced values of feature j.
        values = np.linspace(low, high, int(steps))
        index = rng.integers(0, int(steps), size=(int(n_grid), X.shape[1]))
        return np.take_along_axis(values, index, axis=0).astype(np.float32)
    # low/high are float32 values, so rounding the draws to float32 stays inside the box.
    return rng.uniform(low, high, size=(int(n_grid), X.shape[1])).astype(np.float32)


def benchmark_round(
    model: Classifier,
    factuals: np.ndarray,
    counterfactuals: np.ndarray,
    decision_threshold: float = 0.5,
) -> RoundBenchmark:
    """The reference's recourse measures of one round (CounterfactualExplanations.jl's benchmark).

    The reference computes them once per round, right after that round's retraining,
    with the retrained model, over all K counterfactuals of every individual selected
    that round (not only the implemented ones), and reports the mean over rounds so far
    (``success_rate_reference`` etc.). With ``x_i`` the factual and ``c_ik`` the k-th
    counterfactual (n individuals, K counterfactuals, d features):

    - ``success_rate = (1/n) sum_i (1/K) sum_k [p(c_ik) >= decision_threshold]``,
      ``p`` the retrained model's target-class probability;
    - ``distance = (1/n) sum_i (1/(K d)) sum_{k,j} |x_ij - c_ikj|`` (the reference
      broadcasts its norm over single coordinates, so this is a mean absolute
      difference, not an L2 distance);
    - ``redundancy = (1/n) sum_i (1/(K d)) sum_{k,j} [c_ikj == 0]``: the share of
      counterfactual coordinates exactly equal to 0 (its code tests the
      counterfactual, not the change, against 0, so this is almost always 0).

    Non-finite counterfactuals are included as they are (a NaN makes ``distance`` NaN).

    Args:
        model: the classifier after the round's retraining (``predict_proba`` is called).
        factuals: (n, d) features of the selected individuals before recourse, n >= 1.
        counterfactuals: (n, K, d) all their counterfactuals, in feature space, K >= 1.
        decision_threshold: ``gamma`` of the generator that produced them, in (0, 1).

    Returns:
        A :class:`RoundBenchmark` of Python floats.
    """
    x = np.asarray(factuals, dtype=np.float64)
    c = np.asarray(counterfactuals, dtype=np.float64)
    problems = []
    if x.ndim != 2 or x.shape[0] == 0:
        problems.append(f"'factuals' must be a non-empty 2-D array (n, d); got shape {x.shape}")
    elif c.ndim != 3 or c.shape[0] != x.shape[0] or c.shape[2] != x.shape[1] or c.shape[1] == 0:
        problems.append(
            f"'counterfactuals' must have shape ({x.shape[0]}, K, {x.shape[1]}) with K >= 1 to match "
            f"'factuals'; got {c.shape}"
        )
    threshold_problem = check_real(decision_threshold, "decision_threshold", "benchmark_round", 0.0, 1.0,
                                   low_open=True, high_open=True)
    if threshold_problem:
        problems.append(threshold_problem)
    if problems:
        raise ValueError("Invalid arguments to benchmark_round: " + "; ".join(problems) + ".")
    n, k, d = c.shape
    # Scored in the model's own input dtype, as the simulation stores features.
    proba = np.asarray(model.predict_proba(np.asarray(counterfactuals).reshape(n * k, d)), dtype=np.float64)
    # Every individual has K counterfactuals of d coordinates, so the mean over
    # individuals of per-individual means is the plain mean over all entries.
    return RoundBenchmark(
        success_rate=float(np.mean(proba >= float(decision_threshold))),
        distance=float(np.mean(np.abs(x[:, None, :] - c))),
        redundancy=float(np.mean(c == 0.0)),
    )


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the labels that occur in ``y_true`` or ``y_pred``.

    Per label ``c``: ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``; the macro F1 is their
    unweighted mean (scikit-learn's ``f1_score(average="macro")``; MLJ's
    ``MulticlassFScore``, used by the reference). A label that is never predicted gets
    ``F1_c = 0``.

    Args:
        y_true: (n,) true labels. y_pred: (n,) predicted labels; n >= 1.
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"macro_f1 needs two non-empty label arrays of equal length; got {y_true.shape} and {y_pred.shape}."
        )
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.count_nonzero((y_true == c) & (y_pred == c))
        fp = np.count_nonzero((y_true != c) & (y_pred == c))
        fn = np.count_nonzero((y_true == c) & (y_pred != c))
        scores.append(2.0 * tp / (2.0 * tp + fp + fn))
    return float(np.mean(scores))


# ---------------------------------------------------------------------- built-in metrics
# Registered in SPEC §6 order, which is also the order of evaluate()'s output.


def _subsample_rows(a: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows of ``a`` drawn without replacement, in their original order (all when small)."""
    if a.shape[0] <= size:
        return a
    return a[np.sort(rng.choice(a.shape[0], size=size, replace=False))]


def _reference_p_value(p_value: float, n_permutations: int) -> float:
    """``#{null >= observed} / P`` recovered from the corrected ``(1 + #) / (1 + P)``."""
    if n_permutations == 0 or math.isnan(p_value):
        return math.nan
    n_extreme = round(p_value * (1 + n_permutations)) - 1
    return n_extreme / n_permutations


def _mmd_with_p(inputs: MetricInputs, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """MMD test of the context's settings; (nan, nan) when a side has fewer than 2 points.

    ``x`` is the round-0 side, ``y`` the current one (their order matters for
    ``mmd_subsample="match_first"``).
    """
    if x.shape[0] < 2 or y.shape[0] < 2:
        return math.nan, math.nan
    s = inputs.ctx.settings
    n_samples = s.n_samples
    if s.mmd_subsample == "match_first":
        # The reference caps both sides at min(len(x), n_samples), so the current side
        # is never larger than the round-0 side; mmd_test is then left nothing to cut.
        size = min(x.shape[0], s.n_samples)
        x = _subsample_rows(x, size, inputs.rng)
        y = _subsample_rows(y, size, inputs.rng)
        n_samples = max(x.shape[0], y.shape[0])
    value, p_value = mmd_test(
        x,
        y,
        n_permutations=s.n_permutations,
        seed=inputs.rng,
        lengthscale=s.lengthscale,
        n_samples=n_samples,
    )
    if s.p_value == "reference":
        p_value = _reference_p_value(p_value, s.n_permutations)
    return value, p_value


def _domain_mmd(inputs: MetricInputs, label: int) -> tuple[float, float]:
    ctx = inputs.ctx
    if ctx.settings.domain_baseline == "train_test":
        baseline = ctx.X_original[ctx.y_original == label]
    else:
        baseline = ctx.X_train0[ctx.y_train0 == label]
    return _mmd_with_p(inputs, baseline, ctx.X_train[ctx.y_train == label])


@register("domain_mmd", "domain")
def domain_mmd(inputs: MetricInputs) -> tuple[float, float]:
    """MMD between round-0 and current training points of the target class (current labels).

    The round-0 side is the training points, or training and test points with
    ``settings.domain_baseline="train_test"``. nan (with p-value nan) when either side
    has fewer than 2 target-class points.
    """
    return _domain_mmd(inputs, 1)


@register("domain_mmd_negative", "domain")
def domain_mmd_negative(inputs: MetricInputs) -> tuple[float, float]:
    """As :func:`domain_mmd` for the non-target class (label 0)."""
    return _domain_mmd(inputs, 0)


@register("model_mmd", "model")
def model_mmd(inputs: MetricInputs) -> tuple[float, float]:
    """MMD between round-0 and current model probabilities on the original points (PP MMD)."""
    return _mmd_with_p(inputs, inputs.proba("initial", "original"), inputs.proba("current", "original"))


@register("model_mmd_grid", "model")
def model_mmd_grid(inputs: MetricInputs) -> tuple[float, float]:
    """As :func:`model_mmd` on the evaluation grid."""
    return _mmd_with_p(inputs, inputs.proba("initial", "grid"), inputs.proba("current", "grid"))


@register("disagreement", "model")
def disagreement(inputs: MetricInputs) -> float:
    """Share of original points whose predicted label differs between round-0 and current model."""
    return float(np.mean(inputs.labels("initial", "original") != inputs.labels("current", "original")))


@register("decisiveness", "model")
def decisiveness(inputs: MetricInputs) -> float:
    """Mean of ``(p - 0.5)^2`` over the original points, current model (the study's text)."""
    p = inputs.proba("current", "original")
    return float(np.mean((p - 0.5) ** 2))


@register("perturbation", "model")
def perturbation(inputs: MetricInputs) -> float:
    """Mean over parameter tensors of ``||theta_t - theta_0||_2 / numel(theta)`` (the reference's)."""
    before = inputs.ctx.initial_model.parameter_arrays()
    after = inputs.ctx.model.parameter_arrays()
    if len(before) != len(after) or any(np.shape(a) != np.shape(b) for a, b in zip(before, after)):
        raise ValueError(
            "perturbation needs models with the same parameter tensors; got shapes "
            f"{[np.shape(a) for a in before]} and {[np.shape(b) for b in after]}."
        )
    if not before:
        return math.nan
    terms = [
        np.linalg.norm(np.asarray(b, dtype=np.float64).ravel() - np.asarray(a, dtype=np.float64).ravel())
        / max(np.size(a), 1)
        for a, b in zip(before, after)
    ]
    return float(np.mean(terms))


@register("f1", "performance")
def f1(inputs: MetricInputs) -> float:
    """Macro F1 of the current model on the test split (:func:`macro_f1`)."""
    return macro_f1(inputs.ctx.y_test, inputs.labels("current", "test"))


@register("accuracy", "performance")
def accuracy(inputs: MetricInputs) -> float:
    """Accuracy of the current model on the test split."""
    return float(np.mean(inputs.labels("current", "test") == np.asarray(inputs.ctx.y_test)))


def _recourse_field(name: str) -> Callable[[MetricInputs], float | None]:
    def compute(inputs: MetricInputs) -> float | None:
        stats = inputs.ctx.recourse
        return None if stats is None else float(getattr(stats, name))

    compute.__name__ = f"recourse_{name}"
    compute.__doc__ = f"``RecourseStats.{name}`` of this round; left out at round 0."
    return compute


register("recourse_validity", "recourse")(_recourse_field("validity"))
register("recourse_cost", "recourse")(_recourse_field("cost"))
register("recourse_iterations", "recourse")(_recourse_field("iterations"))
register("n_recourse", "recourse")(_recourse_field("n_recourse"))
register("share_recourse", "recourse")(_recourse_field("share_recourse"))


# ---------------------------------------------------------------------- reference-compatible metrics
# Registered after the SPEC §6 metrics, so the output starts with those in SPEC order.


@register("decisiveness_code", "model")
def decisiveness_code(inputs: MetricInputs) -> float:
    """``| ||p_0 - 0.5||_2 - ||p_t - 0.5||_2 |`` over the original points (the reference's code).

    ``p_0`` / ``p_t``: the round-0 / current model's probabilities as vectors over all
    original points; an unnormalised change, 0 at round 0.
    """
    before = np.linalg.norm(inputs.proba("initial", "original") - 0.5)
    after = np.linalg.norm(inputs.proba("current", "original") - 0.5)
    return float(abs(before - after))


# A diagnostic of model_mmd_grid (not a SPEC §6 metric).
@register("grid_saturation", "model")
def grid_saturation(inputs: MetricInputs) -> float:
    """Share of the grid's points where the current model's probability is within 1e-6 of 0 or 1.

    A diagnostic of ``model_mmd_grid``: where the grid lies far from the data (a per-feature
    box in many dimensions), the model's logits there are large and its probabilities round
    to 0 or 1. Once the current model saturates the whole grid, ``model_mmd_grid`` is a
    function of the round-0 model's grid probabilities alone, the same for every generator
    (docs/reproduction.md, credit default).
    """
    p = inputs.proba("current", "grid")
    return float(np.mean((p <= 1e-6) | (p >= 1.0 - 1e-6)))


def _benchmark_mean(field_name: str) -> Callable[[MetricInputs], float | None]:
    def compute(inputs: MetricInputs) -> float | None:
        stats = inputs.ctx.recourse
        if stats is None or not stats.round_benchmarks:
            return None
        return float(np.mean([getattr(b, field_name) for b in stats.round_benchmarks]))

    compute.__name__ = f"{field_name}_reference"
    compute.__doc__ = (
        f"Mean over rounds so far of ``RoundBenchmark.{field_name}`` (each round weighs the same, "
        "as in the reference); left out without ``RecourseStats.round_benchmarks``."
    )
    return compute


def _constraint_field(name: str) -> Callable[[MetricInputs], float | None]:
    def compute(inputs: MetricInputs) -> float | None:
        stats = inputs.ctx.recourse
        value = None if stats is None else getattr(stats, name)
        return None if value is None else float(value)

    compute.__name__ = name
    compute.__doc__ = f"``RecourseStats.{name}`` of this round; left out at round 0 and without constraints."
    return compute


# The actionability measures (docs/constraints.md): only for a dataset with constraints.
register("constraint_violation_share", "recourse", optional=True)(_constraint_field("constraint_violation_share"))
register("no_feasible_share", "recourse", optional=True)(_constraint_field("no_feasible_share"))
register("success_rate_reference", "recourse", optional=True)(_benchmark_mean("success_rate"))
register("distance_reference", "recourse", optional=True)(_benchmark_mean("distance"))
register("redundancy_reference", "recourse", optional=True)(_benchmark_mean("redundancy"))


def _n_individuals(inputs: MetricInputs) -> int | None:
    stats = inputs.ctx.recourse
    if stats is None or stats.n_chosen is None:
        return None
    return stats.n_chosen + inputs.ctx.settings.n_individuals_offset


@register("n_individuals", "recourse", optional=True)
def n_individuals(inputs: MetricInputs) -> float | None:
    """Distinct training rows selected so far, plus ``settings.n_individuals_offset``.

    The reference's count (``n_individuals``) is this with offset 1, a bug. Left out
    without ``RecourseStats.n_chosen``.
    """
    count = _n_individuals(inputs)
    return None if count is None else float(count)


@register("share_individuals", "recourse", optional=True)
def share_individuals(inputs: MetricInputs) -> float | None:
    """``n_individuals`` divided by the number of training rows (the reference's ``pct_total``)."""
    count = _n_individuals(inputs)
    return None if count is None else count / len(inputs.ctx.y_train)
