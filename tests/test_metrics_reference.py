"""The reference-compatible metric settings and metrics, against direct numpy computations.

Each switch of ``MetricSettings`` that reproduces AlgorithmicRecourseDynamics.jl v0.1.0
is checked on small hand-made data; the defaults must leave every existing value as it
was (``tests/test_metrics.py`` pins those).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from recourse_ray.metrics import (
    METRICS,
    OPTIONAL_METRICS,
    EvaluationContext,
    MetricSettings,
    RecourseStats,
    RoundBenchmark,
    benchmark_round,
    evaluate,
    make_grid,
    register,
)

REFERENCE_RUN = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ard-v0.1.0"


# ---------------------------------------------------------------------- helpers
def gauss_mmd(x, y, lengthscale=0.5):
    """Unbiased squared MMD with explicit pair loops over rows (1-D input = one feature)."""
    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    y = np.asarray(y, dtype=float).reshape(len(y), -1)

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * lengthscale**2))

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


class ShiftModel:
    """p(y=1 | x) = clip(x[:, 0] + shift, 0, 1)."""

    def __init__(self, shift=0.0, params=((1.0,),)):
        self.shift = shift
        self.params = [np.asarray(p, dtype=np.float64) for p in params]

    def predict_proba(self, X):
        return np.clip(np.asarray(X, dtype=np.float64)[:, 0] + self.shift, 0.0, 1.0)

    def predict(self, X):
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    def parameter_arrays(self):
        return [p.copy() for p in self.params]


def context(*, settings=None, recourse=None, X_train0=None, y_train0=None, X_train=None, y_train=None, seed=0):
    """The tiny context of tests/test_metrics.py, with replaceable training sets."""
    X_train0 = np.array([[0.1], [0.4], [0.6], [0.9]]) if X_train0 is None else np.asarray(X_train0, dtype=float)
    y_train0 = np.array([0, 0, 1, 1]) if y_train0 is None else np.asarray(y_train0)
    X_train = np.array([[0.1], [0.8], [0.6], [1.2]]) if X_train is None else np.asarray(X_train, dtype=float)
    y_train = np.array([0, 1, 1, 1]) if y_train is None else np.asarray(y_train)
    return EvaluationContext(
        initial_model=ShiftModel(0.0),
        model=ShiftModel(0.25),
        X_train0=X_train0,
        y_train0=y_train0,
        X_train=X_train,
        y_train=y_train,
        X_test=np.array([[0.2], [0.8], [0.15], [0.35]]),
        y_test=np.array([0, 1, 1, 1]),
        grid=np.array([[0.0], [0.5], [1.0]]),
        settings=settings or MetricSettings(n_permutations=20),
        rng=np.random.default_rng(seed),
        recourse=recourse,
    )


def by_name(values):
    return {v.name: v for v in values}


def rows(values):
    nan = lambda v: "nan" if v is not None and math.isnan(v) else v  # noqa: E731
    return [(v.name, v.scope, nan(v.value), nan(v.p_value)) for v in values]


def stats(**extra):
    return RecourseStats(n_recourse=2, validity=0.5, cost=0.3, iterations=4.0, share_recourse=0.5, **extra)


# ---------------------------------------------------------------------- defaults
def test_defaults_are_the_project_choices():
    s = MetricSettings()
    assert (s.domain_baseline, s.mmd_subsample, s.grid, s.grid_steps, s.grid_redraw, s.p_value,
            s.n_individuals_offset, s.reference_recourse_metrics) == (
        "train", "independent", "uniform", 100, False, "corrected", 0, False)


def test_explicit_defaults_give_identical_rows_and_spec_order_comes_first():
    defaults = {f.name: getattr(MetricSettings(), f.name) for f in fields(MetricSettings)}
    implicit = evaluate(context(settings=MetricSettings(n_permutations=20), recourse=stats()))
    explicit = evaluate(context(settings=MetricSettings(**{**defaults, "n_permutations": 20}), recourse=stats()))
    assert rows(implicit) == rows(explicit)
    names = [v.name for v in implicit]
    assert names[-2:] == ["decisiveness_code", "grid_saturation"] and names.index("share_recourse") == len(names) - 3
    # Metrics that need inputs the default simulation does not pass are left out.
    assert not set(OPTIONAL_METRICS.names()) & set(names)


def test_default_grid_is_unchanged_by_the_new_keywords():
    X = np.array([[0.0, -2.0], [1.0, 3.0], [0.5, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(make_grid(X, 50, 3), make_grid(X, 50, 3, kind="uniform", steps=7))


# ---------------------------------------------------------------------- domain baseline
def test_train_test_baseline_uses_round0_train_and_test_points_of_the_class():
    # Class 1 at round 0: train {.6, .9} + test {.8, .15, .35}; now {.8, .6, 1.2}.
    settings = MetricSettings(n_permutations=10, domain_baseline="train_test")
    out = by_name(evaluate(context(settings=settings), names=["domain_mmd", "domain_mmd_negative"]))
    assert out["domain_mmd"].value == pytest.approx(gauss_mmd([0.6, 0.9, 0.8, 0.15, 0.35], [0.8, 0.6, 1.2]), abs=1e-12)
    # Class 0: round 0 {.1, .4} + {.2}; now only {.1}: undefined, as with the training baseline.
    assert math.isnan(out["domain_mmd_negative"].value)
    negatives = by_name(evaluate(context(settings=settings, y_train=np.array([0, 0, 1, 1])), names=["domain_mmd_negative"]))
    assert negatives["domain_mmd_negative"].value == pytest.approx(gauss_mmd([0.1, 0.4, 0.2], [0.1, 0.8]), abs=1e-12)
    default = by_name(evaluate(context(), names=["domain_mmd"]))["domain_mmd"]
    assert default.value == pytest.approx(gauss_mmd([0.6, 0.9], [0.8, 0.6, 1.2]), abs=1e-12)


# ---------------------------------------------------------------------- sample sizes
def domain_context(x_round0, x_now, settings, seed=0):
    """Every round-0 row in x_round0 and every current row in x_now carries label 1."""
    x_round0, x_now = np.asarray(x_round0, dtype=float)[:, None], np.asarray(x_now, dtype=float)[:, None]
    return context(
        settings=settings, seed=seed, X_train0=x_round0, y_train0=np.ones(len(x_round0), dtype=int),
        X_train=x_now, y_train=np.ones(len(x_now), dtype=int),
    )


ROUND0 = [0.0, 0.3, 0.7, 1.1, 1.6]
NOW = [0.2, 0.5, 0.9, 1.4, 1.8, 2.3, 2.9, 3.2]


def test_match_first_cuts_the_current_side_to_the_round0_size():
    achievable = [gauss_mmd(ROUND0, [NOW[i] for i in s]) for s in itertools.combinations(range(8), 5)]
    settings = MetricSettings(n_permutations=1, mmd_subsample="match_first")
    values = set()
    for seed in range(8):
        v = by_name(evaluate(domain_context(ROUND0, NOW, settings, seed), names=["domain_mmd"]))["domain_mmd"].value
        assert min(abs(v - a) for a in achievable) < 1e-12
        values.add(round(v, 12))
    assert len(values) > 1  # a random subset, not always the same one
    # The default keeps all 8 current points (n_samples = 1000).
    full = by_name(evaluate(domain_context(ROUND0, NOW, MetricSettings(n_permutations=1)), names=["domain_mmd"]))
    assert full["domain_mmd"].value == pytest.approx(gauss_mmd(ROUND0, NOW), abs=1e-12)


def test_match_first_keeps_a_smaller_current_side_whole():
    settings = MetricSettings(n_permutations=1, mmd_subsample="match_first")
    out = by_name(evaluate(domain_context(NOW, ROUND0, settings), names=["domain_mmd"]))
    assert out["domain_mmd"].value == pytest.approx(gauss_mmd(NOW, ROUND0), abs=1e-12)


def test_match_first_cuts_both_sides_to_n_samples_when_the_round0_side_is_larger():
    settings = MetricSettings(n_permutations=1, n_samples=3, mmd_subsample="match_first")
    achievable = [
        gauss_mmd([ROUND0[i] for i in a], [NOW[j] for j in b])
        for a in itertools.combinations(range(5), 3)
        for b in itertools.combinations(range(8), 3)
    ]
    for seed in range(5):
        v = by_name(evaluate(domain_context(ROUND0, NOW, settings, seed), names=["domain_mmd"]))["domain_mmd"].value
        assert min(abs(v - a) for a in achievable) < 1e-12


# ---------------------------------------------------------------------- p-values
def test_reference_p_value_is_the_uncorrected_share_of_the_same_null_sample():
    for seed, n_permutations in itertools.product(range(4), (1, 7, 40)):
        corrected = by_name(evaluate(
            domain_context(ROUND0, NOW, MetricSettings(n_permutations=n_permutations), seed), names=["domain_mmd"]
        ))["domain_mmd"]
        reference = by_name(evaluate(
            domain_context(ROUND0, NOW, MetricSettings(n_permutations=n_permutations, p_value="reference"), seed),
            names=["domain_mmd"],
        ))["domain_mmd"]
        assert reference.value == corrected.value
        n_extreme = corrected.p_value * (1 + n_permutations) - 1
        assert reference.p_value == pytest.approx(n_extreme / n_permutations, abs=1e-12)
        assert reference.p_value * n_permutations == pytest.approx(round(reference.p_value * n_permutations), abs=1e-9)


def test_reference_p_value_with_one_permutation_is_zero_for_a_clear_shift_and_one_for_ties():
    far = [x + 10.0 for x in ROUND0]
    one = MetricSettings(n_permutations=1, p_value="reference")
    # Only the observed split (or its mirror) reaches the observed statistic: 2 of C(10, 5) splits.
    p_values = [
        by_name(evaluate(domain_context(ROUND0, far, one, seed), names=["domain_mmd"]))["domain_mmd"].p_value
        for seed in range(10)
    ]
    assert set(p_values) <= {0.0, 1.0} and p_values.count(0.0) >= 8
    same = [0.25] * 5
    tie = by_name(evaluate(domain_context(same, same, one), names=["domain_mmd"]))["domain_mmd"]
    assert tie.p_value == 1.0
    none = by_name(evaluate(domain_context(ROUND0, far, MetricSettings(n_permutations=0, p_value="reference")),
                            names=["domain_mmd"]))["domain_mmd"]
    assert math.isnan(none.p_value) and not math.isnan(none.value)


# ---------------------------------------------------------------------- grid
def test_linspace_grid_draws_each_coordinate_from_evenly_spaced_values():
    X = np.array([[0.0, -2.0], [1.0, 3.0], [0.5, 0.0]], dtype=np.float32)
    grid = make_grid(X, 5000, np.random.default_rng(1), kind="linspace", steps=5)
    assert grid.shape == (5000, 2) and grid.dtype == np.float32
    expected = [np.float32([0.0, 0.25, 0.5, 0.75, 1.0]), np.float32([-2.0, -0.75, 0.5, 1.75, 3.0])]
    for j in range(2):
        values, counts = np.unique(grid[:, j], return_counts=True)
        np.testing.assert_array_equal(values, expected[j])  # every value, endpoints included
        np.testing.assert_allclose(counts / 5000, 0.2, atol=0.03)  # each chosen uniformly
    np.testing.assert_array_equal(grid, make_grid(X, 5000, 1, kind="linspace", steps=5))


def test_linspace_grid_with_100_steps_lies_on_the_reference_range():
    X = np.array([[-1.0], [2.0]], dtype=np.float32)
    grid = make_grid(X, 300, 0, kind="linspace")
    on_range = -1.0 + 3.0 * np.arange(100) / 99
    assert np.min(np.abs(grid[:, 0, None] - on_range[None, :]), axis=1).max() < 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [({"kind": "grid"}, "'kind' parameter of make_grid must be one of 'uniform', 'linspace'"),
     ({"steps": 1}, r"'steps' parameter of make_grid must be an int in the range \[2, inf\)")],
)
def test_make_grid_validates_kind_and_steps(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_grid(np.zeros((3, 2)), 5, 0, **kwargs)


# ---------------------------------------------------------------------- decisiveness of the code
def test_decisiveness_code_is_the_change_of_the_euclidean_norm():
    # Original x = .1 .4 .6 .9 .2 .8 .15 .35; p0 = x; pt = min(x + .25, 1).
    # sum (p0 - .5)^2 = .16+.01+.01+.16+.09+.09+.1225+.0225 = .665
    # sum (pt - .5)^2 = .0225+.0225+.1225+.25+.0025+.25+.01+.01 = .69
    out = by_name(evaluate(context()))
    assert out["decisiveness_code"].value == pytest.approx(abs(math.sqrt(0.665) - math.sqrt(0.69)), abs=1e-12)
    assert out["decisiveness_code"].scope == "model" and out["decisiveness_code"].p_value is None
    # The study's definition is still reported alongside.
    assert out["decisiveness"].value == pytest.approx(0.69 / 8)
    same = EvaluationContext(**{**context().__dict__, "model": ShiftModel(0.0)})
    assert by_name(evaluate(same, names=["decisiveness_code"]))["decisiveness_code"].value == 0.0


# ---------------------------------------------------------------------- recourse after retraining
FACTUALS = np.array([[0.1, 0.0], [0.3, 1.0]], dtype=np.float32)
COUNTERFACTUALS = np.array(
    [[[0.6, 0.0], [0.4, 0.5], [0.7, 0.25]],
     [[0.5, 1.0], [0.9, 0.0], [0.2, 2.0]]],
    dtype=np.float32,
)  # fmt: skip


def test_benchmark_round_matches_the_reference_loops():
    model = ShiftModel(0.0)  # p = first coordinate
    got = benchmark_round(model, FACTUALS, COUNTERFACTUALS, decision_threshold=0.5)
    # The reference: per individual, the mean over its K counterfactuals; then the mean over individuals.
    success, distance, redundancy = [], [], []
    for i in range(2):
        x = FACTUALS[i].astype(float)
        cs = COUNTERFACTUALS[i].astype(float)
        success.append(np.mean([c[0] >= 0.5 for c in cs]))
        distance.append(np.mean([abs(x[j] - c[j]) for c in cs for j in range(2)]))
        redundancy.append(np.mean([(c == 0).sum() / 2 for c in cs]))
    assert got.success_rate == pytest.approx(np.mean(success))  # (2/3 + 2/3) / 2
    assert got.success_rate == pytest.approx(2 / 3)
    assert got.distance == pytest.approx(np.mean(distance))
    assert got.redundancy == pytest.approx(np.mean(redundancy))  # 1 zero of 6 coordinates each
    assert got.redundancy == pytest.approx((1 / 6 + 1 / 6) / 2)
    # A retrained model moving the boundary changes only the success rate.
    shifted = benchmark_round(ShiftModel(-0.15), FACTUALS, COUNTERFACTUALS, decision_threshold=0.5)
    assert shifted.success_rate == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert shifted.distance == got.distance
    # gamma 0.8: none of the first individual's, one of the second's.
    assert benchmark_round(model, FACTUALS, COUNTERFACTUALS, 0.8).success_rate == pytest.approx((0 + 1 / 3) / 2)


@pytest.mark.parametrize(
    "factuals,counterfactuals,threshold,match",
    [
        (np.zeros((0, 2)), np.zeros((0, 3, 2)), 0.5, "'factuals' must be a non-empty 2-D"),
        (np.zeros((2, 2)), np.zeros((2, 2)), 0.5, r"'counterfactuals' must have shape \(2, K, 2\)"),
        (np.zeros((2, 2)), np.zeros((3, 1, 2)), 0.5, "'counterfactuals' must have shape"),
        (np.zeros((2, 2)), np.zeros((2, 1, 2)), 1.0, "'decision_threshold' parameter of benchmark_round"),
    ],
)
def test_benchmark_round_validates(factuals, counterfactuals, threshold, match):
    with pytest.raises(ValueError, match=match):
        benchmark_round(ShiftModel(), factuals, counterfactuals, threshold)


def test_reference_recourse_metrics_average_the_rounds_equally():
    history = (RoundBenchmark(success_rate=1.0, distance=0.4, redundancy=0.0),
               RoundBenchmark(success_rate=0.8, distance=0.1, redundancy=0.5))
    out = by_name(evaluate(context(recourse=stats(round_benchmarks=history))))
    assert out["success_rate_reference"].value == pytest.approx(0.9)
    assert out["distance_reference"].value == pytest.approx(0.25)
    assert out["redundancy_reference"].value == pytest.approx(0.25)
    for name in ("success_rate_reference", "distance_reference", "redundancy_reference"):
        assert out[name].scope == "recourse" and out[name].p_value is None
    # Left out without the history, and at round 0.
    assert "success_rate_reference" not in by_name(evaluate(context(recourse=stats())))
    assert "distance_reference" not in by_name(evaluate(context()))
    # By name, too.
    (one,) = evaluate(context(recourse=stats(round_benchmarks=history)), names=["distance_reference"])
    assert one.value == pytest.approx(0.25)
    assert evaluate(context(recourse=stats()), names=["distance_reference"]) == []


# ---------------------------------------------------------------------- n_individuals
def test_n_individuals_with_and_without_the_reference_offset():
    plain = by_name(evaluate(context(recourse=stats(n_chosen=3))))
    assert plain["n_individuals"].value == 3.0
    assert plain["share_individuals"].value == pytest.approx(3 / 4)  # 4 training rows
    buggy = by_name(evaluate(context(settings=MetricSettings(n_individuals_offset=1), recourse=stats(n_chosen=3))))
    assert buggy["n_individuals"].value == 4.0
    assert buggy["share_individuals"].value == pytest.approx(1.0)
    assert "n_individuals" not in by_name(evaluate(context(recourse=stats())))
    assert "share_individuals" not in by_name(evaluate(context()))


# ---------------------------------------------------------------------- the reference's own run
@pytest.mark.skipif(not (REFERENCE_RUN / "overlapping_data.csv").exists(), reason=f"{REFERENCE_RUN} not found")
def test_round0_domain_mmd_equals_the_reference_output():
    with open(REFERENCE_RUN / "overlapping_data.csv") as fh:
        data = list(csv.DictReader(fh))
    X = np.array([[float(r["x1"]), float(r["x2"])] for r in data])
    y = np.array([int(r["target"]) for r in data])
    train = np.array([r["split"] == "train" for r in data])
    with open(REFERENCE_RUN / "overlapping_output.csv") as fh:
        reference = {float(r["value"]) for r in csv.DictReader(fh) if r["n"] == "0" and r["scope"] == "domain"}
    assert len(reference) == 1  # one data set and split for every fold and system
    settings = MetricSettings(n_permutations=1, domain_baseline="train_test", mmd_subsample="match_first")
    ctx = EvaluationContext(
        initial_model=ShiftModel(), model=ShiftModel(), X_train0=X[train], y_train0=y[train], X_train=X[train],
        y_train=y[train], X_test=X[~train], y_test=y[~train], grid=X[:3], settings=settings,
        rng=np.random.default_rng(0),
    )
    # 500 target points at round 0 (train + test) vs 400 now: nothing is subsampled.
    value = by_name(evaluate(ctx, names=["domain_mmd"]))["domain_mmd"].value
    assert value == pytest.approx(reference.pop(), abs=1e-12)
    default = EvaluationContext(**{**ctx.__dict__, "settings": MetricSettings(n_permutations=1)})
    assert by_name(evaluate(default, names=["domain_mmd"]))["domain_mmd"].value != pytest.approx(value, abs=1e-6)


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"domain_baseline": "test"}, "'domain_baseline' parameter of MetricSettings must be one of 'train', 'train_test'"),
        ({"mmd_subsample": "equal"}, "'mmd_subsample' parameter of MetricSettings must be one of 'independent', 'match_first'"),
        ({"grid": "linear"}, "'grid' parameter of MetricSettings must be one of 'uniform', 'linspace'. Got 'linear'"),
        ({"grid_steps": 1}, r"'grid_steps' parameter of MetricSettings must be an int in the range \[2, inf\)"),
        ({"grid_redraw": 1}, "'grid_redraw' parameter of MetricSettings must be a bool. Got 1 instead"),
        ({"p_value": "exact"}, "'p_value' parameter of MetricSettings must be one of 'corrected', 'reference'"),
        ({"n_individuals_offset": -1}, r"'n_individuals_offset' parameter of MetricSettings must be an int in the range \[0, inf\)"),
        ({"reference_recourse_metrics": "yes"}, "'reference_recourse_metrics' parameter of MetricSettings must be a bool"),
    ],
)  # fmt: skip
def test_new_settings_validate(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetricSettings(**kwargs)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError, match="'n_samples'.*'grid_steps'.*'domain_baseline'.*'grid_redraw'"):
        MetricSettings(n_samples=0, grid_steps=0, domain_baseline=None, grid_redraw="yes")


def test_recourse_stats_validate_the_new_fields():
    with pytest.raises(ValueError, match=r"'n_chosen' parameter of RecourseStats must be an int in the range \[0, inf\)"):
        stats(n_chosen=-1)
    with pytest.raises(ValueError, match="'round_benchmarks' parameter of RecourseStats must be a tuple of RoundBenchmark"):
        stats(round_benchmarks=[0.5])
    listed = stats(round_benchmarks=[RoundBenchmark(success_rate=1.0, distance=0.0, redundancy=0.0)])
    assert isinstance(listed.round_benchmarks, tuple)


@pytest.fixture
def restore_registries():
    before = {id(r): set(r.names()) for r in (METRICS, OPTIONAL_METRICS)}
    yield
    for registry in (METRICS, OPTIONAL_METRICS):
        for name in set(registry.names()) - before[id(registry)]:
            registry._entries.pop(name)


def test_names_are_unique_across_both_registries(restore_registries):
    with pytest.raises(ValueError, match="'n_individuals' is already registered"):
        register("n_individuals", "recourse")(lambda inputs: 0.0)
    with pytest.raises(ValueError, match="'decisiveness' is already registered"):
        register("decisiveness", "model", optional=True)(lambda inputs: 0.0)
    register("test_optional_metric", "domain", optional=True)(lambda inputs: None)
    assert "test_optional_metric" in OPTIONAL_METRICS and "test_optional_metric" not in METRICS


def test_unknown_names_are_answered_with_both_registries():
    with pytest.raises(KeyError, match="Did you mean 'n_individuals'.*share_individuals"):
        evaluate(context(), names=["n_individual"])
