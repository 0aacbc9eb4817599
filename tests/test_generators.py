"""Tests of the batched counterfactual search engine, its terms and the study's presets.

Expected values come from independent computations: hand-rolled numpy gradient descent
with closed-form gradients, hand-computed greedy paths, naive per-term formulas, the
model's own ``predict_proba`` at the returned points, and equivalences between
compositions (optax-style: a preset equals its pieces assembled by hand).
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import torch

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray.generators import (
    Diversity,
    FullSearch,
    Generator,
    Gravitational,
    L2Distance,
    MADDistance,
    PredictiveEntropy,
    Validity,
    stream_rng,
)
from recourse_ray.generators.problem import Batch, Problem, model_outputs
from recourse_ray.generators.steps import Greedy

N_NEG = 50
K = 5
LATENT = {"revise", "clue"}
THRESHOLD_PRESETS = {"generic", "wachter", "dice", "greedy", "revise", "clue"}


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture(scope="module")
def setup(_one_thread):
    data = rr.data.load("overlapping", seed=0)
    train, _ = data.split(seed=0)
    model = rr.models.create("mlp", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=20, batch_size=8, seed=0)
    vae = rr.models.VAE(2, seed=0)
    vae.fit(train.X, epochs=50, seed=0)
    negatives = train.X[model.predict(train.X) == 0][:N_NEG]
    assert negatives.shape == (N_NEG, 2)
    return {"train": train, "model": model, "vae": vae, "neg": negatives, "data": (train.X, train.y)}


@pytest.fixture(scope="module")
def results(setup):
    """Every preset's search on the same 50 negatives (seeds 100..149), computed once."""
    seeds = list(range(100, 100 + N_NEG))
    out = {}
    for name in G.names():
        gen = G.create(name)
        out[name] = gen.search(
            setup["model"], setup["neg"], n_counterfactuals=K, seeds=seeds, data=setup["data"], vae=setup["vae"]
        )
    return out


@pytest.fixture(scope="module")
def logreg(setup):
    model = rr.models.create("logistic_regression", input_dim=2, seed=0)
    model.fit(setup["train"].X, setup["train"].y, epochs=5, batch_size=8, seed=0)
    return model


def _search(gen, setup, X=None, **kw):
    kw.setdefault("n_counterfactuals", K)
    kw.setdefault("seeds", list(range(100, 100 + (N_NEG if X is None else len(X)))))
    return gen.search(setup["model"], setup["neg"] if X is None else X, data=setup["data"], vae=setup["vae"], **kw)


def _assert_same(a, b, exact=True):
    if exact:
        np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    else:
        np.testing.assert_allclose(a.counterfactuals, b.counterfactuals, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(a.iterations, b.iterations)


# ---------------------------------------------------------------------- registry
def test_registry_holds_the_study_generators():
    assert G.names() == sorted(["generic", "wachter", "dice", "greedy", "revise", "clue", "claproar", "gravitational"])
    with pytest.raises(ValueError, match="already registered"):
        G.register("generic", lambda: G.create("generic"))


# ---------------------------------------------------------------------- every preset
@pytest.mark.parametrize("name", G.names())
def test_preset_outputs_are_consistent(name, setup, results):
    r = results[name]
    model = setup["model"]
    assert r.counterfactuals.shape == (N_NEG, K, 2) and r.counterfactuals.dtype == np.float32
    assert r.proba.shape == r.valid.shape == r.cost.shape == r.finite.shape == (N_NEG, K)
    assert r.iterations.shape == (N_NEG,)
    assert r.finite.all() and np.isfinite(r.counterfactuals).all()
    # proba, validity and cost recomputed independently from the returned points
    p = model.predict_proba(r.counterfactuals.reshape(-1, 2)).reshape(N_NEG, K)
    np.testing.assert_allclose(r.proba, p, atol=1e-6)
    np.testing.assert_array_equal(r.valid, p >= 0.5)
    cost = np.linalg.norm(r.counterfactuals.astype(np.float64) - setup["neg"][:, None, :], axis=-1)
    np.testing.assert_allclose(r.cost, cost, rtol=1e-5, atol=1e-6)
    assert ((0 <= r.iterations) & (r.iterations <= 100)).all()
    assert G.create(name).needs_vae == (name in LATENT)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(
                strict=True,
                reason="CLUE's predictive entropy has no pull towards y*=1: from a negative it moves "
                "towards *more confident* negatives (see test_clue_minimises_predictive_entropy)",
            ),
        )
        if n == "clue"
        else n
        for n in G.names()
    ],
)
def test_preset_reaches_validity(name, results):
    # REVISE starts each state at its own sample of q(z|x): a few start far from the
    # encoder mean and use up T = 100 (measured 0.944 valid here; 1.0 from the mean).
    assert results[name].valid.mean() >= (0.9 if name == "revise" else 0.95)


