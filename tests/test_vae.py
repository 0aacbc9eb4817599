"""Tests of the VAE used by latent-space counterfactual search (SPEC §3).

The training loop (both backends) is checked against an independent re-implementation
with ``torch.nn.functional`` layers and ``torch.optim.Adam``; the loss against a numpy
ELBO; the fused kernel against the torch path, its arguments, allocations and cache.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import recourse_ray as rr
from recourse_ray._rng import as_rng
from recourse_ray.models import _fused_vae
from recourse_ray.models.vae import VAE

needs_numba = pytest.mark.skipif(not _fused_vae.AVAILABLE, reason=f"numba unavailable: {_fused_vae.UNAVAILABLE_REASON}")
BACKENDS = ["torch", pytest.param("fused", marks=needs_numba)]


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_matches_torch_optim_adam(X, backend):
    """Same batches and noise (drawn as the docstring says), layers from torch.nn.functional, torch's Adam."""
    X = X[:223]  # the last batch of each epoch has 23 rows
    vae = VAE(2, seed=3, backend=backend)
    ref = {k: v.clone().requires_grad_(True) for k, v in vae.params.items()}
    losses = vae.fit(X, epochs=2, batch_size=50, seed=11, lr=1e-3)

    rng = as_rng(11)
    opt = torch.optim.Adam(list(ref.values()), lr=1e-3)
    Xt = torch.from_numpy(X)
    scale = torch.from_numpy(X.std(axis=0))  # fixed by the first fit
    expected_losses = []
    for _ in range(2):
        order = rng.permutation(len(X))
        noise = torch.from_numpy(rng.standard_normal((len(X), 2), dtype=np.float32))
        batch_losses = []
        for start in range(0, len(X), 50):
            xb = Xt[order[start : start + 50]]
            eps = noise[start : start + 50]  # noise follows the position in the shuffled order
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


@needs_numba
@pytest.mark.parametrize(
    "input_dim, latent_dim, n_rows, kl_weight",
    [(2, 2, 123, 0.1), (20, 8, 130, 0.1), (20, 8, 130, 1.0)],
    ids=["d2-l2", "d20-l8", "d20-l8-kl1"],
)
def test_fused_matches_torch_path(X, input_dim, latent_dim, n_rows, kl_weight):
    """Same weights and fit seeds: per-epoch losses and weights agree to float32 rounding.

    Batch 50 with a partial last batch (23 or 30 rows); a second ``fit`` continues from
    the trained weights with a fresh Adam state and the scale of the first fit.
    """
    if input_dim == 2:
        data = X[:n_rows]
    else:
        rng = np.random.default_rng(4)
        data = (rng.normal(size=(n_rows, input_dim)) * rng.uniform(0.3, 2.0, size=input_dim)).astype(np.float32)
    fused = VAE(input_dim, latent_dim=latent_dim, kl_weight=kl_weight, seed=7, backend="fused")
    eager = VAE(input_dim, latent_dim=latent_dim, kl_weight=kl_weight, seed=7, backend="torch")
    for fit_seed, epochs in ((1, 3), (2, 2)):
        got = fused.fit(data, epochs=epochs, batch_size=50, seed=fit_seed)
        expected = eager.fit(data, epochs=epochs, batch_size=50, seed=fit_seed)
        assert got.shape == (epochs,) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        np.testing.assert_allclose(fused.flat.numpy(), eager.flat.numpy(), atol=1e-5)
    assert torch.equal(fused.scale_, eager.scale_)
    np.testing.assert_array_equal(fused.last_fit_losses_, got)
    # The kernel wrote through the views: params and reconstructions see the new weights.
    assert fused.params["out_b"].data_ptr() >= fused.flat.data_ptr() and not fused.flat.requires_grad
    np.testing.assert_allclose(fused.reconstruct(data), eager.reconstruct(data), atol=1e-4)


