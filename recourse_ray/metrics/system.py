"""The metrics of a recourse system at an evaluation round (SPEC §6).

The simulation builds one :class:`EvaluationContext` per evaluation round (the round-0
and current data and models, the evaluation grid, the round's recourse outcomes) and
calls :func:`evaluate`, which returns one :class:`MetricValue` per metric. Metrics are
registered by name with a scope (``domain``, ``model``, ``performance``, ``recourse``)
in :data:`METRICS`; :func:`register` adds user metrics the same way.

Model outputs (probabilities and labels of the round-0 and current model on the
original points, the grid and the test split) are computed at most once per
:func:`evaluate` call and shared by all metrics through :class:`MetricInputs`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from recourse_ray._config import check_int, check_real, is_real, param_message
from recourse_ray._registry import Registry
from recourse_ray._rng import as_rng, make_rng
from recourse_ray.metrics.mmd import mmd_test
from recourse_ray.models import Classifier

__all__ = [
    "SCOPES",
    "METRICS",
    "Metric",
    "MetricSettings",
    "RecourseStats",
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


@dataclass(frozen=True, kw_only=True)
class MetricSettings:
    """How the metrics are computed (SPEC §6).

    Attributes:
        n_samples: maximum points per side of every MMD (random subsample), >= 2 (paper: 1000).
        n_permutations: permutations of every MMD test, >= 0; 0 skips the test and gives
            p-value nan (study's reported p-values: 100; its runs used 1).
        n_grid: points of the evaluation grid of ``model_mmd_grid``, >= 1 (paper: 1000).
        lengthscale: Gaussian kernel lengthscale ``l``, > 0 (paper: 0.5).
    """

    n_samples: int = 1000
    n_permutations: int = 100
    n_grid: int = 1000
    lengthscale: float = 0.5

    def __post_init__(self) -> None:
        found = (
            check_int(self.n_samples, "n_samples", "MetricSettings", 2),
            check_int(self.n_permutations, "n_permutations", "MetricSettings", 0),
            check_int(self.n_grid, "n_grid", "MetricSettings", 1),
            check_real(self.lengthscale, "lengthscale", "MetricSettings", 0.0, None, low_open=True),
        )
        problems = [p for p in found if p]
        if problems:
            raise ValueError(" ".join(problems))


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
    """

    n_recourse: int
    validity: float
    cost: float
    iterations: float
    share_recourse: float

    def __post_init__(self) -> None:
        found = [check_int(self.n_recourse, "n_recourse", "RecourseStats", 0)]
        # (name, low, high, expected): inclusive bounds; inf is a valid cost or iteration
        # count, and every field but the cumulative share may be nan (no recourse given).
        for name, low, high, expected in (
            ("validity", 0.0, 1.0, "a float in the range [0, 1], or nan"),
            ("cost", 0.0, math.inf, "a float in the range [0, inf], or nan"),
            ("iterations", 0.0, math.inf, "a float in the range [0, inf], or nan"),
            ("share_recourse", 0.0, 1.0, "a float in the range [0, 1]"),
        ):
            value = getattr(self, name)
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
        grid: (n_grid, d) points uniform in the box of the original points, drawn once
            per system with :func:`make_grid`.
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
_registration_order = itertools.count()


def register(name: str, scope: str) -> Callable[[Callable[[MetricInputs], MetricResult]], Callable]:
    """Decorator registering ``fn(inputs: MetricInputs)`` as metric ``name`` of ``scope``.

    The function returns a float, a ``(value, p_value)`` pair, or None when the metric
    does not apply (e.g. recourse metrics at round 0). Metrics are evaluated in
    registration order.

    Raises:
        ValueError: for an unknown scope or a name that is already registered.
    """
    if scope not in SCOPES:
        raise ValueError(f"The 'scope' parameter of register must be one of {', '.join(SCOPES)}. Got {scope!r} instead.")

    def add(fn: Callable[[MetricInputs], MetricResult]) -> Callable[[MetricInputs], MetricResult]:
        METRICS.register(name, Metric(name=name, scope=scope, compute=fn, order=next(_registration_order)))
        return fn

    return add


def evaluate(ctx: EvaluationContext, names: Sequence[str] | None = None) -> list[MetricValue]:
    """Compute metrics for one system at one evaluation round.

    Args:
        ctx: the :class:`EvaluationContext`.
        names: metric names to compute, in this order; None for every registered metric
            in registration order (SPEC §6 order for the built-in ones).

    Returns:
        One :class:`MetricValue` per applicable metric; recourse metrics are left out
        when ``ctx.recourse`` is None (round 0).

    Raises:
        KeyError: for an unknown metric name (with the valid names and closest match).
        ValueError: for a repeated name.
    """
    if names is None:
        metrics = sorted((m for _, m in METRICS.items()), key=lambda m: m.order)
    else:
        names = list(names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"Metric names must be unique; repeated: {', '.join(repeated)}.")
        metrics = [METRICS.get(n) for n in names]
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


def make_grid(X_original: np.ndarray, n_grid: int, rng: int | np.random.Generator) -> np.ndarray:
    """Points uniform in the per-feature [min, max] box of ``X_original`` (for ``model_mmd_grid``).

    Drawn once per system so that every evaluation round uses the same grid.

    Args:
        X_original: (n, d) original points (round-0 training + test features), n >= 1.
        n_grid: number of grid points, >= 1 (paper: 1000).
        rng: int seed or numpy Generator.

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
    problem = check_int(n_grid, "n_grid", "make_grid", 1)
    if problem:
        raise ValueError(problem)
    rng = as_rng(rng)
    low, high = X.min(axis=0), X.max(axis=0)
    # low/high are float32 values, so rounding the draws to float32 stays inside the box.
    return rng.uniform(low, high, size=(int(n_grid), X.shape[1])).astype(np.float32)


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


def _mmd_with_p(inputs: MetricInputs, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """MMD test of the context's settings; (nan, nan) when a side has fewer than 2 points."""
    if x.shape[0] < 2 or y.shape[0] < 2:
        return math.nan, math.nan
    s = inputs.ctx.settings
    return mmd_test(
        x,
        y,
        n_permutations=s.n_permutations,
        seed=inputs.rng,
        lengthscale=s.lengthscale,
        n_samples=s.n_samples,
    )


def _domain_mmd(inputs: MetricInputs, label: int) -> tuple[float, float]:
    ctx = inputs.ctx
    return _mmd_with_p(inputs, ctx.X_train0[ctx.y_train0 == label], ctx.X_train[ctx.y_train == label])


@register("domain_mmd", "domain")
def domain_mmd(inputs: MetricInputs) -> tuple[float, float]:
    """MMD between round-0 and current training points of the target class (current labels).

    nan (with p-value nan) when either side has fewer than 2 target-class points.
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