def test_clue_minimises_predictive_entropy(setup, results):
    """CLUE (SPEC §4: entropy replaces the validity loss) lowers its objective, and near the
    boundary it does so by moving *away* from the target class: why it cannot reach validity."""
    model, vae = setup["model"], setup["vae"]

    def objective(points, x):
        p = np.clip(model.predict_proba(points.reshape(-1, 2)).astype(np.float64), 1e-6, 1 - 1e-6)
        ent = -(p * np.log(p) + (1 - p) * np.log(1 - p))
        dist = np.linalg.norm(points.reshape(-1, 2).astype(np.float64) - np.repeat(x, points.shape[1], 0), axis=1)
        return (ent + 0.1 * dist).reshape(points.shape[:2])

    neg = setup["neg"]
    r = _search(G.create("clue"), setup, return_path=True)
    start = r.path[0]  # each state's decoded sample of q(z|x): where CLUE starts it
    assert (objective(r.counterfactuals, neg) <= objective(start, neg) + 1e-5).all()
    # negatives whose decoded start is uncertain (0.05 < p < 0.5)
    X = setup["train"].X
    p_start = model.predict_proba(vae.reconstruct(X))
    near = X[(p_start > 0.05) & (p_start < 0.5) & (model.predict(X) == 0)]
    assert len(near) >= 3
    r = G.create("clue", space="latent").search(model, near, n_counterfactuals=2, seeds=0, vae=vae)
    p0 = model.predict_proba(vae.reconstruct(near))  # from the decoded encoder mean
    assert (r.proba < p0[:, None]).all() and not r.valid.any()


@pytest.mark.parametrize("name", sorted(THRESHOLD_PRESETS))
def test_threshold_convergence_stops_only_when_all_states_valid(name, results):
    r = results[name]
    stopped_early = r.iterations < 100
    assert r.valid[stopped_early].all()


@pytest.mark.parametrize("name", ["claproar", "gravitational"])
def test_full_search_ignores_the_threshold(name, results):
    r = results[name]
    # these presets keep going after crossing 0.5 and end well inside the target class
    assert (r.iterations == 100).mean() > 0.5
    assert r.proba.mean() > 0.9 > results["generic"].proba.mean()


def test_full_search_stops_on_small_steps(setup):
    # Every step is short under a tolerance of 10: the reference's rule then stops exactly
    # where the threshold rule does (all K valid), before the step.
    big = _search(G.create("generic", convergence={"kind": "full", "tolerance": 10.0}), setup)
    _assert_same(big, _search(G.create("generic"), setup))
    none = _search(G.create("generic", convergence={"kind": "full", "tolerance": 0.0}, max_iterations=7), setup)
    np.testing.assert_array_equal(none.iterations, 7)
    # Without the threshold (the rule before December 2026): one short step stops a state.
    step_only = {"kind": "full", "tolerance": 10.0, "needs_threshold": False, "measure": "l2"}
    np.testing.assert_array_equal(_search(G.create("generic", convergence=step_only), setup).iterations, 1)


def _numpy_claproar(w, b, X, seeds, *, K, T=100, lr=0.01, lam=0.1, penalty=5.0, gamma=0.5, tol=1e-3):
    """Hand-rolled float64 ClaPROAR for a logistic regression, the reference's rules.

    Loss per state: (1 + penalty * [all K states have p >= 0.5]) * log(1 + exp(-(w.s + b)))
    + lam * ||s - x||_2; stop (without the step) once all K have p >= gamma and every
    coordinate of the proposed step lr * g is below tol in absolute value.
    """
    out, iters = [], []
    for x, seed in zip(X.astype(np.float64), seeds):
        s = (x.astype(np.float32) + stream_rng("init", seed).normal(0.0, 0.1, (K, x.size)).astype(np.float32))
        s = s.astype(np.float64)
        it = 0
        for _ in range(T):
            p = 1.0 / (1.0 + np.exp(-(s @ w + b)))
            gate = 1.0 + penalty * float((p >= 0.5).all())
            diff = s - x
            g = -gate * (1.0 - p)[:, None] * w[None, :] + lam * diff / np.linalg.norm(diff, axis=1, keepdims=True)
            if (p >= gamma).all() and (np.abs(lr * g) < tol).all():
                break
            s = s - lr * g
            it += 1
        out.append(s)
        iters.append(it)
    return np.array(out), np.array(iters)


def test_claproar_on_logistic_regression_matches_numpy():
    """The penalty switches on once all K states are valid; the search stops at gamma with short steps."""
    w, b = np.array([2.0, -1.0]), -1.0
    model = rr.models.create("logistic_regression", input_dim=2, seed=0)
    model.set_state({"params": np.array([[*w, b]], dtype=np.float32)})
    X = np.random.default_rng(0).normal(-1.0, 0.5, (20, 2)).astype(np.float32)
    assert (model.predict(X) == 0).all()
    seeds = list(range(20))
    # Step 0.2: the steps become short (the stop rule fires) within T = 100.
    expected, iters = _numpy_claproar(w, b, X, seeds, K=3, lr=0.2)
    r = G.create("claproar", step_size=0.2).search(model, X, n_counterfactuals=3, seeds=seeds)
    np.testing.assert_array_equal(r.iterations, iters)
    assert (iters < 100).all() and (iters > 10).all()  # stopped by the rule, after real descent
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-4)
    # The gate matters: without the penalty the states end elsewhere.
    plain, _ = _numpy_claproar(w, b, X, seeds, K=3, lr=0.2, penalty=0.0)
    assert np.abs(plain - expected).max() > 0.1


