"""Actionability constraints (issue #17): the block, its validation, the projection, the
engine's enforcement per space, the sweep file's block and the simulation's measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray import spec as spec_mod
from recourse_ray.constraints import TOLERANCE, Constraints
from recourse_ray.data import Dataset
from recourse_ray.data.tabular import load_csv
from recourse_ray.models import VAE, create as create_model

ROOT = Path(__file__).resolve().parents[1]
LOANS = ROOT / "examples" / "loans.csv"
NAMES = ("age", "income", "debt", "region=north", "region=south", "region=west")


def _toy(n: int = 120, seed: int = 0, standardize: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    region = np.eye(3)[rng.integers(0, 3, n)]
    X = np.c_[rng.integers(20, 70, n), rng.normal(50, 10, n), rng.normal(20, 5, n), region]
    y = (X[:, 1] - X[:, 2] + rng.normal(0, 5, n) > 30).astype(int)
    return Dataset(X=X, y=y, feature_names=NAMES, name="toy", continuous=np.array([1, 1, 1, 0, 0, 0], bool),
                   standardize=standardize, one_hot_groups=(NAMES[3:],))


# ------------------------------------------------------------------ the block
def test_block_problems_are_listed_at_once():
    _, problems = Constraints.parse(
        {"imutable": ["age"], "bounds": {"income": [5, 1], "debt": [None, None]}, "increase_only": ["debt"],
         "decrease_only": ["debt"]},
        "datasets.toy.constraints",
    )
    text = " ".join(problems)
    assert "Unknown key 'imutable' in 'datasets.toy.constraints'. Did you mean 'immutable'?" in text
    assert "low 5 > high 1" in text
    assert "leave both sides open" in text
    assert "cannot be both increase_only and decrease_only" in text


def test_block_types_use_the_house_sentence():
    with pytest.raises(ValueError, match=r"The 'immutable' parameter of Constraints must be a list of column names\. "
                                         r"Got 3 instead"):
        Constraints(immutable=3)
    _, problems = Constraints.parse([1], "c")
    assert problems == ["'c' must be a mapping with keys among immutable, bounds, increase_only, decrease_only, "
                        "one_hot, integer. Got [1] instead."]


def test_description_round_trips_and_is_empty_without_constraints():
    assert Constraints().to_dict() == {} and Constraints().is_empty
    c = Constraints(immutable=["b", "a"], bounds={"x": [0, None]}, one_hot=[["p", "q"]], integer=["n"])
    assert c.to_dict() == {"immutable": ["a", "b"], "bounds": {"x": [0.0, None]}, "one_hot": [["p", "q"]],
                           "integer": ["n"]}
    assert Constraints.from_dict(c.to_dict()) == c
    assert Constraints(one_hot=[]).to_dict() == {"one_hot": []}  # "no groups" is a setting


def test_column_problems_name_every_column():
    c = Constraints(immutable=["agee", "region=north"], bounds={"region": [0, 1]}, increase_only=["region=west"],
                    integer=["income"] , one_hot=None)
    c2 = Constraints(bounds={"age": [20.2, 20.8]}, integer=["age"])
    problems = c.column_problems(NAMES, (NAMES[3:],))
    text = " ".join(problems)
    assert "the immutable column 'agee' is not a column of the data. Did you mean 'age'?" in text
    assert "'region' names the one-hot group" in text
    assert "'region=west' cannot be increase_only" in text
    assert "immutable holds part of the one-hot group" in text
    assert c2.column_problems(NAMES) == ["the bounds [20.2, 20.8] of the integer column 'age' hold no integer"]
    # a categorical column's name stands for all its one-hot columns
    assert Constraints(immutable=["region"]).column_problems(NAMES, (NAMES[3:],)) == []


def test_data_that_already_violate_the_bounds_are_refused():
    ds = _toy()
    with pytest.raises(ValueError, match=r"the data already violate them: \d+ of 120 rows hold 'income' outside its "
                                         r"bounds \[-inf, 50\]"):
        Constraints(bounds={"income": [None, 50]}).bind(ds)
    with pytest.raises(ValueError, match="rows hold a non-integer 'income'"):
        Constraints(integer=["income"]).bind(ds)


# ------------------------------------------------------------------ the projection
def test_projection_rules():
    ds = _toy(standardize=False)
    feas = Constraints(immutable=["age"], bounds={"debt": [0, 30]}, increase_only=["income"],
                       integer=["debt"]).bind(ds, check_data=False)
    f = torch.tensor([[30.0, 50.0, 20.0, 1.0, 0.0, 0.0]])
    x = torch.tensor([[[35.0, 40.0, 31.7, 0.2, 0.7, 0.7], [29.0, 55.0, 12.4, 0.9, 0.1, 0.0]]])
    p = feas.project(x, f)
    assert p[0, :, 0].tolist() == [30.0, 30.0]  # immutable
    assert p[0, :, 1].tolist() == [50.0, 55.0]  # increase only
    assert p[0, 0, 2].item() == 30.0 and abs(p[0, 1, 2].item() - 12.4) < 1e-6  # bounded, not yet rounded
    assert p[0, 0, 3:].tolist() == [0.0, 1.0, 0.0]  # the largest entry becomes 1, ties to the first column
    assert p[0, 1, 3:].tolist() == [1.0, 0.0, 0.0]
    final = feas.project(x, f, final=True)
    assert final[0, 1, 2].item() == 12.0  # integer columns rounded on the reported point
    assert not feas.violations(final.numpy(), f.numpy()).any()
    assert feas.violations(x.numpy(), f.numpy()).all()


def test_violation_tolerance_is_relative():
    ds = _toy(standardize=False)
    feas = Constraints(immutable=["income"]).bind(ds)
    f = ds.X[:1].astype(np.float64)
    near = f.copy(); near[0, 1] += 0.5 * TOLERANCE * (1 + abs(f[0, 1]))
    far = f.copy(); far[0, 1] += 2 * TOLERANCE * (1 + abs(f[0, 1]))
    assert not feas.violations(near, f).any() and feas.violations(far, f).all()


def test_bounds_are_in_raw_units_after_standardizing():
    train, _ = _toy().split(0.2, seed=0)
    feas = Constraints(bounds={"income": [0, 200]}).bind(train)
    s = train.standardizer
    assert feas.low[1] == pytest.approx((0 - s.mean[1]) / s.scale[1])
    assert feas.high[1] == pytest.approx((200 - s.mean[1]) / s.scale[1])


# ------------------------------------------------------------------ the engine
@pytest.fixture(scope="module")
def trained():
    train, _ = _toy(200).split(0.2, seed=0)
    model = create_model("mlp", input_dim=6, seed=0)
    model.fit(train.X, train.y, epochs=20, batch_size=16, seed=0)
    vae = VAE(6, seed=0)
    vae.fit(train.X, epochs=10, seed=0)
    feas = Constraints(immutable=["age"], bounds={"income": [None, 90]}, decrease_only=["debt"]).bind(train)
    negatives = train.X[model.predict(train.X) == 0][:25]
    return train, model, vae, feas, negatives


SEARCHES = [(name, {}) for name in G.names()] + [
    (f"{name}-reference", G.reference_overrides(name)) for name in ("generic", "greedy", "dice", "revise")
]


@pytest.mark.parametrize("name,overrides", SEARCHES, ids=[s[0] for s in SEARCHES])
def test_every_generator_returns_feasible_counterfactuals(trained, name, overrides):
    train, model, vae, feas, X = trained
    gen = G.create(name.removesuffix("-reference"), **overrides)
    res = gen.search(model, X, n_counterfactuals=3, seeds=7, data=(train.X, train.y), vae=vae, constraints=feas,
                     return_path=True)
    assert not feas.violations(res.counterfactuals, X).any()
    assert not feas.violations(res.path[-1], X).any() or gen.needs_vae is False
    free = G.create(name.removesuffix("-reference"), **overrides).search(
        model, X, n_counterfactuals=3, seeds=7, data=(train.X, train.y), vae=vae)
    # the constraints bind: without them some counterfactual moves an immutable column or leaves a one-hot group
    assert feas.violations(free.counterfactuals, X).any()
    np.testing.assert_allclose(res.proba, model.predict_proba(res.counterfactuals.reshape(-1, 6)).reshape(res.proba.shape),
                               atol=1e-6)


def test_bounds_that_never_bind_change_nothing(trained):
    train, model, _, _, X = trained
    wide = Constraints(bounds={"income": [-1e6, 1e6]}).bind(Dataset(
        X=train.X, y=train.y, feature_names=NAMES, name="toy", standardizer=None))
    for name in ("generic", "greedy", "wachter", "dice"):
        a = G.create(name).search(model, X, n_counterfactuals=3, seeds=3, data=(train.X, train.y))
        b = G.create(name).search(model, X, n_counterfactuals=3, seeds=3, data=(train.X, train.y), constraints=wide)
        assert np.array_equal(a.counterfactuals, b.counterfactuals) and np.array_equal(a.iterations, b.iterations)


def test_greedy_never_spends_a_move_on_an_immutable_column(trained):
    train, model, _, _, X = trained
    feas = Constraints(immutable=["income", "debt"]).bind(train)
    res = G.create("greedy").search(model, X, n_counterfactuals=2, seeds=1, constraints=feas, return_path=True)
    moved = np.abs(np.diff(res.path, axis=0)) > 0
    assert not moved[..., 1:3].any() and moved[..., 0].any()


def test_search_refuses_infeasible_factuals_and_wrong_widths(trained):
    train, model, _, feas, X = trained
    bad = X.copy()
    bad[0, 3:] = [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"1 of 25 factuals violate the constraints \(rows 0\)"):
        G.create("generic").search(model, bad, seeds=0, constraints=feas)
    with pytest.raises(ValueError, match="The 'constraints' parameter of Generator.search must be a Feasibility"):
        G.create("generic").search(model, X, seeds=0, constraints={"immutable": ["age"]})
    res = G.create("generic").search(model, X, seeds=0, data=train, constraints=Constraints(immutable=["age"]))
    assert np.all(res.counterfactuals[..., 0] == X[:, None, 0])


# ------------------------------------------------------------------ data
def test_csv_categorical_columns_are_one_hot_groups():
    ds = load_csv(LOANS, target="approved", drop=["applicant_id"], categorical=["region"], seed=0)
    assert ds.one_hot_groups == (tuple(n for n in ds.feature_names if n.startswith("region=")),)
    assert load_csv(LOANS, target="approved", drop=["applicant_id", "region"], seed=0).one_hot_groups == ()


@pytest.mark.tabular_data
def test_credit_default_declares_the_study_groups():
    ds = rr.data.load("credit_default", seed=0, n_samples=200)
    assert [g[0].split("=")[0] for g in ds.one_hot_groups] == ["SEX", "EDUCATION", "MARRIAGE"]


def test_synthetic_data_have_no_constraints():
    train, _ = rr.simulation.prepare_data("overlapping", setup_seed=0)
    assert train.one_hot_groups == () and rr.simulation.bind_constraints(train) is None


# ------------------------------------------------------------------ sweep files
def _sweep(constraints: str | None, dataset: str = "loans") -> str:
    block = f"\n    constraints: {constraints}" if constraints is not None else ""
    return f"""
