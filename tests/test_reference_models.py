"""The reference-compatible model options against computations written out here.

The reference is AlgorithmicRecourseDynamics.jl v0.1.0 on CounterfactualExplanations.jl
0.1.4 (Flux 0.13): classifiers trained on the rows in index order (``shuffle=False``),
Flux's Glorot-uniform initialisation (``init="glorot_uniform"``), and its VAE
(``objective="reference"``, ``keep_optimizer=True``). Each option is checked against an
independent computation: a plain torch loop over the rows, the Glorot bounds and
variance, the VAE objective in float64 numpy, and one Adam kept across two fits.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import recourse_ray as rr
from recourse_ray._rng import as_rng
from recourse_ray.models import FeedForwardClassifier, TorchClassifier, create
from recourse_ray.models import _fused, _fused_vae
from recourse_ray.models.vae import COLLAPSE_RATIO, VAE

needs_numba = pytest.mark.skipif(not _fused.AVAILABLE, reason=f"numba unavailable: {_fused.UNAVAILABLE_REASON}")
needs_vae_kernel = pytest.mark.skipif(not _fused_vae.AVAILABLE, reason="numba unavailable")
CLASSIFIER_BACKENDS = ["torch", pytest.param("fused", marks=needs_numba)]
VAE_BACKENDS = ["torch", pytest.param("fused", marks=needs_vae_kernel)]


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


def blobs(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping 2-D Gaussian blobs, labels alternating (so index order mixes classes)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    X = np.array([[0.0, 0.0], [1.5, 1.0]])[y] + 0.7 * rng.normal(size=(n, 2))
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def moons():
    return rr.data.load("moons", seed=0).X[:230]


# ---------------------------------------------------------------- training order
def index_order_loop(weights: list[tuple[np.ndarray, np.ndarray]], X, y, *, epochs: int, lr: float):
    """One network trained as the reference's Flux loop does, written with torch.nn.

    Rows one at a time in index order, every epoch; Adam (torch.optim.Adam, defaults)
    created once for the call; BCE on the logit. ``weights``: per layer (W (out, in),
    b (out,)), ReLU between layers. Returns the trained layers and the per-epoch mean loss.
    """
    layers = []
    for W, b in weights:
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
    net = torch.nn.Sequential(*[m for lin in layers for m in (lin, torch.nn.ReLU())][:-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.float32))
    losses = []
    for _ in range(epochs):
        total = 0.0
        for i in range(len(X)):
            loss = F.binary_cross_entropy_with_logits(net(Xt[i : i + 1])[:, 0], yt[i : i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / len(X))
    trained = [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in layers]
    return trained, np.array(losses)


def member_weights(model: FeedForwardClassifier, m: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(W[m].numpy().copy(), b[m].numpy().copy()) for W, b in model.layers()]


@pytest.mark.parametrize("backend", CLASSIFIER_BACKENDS)
@pytest.mark.parametrize("name", ["logistic_regression", "mlp", "deep_ensemble"])
def test_index_order_training_equals_a_plain_torch_loop(name, backend):
    X, y = blobs(48, seed=1)
    model = create(name, input_dim=2, seed=4, backend=backend)
    start = [member_weights(model, m) for m in range(model.n_members)]
    losses = model.fit(X, y, epochs=3, batch_size=1, lr=1e-2, seed=0, shuffle=False)
    assert losses.shape == (model.n_members, 3)
    # Each member as its own network with its own Adam: the reference trains an
    # ensemble's networks one after another, a fresh optimizer for each.
    for m in range(model.n_members):
        expected, expected_losses = index_order_loop(start[m], X, y, epochs=3, lr=1e-2)
        for (W, b), (W_ref, b_ref) in zip(member_weights(model, m), expected):
            np.testing.assert_allclose(W, W_ref, atol=1e-5)
            np.testing.assert_allclose(b, b_ref, atol=1e-5)
        np.testing.assert_allclose(losses[m], expected_losses, rtol=1e-5)


@needs_numba
def test_index_order_is_the_same_for_both_backends_and_draws_no_order():
    X, y = blobs(40, seed=2)
    fused = create("deep_ensemble", input_dim=2, seed=1, backend="fused", n_members=3)
    eager = create("deep_ensemble", input_dim=2, seed=1, backend="torch", n_members=3)
    fused.fit(X, y, epochs=2, batch_size=1, seed=0, shuffle=False)
    eager.fit(X, y, epochs=2, batch_size=1, seed=0, shuffle=False)
    np.testing.assert_allclose(fused.params.numpy(), eager.params.numpy(), atol=1e-6)
    # Without shuffling (and without dropout) the seed does not enter ...
    other_seed = create("deep_ensemble", input_dim=2, seed=1, backend="fused", n_members=3)
    other_seed.fit(X, y, epochs=2, batch_size=1, seed=99, shuffle=False)
    np.testing.assert_array_equal(other_seed.params.numpy(), fused.params.numpy())
    # ... while the default order does.
    shuffled = create("deep_ensemble", input_dim=2, seed=1, backend="fused", n_members=3)
    shuffled.fit(X, y, epochs=2, batch_size=1, seed=0)
    assert not np.array_equal(shuffled.params.numpy(), fused.params.numpy())


def test_ensemble_members_in_index_order_equal_single_models_trained_alone():
    X, y = blobs(30, seed=3)
    ensemble = create("deep_ensemble", input_dim=2, seed=2)
    singles = []
    for m in range(ensemble.n_members):
        single = create("mlp", input_dim=2, seed=0)
        single.params.copy_(ensemble.params[m : m + 1])
        singles.append(single)
    ensemble.fit(X, y, epochs=2, batch_size=1, seed=0, shuffle=False)
    for m, single in enumerate(singles):
        single.fit(X, y, epochs=2, batch_size=1, seed=m + 10, shuffle=False)
        np.testing.assert_array_equal(ensemble.params[m].numpy(), single.params[0].numpy())


def test_torch_classifier_index_order_equals_a_plain_torch_loop():
    X, y = blobs(36, seed=4)
    torch.manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        module = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1))
    start = [(module[i].weight.detach().numpy().copy(), module[i].bias.detach().numpy().copy()) for i in (0, 2)]
    model = TorchClassifier(module, input_dim=2)
    losses = model.fit(X, y, epochs=2, batch_size=1, lr=1e-2, seed=0, shuffle=False)
    expected, expected_losses = index_order_loop(start, X, y, epochs=2, lr=1e-2)
    got = model.parameter_arrays()
    for (W_ref, b_ref), W, b in zip(expected, got[0::2], got[1::2]):
        np.testing.assert_allclose(W, W_ref, atol=1e-6)
        np.testing.assert_allclose(b, b_ref, atol=1e-6)
    np.testing.assert_allclose(losses[0], expected_losses, rtol=1e-6)


def test_shuffle_must_be_a_bool():
    X, y = blobs(10, seed=0)
    message = "The 'shuffle' parameter of FeedForwardClassifier.fit must be a bool. Got 'no'"
    with pytest.raises(ValueError, match=message):
        create("mlp", input_dim=2).fit(X, y, epochs=1, batch_size=1, seed=0, shuffle="no")
    module = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="The 'shuffle' parameter of TorchClassifier.fit must be a bool. Got 0"):
        TorchClassifier(module, input_dim=2).fit(X, y, epochs=1, batch_size=1, seed=0, shuffle=0)


# ---------------------------------------------------------------- initialisation
def test_glorot_uniform_bounds_variance_and_zero_biases():
    model = FeedForwardClassifier(200, hidden=(300,), n_members=2, seed=7, init="glorot_uniform")
    for W, b in model.layers():
        _, fan_out, fan_in = W.shape
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = W.numpy().astype(np.float64)
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
        # U(-a, a) has variance a^2 / 3 = 2 / (fan_in + fan_out), Glorot's target.
        assert w.var() == pytest.approx(2.0 / (fan_in + fan_out), rel=0.05)
        assert abs(w.mean()) < 0.05 * limit
        assert np.all(b.numpy() == 0)
    members = model.params.numpy()
    assert not np.array_equal(members[0], members[1])  # drawn independently per member


@pytest.mark.parametrize("name", ["logistic_regression", "mlp", "deep_ensemble"])
def test_glorot_init_through_create_is_the_default_and_deterministic(name):
    explicit = create(name, input_dim=2, seed=3, init="glorot_uniform")
    default = create(name, input_dim=2, seed=3)
    np.testing.assert_array_equal(explicit.params.numpy(), default.params.numpy())
    np.testing.assert_array_equal(create(name, input_dim=2, seed=3, init="glorot_uniform").params.numpy(),
                                  explicit.params.numpy())
    assert not np.array_equal(create(name, input_dim=2, seed=4, init="glorot_uniform").params.numpy(),
                              explicit.params.numpy())
    for W, b in explicit.layers():
        fan_out, fan_in = W.shape[1:]
        assert W.abs().max() <= np.sqrt(6.0 / (fan_in + fan_out)) and b.abs().max() == 0
    assert explicit.config()["init"] == "glorot_uniform"
    assert rr.models.defaults(name)["init"] == "glorot_uniform"


def test_torch_init_bounds_and_nonzero_biases():
    model = create("mlp", input_dim=40, seed=1, hidden=[50], init="torch")
    for W, b in model.layers():
        bound = 1.0 / np.sqrt(W.shape[2])
        assert W.abs().max() <= bound and b.abs().max() <= bound and b.abs().max() > 0
    first = model.layers()[0][0].numpy()  # 2,000 draws: enough for the variance
    assert first.var() == pytest.approx((1.0 / 40) / 3, rel=0.1)
    assert "init='torch'" in repr(model)
    assert not np.array_equal(model.params.numpy(), create("mlp", input_dim=40, seed=1, hidden=[50]).params.numpy())
    restored = pickle.loads(pickle.dumps(model))
    assert restored.init == "torch" and np.array_equal(restored.params.numpy(), model.params.numpy())


def test_unknown_init_is_rejected():
    message = "The 'init' parameter of mlp must be one of 'glorot_uniform', 'torch'. Got 'xavier'"
    with pytest.raises(ValueError, match=message):
        create("mlp", input_dim=2, init="xavier")


# ---------------------------------------------------------------- the reference's VAE
def numpy_reference_objective(vae: VAE, x: np.ndarray, eps: np.ndarray, *, kl_weight: float, decay: float) -> float:
    """CounterfactualExplanations.jl 0.1.4's VAE loss in float64: log-sigma head, sums over the batch / B."""
    p = {k: v.numpy().astype(np.float64) for k, v in vae.params.items()}
    h = np.maximum(0, x @ p["enc_w"].T + p["enc_b"])
    mu, log_sigma = h @ p["mu_w"].T + p["mu_b"], h @ p["logvar_w"].T + p["logvar_b"]
    z = mu + np.exp(log_sigma) * eps
    xhat = np.maximum(0, z @ p["dec_w"].T + p["dec_b"]) @ p["out_w"].T + p["out_b"]
    rows = x.shape[0]
    nll = ((xhat - x) ** 2).sum() / rows
    kl = 0.5 * (np.exp(2 * log_sigma) + mu**2 - 1 - 2 * log_sigma).sum() / rows
    reg = decay * sum((p[k] ** 2).sum() for k in ("dec_w", "dec_b", "out_w", "out_b"))
    return nll + kl_weight * kl + reg