def test_cost_falls_as_the_distance_weight_grows(setup):
    """With a fixed budget (full search), a heavier distance penalty keeps counterfactuals closer."""
    costs = []
    for w in (0.0, 0.1, 0.5, 2.0):
        r = _search(G.create("generic", distance=w, convergence="full"), setup, seeds=list(range(N_NEG)))
        costs.append(r.cost.mean())
    assert all(a > b for a, b in zip(costs, costs[1:])), costs


def test_converged_individuals_are_frozen(setup):
    r = _search(G.create("generic"), setup, return_path=True)
    path = r.path  # (steps + 1, n, K, d)
    assert path.shape[1:] == (N_NEG, K, 2)
    for i in range(N_NEG):
        it = r.iterations[i]
        moved = np.abs(np.diff(path[:, i], axis=0)).max(axis=(1, 2)) > 0
        assert moved[:it].all() and not moved[it:].any()
    np.testing.assert_array_equal(path[-1], r.counterfactuals)


# ---------------------------------------------------------------------- equivalences
def test_gravitational_with_zero_weight_is_generic(setup):
    generic = _search(G.create("generic"), setup)
    grav0 = _search(G.create("gravitational", gravitational=0.0, convergence="threshold"), setup)
    _assert_same(generic, grav0)
    full = _search(G.create("generic", convergence="full"), setup)
    _assert_same(full, _search(G.create("gravitational", gravitational=0.0), setup))


def test_claproar_with_zero_weight_is_generic_and_equals_reweighted_validity(setup):
    full = G.create("generic", convergence="full")
    _assert_same(_search(full, setup), _search(G.create("claproar", classifier_loss=0.0), setup))
    # For a single model the classifier loss IS the validity loss: ungated, 1 + 5 = 6 times it.
    six = G.create("generic", validity=6.0, convergence="full")
    ungated = G.create("claproar", classifier_loss={"weight": 5.0, "gate": None})
    _assert_same(_search(six, setup), _search(ungated, setup), exact=False)


def test_dice_with_one_counterfactual_is_generic(setup):
    _assert_same(
        _search(G.create("generic"), setup, n_counterfactuals=1),
        _search(G.create("dice"), setup, n_counterfactuals=1),
    )
    _assert_same(_search(G.create("generic"), setup), _search(G.create("dice", diversity=0.0), setup))


def test_revise_is_generic_in_latent_space(setup):
    latent = {"kind": "latent", "start": "sample"}
    _assert_same(_search(G.create("revise"), setup), _search(G.create("generic", space=latent), setup))


def test_presets_equal_their_pieces(setup):
    by_hand = Generator(
        terms=(Validity(), L2Distance(weight=0.1), Gravitational(weight=5.0, n_points=50)),
        convergence=FullSearch(tolerance=1e-3),
        decision_threshold=0.5,
        max_iterations=100,
    )
    _assert_same(_search(by_hand, setup), _search(G.create("gravitational"), setup))
    dice = Generator(terms=(Validity(), L2Distance(weight=0.1), Diversity(weight=1.0)))
    _assert_same(_search(dice, setup), _search(G.create("dice"), setup))


def test_dice_spreads_the_counterfactuals(results):
    def spread(r):
        c = r.counterfactuals.astype(np.float64)
        return np.linalg.norm(c[:, :, None] - c[:, None, :], axis=-1).mean()

    assert spread(results["dice"]) > spread(results["generic"])


def _numpy_generic(w, b, X, seeds, *, K, T=100, lr=0.01, lam=0.1, gamma=0.5, noise=0.1, mad=None):
    """Hand-rolled float64 gradient descent for a logistic regression, closed-form gradients.

    Loss per state: log(1 + exp(-(w.s + b))) + lam * ||s - x||_2   (or the MAD-weighted L1).
    """
    out, iters = [], []
    for x, seed in zip(X.astype(np.float64), seeds):
        s = (x.astype(np.float32) + stream_rng("init", seed).normal(0.0, noise, (K, x.size)).astype(np.float32))
        s = s.astype(np.float64)
        it = 0
        for _ in range(T):
            p = 1.0 / (1.0 + np.exp(-(s @ w + b)))
            if (p >= gamma).all():
                break
            g = -(1.0 - p)[:, None] * w[None, :]
            diff = s - x
            if mad is None:
                g = g + lam * diff / np.linalg.norm(diff, axis=1, keepdims=True)
            else:
                g = g + lam * np.sign(diff) / mad
            s = s - lr * g
            it += 1
        out.append(s)
        iters.append(it)
    return np.array(out), np.array(iters)


def test_generic_on_logistic_regression_matches_numpy(setup, logreg):
    params = logreg.get_state()["params"][0].astype(np.float64)
    w, b = params[:2], params[2]
    X = setup["train"].X[logreg.predict(setup["train"].X) == 0][:20]
    seeds = list(range(20))
    expected, iters = _numpy_generic(w, b, X, seeds, K=3)
    r = G.create("generic").search(logreg, X, n_counterfactuals=3, seeds=seeds)
    np.testing.assert_array_equal(r.iterations, iters)
    assert iters.min() > 5  # the comparison covers real descent, not just the start
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-4)


