"""The user-extension examples (examples/) run end to end through Ray, and do what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import recourse_ray as rr
from recourse_ray import spec as spec_mod
from recourse_ray.store import ResultsStore
from recourse_ray.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def _run(ray_session, tmp_path, name, **edits):
    path = ROOT / "examples" / f"{name}.yaml"
    text = path.read_text()
    for old, new in edits.items():
        text = text.replace(old, new)
    sweep = spec_mod.loads(text, source=str(path), base_dir=path.parent)
    outcome = run_sweep(sweep, str(tmp_path / sweep.name), progress=False)
    assert outcome.exit_code == 0, outcome.failed
    return ResultsStore(tmp_path / sweep.name).read_rows()


def test_sparsity_term_through_ray(ray_session, tmp_path):
    rows = _run(ray_session, tmp_path, "sparsity", **{"rounds: 10": "rounds: 4", "evaluate_every: 5": "evaluate_every: 2"})
    assert set(rows["generator"]) == {"generic", "sparse"}
    validity = rows.filter((pl.col("metric") == "recourse_validity") & (pl.col("generator") == "sparse"))["value"]
    assert validity.len() > 0 and validity.min() > 0.9


def test_sparsity_term_moves_features_less():
    """Same individuals, same seeds, a fixed number of steps: the L1 change shrinks with the penalty."""
    train, _ = rr.data.load("overlapping", seed=0).split(seed=0)
    model = rr.models.create("mlp", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=5, batch_size=8, seed=0)
    neg = train.X[model.predict(train.X) == 0][:20]
    change = {}
    for weight in (0.0, 0.5, 2.0):
        g = rr.generators.create("generic", convergence="full", max_iterations=60,
                                 add_terms=[{"term": "examples.sparsity_term:L1Sparsity", "weight": weight}])
        res = g.search(model, neg, n_counterfactuals=3, seeds=np.arange(20))
        change[weight] = np.abs(res.counterfactuals - neg[:, None, :]).sum(axis=-1).mean()
    assert change[2.0] < change[0.5] < change[0.0]


def test_sparsity_term_composes_and_is_used():
    from examples.sparsity_term import L1Sparsity

    g = rr.generators.create("generic", add_terms=[{"term": "examples.sparsity_term:L1Sparsity", "weight": 0.5}])
    assert isinstance(g.terms[-1], L1Sparsity) and g.terms[-1].weight == 0.5
    # With weight 0 the composition equals the plain preset.
    zero = rr.generators.create("generic", add_terms=[{"term": "examples.sparsity_term:L1Sparsity", "weight": 0.0}])
    train, _ = rr.data.load("overlapping", seed=0).split(seed=0)
    model = rr.models.create("logistic_regression", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=5, batch_size=8, seed=0)
    neg = train.X[model.predict(train.X) == 0][:10]
    a = zero.search(model, neg, n_counterfactuals=3, seeds=np.arange(10))
    b = rr.generators.create("generic").search(model, neg, n_counterfactuals=3, seeds=np.arange(10))
    np.testing.assert_allclose(a.counterfactuals, b.counterfactuals, atol=1e-6)


def test_custom_classifier_through_ray(ray_session, tmp_path):
    rows = _run(ray_session, tmp_path, "custom_classifier")
    assert set(rows["model"]) == {"tanh_mlp"}
    f1 = rows.filter((pl.col("metric") == "f1") & (pl.col("round") == 0))["value"][0]
    assert f1 > 0.8  # it learned moons through the plain torch path (pretrained 40 epochs)


def test_custom_classifier_uses_torch_path_and_is_deterministic():
    a = rr.models.create("examples.custom_classifier:tanh_mlp", input_dim=2, seed=3, width=4)
    b = rr.models.create("examples.custom_classifier:tanh_mlp", input_dim=2, seed=3, width=4)
    assert isinstance(a, rr.models.TorchClassifier)
    state = torch.random.get_rng_state()
    X = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    a.fit(X, y, epochs=2, batch_size=4, seed=1)
    b.fit(X, y, epochs=2, batch_size=4, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_custom_data_through_ray(ray_session, tmp_path):
    rows = _run(ray_session, tmp_path, "custom_data")
    assert set(rows["dataset"]) == {"loans", "spirals"}
    loans = rr.data.load("csv", path=str(ROOT / "examples" / "loans.csv"), target="approved", drop=["applicant_id"],
                         categorical=["region"], seed=0)
    assert "region=north" in loans.feature_names and "applicant_id" not in loans.feature_names
    spirals = rr.data.load("examples.custom_dataset:spirals", seed=0, n_samples=100)
    assert spirals.n_samples == 100 and spirals.class_counts() == (50, 50)


def test_bad_import_path_fails_at_validation():
    text = (ROOT / "examples" / "custom_classifier.yaml").read_text().replace("examples.custom_classifier:tanh_mlp", "examples.nope:tanh_mlp")
    with pytest.raises(spec_mod.SpecError, match="Cannot import the model 'examples.nope:tanh_mlp': No module named 'examples.nope'"):
        spec_mod.loads(text)
    text = (ROOT / "examples" / "custom_classifier.yaml").read_text().replace(":tanh_mlp", ":tanh_mpl")
    with pytest.raises(spec_mod.SpecError, match="has no attribute 'tanh_mpl'"):
        spec_mod.loads(text)


def test_user_step_rule_through_ray(ray_session, tmp_path):
    """A step rule from a module outside the package, named by import path, runs in the workers."""
    rows = _run(ray_session, tmp_path, "momentum", **{"rounds: 10": "rounds: 4", "evaluate_every: 5": "evaluate_every: 2"})
    assert set(rows["generator"]) == {"generic", "momentum"}
    iterations = rows.filter(pl.col("metric") == "recourse_iterations").group_by("generator").agg(pl.col("value").mean())
    per = dict(zip(iterations["generator"], iterations["value"]))
    # The two generators really searched differently: momentum reaches the threshold in fewer steps.
    assert per["momentum"] < per["generic"]
    sweep = spec_mod.load(ROOT / "examples" / "momentum.yaml")
    (system,) = [s for s in sweep.systems() if s.generator == "momentum" and s.seed == 0]
    assert system.generator_config["step_rule"]["kind"] == "examples.momentum_step:Momentum"
