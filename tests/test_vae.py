"""Tests of the VAE used by latent-space counterfactual search (SPEC §3).

The training loop is checked against an independent re-implementation with
``torch.nn.functional`` layers and ``torch.optim.Adam``; the loss against a numpy ELBO.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import recourse_ray as rr
from recourse_ray._rng import as_rng, torch_generator
from recourse_ray.models.vae import VAE


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def X():
    return rr.data.load("moons", seed=0).X


def test_shapes_and_gradients():
    vae = VAE(3, latent_dim=2, hidden=8, seed=0)
    x = torch.randn(5, 3)
    assert vae.encode(x).shape == (5, 2)
    z = torch.randn(4, 2, requires_grad=True)
    out = vae.decode(z)
    assert out.shape == (4, 3)
    (g,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(vae.encode(xr).sum(), xr)
    assert gx.abs().sum() > 0


def test_default_sizes_and_seeded_init():
    vae = VAE(2, seed=0)
    assert vae.latent_dim == 2 and vae.hidden == 32
    assert vae.params["enc_w"].shape == (32, 2) and vae.params["out_w"].shape == (2, 32)
    assert torch.equal(VAE(2, seed=0).flat, vae.flat)
    assert not torch.equal(VAE(2, seed=1).flat, vae.flat)
    limit = np.sqrt(6 / 34)
    assert vae.params["enc_w"].abs().max() <= limit and vae.params["enc_b"].abs().max() == 0


def test_loss_matches_numpy_elbo():
    vae = VAE(3, latent_dim=2, hidden=5, seed=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    eps = rng.normal(size=(6, 2)).astype(np.float32)
    p = {k: v.numpy().astype(np.float64) for k, v in vae.params.items()}
    h = np.maximum(0, x @ p["enc_w"].T + p["enc_b"])
    mu, logvar = h @ p["mu_w"].T + p["mu_b"], h @ p["logvar_w"].T + p["logvar_b"]
    z = mu + np.exp(0.5 * logvar) * eps
    xhat = np.maximum(0, z @ p["dec_w"].T + p["dec_b"]) @ p["out_w"].T + p["out_b"]
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(1)
    # Before any fit the reconstruction is unscaled; the KL carries the default weight 0.1.
    expected = (((xhat - x) ** 2).sum(1) + 0.1 * kl).mean()
    got = float(vae.loss(torch.from_numpy(x), torch.from_numpy(eps)))
    assert got == pytest.approx(expected, rel=1e-5)
    # After the first fit each feature's error is divided by that feature's std in the fitted data.
    data = rng.normal(scale=[0.5, 1.0, 2.0], size=(40, 3)).astype(np.float32)
    vae.fit(data, epochs=0, seed=0)
    scale = data.std(axis=0).astype(np.float64)
    expected_scaled = (((xhat - x) / scale) ** 2).sum(1) + 0.1 * kl
    got = float(vae.loss(torch.from_numpy(x), torch.from_numpy(eps)))
    assert got == pytest.approx(expected_scaled.mean(), rel=1e-5)
    heavy = VAE(3, latent_dim=2, hidden=5, seed=2, kl_weight=1.0)
    assert float(heavy.loss(torch.from_numpy(x), torch.from_numpy(eps))) == pytest.approx((((xhat - x) ** 2).sum(1) + kl).mean(), rel=1e-5)


def test_fit_matches_torch_optim_adam(X):
    """Same batches and noise (drawn as the docstring says), layers from torch.nn.functional, torch's Adam."""
    vae = VAE(2, seed=3)
    ref = {k: v.clone().requires_grad_(True) for k, v in vae.params.items()}
    losses = vae.fit(X, epochs=2, batch_size=50, seed=11, lr=1e-3)

    rng = as_rng(11)
    gen = torch_generator(rng)
    opt = torch.optim.Adam(list(ref.values()), lr=1e-3)
    Xt = torch.from_numpy(X)
    scale = torch.from_numpy(X.std(axis=0))  # fixed by the first fit
    expected_losses = []
    for _ in range(2):
        order = rng.permutation(len(X))
        batch_losses = []
        for start in range(0, len(X), 50):
            xb = Xt[order[start : start + 50]]
            eps = torch.randn(xb.shape[0], 2, generator=gen)
            h = F.relu(F.linear(xb, ref["enc_w"], ref["enc_b"]))
            mu, logvar = F.linear(h, ref["mu_w"], ref["mu_b"]), F.linear(h, ref["logvar_w"], ref["logvar_b"])
            z = mu + torch.exp(0.5 * logvar) * eps
            xhat = F.linear(F.relu(F.linear(z, ref["dec_w"], ref["dec_b"])), ref["out_w"], ref["out_b"])
            loss = ((((xhat - xb) / scale) ** 2).sum(1) + 0.1 * 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            batch_losses.append(float(loss.detach()))
        expected_losses.append(np.mean(batch_losses))
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for k in ref:
        np.testing.assert_allclose(vae.params[k].numpy(), ref[k].detach().numpy(), atol=1e-5)


def test_fit_continues_with_a_fresh_optimizer(X):
    a = VAE(2, seed=0)
    a.fit(X, epochs=2, seed=1)
    after_first = a.flat.clone()
    b = VAE(2, seed=0)
    b.set_state(a.get_state())
    a.fit(X, epochs=1, seed=2)
    b.fit(X, epochs=1, seed=2)  # same weights, fresh Adam state: same result
    assert torch.equal(a.flat, b.flat)
    assert not torch.equal(a.flat, after_first)
    assert not a.flat.requires_grad and not a.params["enc_w"].requires_grad


def test_training_improves_reconstruction_and_is_deterministic(X):
    a = VAE(2, seed=0)
    before = np.mean((a.reconstruct(X) - X) ** 2)
    losses = a.fit(X, epochs=20, seed=5)
    assert losses.shape == (20,) and losses[-1] < 0.7 * losses[0]
    assert np.mean((a.reconstruct(X) - X) ** 2) < 0.5 * before
    b = VAE(2, seed=0)
    b.fit(X, epochs=20, seed=5)
    assert torch.equal(a.flat, b.flat)
    c, d = VAE(2, seed=0), VAE(2, seed=0)
    c.fit(X, epochs=1, seed=6)
    d.fit(X, epochs=1, seed=5)
    assert not torch.equal(c.flat, d.flat)


def test_no_global_rng(X):
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state()
    VAE(2, seed=0).fit(X, epochs=1, seed=0)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_state_clone_and_pickle(X):
    vae = VAE(2, latent_dim=3, hidden=7, seed=0)
    vae.fit(X, epochs=1, seed=0)
    state = vae.get_state()
    assert all(isinstance(v, np.ndarray) for v in state["params"].values())
    for copy_ in (VAE.from_state(state), vae.clone(), pickle.loads(pickle.dumps(vae))):
        assert torch.equal(copy_.flat, vae.flat)
        np.testing.assert_array_equal(copy_.reconstruct(X), vae.reconstruct(X))
        # independent: training the copy leaves the original alone, and the views follow the block
        copy_.fit(X, epochs=1, seed=1)
        assert not torch.equal(copy_.flat, vae.flat)
        assert copy_.params["out_b"].data_ptr() >= copy_.flat.data_ptr()
    with pytest.raises(ValueError, match="lacks the parameters"):
        vae.set_state({"params": {}})
    wrong = VAE(2, seed=0).get_state()
    with pytest.raises(ValueError, match="enc_w of shape"):
        vae.set_state(wrong)


def test_bad_arguments(X):
    with pytest.raises(ValueError, match="'latent_dim' parameter must be an int in the range \\[1, inf\\)"):
        VAE(2, latent_dim=0, seed=0)
    vae = VAE(2, seed=0)
    with pytest.raises(ValueError, match="X must have shape \\(n_samples, 2\\)"):
        vae.fit(np.zeros((4, 3)), epochs=1, seed=0)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        vae.fit(bad, epochs=1, seed=0)
    with pytest.raises(ValueError, match="'epochs' parameter"):
        vae.fit(X, epochs=-1, seed=0)
    with pytest.raises(TypeError, match="'seed' parameter"):
        vae.fit(X, epochs=1, seed="x")