def test_wachter_on_logistic_regression_matches_numpy(setup, logreg):
    params = logreg.get_state()["params"][0].astype(np.float64)
    w, b = params[:2], params[2]
    Xtr = setup["train"].X.astype(np.float64)
    mad = np.array([np.median(np.abs(col - np.median(col))) for col in Xtr.T])
    X = setup["train"].X[logreg.predict(setup["train"].X) == 0][:20]
    seeds = list(range(20))
    expected, iters = _numpy_generic(w, b, X, seeds, K=3, mad=mad)
    r = G.create("wachter").search(logreg, X, n_counterfactuals=3, seeds=seeds, data=setup["data"])
    np.testing.assert_array_equal(r.iterations, iters)
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-4)


# ---------------------------------------------------------------------- greedy
def test_greedy_path_on_a_hand_built_logistic_regression():
    """w = (2, -1): feature 0 is the most salient; it moves +0.1 ten times, then feature 1
    moves -0.1 ten times, the counts reset, and feature 0 moves again."""
    model = rr.models.create("logistic_regression", input_dim=2, seed=0)
    model.set_state({"params": np.array([[2.0, -1.0, -40.0]], dtype=np.float32)})
    x = np.zeros((1, 2), np.float32)
    r = G.create("greedy", max_iterations=25).search(model, x, n_counterfactuals=2, seeds=[3], return_path=True)
    start = r.path[0]
    expected = start + np.array([1.5, -1.0], np.float32)
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-5)
    steps = np.diff(r.path, axis=0)[:, 0, 0]  # (25, 2) first state's moves
    np.testing.assert_allclose(steps[:10], [[0.1, 0.0]] * 10, atol=1e-6)
    np.testing.assert_allclose(steps[10:20], [[0.0, -0.1]] * 10, atol=1e-6)
    np.testing.assert_allclose(steps[20:], [[0.1, 0.0]] * 5, atol=1e-6)
    assert r.iterations[0] == 25 and not r.valid.any()


def test_greedy_moves_one_feature_per_step_within_its_limit(setup):
    d = 4
    rng = np.random.default_rng(0)
    model = rr.models.create("mlp", input_dim=d, seed=1)
    X = rng.normal(size=(200, d)).astype(np.float32)
    y = (X @ np.array([1.0, 0.5, -0.3, 0.2]) > 1.5).astype(np.int64)
    model.fit(X, y, epochs=3, batch_size=16, seed=0)
    neg = X[model.predict(X) == 0][:10]
    n_changes = 3
    r = G.create("greedy", max_changes=n_changes).search(
        model, neg, n_counterfactuals=3, seeds=list(range(10)), return_path=True
    )
    steps = np.diff(r.path.astype(np.float64), axis=0)  # (T, n, K, d)
    moved = np.abs(steps) > 1e-6
    assert (moved.sum(axis=-1) <= 1).all()
    np.testing.assert_allclose(np.abs(steps[moved]), 0.1, atol=1e-5)
    # independent replay of the move counter: never more than n_changes between resets
    for i in range(neg.shape[0]):
        for k in range(3):
            counts = np.zeros(d, int)
            for t in range(steps.shape[0]):
                counts += moved[t, i, k]
                assert counts.max() <= n_changes
                if (counts == n_changes).all():
                    counts[:] = 0
    assert moved.any(axis=(0, 2, 3)).all()  # every individual moved
    assert r.valid.mean() >= 0.9


# ---------------------------------------------------------------------- latent space
def test_latent_search_returns_decoded_points(setup):
    vae = setup["vae"].clone()
    # A decoder whose image is the line x_1 = 0.7: every decoded point must lie on it.
    vae.params["out_w"][1] = 0.0
    vae.params["out_b"][1] = 0.7
    for name in sorted(LATENT) + ["gravitational"]:
        gen = G.create(name, space="latent")
        r = gen.search(setup["model"], setup["neg"][:10], n_counterfactuals=2, seeds=0, data=setup["data"], vae=vae)
        np.testing.assert_array_equal(r.counterfactuals[..., 1], np.float32(0.7))
        feature = G.create(name, space="feature").search(
            setup["model"], setup["neg"][:10], n_counterfactuals=2, seeds=0, data=setup["data"], vae=vae
        )
        assert not np.all(feature.counterfactuals[..., 1] == np.float32(0.7))


def test_latent_search_starts_at_the_decoded_encoder_mean(setup):
    vae, neg = setup["vae"], setup["neg"][:10]
    r = G.create("revise", space="latent").search(setup["model"], neg, n_counterfactuals=3, seeds=0, vae=vae, return_path=True)
    with torch.no_grad():
        expected = vae.decode(vae.encode(torch.from_numpy(neg))).numpy()
    np.testing.assert_allclose(r.path[0], np.repeat(expected[:, None], 3, axis=1), atol=1e-6)


def test_dice_in_latent_space_is_nan_free(setup):
    # All K latent states start at the same code: zero pairwise distances.
    r = _search(G.create("dice", space="latent"), setup, X=setup["neg"][:10])
    assert r.finite.all()


