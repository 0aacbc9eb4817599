"""The cheaper evaluation and search paths against straightforward computations written here.

- ``evaluate``: each MMD metric (``domain_mmd``, ``domain_mmd_negative``, ``model_mmd``,
  ``model_mmd_grid``) equals its test computed alone: the metric's two samples built from
  the context as docs/metrics.md defines them, the metric's own random stream (one draw
  from ``ctx.rng``, then ``make_rng("metric", draw, name)``), the documented subsampling
  and splits, and every split's statistic from a dense pooled kernel. For every setting
  that changes an MMD (``domain_baseline``, ``mmd_subsample``, ``p_value``, 0 and 1
  permutations, subsampling, the lengthscale, the grid kind) and at round 0.
- ``mmd_test`` / ``mmd`` on the inputs that take the new paths (narrow 1-D samples: the
  kernel's series; repeated points: the kernel on distinct points) against a plain
  per-permutation test, and the series' accuracy against an 80-bit computation.
- The search: the written-out gradient of the feed-forward network equals autograd's bit
  for bit, and whole searches equal a plain loop written here (gather the active rows,
  autograd, step, freeze) bit for bit, with and without the written-out gradient.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

import recourse_ray as rr
from recourse_ray._rng import make_rng
from recourse_ray.generators.problem import Batch
from recourse_ray.generators.spaces import FeatureSpace, LatentSpace
from recourse_ray.generators.terms import Diversity, L2Distance, MADDistance, Validity
from recourse_ray.metrics import EvaluationContext, MetricSettings, evaluate, make_grid, mmd, mmd_test

mmd_module = sys.modules["recourse_ray.metrics.mmd"]  # the package re-exports a function named mmd
engine = sys.modules["recourse_ray.generators.engine"]

MMD_METRICS = ("domain_mmd", "domain_mmd_negative", "model_mmd", "model_mmd_grid")


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


# ---------------------------------------------------------------------- a plain MMD test
def dense_kernel(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-d2 / (2.0 * lengthscale**2))


def split_statistic(kernel: np.ndarray, first: np.ndarray) -> float:
    """Unbiased MMD^2 of the pooled points split by ``first`` (bool), from the three kernel blocks."""
    m, n = int(first.sum()), int((~first).sum())
    k_xx, k_yy = kernel[np.ix_(first, first)], kernel[np.ix_(~first, ~first)]
    k_xy = kernel[np.ix_(first, ~first)]
    return (
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2.0 * k_xy.sum() / (m * n)
    )


def as_sample(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def plain_test(x, y, *, rng, n_permutations, n_samples=1000, lengthscale=0.5):
    """mmd_test's documented procedure, one split at a time: (observed, #null >= observed, P).

    Each side cut to ``n_samples`` rows (sorted draws without replacement), then the splits
    in chunks of ``_BLOCK_ELEMENTS // N`` rows, each a row-wise shuffle of ``[1] * m + [0] * n``.
    """
    x, y = as_sample(x), as_sample(y)
    if len(x) > n_samples:
        x = x[np.sort(rng.choice(len(x), size=n_samples, replace=False))]
    if len(y) > n_samples:
        y = y[np.sort(rng.choice(len(y), size=n_samples, replace=False))]
    m, N = len(x), len(x) + len(y)
    kernel = dense_kernel(np.concatenate([x, y]), np.concatenate([x, y]), lengthscale)
    first = np.arange(N) < m
    observed = split_statistic(kernel, first)
    indicator = first[None, :].astype(np.float64)
    chunk = max(1, min(n_permutations, mmd_module._BLOCK_ELEMENTS // N))
    null = []
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        for split in rng.permuted(np.broadcast_to(indicator, (size, N)), axis=1):
            null.append(split_statistic(kernel, split.astype(bool)))
    return observed, int(np.count_nonzero(np.array(null) >= observed - 1e-12)), n_permutations


def plain_p(count: int, n_permutations: int, kind: str = "corrected") -> float:
    if n_permutations == 0:
        return math.nan
    return (1 + count) / (1 + n_permutations) if kind == "corrected" else count / n_permutations


def same_p(a, b) -> bool:
    return (a is None and b is None) or a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------------- evaluate against the metrics computed alone
def wide_model(name: str, seed: int, scale: float):
    """A built-in network with scaled weights, so that its probabilities span most of [0, 1]."""
    model = rr.models.create(name, input_dim=2, seed=seed)
    with torch.no_grad():
        model.params.mul_(scale)
    return model


def system_context(settings: MetricSettings, *, round0: bool = False, seed: int = 0) -> EvaluationContext:
    """A context as the simulation builds one: the current training set is the round-0 set with some rows moved."""
    rng = np.random.default_rng(seed)
    initial = wide_model("mlp", seed, 4.0)
    X0 = rng.normal(scale=1.5, size=(150, 2)).astype(np.float32)
    y0 = (X0[:, 0] + 0.5 * rng.normal(size=150) > 0).astype(np.int64)
    X_test = rng.normal(scale=1.5, size=(50, 2)).astype(np.float32)
    y_test = (rng.random(50) < 0.5).astype(np.int64)
    if round0:
        model, X, y = initial, X0.copy(), y0.copy()
    else:
        model = initial.clone()
        with torch.no_grad():
            change = rng.normal(scale=0.3, size=tuple(model.params.shape)).astype(np.float32)
            model.params.add_(torch.from_numpy(change))
        X, y = X0.copy(), y0.copy()
        moved = rng.choice(np.flatnonzero(y0 == 0), size=30, replace=False)  # recourse: 30 negatives moved
        X[moved] = X[moved] + rng.normal(scale=0.5, size=(30, 2)).astype(np.float32)
        y[moved] = model.predict(X[moved])
    X_original = np.concatenate([X0, X_test])
    grid = make_grid(X_original, 120, rng, kind=settings.grid, steps=settings.grid_steps)
    return EvaluationContext(
        initial_model=initial, model=model, X_train0=X0, y_train0=y0, X_train=X, y_train=y,
        X_test=X_test, y_test=y_test, grid=grid, settings=settings, rng=np.random.default_rng(seed + 100),
    )


def metrics_computed_alone(ctx: EvaluationContext, rng_state: dict) -> dict[str, tuple[float, float]]:
    """The four MMD metrics of docs/metrics.md, each from its own stream, by the plain test."""
    s = ctx.settings
    draw = np.random.default_rng()
    draw.bit_generator.state = rng_state
    base_seed = int(draw.integers(0, 2**63 - 1))
    X_original = np.concatenate([ctx.X_train0, ctx.X_test])
    y_original = np.concatenate([ctx.y_train0, ctx.y_test])

    def proba(model, X):
        return np.asarray(model.predict_proba(X), dtype=np.float64)

    samples = {}
    for name, label in (("domain_mmd", 1), ("domain_mmd_negative", 0)):
        if s.domain_baseline == "train_test":
            baseline = X_original[y_original == label]
        else:
            baseline = ctx.X_train0[ctx.y_train0 == label]
        samples[name] = (baseline, ctx.X_train[ctx.y_train == label])
    samples["model_mmd"] = (proba(ctx.initial_model, X_original), proba(ctx.model, X_original))
    samples["model_mmd_grid"] = (proba(ctx.initial_model, ctx.grid), proba(ctx.model, ctx.grid))
    out = {}
    for name, (x, y) in samples.items():
        rng = make_rng("metric", base_seed, name)
        if len(x) < 2 or len(y) < 2:
            out[name] = (math.nan, math.nan)
            continue
        n_samples = s.n_samples
        if s.mmd_subsample == "match_first":
            size = min(len(x), s.n_samples)
            if len(x) > size:
                x = x[np.sort(rng.choice(len(x), size=size, replace=False))]
            if len(y) > size:
                y = y[np.sort(rng.choice(len(y), size=size, replace=False))]
            n_samples = max(len(x), len(y))
        value, count, P = plain_test(
            x, y, rng=rng, n_permutations=s.n_permutations, n_samples=n_samples, lengthscale=s.lengthscale
        )
        out[name] = (value, plain_p(count, P, s.p_value))
    return out


SETTINGS = {
    "default": {"n_permutations": 30},
    "train_test_baseline": {"n_permutations": 30, "domain_baseline": "train_test"},
    "match_first": {"n_permutations": 30, "mmd_subsample": "match_first", "n_samples": 60},
    "reference_p_value": {"n_permutations": 30, "p_value": "reference"},
    "reference_protocol": {
        "n_permutations": 1, "p_value": "reference", "domain_baseline": "train_test",
        "mmd_subsample": "match_first", "grid": "linspace",
    },
    "no_permutations": {"n_permutations": 0},
    "subsampled": {"n_permutations": 30, "n_samples": 40},
    "short_lengthscale": {"n_permutations": 30, "lengthscale": 0.2},
    "long_lengthscale": {"n_permutations": 20, "lengthscale": 2.0},
    "linspace_grid": {"n_permutations": 30, "grid": "linspace", "grid_steps": 7},
}


@pytest.mark.parametrize("round0", [False, True], ids=["round_t", "round_0"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_evaluate_equals_each_mmd_metric_computed_alone(name, round0):
    ctx = system_context(MetricSettings(**SETTINGS[name]), round0=round0, seed=len(name))
    expected = metrics_computed_alone(ctx, ctx.rng.bit_generator.state)
    got = {v.name: (v.value, v.p_value) for v in evaluate(ctx) if v.name in MMD_METRICS}
    assert sorted(got) == sorted(MMD_METRICS)
    for metric in MMD_METRICS:
        value, p = got[metric]
        assert value == pytest.approx(expected[metric][0], abs=1e-12, nan_ok=True), metric
        assert same_p(p, expected[metric][1]), (metric, p, expected[metric][1])


def test_the_system_context_takes_every_new_path(monkeypatch):
    """Guard for the test above: its samples use the series (probabilities) and the distinct points (domain)."""
    ctx = system_context(MetricSettings(n_permutations=5))
    sizes = []
    blocked = mmd_module._blocked_sums
    monkeypatch.setattr(mmd_module, "_blocked_sums", lambda *a: (sizes.append(a[0].shape), blocked(*a))[1])
    evaluate(ctx, ["model_mmd", "model_mmd_grid"])
    assert sizes == []  # both model MMDs through the series
    evaluate(ctx, ["domain_mmd_negative"])
    n_pooled = int((ctx.y_train0 == 0).sum() + (ctx.y_train == 0).sum())
    assert len(sizes) == 1 and sizes[0][1] == 2 and sizes[0][0] < n_pooled  # repeated points evaluated once


# ---------------------------------------------------------------------- mmd_test and mmd on the new paths
def probabilities(n: int, seed: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """``n`` values in [low, high], both ends included (so the half range is exactly (high - low) / 2)."""
    rng = np.random.default_rng(seed)
    inner = low + (high - low) / (1.0 + np.exp(-3.0 * rng.normal(size=n - 2)))
    return np.concatenate([[low], inner, [high]])


def no_blocked_sums(*args):
    raise AssertionError("the blocked sums ran where the series applies")


@pytest.mark.parametrize(
    "x,y,lengthscale",
    [
        (probabilities(300, 0), probabilities(250, 1, 0.05, 0.9), 0.5),  # model MMD sizes and ranges
        (probabilities(200, 2), probabilities(200, 2), 0.5),  # round 0: the same probabilities twice
        (probabilities(80, 3, 0.4, 0.6), probabilities(90, 4, 0.45, 0.55), 0.1),  # half range = lengthscale
        (np.full(40, 0.3), np.full(30, 0.3), 0.5),  # one value: a single term
        (np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]), 0.5),  # saturated probabilities
    ],
    ids=["probabilities", "identical_sides", "range_at_the_bound", "constant", "saturated"],
)
def test_series_path_equals_the_plain_test(monkeypatch, x, y, lengthscale):
    monkeypatch.setattr(mmd_module, "_blocked_sums", no_blocked_sums)
    value, p = mmd_test(x, y, n_permutations=60, seed=5, lengthscale=lengthscale)
    plain_value, count, P = plain_test(x, y, rng=np.random.default_rng(5), n_permutations=60, lengthscale=lengthscale)
    assert value == pytest.approx(plain_value, abs=1e-12)
    assert p == plain_p(count, P)
    assert mmd(x, y, lengthscale=lengthscale) == pytest.approx(plain_value, abs=1e-12)


def test_series_is_not_used_beyond_its_range(monkeypatch):
    """Half range just above the lengthscale (and any 2-D sample): the blocked sums, and the same test."""
    x, y = probabilities(60, 6, 0.0, 0.2002), probabilities(50, 7, 0.0, 0.2)
    assert mmd_module._series_features(np.concatenate([x, y])[:, None], 0.1) is None
    assert mmd_module._series_features(np.concatenate([y, y])[:, None], 0.1) is not None
    calls = []
    blocked = mmd_module._blocked_sums
    monkeypatch.setattr(mmd_module, "_blocked_sums", lambda *a: (calls.append(1), blocked(*a))[1])
    value, p = mmd_test(x, y, n_permutations=40, seed=8, lengthscale=0.1)
    plain_value, count, P = plain_test(x, y, rng=np.random.default_rng(8), n_permutations=40, lengthscale=0.1)
    assert calls and value == pytest.approx(plain_value, abs=1e-12) and p == plain_p(count, P)


def repeated_points(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two samples sharing most points (the domain MMDs), with repeats inside a side too."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.6, size=(120, 2))
    moved = rng.normal(scale=0.6, size=(40, 2)) + 0.4
    y = np.concatenate([x[:70], moved, moved[:5], x[100:]])
    return x, y


@pytest.mark.parametrize("n_samples", [1000, 90])
def test_repeated_points_are_evaluated_once_and_give_the_plain_test(monkeypatch, n_samples):
    x, y = repeated_points(9)
    distinct = len(np.unique(np.concatenate([x, y]), axis=0))
    sizes = []
    blocked = mmd_module._blocked_sums
    monkeypatch.setattr(mmd_module, "_blocked_sums", lambda *a: (sizes.append(a[0].shape[0]), blocked(*a))[1])
    value, p = mmd_test(x, y, n_permutations=50, seed=10, n_samples=n_samples)
    plain_value, count, P = plain_test(x, y, rng=np.random.default_rng(10), n_permutations=50, n_samples=n_samples)
    assert value == pytest.approx(plain_value, abs=1e-12)
    assert p == plain_p(count, P)
    if n_samples == 1000:
        assert sizes == [distinct]
    else:
        assert len(sizes) == 1 and sizes[0] < 2 * n_samples
    assert mmd(x, y) == pytest.approx(plain_test(x, y, rng=np.random.default_rng(0), n_permutations=0)[0], abs=1e-12)


def test_one_repeated_point_and_several_passes(monkeypatch):
    """Every point the same (one distinct point); and more splits than a pass holds."""
    x, y = np.ones((30, 2)), np.ones((25, 2))
    value, p = mmd_test(x, y, n_permutations=20, seed=1)
    assert value == pytest.approx(0.0, abs=1e-12) and p == 1.0
    x, y = repeated_points(11)
    one_pass = mmd_test(x, y, n_permutations=130, seed=3)
    monkeypatch.setattr(mmd_module, "_PASS_ELEMENTS", 2 * (len(x) + len(y)))  # 2 splits per pass: 66 passes
    monkeypatch.setattr(mmd_module, "_KERNEL_BLOCK_ELEMENTS", 7 * (len(x) + len(y)))  # blocks of ~10 rows
    several = mmd_test(x, y, n_permutations=130, seed=3)
    plain_value, count, P = plain_test(x, y, rng=np.random.default_rng(3), n_permutations=130)
    assert several[0] == pytest.approx(one_pass[0], abs=1e-13) and several[1] == one_pass[1] == plain_p(count, P)
    assert several[0] == pytest.approx(plain_value, abs=1e-12)


def test_series_is_as_accurate_as_the_blocked_sums():
    """Probabilities, 600 per side, against an 80-bit computation: the series' error is the smaller."""
    x, y = probabilities(600, 12), probabilities(600, 13, 0.02, 0.97)
    pooled = np.concatenate([x, y])[:, None]
    rng = np.random.default_rng(14)
    rows = np.zeros((6, 1200))
    rows[0, :600] = 1.0
    rows[1:] = rng.permuted(np.broadcast_to(rows[:1], (5, 1200)), axis=1)
    exact = np.longdouble(pooled[:, 0])
    kernel = np.exp(-((exact[:, None] - exact[None, :]) ** 2) / np.longdouble(2 * 0.25))
    reference = np.array([split_statistic(kernel, r.astype(bool)) for r in rows], dtype=np.longdouble)
    series = mmd_module._PooledKernel(pooled, 0.5).statistics(rows, 600)
    blocked = mmd_module._blocked_indicator_mmds(pooled, rows, 600, 0.5)
    series_error = float(np.abs(series - reference).max())
    blocked_error = float(np.abs(blocked - reference).max())
    assert mmd_module._PooledKernel(pooled, 0.5).features is not None
    assert series_error < 5e-15
    assert series_error <= blocked_error + 1e-15 and blocked_error < 5e-14


