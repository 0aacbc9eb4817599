"""Property tests (hypothesis): no returned or implemented counterfactual violates a constraint.

Over every preset (feature, standardized and latent space), random data, random
constraint sets, K in {1, 3} and step budgets that stop the search early (0, 1, 4 steps).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import recourse_ray.generators as G
from recourse_ray.constraints import Constraints
from recourse_ray.data import Dataset
from recourse_ray.models import VAE, create as create_model
from recourse_ray.settings import SimulationSettings
from recourse_ray.simulation import RecourseSystem, SystemIdentity, bind_constraints

PRESETS = sorted(G.names())
REFERENCE = ("generic", "greedy", "dice", "revise")


@st.composite
def problems(draw):
    """(train split, constraints): 2-4 numeric columns (one integer-valued), a one-hot group of 2-3."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n, n_num, n_cat = 60, draw(st.integers(2, 4)), draw(st.integers(2, 3))
    num = rng.normal(0, draw(st.sampled_from([1.0, 30.0])), (n, n_num))
    num[:, 0] = np.round(num[:, 0])  # an integer column
    cat = np.eye(n_cat)[rng.integers(0, n_cat, n)]
    names = tuple(f"x{j}" for j in range(n_num)) + tuple(f"c={k}" for k in range(n_cat))
    X = np.c_[num, cat]
    y = (num[:, 1] + rng.normal(0, 0.5, n) > 0).astype(int)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    ds = Dataset(X=X, y=y, feature_names=names, name="p", continuous=np.r_[np.ones(n_num), np.zeros(n_cat)] > 0,
                 standardize=draw(st.booleans()), one_hot_groups=(names[n_num:],))
    cols = list(names[:n_num])
    role = {c: draw(st.sampled_from(["free", "immutable", "increase", "decrease"])) for c in cols}
    bounds = {}
    for j, c in enumerate(cols):
        if draw(st.booleans()):
            lo, hi = X[:, j].min(), X[:, j].max()
            slack = draw(st.floats(0.0, 0.5)) * (hi - lo)
            bounds[c] = [None if draw(st.booleans()) else float(np.floor(lo - slack)),
                         float(np.ceil(hi + slack))]
    constraints = Constraints(
        immutable=[c for c in cols if role[c] == "immutable"] + (["c"] if draw(st.booleans()) else []),
        increase_only=[c for c in cols if role[c] == "increase"],
        decrease_only=[c for c in cols if role[c] == "decrease"],
        bounds=bounds,
        integer=["x0"] if draw(st.booleans()) else [],
    )
    train, _ = ds.split(0.25, seed=seed)
    return train, constraints


def _setup(train):
    model = create_model("mlp", input_dim=train.n_features, seed=1)
    model.fit(train.X, train.y, epochs=3, batch_size=16, seed=1)
    vae = VAE(train.n_features, seed=1)
    vae.fit(train.X, epochs=2, seed=1)
    return model, vae


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), preset=st.sampled_from(PRESETS), reference=st.booleans(),
       k=st.sampled_from([1, 3]), steps=st.sampled_from([0, 1, 4, 30]))
def test_returned_counterfactuals_are_feasible(problem, preset, reference, k, steps):
    train, constraints = problem
    feas = constraints.bind(train)
    model, vae = _setup(train)
    overrides = G.reference_overrides(preset) if reference and preset in REFERENCE else {}
    gen = G.create(preset, **{**overrides, "max_iterations": steps})
    X = train.X[:12]
    res = gen.search(model, X, n_counterfactuals=k, seeds=5, data=(train.X, train.y), vae=vae, constraints=feas)
    assert res.counterfactuals.shape == (12, k, train.n_features)
    assert not feas.violations(res.counterfactuals, X).any()
    assert np.array_equal(res.valid, res.proba >= gen.decision_threshold)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), preset=st.sampled_from(["generic", "greedy", "revise", "dice"]))
def test_implemented_counterfactuals_are_feasible(problem, preset):
    train, constraints = problem
    train = Dataset(**{**train.__dict__, "constraints": constraints})
    model, vae = _setup(train)
    gen = G.create(preset, max_iterations=10)
    system = RecourseSystem(
        train=train, test=train, model=model, generator=gen, vae=vae if gen.needs_vae else None,
        identity=SystemIdentity(dataset="p", model="mlp", generator=preset, seed=0),
        settings=SimulationSettings(rounds=3, recourse_share=0.3, n_counterfactuals=2, retrain_epochs=1,
                                    evaluate_every=3, implement_only_valid=False),
    )
    feas = bind_constraints(train)
    X0 = system.X.copy()
    for t in (1, 2, 3):
        before = system.X.copy()
        stats = system.step(t)
        assert stats["constraint_violation_share"] in (0.0,) or np.isnan(stats["constraint_violation_share"])
        assert not feas.violations(system.X, before).any()
    # over all rounds: immutable columns and one-hot groups hold against the round-0 data
    assert not Constraints(immutable=list(constraints.immutable)).bind(train).violations(system.X, X0).any() \
        if constraints.immutable else True


def test_strategy_draws_binding_constraints():
    # the properties are not vacuous: some drawn constraint sets bind a free search
    binding = 0

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(problem=problems())
    def count(problem):
        nonlocal binding
        train, constraints = problem
        feas = constraints.bind(train)
        model, _ = _setup(train)
        res = G.create("generic", max_iterations=30).search(model, train.X[:12], n_counterfactuals=3, seeds=5)
        binding += int(feas.violations(res.counterfactuals, train.X[:12]).any())

    count()
    assert binding >= 5