# ---------------------------------------------------------------------- batch independence and seeds
def test_batch_equals_each_individual_alone(setup):
    gen = G.create("generic")
    seeds = list(range(100, 100 + N_NEG))
    batch = _search(gen, setup, seeds=seeds)
    for i in range(N_NEG):
        alone = _search(gen, setup, X=setup["neg"][i : i + 1], seeds=[seeds[i]])
        np.testing.assert_allclose(alone.counterfactuals[0], batch.counterfactuals[i], atol=1e-5, rtol=0)
        assert alone.iterations[0] == batch.iterations[i]


# ---------------------------------------------------------------------- batch independence
# In exact arithmetic an individual's search depends only on its own states and seed. In
# float32 the arithmetic of one row can depend on the batch: MKL picks its sgemm kernel
# and blocking by the number of rows (and by the CPU: AVX-512 on a Xeon, other paths on
# an EPYC), and torch's sigmoid rounds differently in its SIMD body and its scalar tail,
# so where a row sits decides its rounding. Each step then differs by a few ulps, and the
# search carries the difference on with the Jacobian of its step. The tolerance below is
# that propagation bound, computed along the individual's own path (docs/reliability.md,
# "Batch independence").
U32 = 2.0**-24  # unit roundoff of float32


@dataclass(frozen=True, kw_only=True, eq=False)
class _RecordingSpace:
    """A search space that keeps every state the engine differentiates at (one per step)."""

    inner: Any
    states: list = field(default_factory=list)

    @property
    def needs_vae(self) -> bool:
        return bool(getattr(self.inner, "needs_vae", getattr(getattr(self.inner, "space", None), "needs_vae", False)))

    def bind(self, problem: Problem) -> _RecordingSpace:
        bind = getattr(self.inner, "bind", None)
        return _RecordingSpace(inner=bind(problem) if callable(bind) else self.inner, states=self.states)

    def initial_states(self, problem: Problem) -> torch.Tensor:
        return self.inner.initial_states(problem)

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        if states.requires_grad and states.shape[0]:
            self.states.append(states.detach().clone())
        return self.inner.decode(states, vae)


def _fan_in(model: Any, vae: Any, latent: bool) -> tuple[int, int]:
    """(inner dimensions summed over one gradient evaluation, over one decode): the dot products' lengths."""
    classifier = sum(int(W.shape[-1]) for W, _ in model.layers())
    decoder = vae.latent_dim + vae.hidden if latent else 0
    # forward and backward pass each run every layer's dot products once
    return 2 * (classifier + decoder), decoder


def _rounding_bound(gen: Generator, setup: dict, i: int, seed: int) -> tuple[Any, float]:
    """Search individual ``i`` alone; bound how far another float32 evaluation order can move its result.

    First-order propagation of rounding: two evaluation orders of a step each round the
    new state within ``n u (|s| + eta |g|)`` (n the summed inner dimensions of the step's
    dot products, u = 2^-24), so they differ by ``delta_t`` = twice that; the step map
    ``s - eta grad L(s)`` carries an earlier difference on with its Jacobian
    ``I - eta H(s_t)`` (H the objective's Hessian at the recorded state), and by at most
    ``e_t + 2 eta |g_t|`` (each path moves by its step, taken as this path's), so
    ``e_{t+1} = min(||I - eta H_t||_2 e_t, e_t + 2 eta |g_t|) + delta_t``. The decoder maps
    the final latent difference with its Jacobian and rounds once more.

    Returns:
        The alone search's result and the bound on ``|alone - batch|`` (Euclidean, over the K points).
    """
    space = _RecordingSpace(inner=gen.space)
    x = setup["neg"][i : i + 1]
    alone = _search(replace(gen, space=space), setup, X=x, seeds=[seed])
    problem = Problem(
        factuals=torch.from_numpy(x), n_counterfactuals=K, seeds=np.array([seed]), data_X=setup["data"][0],
        data_y=setup["data"][1], vae=setup["vae"], max_iterations=gen.max_iterations,
    )
    bound = space.bind(problem).inner
    aux = {t.name: t.prepare(problem) for t in gen.terms}
    live = [t for t in gen.terms if t.weight != 0.0]
    model, vae, eta = setup["model"], setup["vae"], gen.step_rule.step_size
    latent = gen.needs_vae
    n_step, n_decode = _fan_in(model, vae, latent)
    shape = (1, K, -1)

    def objective(flat: torch.Tensor, t: int) -> torch.Tensor:
        states = flat.reshape(shape)
        points = bound.decode(states, vae)
        logits, proba, members = model_outputs(model, points.reshape(K, -1))
        batch = Batch(states=states, points=points, factuals=problem.factuals, logits=logits.reshape(1, K),
                      proba=proba.reshape(1, K), member_logits=members.reshape(-1, 1, K), iteration=t)
        return sum(term.weight * term.value(batch, aux[term.name]).sum() for term in live)

    first = space.states[0].reshape(-1) if space.states else torch.zeros(0)
    # the starting states: the encoder's dot products (and, sampled, two more roundings)
    error = 2 * (vae.input_dim + vae.hidden + 2) * U32 * float(first.norm()) if latent else 0.0
    last = first
    for t, states in enumerate(space.states):
        s = states.reshape(-1)
        grad = torch.autograd.functional.jacobian(lambda v: objective(v, t), s)
        hessian = torch.autograd.functional.hessian(lambda v: objective(v, t), s)
        jump = torch.eye(s.numel()) - eta * hessian
        step_norm = float(torch.linalg.matrix_norm(jump, ord=2)) if torch.isfinite(jump).all() else math.inf
        # Near a kink of a norm term (curvature 1/r) the linear map overstates what a step
        # can do: each path moves by eta |g|, so they part by at most twice that.
        carried = min(step_norm * error, error + 2 * eta * float(grad.norm())) if error else 0.0
        error = carried + 2 * n_step * U32 * (float(s.norm()) + eta * float(grad.norm()))
        last = s - eta * grad
    if latent:
        jac = torch.autograd.functional.jacobian(lambda v: bound.decode(v.reshape(shape), vae).reshape(-1), last)
        point_norm = float(np.linalg.norm(alone.counterfactuals))
        error = float(torch.linalg.matrix_norm(jac, ord=2)) * error + 2 * n_decode * U32 * point_norm
    return alone, error