@needs_numba
def test_fused_one_step_matches_torch_gradient_step():
    """One full batch: the kernel's single Adam step equals the torch path's within float32 rounding."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 3)).astype(np.float32)
    a = VAE(3, latent_dim=2, hidden=5, seed=2, backend="fused")
    b = VAE(3, latent_dim=2, hidden=5, seed=2, backend="torch")
    start = a.flat.clone()
    la = a.fit(data, epochs=1, batch_size=6, seed=0, lr=0.01)
    lb = b.fit(data, epochs=1, batch_size=6, seed=0, lr=0.01)
    assert la[0] == pytest.approx(lb[0], rel=1e-6)
    np.testing.assert_allclose(a.flat.numpy(), b.flat.numpy(), atol=1e-6)
    # A first Adam step moves every parameter with a nonzero gradient by ~lr.
    moved = (a.flat - start).abs()
    assert moved.max() == pytest.approx(0.01, rel=1e-3) and (moved > 0).sum() > a.n_params() // 2


def test_backend_selection(X, monkeypatch):
    assert VAE(2, seed=0).backend == "auto"
    assert VAE(2, seed=0).training_backend() == ("fused" if _fused_vae.AVAILABLE else "torch")
    assert VAE(2, seed=0, backend="torch").training_backend() == "torch"
    assert "backend='torch'" in repr(VAE(2, seed=0, backend="torch"))
    message = "The 'backend' parameter of VAE must be one of 'auto', 'fused', 'torch'. Got 'numba' instead."
    with pytest.raises(ValueError, match=message):
        VAE(2, seed=0, backend="numba")
    # Without numba, "auto" trains with torch and "fused" says why it cannot.
    expected = VAE(2, seed=0, backend="torch")
    expected.fit(X[:60], epochs=1, seed=0)
    monkeypatch.setattr(_fused_vae, "AVAILABLE", False)
    monkeypatch.setattr(_fused_vae, "UNAVAILABLE_REASON", "numba could not be imported (test)")
    auto = VAE(2, seed=0)
    auto.fit(X[:60], epochs=1, seed=0)
    assert torch.equal(auto.flat, expected.flat)
    fused = VAE(2, seed=0, backend="fused")
    before = fused.flat.clone()
    with pytest.raises(RuntimeError, match=r"unavailable: numba could not be imported \(test\)"):
        fused.fit(X[:60], epochs=1, seed=0)
    assert torch.equal(fused.flat, before) and fused.scale_ is None  # nothing changed
    with pytest.raises(RuntimeError, match="unavailable"):
        fused.training_backend()


@needs_numba
def test_train_vae_epochs_arguments():
    d, h, l, n = 3, 4, 2, 5
    flat = np.zeros(_fused_vae.n_params(d, h, l), np.float32)
    assert flat.size == VAE(d, latent_dim=l, hidden=h, seed=0).n_params()
    X = np.zeros((n, d), np.float32)
    orders = np.tile(np.arange(n), (2, 1))
    noise = np.zeros((2, n, l), np.float32)
    scale = np.ones(d, np.float32)
    args = (np.array([d, h, l]), X, orders, noise, scale, 0.1, 2, 1e-3)
    with pytest.raises(ValueError, match="flat has 10 entries; dims \\[3, 4, 2\\] need"):
        _fused_vae.train_vae_epochs(np.zeros(10, np.float32), *args)
    with pytest.raises(ValueError, match="flat must be a 1-D float32"):
        _fused_vae.train_vae_epochs(flat.astype(np.float64), *args)
    with pytest.raises(ValueError, match="noise must have shape \\(2, 5, 2\\); got \\(2, 5, 3\\)"):
        _fused_vae.train_vae_epochs(flat, args[0], X, orders, np.zeros((2, n, 3), np.float32), *args[4:])
    with pytest.raises(ValueError, match=r"orders contains row indices outside \[0, n\)"):
        _fused_vae.train_vae_epochs(flat, args[0], X, orders + 1, *args[3:])
    both = r"scale must have shape \(3,\) with finite entries > 0.*batch_size must be an int >= 1; got 0"
    with pytest.raises(ValueError, match=both):
        _fused_vae.train_vae_epochs(flat, *args[:4], np.zeros(d, np.float32), 0.1, 0, 1e-3)
    assert np.all(flat == 0)
    empty = _fused_vae.train_vae_epochs(flat, args[0], X, orders[:0], noise[:0], *args[4:])
    assert empty.shape == (0,) and np.all(flat == 0)


@needs_numba
def test_kernel_allocates_nothing_per_step_and_is_cached():
    """NRT allocations do not grow with the number of steps; the kernel lives in numba's cache."""
    from numba.core.runtime import _nrt_python, rtsys

    d, h, l, n = 3, 5, 2, 23
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    flat = VAE(d, latent_dim=l, hidden=h, seed=0).flat.numpy().copy()

    def allocations(epochs: int) -> int:
        orders = np.stack([rng.permutation(n) for _ in range(epochs)])
        noise = rng.standard_normal((epochs, n, l), dtype=np.float32)
        before = rtsys.get_allocation_stats().alloc
        _fused_vae.train_vae_epochs(flat, np.array([d, h, l]), X, orders, noise, np.ones(d, np.float32), 0.1, 4, 1e-3)
        return rtsys.get_allocation_stats().alloc - before

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        one, many = allocations(1), allocations(8)  # 6 steps against 48
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    assert one == many > 0
    stats = _fused_vae._train_vae_kernel.stats
    assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) >= 1  # cache=True in effect
    assert stats.cache_path and os.path.isdir(stats.cache_path)