def test_reference_objective_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=[0.5, 1.0, 2.0], size=(7, 3)).astype(np.float32)
    eps = rng.normal(size=(7, 2)).astype(np.float32)
    vae = VAE(3, latent_dim=2, hidden=5, seed=2, objective="reference")
    assert vae.kl_weight == 1.0 and vae.decoder_weight_decay == 0.01
    with torch.no_grad():  # biases are zero at init; make the decay see them too
        vae.flat.add_(torch.from_numpy(rng.normal(scale=0.1, size=vae.n_params()).astype(np.float32)))
    expected = numpy_reference_objective(vae, x, eps, kl_weight=1.0, decay=0.01)
    got = float(vae.loss(torch.from_numpy(x), torch.from_numpy(eps)))
    assert got == pytest.approx(expected, rel=1e-6)
    # A fit does not rescale the reference's reconstruction error.
    vae.fit(x, epochs=0, seed=0)
    assert vae.scale_ is None
    assert float(vae.loss(torch.from_numpy(x), torch.from_numpy(eps))) == pytest.approx(expected, rel=1e-6)
    # Each part can be changed on its own.
    other = VAE(3, latent_dim=2, hidden=5, seed=2, objective="reference", kl_weight=0.5, decoder_weight_decay=0.0)
    other.flat.copy_(vae.flat)
    expected_other = numpy_reference_objective(other, x, eps, kl_weight=0.5, decay=0.0)
    assert float(other.loss(torch.from_numpy(x), torch.from_numpy(eps))) == pytest.approx(expected_other, rel=1e-6)