@pytest.mark.parametrize("name", [n for n in G.names() if n != "generic"])
def test_batch_independence_for_every_preset(name, setup, results):
    """An individual searched alone gets its batch result, within the float32 propagation bound."""
    gen = G.create(name)
    seeds = list(range(100, 100 + N_NEG))
    for i in (0, 17, 24, 49):  # 24: CLUE's largest difference on the development machine
        batch = results[name].counterfactuals[i]
        if isinstance(gen.step_rule, Greedy):
            # Fixed moves of step_size along one feature: rounding changes nothing unless it
            # flips a near tie, and then the paths part by a whole move.
            alone, tolerance = _search(gen, setup, X=setup["neg"][i : i + 1], seeds=[seeds[i]]), gen.step_rule.step_size / 2
        else:
            alone, tolerance = _rounding_bound(gen, setup, i, seeds[i])
        difference = float(np.linalg.norm(alone.counterfactuals[0].astype(np.float64) - batch))
        assert difference <= tolerance, (name, i, difference, tolerance)
        assert alone.iterations[0] == results[name].iterations[i]


def test_seeds(setup):
    gen = G.create("dice")
    a = _search(gen, setup, X=setup["neg"][:5], seeds=7)
    b = _search(gen, setup, X=setup["neg"][:5], seeds=7)
    _assert_same(a, b)
    c = _search(gen, setup, X=setup["neg"][:5], seeds=8)
    assert not np.allclose(a.counterfactuals, c.counterfactuals)
    d = _search(gen, setup, X=setup["neg"][:5], seeds=G.individual_seeds(7, 5).tolist())
    _assert_same(a, d)
    state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state()
    _search(G.create("gravitational"), setup, X=setup["neg"][:5], seeds=1)
    assert np.array_equal(np.random.get_state()[1], state) and torch.equal(torch.get_rng_state(), torch_state)


def test_initial_noise_follows_the_documented_stream(setup):
    r = G.create("generic", max_iterations=0).search(setup["model"], setup["neg"][:3], n_counterfactuals=4, seeds=[5, 6, 7])
    for i, s in enumerate([5, 6, 7]):
        expected = setup["neg"][i] + stream_rng("init", s).normal(0.0, 0.1, (4, 2)).astype(np.float32)
        np.testing.assert_array_equal(r.counterfactuals[i], expected)
    np.testing.assert_array_equal(r.iterations, 0)


def test_empty_batch(setup):
    r = G.create("generic").search(setup["model"], np.zeros((0, 2), np.float32), seeds=0)
    assert r.counterfactuals.shape == (0, 5, 2) and r.iterations.shape == (0,)


def test_deep_ensemble_search(setup):
    ens = rr.models.create("deep_ensemble", input_dim=2, seed=0)
    ens.fit(setup["train"].X, setup["train"].y, epochs=20, batch_size=8, seed=0)
    neg = setup["train"].X[ens.predict(setup["train"].X) == 0][:20]
    for name in ("generic", "claproar"):
        r = G.create(name).search(ens, neg, n_counterfactuals=3, seeds=0)
        assert r.finite.all() and r.valid.mean() >= 0.95
        np.testing.assert_allclose(r.proba, ens.predict_proba(r.counterfactuals.reshape(-1, 2)).reshape(20, 3), atol=1e-6)


# ---------------------------------------------------------------------- terms against naive formulas
def _batch(points, factuals, logits=None, proba=None, members=None):
    points = torch.as_tensor(points, dtype=torch.float32)
    m, k, _ = points.shape
    logits = torch.zeros(m, k) if logits is None else torch.as_tensor(logits, dtype=torch.float32)
    return G.Batch(
        states=points,
        points=points,
        factuals=torch.as_tensor(factuals, dtype=torch.float32),
        logits=logits,
        proba=torch.sigmoid(logits) if proba is None else torch.as_tensor(proba, dtype=torch.float32),
        member_logits=logits[None] if members is None else torch.as_tensor(members, dtype=torch.float32),
    )