_CACHE_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    import fused_vae_copy as mod
    import numba
    d, h, l, n = 2, 3, 2, 4
    flat = np.linspace(-0.5, 0.5, mod.n_params(d, h, l)).astype(np.float32)
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0], [0.0, 0.3]], np.float32)
    orders = np.array([[2, 0, 1, 3]])
    noise = np.linspace(-1, 1, n * l).reshape(1, n, l).astype(np.float32)
    mod.train_vae_epochs(flat, np.array([d, h, l]), X, orders, noise, np.ones(d, np.float32), 0.1, 3, 0.05)
    kernel = mod._train_vae_kernel
    print(json.dumps({"cache_dir": numba.config.CACHE_DIR, "hits": sum(kernel.stats.cache_hits.values()),
                      "misses": sum(kernel.stats.cache_misses.values()), "flat": flat.tolist()}))
    """
)


@pytest.mark.slow
@needs_numba
def test_jit_cache_falls_back_when_package_and_user_cache_are_unwritable(tmp_path):
    """As for the classifier kernel: a temporary cache dir is used, compiled once, then loaded."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    module = pkg / "fused_vae_copy.py"
    shutil.copy(_fused_vae.__file__, module)
    (pkg / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "xdg-cache"
    blocker.write_text("not a directory")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(blocker), TMPDIR=str(tmpdir))
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE, str(module)], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["cache_dir"].startswith(str(tmpdir))
    assert cold["misses"] == 1 and cold["hits"] == 0
    assert warm["hits"] == 1 and warm["misses"] == 0
    assert warm["flat"] == cold["flat"]


def test_fit_continues_with_a_fresh_optimizer(X):
    a = VAE(2, seed=0)
    a.fit(X, epochs=2, seed=1)
    after_first = a.flat.clone()
    b = a.clone()
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


def test_clone_and_pickle(X):
    vae = VAE(2, latent_dim=3, hidden=7, seed=0)
    vae.fit(X, epochs=1, seed=0)
    for copy_ in (vae.clone(), pickle.loads(pickle.dumps(vae))):
        assert torch.equal(copy_.flat, vae.flat)
        np.testing.assert_array_equal(copy_.reconstruct(X), vae.reconstruct(X))
        # independent: training the copy leaves the original alone, and the views follow the block
        copy_.fit(X, epochs=1, seed=1)
        assert not torch.equal(copy_.flat, vae.flat)
        assert copy_.params["out_b"].data_ptr() >= copy_.flat.data_ptr()
        assert torch.equal(copy_.scale_, vae.scale_)


def test_bad_arguments(X):
    with pytest.raises(ValueError, match="'latent_dim' parameter of VAE must be an int in the range \\[1, inf\\)"):
        VAE(2, latent_dim=0, seed=0)
    vae = VAE(2, seed=0)
    with pytest.raises(ValueError, match="'X' parameter of VAE.fit must be an array of shape \\(n_samples, 2\\)"):
        vae.fit(np.zeros((4, 3)), epochs=1, seed=0)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        vae.fit(bad, epochs=1, seed=0)
    with pytest.raises(ValueError, match="'epochs' parameter"):
        vae.fit(X, epochs=-1, seed=0)
    with pytest.raises(TypeError, match="'seed' parameter"):
        vae.fit(X, epochs=1, seed="x")
    both = r"'epochs' parameter of VAE.fit must be an int in the range \[0, inf\)\. Got 1\.5 instead\. .*'lr' parameter"
    with pytest.raises(ValueError, match=both):
        vae.fit(X, epochs=1.5, seed=0, lr=0.0)
    with pytest.raises(ValueError, match="The 'device' parameter of VAE.fit must be None, or a torch device"):
        vae.fit(X, epochs=1, seed=0, device="gpu")
    with pytest.raises(TypeError, match="The 'device' parameter of VAE.fit"):
        vae.fit(X, epochs=1, seed=0, device=3)
    assert vae.scale_ is None  # nothing was trained
