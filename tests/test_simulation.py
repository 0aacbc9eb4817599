"""The round loop of one system (SPEC §2) and the single-system Python API."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import recourse_ray as rr
from recourse_ray.simulation import RecourseSystem, SimulationSettings, SystemIdentity, prepare_data, pretrain_model

FAST_SETUP = {"pretrain_epochs": 20}
FAST_METRICS = {"n_permutations": 20, "n_grid": 300}


def _values(result, metric):
    rows = result.metrics.filter(pl.col("metric") == metric).sort("round")
    return dict(zip(rows["round"].to_list(), rows["value"].to_list()))


@pytest.fixture(scope="module")
def lr_generic_50():
    return rr.simulate(
        "overlapping", "logistic_regression", "generic", rounds=50, evaluate_every=10,
        setup=FAST_SETUP, metrics=FAST_METRICS,
    )


def test_generic_logistic_regression_shifts_domain_and_model(lr_generic_50):
    res = lr_generic_50
    domain, grid, share = _values(res, "domain_mmd"), _values(res, "model_mmd_grid"), _values(res, "share_recourse")
    assert sorted(domain) == [0, 10, 20, 30, 40, 50]
    # Round 0 compares the state with itself: the unbiased estimate is ~0 (slightly negative).
    assert abs(domain[0]) < 0.01 and abs(grid[0]) < 0.01
    assert domain[50] > domain[0] + 0.02
    assert grid[50] > grid[0] + 0.005
    assert share[10] < share[30] < share[50]
    assert 0 not in share  # recourse metrics are absent at round 0
    # Recourse moved individuals: the final training features differ from round 0.
    moved = np.any(res.data.X != res.initial_data.X, axis=1)
    assert moved.sum() == res.system.received.sum() > 0
    # The test split is never modified.
    assert res.test.n_samples == 200


def test_evaluation_rounds_and_metric_set(lr_generic_50):
    m = lr_generic_50.metrics
    per_round = m.group_by("round").agg(pl.len().alias("n")).sort("round")
    assert per_round["n"][0] < per_round["n"][1]  # round 0 lacks the recourse metrics
    names = set(m["metric"])
    for expected in ("domain_mmd", "domain_mmd_negative", "model_mmd", "model_mmd_grid", "disagreement",
                     "decisiveness", "perturbation", "f1", "accuracy", "recourse_validity", "recourse_cost",
                     "recourse_iterations", "n_recourse", "share_recourse", "time_search_s"):
        assert expected in names


def test_mlp_revise_all_finite():
    res = rr.simulate(
        "overlapping", "mlp", "revise", rounds=4, evaluate_every=2,
        setup={**FAST_SETUP, "vae_epochs": 20}, metrics=FAST_METRICS,
    )
    vals = res.metrics.filter(pl.col("scope") != "timing")["value"]
    assert vals.null_count() == 0
    assert np.isfinite(vals.to_numpy()).all()
    assert res.vae is not None


def _system(generator: str, seed: int = 0, model: str = "mlp"):
    train, test = prepare_data("overlapping", setup_seed=0)
    clf = pretrain_model(model, train, setup_seed=0, settings=rr.simulation.SetupSettings(pretrain_epochs=5))
    return RecourseSystem(
        train=train, test=test, model=clf, generator=rr.generators.create(generator),
        identity=SystemIdentity(dataset="overlapping", model=model, generator=generator, seed=seed, key=f"k-{generator}-{seed}"),
        settings=SimulationSettings(rounds=2, evaluate_every=1),
        metric_settings=rr.metrics.MetricSettings(n_permutations=5, n_grid=50),
    )


def test_common_random_numbers_select_same_individuals():
    a, b, c = _system("generic"), _system("greedy"), _system("generic", seed=1)
    sel_a, sel_b, sel_c = a.select(1), b.select(1), c.select(1)
    assert sel_a.size > 0
    np.testing.assert_array_equal(sel_a, sel_b)
    assert not np.array_equal(sel_a, sel_c)
    # The selection follows the rule: n_t = round_half_even(mu * |C_t|) candidates.
    n_candidates = int((a.model.predict(a.X) == 0).sum())
    assert sel_a.size == round(0.05 * n_candidates)
    assert (a.model.predict(a.X[sel_a]) == 0).all()


def test_deterministic_per_key_and_seed_dependent():
    def rows(seed):
        sys_ = _system("generic", seed=seed)
        out = [r for o in sys_.run() for r in o.rows if r["scope"] != "timing"]
        return pl.DataFrame(out)

    first, again, other = rows(0), rows(0), rows(1)
    assert first.equals(again)
    assert not first.equals(other)


def test_implemented_labels_are_model_predictions():
    sys_ = _system("generic")
    before_model = sys_.model.clone()
    selected = sys_.select(1)
    sys_.step(1)
    moved = selected[np.any(sys_.X[selected] != sys_.train0.X[selected], axis=1)]
    assert moved.size > 0
    np.testing.assert_array_equal(sys_.y[moved], before_model.predict(sys_.X[moved]))


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="'recourse_share' parameter of simulation"):
        rr.simulate("overlapping", "mlp", "generic", rounds=2, recourse_share=1.5)
    with pytest.raises(ValueError, match="Did you mean 'evaluate_every'"):
        rr.simulate("overlapping", "mlp", "generic", rounds=2, evaluate_evry=1)


def test_plot_system_returns_figure(lr_generic_50):
    fig = rr.plot_system(lr_generic_50.model, lr_generic_50.data, title="after")
    assert fig.axes and fig.axes[0].get_title() == "after"
    with pytest.raises(ValueError, match="2 features"):
        rr.plot_system(lr_generic_50.model, rr.data.Dataset(X=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]), feature_names=("a", "b", "c"), name="x"))


def test_default_vae_does_not_collapse_and_revise_finds_valid_recourse():
    """Regression: a unit-variance, full-KL VAE collapsed on these data (decoder = data mean, REVISE validity 0)."""
    from recourse_ray.simulation import SetupSettings, pretrain_vae

    train, _ = prepare_data("overlapping", setup_seed=0)
    vae = pretrain_vae(train, setup_seed=0, settings=SetupSettings())
    relative_rmse = np.sqrt((((vae.reconstruct(train.X) - train.X) / train.X.std(axis=0)) ** 2).mean())
    assert relative_rmse < 0.3
    model = pretrain_model("logistic_regression", train, setup_seed=0, settings=SetupSettings())  # the study's pretraining
    negatives = train.X[model.predict(train.X) == 0][:40]
    result = rr.generators.create("revise").search(model, negatives, n_counterfactuals=5, seeds=np.arange(40), vae=vae)
    assert result.valid.mean() > 0.8