def test_term_values_match_naive_formulas():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3, 4, 2))
    x = rng.normal(size=(3, 2))
    z = rng.normal(size=(3, 4)) * 3
    members = rng.normal(size=(5, 3, 4))
    b = _batch(pts, x, logits=z, members=members)
    np.testing.assert_allclose(Validity().value(b, {}).numpy(), np.log1p(np.exp(-z)), rtol=1e-5)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(
        PredictiveEntropy().value(b, {}).numpy(), -(p * np.log(p) + (1 - p) * np.log(1 - p)), rtol=1e-4
    )
    np.testing.assert_allclose(
        L2Distance().value(b, {}).numpy(), np.sqrt(((pts - x[:, None]) ** 2).sum(-1)), rtol=1e-5
    )
    bce = np.log1p(np.exp(-members)).mean(0)
    np.testing.assert_allclose(G.ClassifierLoss(gate=None).value(b, {}).numpy(), bce, rtol=1e-5)
    # Gated (the default, 0.5): an individual's row is its BCE only where all its K states are valid.
    inside = (p >= 0.5).all(axis=1)
    z_in = z.copy()
    z_in[0] = np.abs(z_in[0]) + 0.1  # individual 0: every state valid, so its penalty is on
    b_in = _batch(pts, x, logits=z_in, members=members)
    gated = np.where(((1 / (1 + np.exp(-z_in))) >= 0.5).all(axis=1)[:, None], bce, 0.0)
    assert gated[0].any() and not inside.all()
    np.testing.assert_allclose(G.ClassifierLoss().value(b_in, {}).numpy(), gated, rtol=1e-5)
    div = Diversity().value(b, {}).numpy()
    for i in range(3):
        kmat = np.array([[1 / (1 + np.linalg.norm(pts[i, a] - pts[i, c])) for c in range(4)] for a in range(4)])
        assert div[i] == pytest.approx(-np.linalg.det(kmat + 1e-5 * np.eye(4)), rel=1e-4, abs=1e-7)


def test_mad_and_gravitational_prepare_match_numpy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    X[:, 2] = 1.0  # zero MAD: weight falls back to 1
    y = (rng.random(40) > 0.5).astype(np.int64)
    problem = G.Problem(
        factuals=torch.zeros(2, 3), n_counterfactuals=2, seeds=np.array([4, 9]), data_X=X, data_y=y
    )
    inv = MADDistance().prepare(problem)["inverse_mad"].numpy()
    mad = np.median(np.abs(X - np.median(X, 0)), 0)
    np.testing.assert_allclose(inv[0], [1 / mad[0], 1 / mad[1], 1.0], rtol=1e-6)
    cent = Gravitational(n_points=7).prepare(problem)["centroid"].numpy()
    targets = X[y == 1]
    for i, s in enumerate([4, 9]):
        rows = stream_rng("gravitational", s).integers(0, len(targets), 7)
        np.testing.assert_allclose(cent[i], targets[rows].mean(0), rtol=1e-6)


def test_distance_gradients_are_finite_at_zero_distance():
    pts = torch.zeros(1, 3, 2, requires_grad=True)
    b = _batch(pts, torch.zeros(1, 2))
    b = G.Batch(states=pts, points=pts, factuals=b.factuals, logits=b.logits, proba=b.proba, member_logits=b.member_logits)
    loss = L2Distance().value(b, {}).sum() + Diversity().value(b, {}).sum()
    (g,) = torch.autograd.grad(loss, pts)
    assert torch.isfinite(g).all()


def test_non_finite_counterfactuals_are_flagged(setup):
    class Broken:
        input_dim = 2

        def logits(self, x):
            return torch.log(x[:, 0] - 100.0)  # NaN for every realistic point

        def proba(self, x):
            return torch.sigmoid(self.logits(x))

    r = G.create("generic", max_iterations=3).search(Broken(), setup["neg"][:4], n_counterfactuals=2, seeds=0)
    assert not r.finite.any() and not r.valid.any()


# ---------------------------------------------------------------------- overrides and description
def test_overrides_resolve():
    g = G.create("gravitational", space="latent", decision_threshold=0.9, gravitational={"weight": 2.0, "n_points": 20})
    d = g.to_dict()
    assert d["space"] == {"kind": "latent"} and d["decision_threshold"] == 0.9
    assert {"kind": "gravitational", "weight": 2.0, "n_points": 20} in d["terms"]
    assert g.needs_vae and g.needs_data
    gr = G.create("greedy", step_size=0.05, max_changes=4)
    assert gr.step_rule.step_size == 0.05 and gr.step_rule.max_changes == 4
    assert G.create("dice", diversity=2.0).term("diversity").weight == 2.0
    assert G.create("generic", step_size=0.1).step_rule.step_size == 0.1
    assert G.create("claproar", tolerance=1e-4).convergence.tolerance == 1e-4
    assert G.create("generic").step_rule.step_size == 0.01  # presets are fresh objects


@pytest.mark.parametrize("name", G.names())
def test_to_dict_round_trips_and_descriptions_differ(name):
    g = G.create(name)
    assert Generator.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert pickle.loads(pickle.dumps(g)) == g  # sent to Ray workers
    assert G.create(name, decision_threshold=0.9).to_dict() != g.to_dict()
    assert G.create(name, decision_threshold=0.5).to_dict() == g.to_dict()