def test_reference_head_is_log_sigma_and_moments_give_the_sampler_what_it_needs():
    vae = VAE(2, seed=1, objective="reference")
    x = torch.randn(5, 2)
    h = torch.relu(F.linear(x, vae.params["enc_w"], vae.params["enc_b"]))
    head = F.linear(h, vae.params["logvar_w"], vae.params["logvar_b"])
    mean, logvar = vae.encode_moments(x)
    assert torch.equal(logvar, 2 * head) and torch.equal(mean, vae.encode(x))
    noise = torch.randn(5, 2)
    # z ~ q(z|x) as the reference draws it: mu + eps * exp(log sigma).
    torch.testing.assert_close(vae.sample_latent(x, noise), mean + noise * torch.exp(head), rtol=0, atol=0)
    default = VAE(2, seed=1)  # the default head is the log-variance itself
    assert torch.equal(default.encode_moments(x)[1], head)


def split_reference_loop(vae: VAE, X: np.ndarray, fits: list[int], *, seed: int, lr: float = 1e-3):
    """The reference VAE trained by hand: one torch.optim.Adam for all ``fits`` (epochs each).

    The draws follow ``VAE.fit``'s documented order, from one Generator passed to every
    fit; the loss is written out with torch.nn.functional. Returns the parameters and the
    per-epoch mean losses of every fit.
    """
    ref = {k: v.clone().requires_grad_(True) for k, v in vae.params.items()}
    opt = torch.optim.Adam(list(ref.values()), lr=lr)
    rng = as_rng(seed)
    Xt = torch.from_numpy(X)
    all_losses = []
    for epochs in fits:
        fit_losses = []
        for _ in range(epochs):
            order = rng.permutation(len(X))
            noise = torch.from_numpy(rng.standard_normal((len(X), vae.latent_dim), dtype=np.float32))
            batch_losses = []
            for start in range(0, len(X), 50):
                xb, eps = Xt[order[start : start + 50]], noise[start : start + 50]
                h = F.relu(F.linear(xb, ref["enc_w"], ref["enc_b"]))
                mu, log_sigma = F.linear(h, ref["mu_w"], ref["mu_b"]), F.linear(h, ref["logvar_w"], ref["logvar_b"])
                z = mu + torch.exp(log_sigma) * eps
                xhat = F.linear(F.relu(F.linear(z, ref["dec_w"], ref["dec_b"])), ref["out_w"], ref["out_b"])
                rows = xb.shape[0]
                kl = 0.5 * (torch.exp(2 * log_sigma) + mu**2 - 1 - 2 * log_sigma).sum() / rows
                reg = 0.01 * sum((ref[k] ** 2).sum() for k in ("dec_w", "dec_b", "out_w", "out_b"))
                loss = ((xhat - xb) ** 2).sum() / rows + kl + reg
                opt.zero_grad()
                loss.backward()
                opt.step()
                batch_losses.append(float(loss.detach()))
            fit_losses.append(np.mean(batch_losses))
        all_losses.append(np.array(fit_losses))
    return {k: v.detach() for k, v in ref.items()}, all_losses


