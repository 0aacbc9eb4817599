"""Property-based tests (hypothesis): sweep specs round-trip; MMD and its test keep their invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from recourse_ray import spec as spec_mod
from recourse_ray.metrics import mmd, mmd_test

DATASETS = ["overlapping", "linearly_separable", "circles", "moons"]
MODELS = ["logistic_regression", "mlp", "deep_ensemble"]
GENERATORS = ["generic", "wachter", "dice", "greedy", "revise", "clue", "claproar", "gravitational"]


@st.composite
def sweep_docs(draw):
    doc = {
        "name": draw(st.from_regex(r"[a-z][a-z0-9_\-]{0,12}", fullmatch=True)),
        "seeds": draw(st.one_of(st.integers(1, 6), st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True))),
        "shared_setup": draw(st.booleans()),
        "grid": {
            "dataset": draw(st.lists(st.sampled_from(DATASETS), min_size=1, max_size=3, unique=True)),
            "model": draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)),
            "generator": draw(st.lists(st.sampled_from(GENERATORS), min_size=1, max_size=3, unique=True)),
        },
        "simulation": {
            "rounds": draw(st.integers(1, 100)),
            "recourse_share": draw(st.floats(0.001, 1.0)),
            "evaluate_every": draw(st.integers(1, 20)),
            "n_counterfactuals": draw(st.integers(1, 8)),
        },
        "metrics": {"n_permutations": draw(st.integers(0, 300)), "n_grid": draw(st.integers(1, 2000))},
    }
    if draw(st.booleans()):
        doc["generators"] = {"strict": {"preset": "generic", "decision_threshold": draw(st.floats(0.5, 0.99))}}
        doc["grid"]["generator"].append("strict")
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweep_docs())
def test_spec_round_trips_and_expands(doc):
    sweep = spec_mod.parse(doc, check_data=False)
    again = spec_mod.loads(sweep.to_yaml(), check_data=False)
    assert again.to_yaml() == sweep.to_yaml()
    systems = sweep.systems()
    n_seeds = doc["seeds"] if isinstance(doc["seeds"], int) else len(doc["seeds"])
    assert len(systems) == len(doc["grid"]["dataset"]) * len(doc["grid"]["model"]) * len(doc["grid"]["generator"]) * n_seeds
    assert [s.key for s in again.systems()] == [s.key for s in systems]
    assert len({s.key for s in systems}) == len(systems)


def _points(n_min: int):
    """Lists of 2-D points with coordinates in [-5, 5]."""
    coord = st.floats(-5, 5, allow_nan=False)
    return st.lists(st.tuples(coord, coord), min_size=n_min, max_size=40).map(lambda pts: np.asarray(pts, dtype=np.float64))


@settings(max_examples=60, deadline=None)
@given(_points(2), _points(2), st.floats(0.1, 3.0))
def test_mmd_symmetric(x, y, lengthscale):
    assert np.isclose(mmd(x, y, lengthscale=lengthscale), mmd(y, x, lengthscale=lengthscale), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(_points(2), st.floats(0.1, 3.0))
def test_mmd_of_a_sample_with_itself_is_near_zero(x, lengthscale):
    value = mmd(x, x, lengthscale=lengthscale)
    # Unbiased estimate against an identical sample: -2 (1 - mean off-diagonal kernel) / m <= 0.
    assert -2.0 / len(x) - 1e-12 <= value <= 1e-12


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=10, max_size=60), st.lists(st.floats(-3, 3, allow_nan=False), min_size=10, max_size=60), st.integers(1, 60), st.integers(0, 2**31))
def test_p_values_in_unit_interval(xs, ys, n_perm, seed):
    x = np.asarray(xs).reshape(-1, 1)
    y = np.asarray(ys).reshape(-1, 1)
    value, p = mmd_test(x, y, n_permutations=n_perm, seed=seed)
    assert np.isfinite(value)
    assert 1.0 / (n_perm + 1) - 1e-12 <= p <= 1.0