name: c
grid: {{dataset: [{dataset}], model: [logistic_regression], generator: [generic]}}
datasets:
  loans:
    preset: csv
    path: {LOANS}
    target: approved
    drop: [applicant_id]
    categorical: [region]{block}
simulation: {{rounds: 2}}
"""


def test_sweep_block_keys_and_normal_form():
    plain = spec_mod.loads(_sweep(None)).systems()[0]
    empty = spec_mod.loads(_sweep("{}")).systems()[0]
    assert plain.key == empty.key and "constraints" not in plain.dataset_options
    c = spec_mod.loads(_sweep("{immutable: [age], bounds: {income: [0, null]}}")).systems()[0]
    assert c.key != plain.key
    assert c.dataset_options["constraints"] == {"immutable": ["age"], "bounds": {"income": [0.0, None]}}


def test_sweep_block_problems_are_reported_with_the_dataset():
    with pytest.raises(spec_mod.SpecError) as err:
        spec_mod.loads(_sweep("{imutable: [age], bounds: {income: [3, 1]}}"))
    text = str(err.value)
    assert "Dataset 'loans': Unknown key 'imutable' in 'datasets.loans.constraints'. Did you mean 'immutable'?" in text
    assert "low 3 > high 1" in text
    with pytest.raises(spec_mod.SpecError, match=r"the immutable column 'agee' is not a column of the data\. "
                                                 r"Did you mean 'age'\?"):
        spec_mod.loads(_sweep("{immutable: [agee]}"))
    with pytest.raises(spec_mod.SpecError, match="the data already violate them"):
        spec_mod.loads(_sweep("{bounds: {income: [60, null]}}"))


# ------------------------------------------------------------------ simulation
def test_simulation_reports_the_constraint_measures():
    kw = dict(dataset_options={"path": str(LOANS), "target": "approved", "drop": ["applicant_id"],
                               "categorical": ["region"]}, rounds=2, evaluate_every=1, retrain_epochs=1,
              recourse_share=0.2, n_counterfactuals=3, setup={"pretrain_epochs": 5},
              metrics={"n_permutations": 5, "n_samples": 50, "n_grid": 50})
    res = rr.simulate("csv", "logistic_regression", "greedy", constraints={"immutable": ["age"],
                                                                           "decrease_only": ["debt"]}, **kw)
    m = res.metrics
    viol = m.filter(m["metric"] == "constraint_violation_share")["value"].to_list()
    none = m.filter(m["metric"] == "no_feasible_share")["value"].to_list()
    assert viol == [0.0, 0.0] and len(none) == 2 and all(0 <= v <= 1 for v in none)
    moved = res.system.received
    X0, X1 = res.initial_data.X, res.data.X
    age = res.data.feature_names.index("age")
    debt = res.data.feature_names.index("debt")
    assert moved.any() and np.array_equal(X0[:, age], X1[:, age]) and (X1[:, debt] <= X0[:, debt]).all()
    plain = rr.simulate("overlapping", "logistic_regression", "generic", rounds=1, setup={"pretrain_epochs": 2},
                        metrics={"n_permutations": 5, "n_samples": 50, "n_grid": 50})
    assert "no_feasible_share" not in set(plain.metrics["metric"])