def test_kept_adam_continues_across_fits_like_one_optimizer(moons):
    vae = VAE(2, seed=3, objective="reference", keep_optimizer=True)
    assert vae.training_backend() == "torch"
    expected, expected_losses = split_reference_loop(vae, moons, [2, 1], seed=11)
    rng = as_rng(11)
    first = vae.fit(moons, epochs=2, seed=rng)
    steps_per_epoch = -(-len(moons) // 50)
    assert vae.optimizer_state_["step"] == 2 * steps_per_epoch
    second = vae.fit(moons, epochs=1, seed=rng)
    assert vae.optimizer_state_["step"] == 3 * steps_per_epoch
    np.testing.assert_allclose(first, expected_losses[0], rtol=1e-5)
    np.testing.assert_allclose(second, expected_losses[1], rtol=1e-5)
    for k in expected:
        np.testing.assert_allclose(vae.params[k].numpy(), expected[k].numpy(), atol=1e-5)


def test_fits_with_a_kept_optimizer_equal_one_long_fit(moons):
    split = VAE(2, seed=5, objective="reference", keep_optimizer=True)
    whole = split.clone()
    fresh = split.clone()
    fresh.keep_optimizer = False
    rng = as_rng(2)
    losses = np.concatenate([split.fit(moons, epochs=2, seed=rng), split.fit(moons, epochs=1, seed=rng)])
    np.testing.assert_array_equal(losses, whole.fit(moons, epochs=3, seed=2))
    assert torch.equal(split.flat, whole.flat)
    # A fresh Adam state in the second fit (the default) gives something else.
    rng = as_rng(2)
    fresh.fit(moons, epochs=2, seed=rng)
    fresh.fit(moons, epochs=1, seed=rng)
    assert fresh.optimizer_state_ is None
    assert not torch.equal(fresh.flat, split.flat)


def test_kept_optimizer_travels_with_clones_and_pickles(moons):
    vae = VAE(2, seed=6, keep_optimizer=True)  # the default objective, kept Adam: torch path
    vae.fit(moons, epochs=1, seed=0)
    copies = [vae.clone(), pickle.loads(pickle.dumps(vae))]
    vae.fit(moons, epochs=1, seed=1)
    for copy_ in copies:
        assert copy_.keep_optimizer and copy_.optimizer_state_["step"] == -(-len(moons) // 50)
        copy_.fit(moons, epochs=1, seed=1)
        assert torch.equal(copy_.flat, vae.flat)
        assert torch.equal(copy_.optimizer_state_["exp_avg_sq"], vae.optimizer_state_["exp_avg_sq"])
    vae.reset_parameters(0)
    assert vae.optimizer_state_ is None


def test_reference_vae_trains(moons):
    vae = VAE(2, seed=0, objective="reference", keep_optimizer=True)
    losses = vae.fit(moons, epochs=30, seed=0)
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]
    assert "objective='reference'" in repr(vae) and "keep_optimizer=True" in repr(vae)


@pytest.mark.parametrize("backend", VAE_BACKENDS)
@pytest.mark.parametrize("objective", ["scaled", "reference"])
def test_fit_records_reconstruction_error_and_decoded_spread(moons, objective, backend):
    if objective == "reference" and backend == "fused":
        with pytest.raises(ValueError, match="The 'backend' parameter of VAE must be 'auto' or 'torch' when"):
            VAE(2, seed=0, objective=objective, backend=backend)
        return
    vae = VAE(2, seed=0, objective=objective, backend=backend)
    assert vae.reconstruction_error_ is None and vae.collapsed is None
    vae.fit(moons, epochs=5, seed=1)
    decoded = vae.reconstruct(moons).astype(np.float64)
    assert vae.reconstruction_error_ == pytest.approx(np.mean((decoded - moons) ** 2), rel=1e-6)
    np.testing.assert_allclose(vae.decoded_spread_, decoded.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(vae.data_spread_, moons.astype(np.float64).std(axis=0), rtol=1e-12)
    assert vae.decoded_spread_.shape == (2,)


def test_a_collapse_is_recorded_and_logged(moons, caplog):
    vae = VAE(2, seed=0)
    vae.fit(moons, epochs=40, seed=0)
    assert vae.collapsed is False
    with torch.no_grad():
        vae.params["out_w"].mul_(1e-3)  # the decoder now returns (almost) its bias
    with caplog.at_level(logging.WARNING, logger="recourse_ray.models.vae"):
        vae.fit(moons, epochs=0, seed=0)
        vae.fit(moons, epochs=0, seed=0)
    assert vae.collapsed is True
    assert np.all(vae.decoded_spread_ < COLLAPSE_RATIO * vae.data_spread_)
    messages = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(messages) == 1  # logged when the collapse starts, not at every fit


def test_reference_options_are_checked():
    with pytest.raises(ValueError, match="The 'objective' parameter of VAE must be one of 'scaled', 'reference'"):
        VAE(2, seed=0, objective="flux")
    decay = r"The 'decoder_weight_decay' parameter of VAE must be a float in the range \[0, inf\)"
    with pytest.raises(ValueError, match=decay):
        VAE(2, seed=0, decoder_weight_decay=-1.0)
    with pytest.raises(ValueError, match="The 'keep_optimizer' parameter of VAE must be a bool"):
        VAE(2, seed=0, keep_optimizer="yes")
    with pytest.raises(ValueError, match="The 'backend' parameter of VAE must be 'auto' or 'torch'"):
        VAE(2, seed=0, keep_optimizer=True, backend="fused")
    assert VAE(2, seed=0).kl_weight == 0.1 and VAE(2, seed=0).decoder_weight_decay == 0.0
    assert VAE(2, seed=0, decoder_weight_decay=0.01).training_backend() == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_kept_optimizer_on_a_device_matches_the_cpu(moons):
    cpu = VAE(2, seed=8, objective="reference", keep_optimizer=True)
    gpu = cpu.clone()
    for seed in (0, 1):
        cpu.fit(moons, epochs=2, seed=seed)
        gpu.fit(moons, epochs=2, seed=seed, device="cuda")
    assert gpu.flat.device.type == "cpu" and gpu.optimizer_state_["exp_avg"].device.type == "cpu"
    assert gpu.optimizer_state_["step"] == cpu.optimizer_state_["step"]
    np.testing.assert_allclose(gpu.flat.numpy(), cpu.flat.numpy(), atol=1e-5)
    X, y = blobs(30, seed=0)
    a = create("mlp", input_dim=2, seed=1, backend="torch")
    b = create("mlp", input_dim=2, seed=1, backend="torch")
    a.fit(X, y, epochs=2, batch_size=1, seed=0, shuffle=False)
    b.fit(X, y, epochs=2, batch_size=1, seed=0, shuffle=False, device="cuda")
    np.testing.assert_allclose(a.params.numpy(), b.params.numpy(), atol=1e-5)