def test_paper_defaults():
    d = {n: G.create(n).to_dict() for n in G.names()}
    weights = {n: {t["kind"]: t["weight"] for t in d[n]["terms"]} for n in d}
    assert weights["generic"] == {"validity": 1.0, "distance": 0.1}
    assert weights["wachter"] == {"validity": 1.0, "mad_distance": 0.1}
    assert weights["dice"] == {"validity": 1.0, "distance": 0.1, "diversity": 1.0}
    assert weights["greedy"] == {"validity": 1.0}
    assert weights["revise"] == {"validity": 1.0, "distance": 0.1}
    assert weights["clue"] == {"entropy": 1.0, "distance": 0.1}
    assert weights["claproar"] == {"validity": 1.0, "distance": 0.1, "classifier_loss": 5.0}
    assert weights["gravitational"] == {"validity": 1.0, "distance": 0.1, "gravitational": 5.0}
    for n, s in d.items():
        assert s["decision_threshold"] == 0.5 and s["max_iterations"] == 100
        assert s["convergence"]["kind"] == ("full" if n in ("claproar", "gravitational") else "threshold")
        assert s["space"]["kind"] == ("latent" if n in LATENT else "feature")
    assert d["greedy"]["step_rule"] == {"kind": "greedy", "step_size": 0.1, "max_changes": 10}
    assert d["generic"]["step_rule"] == {"kind": "gradient_descent", "step_size": 0.01}
    assert d["generic"]["space"] == {"kind": "feature", "init_noise": 0.1}


# ---------------------------------------------------------------------- errors
def test_unknown_preset():
    with pytest.raises(KeyError, match="Unknown generator 'genric'. Did you mean 'generic'?.*Valid generator names"):
        G.create("genric")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decison_threshold": 0.9}, "unknown override 'decison_threshold'. Did you mean 'decision_threshold'"),
        ({"diversty": 2.0}, "unknown override 'diversty'. Did you mean 'distance'|Did you mean 'diversity'"),
        ({"distance": -1.0}, "'weight' parameter of the 'distance' term must be .* Got -1.0"),
        ({"distance": {"weigth": 1.0}}, "unknown parameter 'weigth' of the 'distance' term. Did you mean 'weight'"),
        ({"space": "latnet"}, "Unknown search space 'latnet'. Did you mean 'latent'"),
        ({"convergence": "ful"}, "Unknown convergence rule 'ful'. Did you mean 'full'"),
        ({"decision_threshold": 1.5}, "'decision_threshold' parameter of Generator must be a float in the range \\(0, 1\\)"),
        ({"max_iterations": -1}, "'max_iterations' parameter of Generator must be an int in the range \\[0, inf\\)"),
        ({"max_changes": 3}, "'max_changes' applies only to the 'greedy' step rule"),
        ({"step_size": 0.0}, "'step_size' parameter of GradientDescent must be a float in the range \\(0, inf\\)"),
    ],
)
def test_bad_overrides(kwargs, message):
    with pytest.raises(ValueError, match=message):
        G.create("dice", **kwargs)


def test_all_override_problems_reported_at_once():
    with pytest.raises(ValueError, match="(?s)unknown override 'foo'.*'decision_threshold' parameter of Generator must be"):
        G.create("generic", foo=1, decision_threshold=2.0)


def test_bad_search_arguments(setup):
    model, neg, gen = setup["model"], setup["neg"][:3], G.create("generic")
    with pytest.raises(ValueError, match="'n_counterfactuals' parameter of Generator.search must be an int in the range \\[1, inf\\)"):
        gen.search(model, neg, n_counterfactuals=0, seeds=0)
    with pytest.raises(ValueError, match="'factuals' has 3 features but the model expects 2"):
        gen.search(model, np.zeros((3, 3), np.float32), seeds=0)
    bad = neg.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="'factuals' contains NaN"):
        gen.search(model, bad, seeds=0)
    with pytest.raises(ValueError, match="'factuals' must be a 2-D array"):
        gen.search(model, neg[0], seeds=0)
    with pytest.raises(ValueError, match="'seeds' parameter of Generator.search must be an int or a sequence of 3 ints"):
        gen.search(model, neg, seeds=[1, 2])
    with pytest.raises(ValueError, match="searches in latent space and needs a trained VAE"):
        G.create("revise").search(model, neg, seeds=0)
    with pytest.raises(ValueError, match="'gravitational'.* need the current training data"):
        G.create("gravitational").search(model, neg, seeds=0)
    with pytest.raises(ValueError, match="'mad_distance'.* need the current training data"):
        G.create("wachter").search(model, neg, seeds=0)
    with pytest.raises(ValueError, match="no target-class"):
        X, _ = setup["data"]
        G.create("gravitational").search(model, neg, seeds=0, data=(X, np.zeros(len(X), int)))


def test_bad_terms():
    with pytest.raises(ValueError, match="'weight' parameter of the 'diversity' term"):
        Diversity(weight=float("nan"))
    with pytest.raises(ValueError, match="'n_points' parameter of the 'gravitational' term"):
        Gravitational(n_points=0)
    with pytest.raises(ValueError, match="holds the term\\(s\\) 'validity' more than once"):
        Generator(terms=(Validity(), Validity()))