# ---------------------------------------------------------------------- search: the written-out gradient
NETWORKS = {
    "logistic_regression": ("logistic_regression", {}),
    "mlp": ("mlp", {}),
    "deep_ensemble": ("deep_ensemble", {}),
    "mlp_16_8_dropout": ("mlp", {"hidden": [16, 8], "dropout": 0.1}),
}


def network(key: str, seed: int = 0, scale: float = 1.0):
    name, options = NETWORKS[key]
    model = rr.models.create(name, input_dim=2, seed=seed, **options)
    with torch.no_grad():
        model.params.mul_(scale)
    return model


def autograd_gradient(model, terms, states, factuals):
    """Sum of weighted terms, differentiated by autograd; the model's outputs as model_outputs defines them."""
    s = states.detach().clone().requires_grad_(True)
    m, K, d = s.shape
    members = model.member_logits(s.reshape(m * K, d))
    batch = Batch(
        states=s, points=s, factuals=factuals, logits=members.mean(dim=0).reshape(m, K),
        proba=torch.sigmoid(members).mean(dim=0).reshape(m, K), member_logits=members.reshape(-1, m, K),
    )
    loss = sum(t.weight * t.value(batch, {}).sum() for t in terms)
    (grad,) = torch.autograd.grad(loss, s)
    return grad, batch.proba.detach()


