"""Tests of the reference-compatible search mechanisms and of the reference bundle.

Each mechanism of CounterfactualExplanations.jl 0.1.4's search (standardized space with
its straight-through gradient, mean validity, joint distance, DiCE's random-jitter
determinant over the states, NaN steps set to 0, Greedy's random ties and unbounded
changes, the factual as the first stopping check, REVISE's sampled start) is checked
against an independent computation: hand-rolled numpy descent with closed-form
gradients, direct formulas for values and gradients, replays of the documented random
streams. Every option is off by default; that default behaviour is unchanged is what
tests/test_generators.py and tests/test_components.py check, plus the descriptions here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray.generators import (
    Batch,
    Diversity,
    Generator,
    GradientDescent,
    Greedy,
    L2Distance,
    LatentSpace,
    Problem,
    StandardizedSpace,
    Term,
    Validity,
    stream_rng,
)

K = 3


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture(scope="module")
def setup(_one_thread):
    train, _ = rr.data.load("overlapping", seed=0).split(seed=0)
    logreg = rr.models.create("logistic_regression", input_dim=2, seed=0)
    logreg.fit(train.X, train.y, epochs=5, batch_size=8, seed=0)
    mlp = rr.models.create("mlp", input_dim=2, seed=0)
    mlp.fit(train.X, train.y, epochs=20, batch_size=8, seed=0)
    vae = rr.models.VAE(2, seed=0)
    vae.fit(train.X, epochs=30, seed=0)
    neg = train.X[logreg.predict(train.X) == 0][:20]
    pos = train.X[logreg.predict(train.X) == 1][:5]
    return {"train": train, "data": (train.X, train.y), "logreg": logreg, "mlp": mlp, "vae": vae,
            "neg": neg, "pos": pos}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _lr_params(model):
    params = model.get_state()["params"][0].astype(np.float64)
    return params[:2], params[2]


def _fixed_lr(w, b):
    model = rr.models.create("logistic_regression", input_dim=2, seed=0)
    model.set_state({"params": np.array([[w[0], w[1], b]], dtype=np.float32)})
    return model


def _batch(states, points, factuals, logits, iteration=0):
    return Batch(states=states, points=points, factuals=factuals, logits=logits, proba=torch.sigmoid(logits),
                 member_logits=logits.unsqueeze(0), iteration=iteration)


# ---------------------------------------------------------------------- 1. standardized space
def _numpy_standardized_generic(w, b, X, seeds, data_X, *, lr, lam, reference_gradient, T=100):
    """Generic (per-state BCE + lambda * per-state L2) by gradient descent on s = (x - mu) / sigma."""
    D = data_X.astype(np.float64)
    mu, sigma = D.mean(axis=0), D.std(axis=0, ddof=1)
    out, iters = [], []
    for x, seed in zip(X.astype(np.float64), seeds):
        s = (x - mu) / sigma + stream_rng("init", seed).normal(0.0, 0.1, size=(K, 2))
        it = 0
        for _ in range(T):
            xp = mu + sigma * s
            p = _sigmoid(xp @ w + b)
            if (p >= 0.5).all():
                break
            diff = xp - x
            g_point = -(1.0 - p)[:, None] * w + lam * diff / np.linalg.norm(diff, axis=1, keepdims=True)
            s = s - lr * (g_point if reference_gradient else sigma * g_point)
            it += 1
        out.append(mu + sigma * s)
        iters.append(it)
    return np.array(out), np.array(iters)


@pytest.mark.parametrize("reference_gradient", [True, False])
def test_standardized_space_follows_a_numpy_descent(setup, reference_gradient):
    w, b = _lr_params(setup["logreg"])
    X, seeds = setup["neg"], list(range(len(setup["neg"])))
    expected, iters = _numpy_standardized_generic(
        w, b, X, seeds, setup["train"].X, lr=0.1, lam=0.1, reference_gradient=reference_gradient
    )
    gen = G.create("generic", space={"kind": "standardized", "reference_gradient": reference_gradient}, step_size=0.1)
    r = gen.search(setup["logreg"], X, n_counterfactuals=K, seeds=seeds, data=setup["data"])
    np.testing.assert_array_equal(r.iterations, iters)
    assert iters.min() >= 2  # real descent, not just the start
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-4)


def test_the_two_gradient_rules_differ_and_the_flat_key_sets_the_rule(setup):
    base = {"space": "standardized", "step_size": 0.1, "max_iterations": 3}
    a = G.create("generic", **base, reference_gradient=True)
    assert a.space == StandardizedSpace(reference_gradient=True)
    kw = {"n_counterfactuals": K, "seeds": list(range(20)), "data": setup["data"]}
    ra = a.search(setup["logreg"], setup["neg"], **kw)
    rb = G.create("generic", **base).search(setup["logreg"], setup["neg"], **kw)
    assert np.abs(ra.counterfactuals - rb.counterfactuals).max() > 1e-3


def test_standardization_uses_the_data_given_and_leaves_constant_features(setup):
    X = setup["train"].X.astype(np.float64)
    problem = Problem(factuals=torch.from_numpy(setup["neg"]), n_counterfactuals=K, seeds=np.arange(20),
                      data_X=setup["train"].X)
    bound = StandardizedSpace().bind(problem)
    np.testing.assert_allclose(bound.mean.numpy(), X.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bound.scale.numpy(), X.std(axis=0, ddof=1), rtol=1e-6)
    constant = setup["train"].X.copy()
    constant[:, 1] = 3.0
    bound = StandardizedSpace().bind(Problem(factuals=torch.from_numpy(setup["neg"]), n_counterfactuals=K,
                                             seeds=np.arange(20), data_X=constant))
    assert bound.mean.numpy()[1] == 0.0 and bound.scale.numpy()[1] == 1.0
    # Each search standardizes with its own data (the simulation passes the current round's):
    # the start is x + sigma * noise, so data twice as spread give twice the offset.
    gen = G.create("generic", space="standardized", max_iterations=0)
    kw = {"n_counterfactuals": K, "seeds": list(range(20))}
    r1 = gen.search(setup["logreg"], setup["neg"], data=setup["data"], **kw)
    r2 = gen.search(setup["logreg"], setup["neg"], data=(setup["train"].X * 2.0, setup["train"].y), **kw)
    offset = r1.counterfactuals - setup["neg"][:, None, :]
    assert np.abs(offset).min() > 0
    np.testing.assert_allclose(r2.counterfactuals - setup["neg"][:, None, :], 2.0 * offset, atol=1e-5)
    none = G.create("generic", space={"kind": "standardized", "init_noise": 0.0}, max_iterations=0)
    np.testing.assert_allclose(none.search(setup["logreg"], setup["neg"], data=setup["data"], **kw).counterfactuals,
                               np.repeat(setup["neg"][:, None, :], K, axis=1), atol=1e-5)  # decode(encode(x)) = x


def test_standardized_start_follows_the_init_stream(setup):
    gen = G.create("generic", space="standardized")
    r = gen.search(setup["logreg"], setup["neg"][:5], n_counterfactuals=K, seeds=[7, 8, 9, 10, 11],
                   data=setup["data"], return_path=True)
    X = setup["train"].X.astype(np.float64)
    mu, sigma = X.mean(axis=0), X.std(axis=0, ddof=1)
    for i, seed in enumerate([7, 8, 9, 10, 11]):
        s0 = (setup["neg"][i] - mu) / sigma + stream_rng("init", seed).normal(0.0, 0.1, size=(K, 2))
        np.testing.assert_allclose(r.path[0, i], mu + sigma * s0, atol=1e-5)


def test_greedy_in_standardized_space_moves_a_tenth_of_a_standard_deviation(setup):
    gen = G.create("greedy", space="standardized", max_iterations=8)
    r = gen.search(setup["mlp"], setup["neg"][:10], n_counterfactuals=K, seeds=list(range(10)), data=setup["data"],
                   return_path=True)
    sigma = setup["train"].X.astype(np.float64).std(axis=0, ddof=1)
    steps = np.abs(np.diff(r.path.astype(np.float64), axis=0))  # (T, n, K, d)
    moved = steps > 1e-6
    assert moved.any() and (moved.sum(axis=-1) <= 1).all()
    np.testing.assert_allclose(steps[moved], np.broadcast_to(0.1 * sigma, steps.shape)[moved], rtol=1e-4)


def test_standardized_space_needs_data(setup):
    with pytest.raises(ValueError, match="the search space StandardizedSpace need the current training data"):
        G.create("generic", space="standardized").search(setup["logreg"], setup["neg"], seeds=0)
    assert G.create("generic", space="standardized").needs_data and not G.create("generic").needs_data


# ---------------------------------------------------------------------- 2-3. mean validity, joint distance
def _linear_batch(seed=0, m=4, d=3):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    s = torch.tensor(rng.normal(size=(m, K, d)), dtype=torch.float64, requires_grad=True)
    x = torch.tensor(rng.normal(size=(m, d)), dtype=torch.float64)
    logits = (s * torch.tensor(w)).sum(-1) - 0.3
    return _batch(s, s, x, logits), w


def test_mean_validity_value_and_gradient():
    batch, w = _linear_batch()
    value = Validity(reduction="mean").value(batch, {})
    s = batch.states.detach().numpy()
    z = s @ w - 0.3
    assert value.shape == (4,)
    np.testing.assert_allclose(value.detach().numpy(), np.log1p(np.exp(-z)).mean(axis=1), rtol=1e-12)
    (grad,) = torch.autograd.grad(value.sum(), batch.states)
    expected = -(1.0 - _sigmoid(z))[..., None] * w / K  # d/ds_k of mean_k log(1 + e^-z_k)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-10)
    per_state = Validity().value(batch, {})
    assert per_state.shape == (4, K)
    np.testing.assert_allclose(per_state.detach().numpy().mean(axis=1), value.detach().numpy(), rtol=1e-12)


def test_joint_distance_value_and_gradient():
    batch, _ = _linear_batch(seed=1)
    value = L2Distance(joint=True).value(batch, {})
    diff = batch.states.detach().numpy() - batch.factuals.numpy()[:, None, :]
    frob = np.sqrt((diff**2).sum(axis=(1, 2)))
    assert value.shape == (4,)
    np.testing.assert_allclose(value.detach().numpy(), frob, rtol=1e-12)
    (grad,) = torch.autograd.grad(value.sum(), batch.states)
    np.testing.assert_allclose(grad.numpy(), diff / frob[:, None, None], rtol=1e-10)
    # Not the sum of per-state norms.
    assert not np.allclose(frob, np.linalg.norm(diff, axis=-1).sum(axis=1))


def test_joint_distance_is_gradient_safe_at_the_factual():
    x = torch.zeros(2, 2)
    s = x[:, None, :].repeat(1, K, 1).requires_grad_(True)
    batch = _batch(s, s, x, torch.zeros(2, K))
    (grad,) = torch.autograd.grad(L2Distance(joint=True).value(batch, {}).sum(), s)
    assert torch.isfinite(grad).all() and (grad == 0).all()


# ---------------------------------------------------------------------- 4. DiCE diversity, reference form
def test_reference_diversity_is_the_determinant_over_the_states_with_fresh_jitter():
    rng = np.random.default_rng(3)
    m, T, seeds = 3, 4, [11, 12, 13]
    s = torch.tensor(rng.normal(size=(m, K, 2)), dtype=torch.float32)
    points = 2.0 * s + 1.0  # what a standardized space decodes: the term must not use these
    term = Diversity(over="states", random_jitter=True, jitter=0.05)
    problem = Problem(factuals=torch.zeros(m, 2), n_counterfactuals=K, seeds=np.array(seeds), max_iterations=T)
    aux = term.prepare(problem)
    noise = np.stack([stream_rng("diversity", seed).standard_normal((T, K)) for seed in seeds])
    values = []
    for t in range(T):
        v = term.value(_batch(s, points, torch.zeros(m, 2), torch.zeros(m, K), iteration=t), aux).numpy()
        S = s.numpy().astype(np.float64)
        dist = np.linalg.norm(S[:, :, None, :] - S[:, None, :, :], axis=-1)
        kmat = 1.0 / (1.0 + dist) + 0.05 * np.stack([np.diag(noise[i, t]) for i in range(m)])
        np.testing.assert_allclose(v, -np.linalg.det(kmat), rtol=1e-4)
        values.append(v)
    assert not np.allclose(values[0], values[1], rtol=1e-6)  # drawn afresh at every iteration
    # The default term measures the decoded points with a fixed diagonal.
    default = Diversity(jitter=0.05).value(_batch(s, points, torch.zeros(m, 2), torch.zeros(m, K)), {}).numpy()
    P = points.numpy().astype(np.float64)
    dist = np.linalg.norm(P[:, :, None, :] - P[:, None, :, :], axis=-1)
    np.testing.assert_allclose(default, -np.linalg.det(1.0 / (1.0 + dist) + 0.05 * np.eye(K)), rtol=1e-4)


def test_reference_diversity_needs_the_step_budget():
    problem = Problem(factuals=torch.zeros(1, 2), n_counterfactuals=K, seeds=np.array([0]))
    with pytest.raises(ValueError, match="Diversity\\(random_jitter=True\\) draws its randomness per step"):
        Diversity(random_jitter=True).prepare(problem)


# ---------------------------------------------------------------------- 5. NaN steps
@dataclass(frozen=True, kw_only=True)
class NaNGradient(Term):
    """A term whose gradient is NaN in the first feature (sqrt of a negative number)."""

    name: ClassVar[str] = "nan_gradient"
    weight: float = 1.0

    def value(self, batch, aux):
        return torch.sqrt(-1.0 - batch.points[..., 0] ** 2)


def test_nan_steps_are_set_to_zero_and_infinite_ones_kept():
    grad = torch.tensor([[[float("nan"), 1.0, float("inf")]]])
    delta, _ = GradientDescent(step_size=0.5, zero_nan_steps=True).step(grad, {})
    np.testing.assert_array_equal(delta.numpy(), [[[0.0, -0.5, -np.inf]]])
    plain, _ = GradientDescent(step_size=0.5).step(grad, {})
    assert torch.isnan(plain[0, 0, 0])


def test_a_nan_gradient_no_longer_poisons_the_search(setup):
    terms = (Validity(), NaNGradient())
    kw = {"n_counterfactuals": K, "seeds": list(range(20))}
    bad = Generator(terms=terms, max_iterations=5).search(setup["logreg"], setup["neg"], **kw)
    assert not bad.finite.any()
    good = Generator(terms=terms, step_rule=GradientDescent(zero_nan_steps=True), max_iterations=5)
    r = good.search(setup["logreg"], setup["neg"], **kw)
    assert r.finite.all()
    # The first feature never moves (its step is NaN -> 0); the second follows the validity gradient.
    start = good.search(setup["logreg"], setup["neg"], return_path=True, **kw).path[0]
    np.testing.assert_array_equal(r.counterfactuals[..., 0], start[..., 0])
    assert np.abs(r.counterfactuals[..., 1] - start[..., 1]).max() > 1e-4


# ---------------------------------------------------------------------- 6. Greedy: random ties, unbounded changes
def test_greedy_random_ties_replay_the_documented_stream():
    """w = (1, -1): both coordinates are always equally salient, so every move is a tie."""
    model = _fixed_lr((1.0, -1.0), -40.0)
    x = np.zeros((2, 2), np.float32)
    T, seeds = 30, [5, 6]
    gen = G.create("greedy", init_noise=0.0, max_iterations=T,
                   step_rule={"kind": "greedy", "random_ties": True, "max_changes": None})
    r = gen.search(model, x, n_counterfactuals=K, seeds=seeds, return_path=True)
    steps = np.diff(r.path.astype(np.float64), axis=0)  # (T, n, K, 2)
    for i, seed in enumerate(seeds):
        u = stream_rng("greedy_ties", seed).random((T, K))
        chosen = np.floor(u * 2).astype(int)  # uniform among the 2 tied coordinates
        expected = np.zeros((T, K, 2))
        np.put_along_axis(expected, chosen[..., None], 1.0, axis=-1)
        expected *= np.array([0.1, -0.1])  # against the gradient's sign
        np.testing.assert_allclose(steps[:, i], expected, atol=1e-5)
    assert 0.25 < (steps[..., 0] != 0).mean() < 0.75  # both coordinates chosen
    again = gen.search(model, x, n_counterfactuals=K, seeds=seeds)
    np.testing.assert_array_equal(again.counterfactuals, r.counterfactuals)
    other = gen.search(model, x, n_counterfactuals=K, seeds=[7, 8])
    assert not np.array_equal(other.counterfactuals, r.counterfactuals)
    # Without random ties, every tie goes to the first coordinate.
    first = G.create("greedy", init_noise=0.0, max_iterations=T, max_changes=None).search(
        model, x, n_counterfactuals=K, seeds=seeds, return_path=True)
    assert (np.diff(first.path, axis=0)[..., 1] == 0).all()


def test_greedy_without_a_change_limit_keeps_moving_the_most_salient_feature():
    model = _fixed_lr((2.0, -1.0), -40.0)
    x = np.zeros((1, 2), np.float32)
    kw = {"n_counterfactuals": 2, "seeds": [3], "return_path": True}
    unbounded = G.create("greedy", max_iterations=25, step_rule={"kind": "greedy", "max_changes": None})
    r = unbounded.search(model, x, **kw)
    moves = np.abs(np.diff(r.path, axis=0)) > 1e-6  # (25, 1, 2, 2)
    assert (moves[..., 0].sum(axis=0) == 25).all() and not moves[..., 1].any()  # 25 > max_changes = 10
    limited = G.create("greedy", max_iterations=25).search(model, x, **kw)
    assert (np.abs(np.diff(limited.path, axis=0))[..., 0] > 1e-6).sum(axis=0).max() == 15


# ---------------------------------------------------------------------- 7 and 9. the first stopping check
def test_a_valid_factual_keeps_its_start_with_zero_iterations(setup):
    X = np.concatenate([setup["pos"], setup["neg"][:10]])
    seeds = list(range(len(X)))
    kw = {"n_counterfactuals": K, "seeds": seeds, "data": setup["data"], "return_path": True}
    skip = G.create("generic", skip_valid_factuals=True).search(setup["logreg"], X, **kw)
    n_pos = len(setup["pos"])
    np.testing.assert_array_equal(skip.iterations[:n_pos], 0)
    np.testing.assert_array_equal(skip.counterfactuals[:n_pos], skip.path[0, :n_pos])
    assert (skip.iterations[n_pos:] > 0).all()
    plain = G.create("generic").search(setup["logreg"], X, **kw)
    # Negatives whose starting states were not all valid search exactly as before.
    np.testing.assert_array_equal(skip.counterfactuals[n_pos:], plain.counterfactuals[n_pos:])
    np.testing.assert_array_equal(skip.iterations[n_pos:], plain.iterations[n_pos:])


def test_an_invalid_factual_with_a_valid_start_takes_a_step():
    """The reference checks the factual first and then after each step: a start that is
    valid by chance does not stop a search whose factual is not."""
    model = _fixed_lr((1.0, 0.0), 0.0)
    x = np.array([[-1e-3, 0.0]], np.float32)  # p just below 0.5
    seed = next(s for s in range(1000) if stream_rng("init", s).normal(0.0, 0.1, size=(1, 2))[0, 0] > 0.01)
    kw = {"n_counterfactuals": 1, "seeds": [seed]}
    plain = G.create("generic").search(model, x, **kw)
    assert plain.iterations[0] == 0 and plain.valid.all()
    skip = G.create("generic", skip_valid_factuals=True).search(model, x, **kw)
    assert skip.iterations[0] == 1


# ---------------------------------------------------------------------- 8. latent start from a sample
def test_latent_sample_start_replays_q_z_given_x(setup):
    vae, X, seeds = setup["vae"], setup["neg"][:6], list(range(40, 46))
    gen = G.create("revise", space={"kind": "latent", "start": "sample"})
    r = gen.search(setup["mlp"], X, n_counterfactuals=K, seeds=seeds, vae=vae, return_path=True)
    with torch.no_grad():
        mu, logvar = vae.encode_moments(torch.from_numpy(X))
        eps = np.stack([stream_rng("init", s).standard_normal((K, mu.shape[1])) for s in seeds])
        z = mu.numpy()[:, None, :] + np.exp(0.5 * logvar.numpy())[:, None, :] * eps
        expected = vae.decode(torch.from_numpy(z.astype(np.float32)).reshape(-1, mu.shape[1])).numpy()
        at_mean = vae.decode(mu).numpy()
    np.testing.assert_allclose(r.path[0], expected.reshape(len(X), K, -1), atol=1e-5)
    assert np.abs(r.path[0] - at_mean[:, None, :]).max() > 1e-3  # not the encoder mean
    assert np.abs(r.path[0, :, 0] - r.path[0, :, 1]).max() > 1e-4  # each state its own sample
    again = gen.search(setup["mlp"], X, n_counterfactuals=K, seeds=seeds, vae=vae)
    np.testing.assert_array_equal(again.counterfactuals, r.counterfactuals)
    other = gen.search(setup["mlp"], X, n_counterfactuals=K, seeds=[s + 100 for s in seeds], vae=vae)
    assert not np.array_equal(other.counterfactuals, r.counterfactuals)


# ---------------------------------------------------------------------- 11. valid factuals stay out of latent space
def test_latent_valid_factuals_are_returned_as_perturbed_factuals(setup):
    model, vae = setup["logreg"], setup["vae"]
    X = np.concatenate([setup["pos"], setup["neg"][:6]])
    seeds = list(range(60, 60 + len(X)))
    kw = {"n_counterfactuals": K, "seeds": seeds, "vae": vae, "return_path": True}
    sample = {"kind": "latent", "start": "sample"}
    kept = G.create("revise", skip_valid_factuals=True,
                    space={**sample, "valid_factuals": "factual", "factual_noise": 0.1}).search(model, X, **kw)
    encoded = G.create("revise", skip_valid_factuals=True, space=sample).search(model, X, **kw)
    n_pos = len(setup["pos"])
    # The valid ones: the factual plus 0.1 N(0, 1) from their "init-valid" stream, no step taken.
    noise = np.stack([stream_rng("init-valid", s).normal(0.0, 0.1, size=(K, 2)) for s in seeds[:n_pos]])
    expected = X[:n_pos, None, :].astype(np.float32) + noise.astype(np.float32)
    np.testing.assert_array_equal(kept.counterfactuals[:n_pos], expected)
    np.testing.assert_array_equal(kept.path[0, :n_pos], expected)
    np.testing.assert_array_equal(kept.iterations[:n_pos], 0)
    w, b = _lr_params(model)
    np.testing.assert_allclose(kept.proba[:n_pos], _sigmoid(expected.astype(np.float64) @ w + b), atol=1e-6)
    np.testing.assert_allclose(kept.cost[:n_pos], np.linalg.norm(noise, axis=-1), atol=1e-6)
    # Encoded, they would have been VAE reconstructions (far from the factual on this VAE).
    assert np.abs(encoded.counterfactuals[:n_pos] - X[:n_pos, None, :]).max() > 0.2
    # The others search exactly as before.
    np.testing.assert_array_equal(kept.counterfactuals[n_pos:], encoded.counterfactuals[n_pos:])
    np.testing.assert_array_equal(kept.iterations[n_pos:], encoded.iterations[n_pos:])
    assert (kept.iterations[n_pos:] > 0).all()
    # Without skip_valid_factuals nobody is held back, and the option changes nothing.
    off = G.create("revise", space={**sample, "valid_factuals": "factual", "factual_noise": 0.1}).search(model, X, **kw)
    plain = G.create("revise", space=sample).search(model, X, **kw)
    np.testing.assert_array_equal(off.counterfactuals, plain.counterfactuals)


def test_latent_valid_factuals_option_keeps_defaults_and_descriptions():
    assert LatentSpace() == LatentSpace(valid_factuals="encode", factual_noise=0.0)
    assert G.create("revise", space="latent").to_dict()["space"] == {"kind": "latent"}
    gen = G.create("revise", space={"kind": "latent", "valid_factuals": "factual", "factual_noise": 0.1})
    assert gen.to_dict()["space"] == {"kind": "latent", "factual_noise": 0.1, "valid_factuals": "factual"}
    assert Generator.from_dict(json.loads(json.dumps(gen.to_dict()))) == gen


# ---------------------------------------------------------------------- batch independence, every option
@pytest.mark.parametrize("preset", G.reference_presets())
def test_the_reference_form_is_batch_independent(preset, setup):
    # 30 steps: with step 0.1 the full searches never settle (the gravitational pull makes
    # them oscillate), so float32 rounding differences between a batched and a single
    # forward pass (~1e-7) grow over 100 steps (to ~5e-4 on this MLP); over 30 they do not.
    gen = G.create(preset, **{**G.reference_overrides(preset), "max_iterations": 30})
    X = np.concatenate([setup["neg"][:8], setup["pos"][:2]])
    seeds = list(range(200, 200 + len(X)))
    kw = {"n_counterfactuals": K, "data": setup["data"], "vae": setup["vae"]}
    batch = gen.search(setup["mlp"], X, seeds=seeds, **kw)
    assert batch.finite.all()
    for i in (0, 5, 9):
        alone = gen.search(setup["mlp"], X[i : i + 1], seeds=[seeds[i]], **kw)
        np.testing.assert_allclose(alone.counterfactuals[0], batch.counterfactuals[i], atol=1e-5, rtol=0)
        assert alone.iterations[0] == batch.iterations[i]
    again = gen.search(setup["mlp"], X, seeds=seeds, **kw)
    np.testing.assert_array_equal(again.counterfactuals, batch.counterfactuals)


@pytest.mark.parametrize("mechanism", sorted(G.MECHANISMS))
def test_each_option_alone_is_batch_independent(mechanism, setup):
    preset = next(p for p in G.reference_presets() if mechanism in G.reference_mechanisms(p))
    overrides = G.merge_overrides(
        *(G.reference_mechanisms(preset)[m] for m in (mechanism, *G.MECHANISMS[mechanism].requires))
    )
    gen = G.create(preset, max_iterations=30, **overrides)
    X = np.concatenate([setup["neg"][:6], setup["pos"][:1]])
    seeds = list(range(300, 300 + len(X)))
    kw = {"n_counterfactuals": K, "data": setup["data"], "vae": setup["vae"]}
    batch = gen.search(setup["mlp"], X, seeds=seeds, **kw)
    for i in (1, 6):
        alone = gen.search(setup["mlp"], X[i : i + 1], seeds=[seeds[i]], **kw)
        np.testing.assert_allclose(alone.counterfactuals[0], batch.counterfactuals[i], atol=1e-5, rtol=0)
        assert alone.iterations[0] == batch.iterations[i]


# ---------------------------------------------------------------------- descriptions and settings
def test_defaults_keep_their_descriptions():
    assert G.create("greedy").to_dict()["step_rule"] == {"kind": "greedy", "max_changes": 10, "step_size": 0.1}
    # The latent presets start from a sample of q(z|x) (December 2026); "latent" alone keeps the mean.
    assert G.create("revise").to_dict()["space"] == {"kind": "latent", "start": "sample"}
    assert G.create("revise", space="latent").to_dict()["space"] == {"kind": "latent"}
    dice = G.create("dice").to_dict()
    assert dice["terms"] == [{"kind": "validity", "weight": 1.0}, {"kind": "distance", "weight": 0.1},
                             {"kind": "diversity", "jitter": 1e-5, "weight": 1.0}]
    assert dice["step_rule"] == {"kind": "gradient_descent", "step_size": 0.01}
    assert "skip_valid_factuals" not in dice
    # Options at their defaults, given explicitly, describe the same generator.
    explicit = G.create("dice", validity={"reduction": "sum"}, distance={"joint": False},
                        diversity={"over": "points", "random_jitter": False}, skip_valid_factuals=False,
                        step_rule={"kind": "gradient_descent", "zero_nan_steps": False})
    assert explicit.to_dict() == dice


@pytest.mark.parametrize("preset", G.reference_presets())
def test_the_options_round_trip(preset):
    gen = G.create(preset, **G.reference_overrides(preset))
    d = json.loads(json.dumps(gen.to_dict(), allow_nan=False))
    assert d["skip_valid_factuals"] is True
    rebuilt = Generator.from_dict(d)
    assert rebuilt == gen and rebuilt.to_dict() == d
    old = {k: v for k, v in G.create(preset).to_dict().items()}
    assert Generator.from_dict(old) == G.create(preset)  # descriptions without the later key still load


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Validity(reduction="median"), "The 'reduction' parameter of the 'validity' term must be one of "
         "'sum', 'mean'. Got 'median' instead."),
        (lambda: L2Distance(joint="yes"), "The 'joint' parameter of the 'distance' term must be a bool"),
        (lambda: Diversity(over="features"), "The 'over' parameter of the 'diversity' term must be one of 'points', "
         "'states'"),
        (lambda: Greedy(max_changes=0), "The 'max_changes' parameter of Greedy must be None or an int in the range "
         "\\[1, inf\\). Got 0 instead."),
        (lambda: Greedy(random_ties=1), "The 'random_ties' parameter of Greedy must be a bool"),
        (lambda: GradientDescent(zero_nan_steps="no"), "The 'zero_nan_steps' parameter of GradientDescent"),
        (lambda: LatentSpace(start="median"), "The 'start' parameter of LatentSpace must be one of 'mean', 'sample'"),
        (lambda: LatentSpace(valid_factuals="keep"), "The 'valid_factuals' parameter of LatentSpace must be one of "
         "'encode', 'factual'"),
        (lambda: LatentSpace(factual_noise=-0.1), "The 'factual_noise' parameter of LatentSpace"),
        (lambda: StandardizedSpace(init_noise=-1.0), "The 'init_noise' parameter of StandardizedSpace"),
        (lambda: G.create("generic", skip_valid_factuals="yes"), "The 'skip_valid_factuals' parameter of Generator "
         "must be a bool"),
        (lambda: G.create("generic", reference_gradient=True), "'reference_gradient' applies only to the "
         "'standardized' space; generator 'generic' uses 'feature'"),
    ],
)
def test_bad_option_values_are_clear(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_vae_without_moments_cannot_start_from_a_sample(setup):
    class MeanOnly:
        input_dim = 2

        def __init__(self, vae):
            self.vae = vae

        def encode(self, x):
            return self.vae.encode(x)

        def decode(self, z):
            return self.vae.decode(z)

    gen = G.create("revise", space={"kind": "latent", "start": "sample"})
    with pytest.raises(ValueError, match="needs a VAE with encode_moments"):
        gen.search(setup["mlp"], setup["neg"][:2], seeds=0, vae=MeanOnly(setup["vae"]))


# ---------------------------------------------------------------------- the reference bundle
EXPECTED_MECHANISMS = {
    "standardized_space", "straight_through_gradient", "validity_mean", "joint_distance", "dice_reference_diversity",
    "nan_steps_zero", "greedy_random_ties", "greedy_unbounded_changes", "skip_valid_factuals", "latent_sample_start",
    "latent_valid_factuals_kept",
}


def test_the_mechanisms_and_their_bugs():
    assert set(G.MECHANISMS) == EXPECTED_MECHANISMS
    assert G.reference_bugs() == ["greedy_unbounded_changes"]
    assert G.reference_presets() == ["claproar", "dice", "generic", "gravitational", "greedy", "revise"]
    with pytest.raises(KeyError, match="The generator 'generik' has no reference form. Did you mean 'generic'"):
        G.reference_overrides("generik")


@pytest.mark.parametrize("preset", G.reference_presets())
def test_the_bundle_is_the_merge_of_its_mechanisms(preset):
    parts = G.reference_mechanisms(preset)
    assert list(parts)[-1] == G.RUN_SETTINGS
    assert G.reference_overrides(preset) == G.merge_overrides(*parts.values())
    full = G.create(preset, **G.reference_overrides(preset))
    assert full.step_rule.step_size == 0.1 and full.max_iterations == 100 and full.decision_threshold == 0.5
    assert full.skip_valid_factuals and full.term("validity").reduction == "mean"
    # Leaving one mechanism out switches off just that one (and what requires it).
    for name in parts:
        gen = G.create(preset, **G.reference_overrides(preset, without=(name,)))
        assert gen != full or (name == G.RUN_SETTINGS and preset == "greedy"), name  # greedy's run = our defaults
        dropped = {name} | {m for m in parts if m in G.MECHANISMS and name in G.MECHANISMS[m].requires}
        rest = [m for m in parts if m not in dropped]
        assert gen == G.create(preset, **G.merge_overrides(*(parts[m] for m in rest))), name


def test_what_each_mechanism_sets():
    dice = G.create("dice", **G.reference_overrides("dice"))
    assert dice.space == StandardizedSpace(init_noise=0.1, reference_gradient=True)
    assert dice.term("distance") == L2Distance(weight=0.1, joint=True)
    assert dice.term("diversity") == Diversity(weight=1.0, jitter=1e-5, over="states", random_jitter=True)
    assert dice.step_rule == GradientDescent(step_size=0.1, zero_nan_steps=True)
    greedy = G.create("greedy", **G.reference_overrides("greedy"))
    assert greedy.step_rule == Greedy(step_size=0.1, max_changes=None, random_ties=True)
    assert [t.name for t in greedy.terms] == ["validity"]
    revise = G.create("revise", **G.reference_overrides("revise"))
    assert revise.space == LatentSpace(start="sample", valid_factuals="factual", factual_noise=0.1)
    # Without the standardized space, its gradient rule goes too.
    plain_space = G.reference_overrides("generic", without=("standardized_space",))
    assert "reference_gradient" not in plain_space and "space" not in plain_space
    assert G.create("generic", **plain_space).space == G.create("generic").space
    # Without the run's settings, our presets' step size stays.
    ours = G.create("generic", **G.reference_overrides("generic", without=("run_settings",)))
    assert ours.step_rule.step_size == 0.01
    with pytest.raises(ValueError, match="names 'greedy_random_ties', which the reference form of 'generic' does not"):
        G.reference_overrides("generic", without=("greedy_random_ties",))


def test_merge_overrides_refuses_disagreements():
    assert G.merge_overrides({"a": {"b": 1}}, {"a": {"c": 2}}, {"d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    with pytest.raises(ValueError, match="The overrides disagree on 'b': 1 and 2"):
        G.merge_overrides({"a": {"b": 1}}, {"a": {"b": 2}})
