"""Tests of recourse_ray.metrics against naive implementations and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from recourse_ray.metrics import (
    METRICS,
    SCOPES,
    EvaluationContext,
    MetricSettings,
    MetricValue,
    RecourseStats,
    evaluate,
    macro_f1,
    make_grid,
    mmd,
    mmd_test,
    register,
)
from recourse_ray.metrics.mmd import _permutation_mmds
from recourse_ray.models._feedforward import FeedForwardClassifier


# ---------------------------------------------------------------------- naive references
def naive_kernel(a, b, lengthscale=0.5):
    return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2.0 * lengthscale**2))


def naive_mmd(x, y, lengthscale=0.5):
    """Unbiased squared MMD by explicit double loops (Gretton et al. 2012, eq. 3)."""
    x = [list(np.atleast_1d(r)) for r in np.asarray(x, dtype=float)]
    y = [list(np.atleast_1d(r)) for r in np.asarray(y, dtype=float)]
    m, n = len(x), len(y)
    sxx = sum(naive_kernel(x[i], x[j], lengthscale) for i in range(m) for j in range(m) if i != j)
    syy = sum(naive_kernel(y[i], y[j], lengthscale) for i in range(n) for j in range(n) if i != j)
    sxy = sum(naive_kernel(x[i], y[j], lengthscale) for i in range(m) for j in range(n))
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


# ---------------------------------------------------------------------- mmd
@pytest.mark.parametrize("m,n,d,lengthscale", [(7, 9, 2, 0.5), (12, 5, 3, 1.3), (4, 4, 1, 0.2)])
def test_mmd_equals_naive_double_loop(m, n, d, lengthscale):
    rng = np.random.default_rng(m * 100 + n)
    x = rng.normal(size=(m, d))
    y = rng.normal(loc=0.3, size=(n, d))
    assert mmd(x, y, lengthscale=lengthscale) == pytest.approx(naive_mmd(x, y, lengthscale), abs=1e-6)


def test_mmd_one_dimensional_input_is_a_column():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=10), rng.uniform(size=8)
    assert mmd(x, y) == pytest.approx(mmd(x[:, None], y[:, None]), abs=1e-15)
    assert mmd(x, y) == pytest.approx(naive_mmd(x, y), abs=1e-6)


def test_mmd_is_symmetric():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 0.5
    assert mmd(x, y) == pytest.approx(mmd(y, x), abs=1e-12)


def population_mmd_gaussians(shift, d, lengthscale=0.5):
    """Closed-form MMD^2 between N(0, I_d) and N(shift, I_d) under the Gaussian kernel.

    For a, b independent N(0, I): E k(a, b + delta) = (l^2 / (l^2 + 2))^(d/2) exp(-|delta|^2 / (2 (l^2 + 2))).
    """
    l2 = lengthscale**2
    base = (l2 / (l2 + 2.0)) ** (d / 2)
    return 2.0 * base * (1.0 - math.exp(-float(np.sum(np.square(shift))) / (2.0 * (l2 + 2.0))))


def test_mmd_near_zero_for_same_distribution_and_matches_closed_form_for_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    shifted = rng.normal(size=(400, 2)) + 1.0
    same = mmd(x, y)
    expected = population_mmd_gaussians([1.0, 1.0], 2)  # ~0.080
    assert abs(same) < 0.005
    assert mmd(x, shifted) == pytest.approx(expected, abs=0.02)
    assert mmd(x, shifted) > 10 * abs(same)


@pytest.mark.parametrize(
    "x,y,lengthscale,match",
    [
        (np.zeros((0, 2)), np.zeros((3, 2)), 0.5, "'x' is empty"),
        (np.zeros((3, 2)), np.zeros((1, 2)), 0.5, "'y' has 1 row"),
        (np.zeros((3, 2)), np.zeros((3, 3)), 0.5, "'x' has 2 features but 'y' has 3"),
        (np.array([[0.0], [np.nan]]), np.zeros((3, 1)), 0.5, "'x' contains NaN"),
        (np.zeros((3, 1)), np.array([[0.0], [np.inf]]), 0.5, "'y' contains NaN or infinite"),
        (np.zeros((3, 1)), np.zeros((3, 1)), 0.0, "'lengthscale' must be a finite float"),
        (np.zeros((3, 1)), np.zeros((3, 1)), -1.0, "'lengthscale'"),
        (np.zeros((3, 1)), np.zeros((3, 1)), float("nan"), "'lengthscale'"),
        (np.zeros((3, 1)), np.zeros((3, 1)), True, "'lengthscale'"),
        (np.zeros((2, 2, 2)), np.zeros((3, 1)), 0.5, "1-D or 2-D"),
    ],
)
def test_mmd_and_mmd_test_validate_inputs(x, y, lengthscale, match):
    with pytest.raises(ValueError, match=match):
        mmd(x, y, lengthscale=lengthscale)
    with pytest.raises(ValueError, match=match):
        mmd_test(x, y, seed=0, lengthscale=lengthscale)


@pytest.mark.parametrize("kwargs,match", [({"n_permutations": -1}, "'n_permutations'"), ({"n_samples": 1}, "'n_samples'")])
def test_mmd_test_validates_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmd_test(np.zeros((3, 1)), np.ones((3, 1)), seed=0, **kwargs)


def test_mmd_test_requires_seed():
    with pytest.raises(ValueError, match="seed is required"):
        mmd_test(np.zeros((3, 1)), np.ones((3, 1)), seed=None)


# ---------------------------------------------------------------------- permutation test
def test_vectorised_permutation_statistics_equal_naive_recomputation():
    rng = np.random.default_rng(4)
    pooled = rng.normal(size=(12, 2))
    n_x = 5
    perms = np.stack([rng.permutation(12) for _ in range(30)])
    kernel = np.array([[naive_kernel(a, b) for b in pooled] for a in pooled])
    fast = _permutation_mmds(kernel, perms, n_x)
    slow = [naive_mmd(pooled[p[:n_x]], pooled[p[n_x:]]) for p in perms]
    np.testing.assert_allclose(fast, slow, atol=1e-10)


def test_mmd_test_observed_value_equals_mmd_without_subsampling():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2))
    value, p = mmd_test(x, y, seed=0, n_samples=40)
    assert value == pytest.approx(naive_mmd(x, y), abs=1e-9)
    assert 0.0 < p <= 1.0


def test_mmd_test_p_value_matches_exact_permutation_distribution():
    # 3 + 3 points: only C(6, 3) = 20 splits, so the null distribution is known exactly.
    x = np.array([[0.0], [0.2], [0.5]])
    y = np.array([[0.4], [0.9], [1.3]])
    pooled = np.concatenate([x, y])
    observed = naive_mmd(x, y)
    splits = list(itertools.combinations(range(6), 3))
    null = [naive_mmd(pooled[list(s)], pooled[[i for i in range(6) if i not in s]]) for s in splits]
    exact_share = np.mean([v >= observed - 1e-12 for v in null])
    n_perm = 4000
    value, p = mmd_test(x, y, seed=11, n_permutations=n_perm)
    assert value == pytest.approx(observed, abs=1e-9)
    # p = (1 + Binomial(P, share)) / (1 + P); 5 binomial standard deviations of slack.
    tolerance = 5 * math.sqrt(exact_share * (1 - exact_share) / n_perm) + 2 / n_perm
    assert p == pytest.approx(exact_share, abs=tolerance)


def test_mmd_test_p_values_under_the_null_are_mostly_large():
    rng = np.random.default_rng(6)
    p_values = [
        mmd_test(rng.normal(size=(80, 2)), rng.normal(size=(80, 2)), seed=i, n_permutations=100)[1]
        for i in range(20)
    ]
    assert np.mean(np.array(p_values) > 0.05) >= 0.8
    # Valid p-values are never below 1/(P+1).
    assert min(p_values) >= 1 / 101 - 1e-15


def test_mmd_test_p_value_is_minimal_for_shifted_distributions():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + 1.0
    value, p = mmd_test(x, y, seed=0, n_permutations=200)
    assert value == pytest.approx(population_mmd_gaussians([1.0, 1.0], 2), abs=0.03)
    assert p == pytest.approx(1 / 201)


def test_mmd_test_result_does_not_depend_on_the_permutation_block_size(monkeypatch):
    import sys

    mmd_module = sys.modules["recourse_ray.metrics.mmd"]  # the package re-exports a function named mmd
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(25, 2)) + 0.3
    one_block = mmd_test(x, y, seed=1, n_permutations=300)
    monkeypatch.setattr(mmd_module, "_BLOCK_ELEMENTS", 55 * 7)  # blocks of 7 permutations
    assert mmd_test(x, y, seed=1, n_permutations=300) == one_block


def test_mmd_test_with_zero_permutations_gives_nan_p_value():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    value, p = mmd_test(x, y, seed=0, n_permutations=0)
    assert math.isnan(p)
    assert value == pytest.approx(naive_mmd(x, y), abs=1e-9)


def test_mmd_test_is_reproducible_and_seed_dependent():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(50, 2))
    a = mmd_test(x, y, seed=3, n_samples=20)
    assert a == mmd_test(x, y, seed=3, n_samples=20)
    assert a == mmd_test(x, y, seed=np.random.default_rng(3), n_samples=20)
    assert a[0] != mmd_test(x, y, seed=4, n_samples=20)[0]


def test_mmd_test_subsample_is_a_subset_of_each_side():
    x = np.array([[0.0], [0.3], [0.7], [1.5]])
    y = np.array([[0.1], [1.0], [2.0]])
    achievable = [
        naive_mmd(x[list(i)], y[list(j)])
        for i in itertools.combinations(range(4), 2)
        for j in itertools.combinations(range(3), 2)
    ]
    for seed in range(10):
        value, _ = mmd_test(x, y, seed=seed, n_samples=2, n_permutations=5)
        assert min(abs(value - a) for a in achievable) < 1e-9


def test_mmd_test_counts_exact_ties_as_extreme():
    # Every point identical: every split has the same statistic, so p must be 1.
    x = np.full((10, 1), 0.25)
    value, p = mmd_test(x, x.copy(), seed=0, n_permutations=50)
    assert p == 1.0
    assert value == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------- system metrics
class StubModel:
    """p(y=1 | x) = clip(x[:, 0] + shift, 0, 1), with given parameter tensors."""

    def __init__(self, shift, params):
        self.shift = shift
        self.params = [np.asarray(p, dtype=np.float64) for p in params]
        self.calls = 0

    def predict_proba(self, X):
        self.calls += 1
        return np.clip(np.asarray(X, dtype=np.float64)[:, 0] + self.shift, 0.0, 1.0)

    def predict(self, X):
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    def parameter_arrays(self):
        return [p.copy() for p in self.params]


INITIAL_PARAMS = [[[1.0, 2.0], [3.0, 4.0]], [0.0], [1.0, 1.0]]
CURRENT_PARAMS = [[[1.0, 2.0], [3.0, 7.0]], [2.0], [4.0, 5.0]]


def tiny_context(*, recourse=None, settings=None, y_train=None, X_train=None, rng_seed=0):
    X_train0 = np.array([[0.1], [0.4], [0.6], [0.9]])
    y_train0 = np.array([0, 0, 1, 1])
    return EvaluationContext(
        initial_model=StubModel(0.0, INITIAL_PARAMS),
        model=StubModel(0.25, CURRENT_PARAMS),
        X_train0=X_train0,
        y_train0=y_train0,
        X_train=np.array([[0.1], [0.8], [0.6], [1.2]]) if X_train is None else X_train,
        y_train=np.array([0, 1, 1, 1]) if y_train is None else y_train,
        X_test=np.array([[0.2], [0.8], [0.15], [0.35]]),
        y_test=np.array([0, 1, 1, 1]),
        grid=np.array([[0.0], [0.5], [1.0]]),
        settings=settings or MetricSettings(n_permutations=50),
        rng=np.random.default_rng(rng_seed),
        recourse=recourse,
    )


def by_name(values):
    return {v.name: v for v in values}


def test_model_metrics_match_hand_computation():
    # Original points (train0 + test): x = .1 .4 .6 .9 .2 .8 .15 .35
    # initial p = x                    -> labels 0 0 1 1 0 1 0 0
    # current p = min(x + .25, 1): .35 .65 .85 1 .45 1 .4 .6 -> labels 0 1 1 1 0 1 0 1
    out = by_name(evaluate(tiny_context()))
    assert out["disagreement"].value == pytest.approx(2 / 8)
    # (p - .5)^2: .0225 .0225 .1225 .25 .0025 .25 .01 .01 -> sum .69
    assert out["decisiveness"].value == pytest.approx(0.69 / 8)
    # ||dW|| / 4 = 3/4, ||db|| / 1 = 2, ||(3, 4)|| / 2 = 2.5
    assert out["perturbation"].value == pytest.approx((0.75 + 2.0 + 2.5) / 3)
    for name in ("disagreement", "decisiveness", "perturbation", "f1", "accuracy"):
        assert out[name].p_value is None
        assert out[name].scope == METRICS.get(name).scope


def test_performance_metrics_match_hand_computed_confusion_matrix():
    # Test x = .2 .8 .15 .35 -> current p .45 1 .4 .6 -> predictions 0 1 0 1; truth 0 1 1 1.
    # class 1: TP 2, FP 0, FN 1 -> F1 = 4/5; class 0: TP 1, FP 1, FN 0 -> F1 = 2/3.
    out = by_name(evaluate(tiny_context()))
    assert out["accuracy"].value == pytest.approx(3 / 4)
    assert out["f1"].value == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert out["f1"].scope == "performance"


def test_macro_f1_against_hand_computed_confusion_matrix():
    y_true = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    # class 1: TP 3, FP 1, FN 2 -> 6/9; class 0: TP 4, FP 2, FN 1 -> 8/11
    assert macro_f1(y_true, y_pred) == pytest.approx((6 / 9 + 8 / 11) / 2)
    # Never predicting class 0: its F1 is 0, class 1: TP 5, FP 5 -> 10/15.
    assert macro_f1(y_true, np.ones(10, dtype=int)) == pytest.approx((0 + 10 / 15) / 2)
    with pytest.raises(ValueError, match="equal length"):
        macro_f1(y_true, y_pred[:3])


def test_mmd_metrics_match_naive_values():
    ctx = tiny_context()
    out = by_name(evaluate(ctx))
    # domain: class 1 at round 0 {.6, .9} vs now {.8, .6, 1.2}; class 0 {.1, .4} vs {.1}.
    assert out["domain_mmd"].value == pytest.approx(naive_mmd([0.6, 0.9], [0.8, 0.6, 1.2]), abs=1e-9)
    assert out["domain_mmd"].scope == "domain"
    assert 0 < out["domain_mmd"].p_value <= 1
    assert math.isnan(out["domain_mmd_negative"].value) and math.isnan(out["domain_mmd_negative"].p_value)
    initial = [0.1, 0.4, 0.6, 0.9, 0.2, 0.8, 0.15, 0.35]
    current = [0.35, 0.65, 0.85, 1.0, 0.45, 1.0, 0.4, 0.6]
    assert out["model_mmd"].value == pytest.approx(naive_mmd(initial, current), abs=1e-9)
    assert out["model_mmd_grid"].value == pytest.approx(naive_mmd([0, 0.5, 1], [0.25, 0.75, 1]), abs=1e-9)
    for name in ("model_mmd", "model_mmd_grid"):
        assert out[name].scope == "model"
        assert 1 / 51 - 1e-12 <= out[name].p_value <= 1


def test_mmd_metric_is_nan_for_empty_class():
    out = by_name(evaluate(tiny_context(y_train=np.array([1, 1, 1, 1]))))
    assert math.isnan(out["domain_mmd_negative"].value)
    assert math.isnan(out["domain_mmd_negative"].p_value)
    assert not math.isnan(out["domain_mmd"].value)


def test_mmd_metrics_have_nan_p_value_without_permutations():
    out = by_name(evaluate(tiny_context(settings=MetricSettings(n_permutations=0))))
    assert math.isnan(out["model_mmd"].p_value)
    assert not math.isnan(out["model_mmd"].value)


def test_recourse_metrics_absent_at_round_zero_and_copied_otherwise():
    names = ["recourse_validity", "recourse_cost", "recourse_iterations", "n_recourse", "share_recourse"]
    at_zero = by_name(evaluate(tiny_context()))
    assert not set(names) & set(at_zero)
    stats = RecourseStats(n_recourse=3, validity=2 / 3, cost=1.5, iterations=12.0, share_recourse=0.25)
    out = by_name(evaluate(tiny_context(recourse=stats)))
    assert [out[n].value for n in names] == pytest.approx([2 / 3, 1.5, 12.0, 3.0, 0.25])
    assert all(out[n].scope == "recourse" and out[n].p_value is None for n in names)


def test_evaluate_order_subsets_and_shared_model_outputs():
    stats = RecourseStats(n_recourse=0, validity=math.nan, cost=math.nan, iterations=math.nan, share_recourse=0.0)
    ctx = tiny_context(recourse=stats)
    full = evaluate(ctx)
    builtin = [
        "domain_mmd", "domain_mmd_negative", "model_mmd", "model_mmd_grid", "disagreement",
        "decisiveness", "perturbation", "f1", "accuracy", "recourse_validity", "recourse_cost",
        "recourse_iterations", "n_recourse", "share_recourse",
    ]  # fmt: skip
    assert [v.name for v in full][: len(builtin)] == builtin
    # Each model is asked once per point set (original, grid, test), however many metrics use it.
    # current: proba + labels on original, proba on grid, labels on test; initial: the first three.
    assert ctx.model.calls == 4
    assert ctx.initial_model.calls == 3
    # A metric's value does not depend on which other metrics are computed alongside.
    again = tiny_context(recourse=stats)
    subset = evaluate(again, names=["model_mmd_grid", "domain_mmd"])
    assert [v.name for v in subset] == ["model_mmd_grid", "domain_mmd"]
    assert subset[0] == by_name(full)["model_mmd_grid"]
    assert subset[1] == by_name(full)["domain_mmd"]


def as_rows(values):
    """Comparable rows with nan replaced by a sentinel (nan != nan)."""
    fix = lambda v: "nan" if v is not None and math.isnan(v) else v  # noqa: E731
    return [(v.name, v.scope, fix(v.value), fix(v.p_value)) for v in values]


def test_evaluate_is_reproducible_for_the_same_rng_seed():
    first = as_rows(evaluate(tiny_context(rng_seed=4)))
    assert first == as_rows(evaluate(tiny_context(rng_seed=4)))
    # Without subsampling the observed statistic does not depend on the rng.
    other = by_name(evaluate(tiny_context(rng_seed=5), names=["model_mmd"]))["model_mmd"]
    assert other.value == by_name(evaluate(tiny_context(rng_seed=4)))["model_mmd"].value


def test_evaluate_rejects_unknown_and_repeated_names():
    with pytest.raises(KeyError, match="Did you mean 'model_mmd'"):
        evaluate(tiny_context(), names=["model_mmdd"])
    with pytest.raises(ValueError, match="repeated: f1"):
        evaluate(tiny_context(), names=["f1", "f1"])


@pytest.fixture
def restore_registry():
    before = set(METRICS.names())
    yield
    for name in set(METRICS.names()) - before:
        METRICS._entries.pop(name)


def test_register_adds_user_metric_after_builtins(restore_registry):
    @register("test_mean_test_label", "performance")
    def mean_label(inputs):
        return float(np.mean(inputs.ctx.y_test)), 0.5

    out = evaluate(tiny_context())
    assert out[-1] == MetricValue("test_mean_test_label", "performance", 0.75, 0.5)
    with pytest.raises(ValueError, match="already registered"):
        register("test_mean_test_label", "performance")(mean_label)


def test_register_rejects_unknown_scope():
    with pytest.raises(ValueError, match="'scope' parameter of register must be one of"):
        register("x_metric", "population")


def feedforward_context(recourse=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    initial = FeedForwardClassifier(2, hidden=(4,), seed=1)
    current = FeedForwardClassifier(2, hidden=(4,), seed=2)
    X_now = X[:90].copy()
    X_now[:20] += 1.0
    return EvaluationContext(
        initial_model=initial,
        model=current,
        X_train0=X[:90],
        y_train0=y[:90],
        X_train=X_now,
        y_train=y[:90],
        X_test=X[90:],
        y_test=y[90:],
        grid=make_grid(X, 50, rng),
        settings=MetricSettings(n_permutations=20, n_samples=40),
        rng=np.random.default_rng(1),
        recourse=recourse,
    )


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_runs_on_a_feedforward_model(name):
    stats = RecourseStats(n_recourse=4, validity=0.5, cost=0.7, iterations=9.0, share_recourse=0.1)
    (value,) = evaluate(feedforward_context(stats), names=[name])
    assert value.name == name and value.scope in SCOPES
    assert math.isfinite(value.value)
    if value.p_value is not None:
        assert 0 < value.p_value <= 1


def test_perturbation_is_zero_for_identical_models_and_rejects_mismatched_shapes():
    ctx = tiny_context()
    same = EvaluationContext(**{**ctx.__dict__, "model": StubModel(0.0, INITIAL_PARAMS)})
    assert by_name(evaluate(same, names=["perturbation"]))["perturbation"].value == 0.0
    odd = EvaluationContext(**{**ctx.__dict__, "model": StubModel(0.0, [[1.0, 2.0]])})
    with pytest.raises(ValueError, match="same parameter tensors"):
        evaluate(odd, names=["perturbation"])


# ---------------------------------------------------------------------- settings and context
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_samples": 1}, r"'n_samples' parameter of MetricSettings must be an int in the range \[2, inf\). Got 1"),
        ({"n_permutations": -1}, "'n_permutations' parameter"),
        ({"n_grid": 0}, "'n_grid' parameter"),
        ({"n_grid": 2.0}, "'n_grid' parameter"),
        ({"lengthscale": 0}, "'lengthscale' parameter"),
        ({"lengthscale": float("inf")}, "'lengthscale' parameter"),
    ],
)
def test_metric_settings_validate_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetricSettings(**kwargs)


def test_metric_settings_report_all_problems_at_once():
    with pytest.raises(ValueError, match="'n_samples'.*'lengthscale'"):
        MetricSettings(n_samples=0, lengthscale=-1.0)


def test_recourse_stats_validate():
    share = r"The 'share_recourse' parameter of RecourseStats must be a float in the range \[0, 1\]\. Got 1\.5 instead\."
    with pytest.raises(ValueError, match=share):
        RecourseStats(n_recourse=1, validity=1.0, cost=0.0, iterations=1.0, share_recourse=1.5)
    count = r"The 'n_recourse' parameter of RecourseStats must be an int in the range \[0, inf\)\. Got -1 instead\."
    with pytest.raises(ValueError, match=count):
        RecourseStats(n_recourse=-1, validity=1.0, cost=0.0, iterations=1.0, share_recourse=0.5)


def test_evaluation_context_validates_shapes():
    with pytest.raises(ValueError, match="'y_train' must have shape \\(4,\\)"):
        tiny_context(y_train=np.array([0, 1]))
    with pytest.raises(ValueError, match="feature counts differ"):
        tiny_context(X_train=np.zeros((4, 2)))


# ---------------------------------------------------------------------- grid
def test_make_grid_is_uniform_in_the_bounding_box():
    X = np.array([[0.0, -2.0], [1.0, 3.0], [0.5, 0.0]], dtype=np.float32)
    grid = make_grid(X, 4000, np.random.default_rng(0))
    assert grid.shape == (4000, 2) and grid.dtype == np.float32
    assert (grid >= X.min(axis=0)).all() and (grid <= X.max(axis=0)).all()
    # Uniform: means near the box centres, variances near width^2 / 12.
    np.testing.assert_allclose(grid.mean(axis=0), [0.5, 0.5], atol=0.1)
    np.testing.assert_allclose(grid.var(axis=0), [1 / 12, 25 / 12], rtol=0.1)
    np.testing.assert_array_equal(grid, make_grid(X, 4000, 0))


@pytest.mark.parametrize(
    "X,n_grid,match",
    [
        (np.zeros((0, 2)), 5, "non-empty 2-D"),
        (np.array([[np.nan, 0.0]]), 5, "NaN or infinite"),
        (np.zeros((3, 2)), 0, "'n_grid' parameter of make_grid"),
    ],
)
def test_make_grid_validates(X, n_grid, match):
    with pytest.raises(ValueError, match=match):
        make_grid(X, n_grid, 0)


def test_grid_saturation_counts_grid_points_at_0_or_1():
    """Hand-made grid probabilities 0.3, 1 - 1e-7, 1e-9 and 0.9: two of four within 1e-6 of 0 or 1."""
    from recourse_ray.metrics import system as S

    class Inputs:
        def proba(self, which, where):
            assert (which, where) == ("current", "grid")
            return np.array([0.3, 1 - 1e-7, 1e-9, 0.9])

    assert S.grid_saturation(Inputs()) == pytest.approx(0.5)