@pytest.mark.parametrize("weights", [(1.0, 0.1), (0.5, 0.1), (1.0, None), (None, 0.3), (2.0, 1.0)])
@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_written_out_gradient_equals_autograd_bit_for_bit(key, weights):
    terms = [t for t, w in zip((Validity, L2Distance), weights) if w is not None]
    terms = [cls(weight=w) for cls, w in zip(terms, [w for w in weights if w is not None])]
    mismatches = 0
    for trial in range(40):
        model = network(key, seed=trial % 3, scale=(1.0, 3.0, 10.0)[trial % 3])  # scale 10: softplus' linear part
        gen = torch.Generator().manual_seed(trial)
        m = 1 + trial % 9
        states = torch.randn(m, 4, 2, generator=gen) * (1 + trial % 4)
        factuals = states[:, 0, :] + 0.1 * torch.randn(m, 2, generator=gen)
        if trial % 5 == 0:
            states[0, 2] = factuals[0]  # a state on its factual: the norm's zero subgradient
        fast = engine._FeedForwardGradient.build(model, FeatureSpace(), terms, states)
        assert fast is not None
        with torch.no_grad():
            grad, proba = fast(states, factuals)
        want_grad, want_proba = autograd_gradient(model, terms, states, factuals)
        mismatches += not (torch.equal(grad, want_grad) and torch.equal(proba, want_proba))
    assert mismatches == 0


class _StandIn:
    """A classifier the engine knows only through its methods."""

    input_dim = 2

    def __init__(self):
        self.inner = network("mlp")

    def member_logits(self, x):
        return self.inner.member_logits(x)


@pytest.mark.parametrize(
    "model,space,terms",
    [
        (_StandIn(), FeatureSpace(), [Validity(), L2Distance()]),
        (network("mlp"), LatentSpace(), [Validity(), L2Distance()]),
        (network("mlp"), FeatureSpace(), [Validity(reduction="mean"), L2Distance()]),
        (network("mlp"), FeatureSpace(), [Validity(), L2Distance(joint=True)]),
        (network("mlp"), FeatureSpace(), [Validity(), MADDistance()]),
        (network("mlp"), FeatureSpace(), [Validity(), L2Distance(), Diversity()]),
        (network("mlp"), FeatureSpace(), []),
    ],
    ids=["other_classifier", "latent_space", "mean_validity", "joint_distance", "mad", "diversity", "no_terms"],
)
def test_written_out_gradient_applies_only_where_it_is_known(model, space, terms):
    assert engine._FeedForwardGradient.build(model, space, terms, torch.zeros(1, 1, 2)) is None


def plain_search(gen, model, X: np.ndarray, seeds, K: int):
    """The engine's loop written plainly: gather the active rows, autograd, ask the rule, step, freeze.

    The starting states are the search's own with no steps (``max_iterations=0``). Returns
    (points (n, K, d), proba (n, K), iterations (n,), path).
    """
    start = dataclasses.replace(gen, max_iterations=0).search(model, X, n_counterfactuals=K, seeds=seeds)
    states = torch.from_numpy(start.counterfactuals.copy())
    factuals = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    n, _, d = states.shape
    live = [t for t in gen.terms if t.weight != 0.0]
    active = torch.ones(n, dtype=torch.bool)
    iterations = torch.zeros(n, dtype=torch.int64)
    if gen.skip_valid_factuals:
        with torch.no_grad():
            active &= ~(torch.sigmoid(model.member_logits(factuals)).mean(dim=0) >= gen.decision_threshold)
    path = [states.clone()]
    for t in range(gen.max_iterations):
        idx = torch.nonzero(active).squeeze(1)
        if idx.numel() == 0:
            break
        s = states[idx].clone().requires_grad_(True)
        m = idx.numel()
        members = model.member_logits(s.reshape(m * K, d))
        batch = Batch(
            states=s, points=s, factuals=factuals[idx], logits=members.mean(dim=0).reshape(m, K),
            proba=torch.sigmoid(members).mean(dim=0).reshape(m, K), member_logits=members.reshape(-1, m, K),
            iteration=t,
        )
        loss = sum(term.weight * term.value(batch, {}).sum() for term in live)
        (grad,) = torch.autograd.grad(loss, s)
        with torch.no_grad():
            proposed = gen.step_rule.step(grad, {})[0]
            if gen.skip_valid_factuals and t == 0:
                stopped = torch.zeros(m, dtype=torch.bool)
            else:
                stopped = gen.convergence.before_step(batch.proba, gen.decision_threshold)
                if hasattr(gen.convergence, "stop_on_step"):  # stop instead of taking the proposed step
                    stopped = stopped | gen.convergence.stop_on_step(batch.proba, proposed, gen.decision_threshold)
            moving = ~stopped
            delta = proposed * moving[:, None, None].to(grad.dtype)
            stopped = stopped | (gen.convergence.after_step(delta) & moving)
            states[idx] += delta
            iterations[idx] += moving.to(torch.int64)
            active[idx[stopped]] = False
        path.append(states.clone())
    with torch.no_grad():
        proba = torch.sigmoid(model.member_logits(states.reshape(-1, d))).mean(dim=0).reshape(n, K)
    return states.numpy(), proba.numpy(), iterations.numpy(), np.stack([p.numpy() for p in path])


SEARCHES = {
    "generic": {},
    "threshold_0.9": {"decision_threshold": 0.9, "max_iterations": 60},
    "distance_weight_1": {"distance": 1.0, "max_iterations": 40},
    "validity_weight_0.5": {"validity": 0.5, "max_iterations": 40},
    "no_distance": {"distance": 0.0, "max_iterations": 30},
    "full_search": {"convergence": {"kind": "full", "tolerance": 0.002}, "max_iterations": 80},
    "skip_valid_factuals": {"skip_valid_factuals": True, "max_iterations": 50},
}


@pytest.mark.parametrize("written_out", [True, False], ids=["written_out", "autograd"])
@pytest.mark.parametrize("key", sorted(NETWORKS))
@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_search_equals_the_plain_loop_bit_for_bit(monkeypatch, search, key, written_out):
    if not written_out:
        monkeypatch.setattr(engine._FeedForwardGradient, "build", classmethod(lambda cls, *a: None))
    model = network(key, seed=1, scale=2.0)
    gen = rr.generators.create("generic", **SEARCHES[search])
    rng = np.random.default_rng(2)
    X = rng.normal(scale=1.5, size=(17, 2)).astype(np.float32)
    seeds = [int(s) for s in rng.integers(0, 2**62, size=17)]
    result = gen.search(model, X, n_counterfactuals=3, seeds=seeds, return_path=True)
    points, proba, iterations, path = plain_search(gen, model, X, seeds, 3)
    assert np.array_equal(result.counterfactuals, points)
    assert np.array_equal(result.proba, proba)
    assert np.array_equal(result.iterations, iterations)
    assert np.array_equal(result.path, path)
    # The individuals stop at different steps (so rows are dropped along the way), or all search to the end.
    assert len(set(iterations.tolist())) > 1 or iterations.min() == gen.max_iterations


def test_written_out_gradient_is_what_a_generic_search_uses(monkeypatch):
    used = []
    build = engine._FeedForwardGradient.build.__func__
    monkeypatch.setattr(
        engine._FeedForwardGradient, "build", classmethod(lambda cls, *a: (used.append(build(cls, *a)), used[-1])[1])
    )
    rr.generators.create("generic").search(network("mlp"), np.zeros((2, 2), np.float32), seeds=0)
    rr.generators.create("wachter").search(network("mlp"), np.zeros((2, 2), np.float32), seeds=0,
                                           data=(np.zeros((4, 2), np.float32), np.zeros(4)))
    assert used[0] is not None and used[1] is None
