"""The fused numba training kernel (recourse_ray.models._fused) against independent computations.

Reference points: the eager torch path (``backend="torch"``, ``torch.optim.Adam``) for
whole trainings, and Adam steps written out by hand in float64 numpy for single steps.
Dropout masks cannot equal torch's, so dropout is checked by hand on one step (dropped
units get exactly zero gradient) and statistically on a learnable problem.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from recourse_ray.models import FeedForwardClassifier, create
from recourse_ray.models import _fused

pytestmark = pytest.mark.skipif(not _fused.AVAILABLE, reason=f"fused kernel unavailable: {_fused.UNAVAILABLE_REASON}")

LOSS_RTOL = 1e-4
PROBA_ATOL = 1e-5


def blobs(n: int, d: int, *, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs in ``d`` dimensions (a learnable binary problem)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    centres = rng.normal(size=(2, d))
    X = centres[y.astype(int)] + spread * rng.normal(size=(n, d))
    return X.astype(np.float32), y


def pair(name: str, input_dim: int, seed: int = 3, **params):
    """The same model twice (same initial weights), once per training backend."""
    eager = create(name, input_dim=input_dim, seed=seed, backend="torch", **params)
    fused = create(name, input_dim=input_dim, seed=seed, backend="fused", **params)
    np.testing.assert_array_equal(eager.params.numpy(), fused.params.numpy())
    return eager, fused


# ---------------------------------------------------------------- equivalence with torch
MODEL_CASES = [
    ("logistic_regression", 2, {}),
    ("mlp", 2, {}),  # 2-32-1, the paper's synthetic MLP
    ("mlp", 33, {"hidden": [64, 64]}),  # the real-world MLP shape
    ("deep_ensemble", 2, {}),  # 5 members of 2-32-1
]


@pytest.mark.parametrize("batch_size", [1, 32])
@pytest.mark.parametrize("name,input_dim,params", MODEL_CASES, ids=lambda c: str(c))
def test_fused_equals_torch_without_dropout(name, input_dim, params, batch_size):
    # Batch 1 runs the one-row kernel, batch 32 the minibatch kernel; 65 rows: at batch 32
    # every epoch ends with a batch of one row.
    X, y = blobs(65 if batch_size > 1 else 40, input_dim, seed=1)
    eager, fused = pair(name, input_dim, **params)
    assert eager.training_backend() == "torch" and fused.training_backend() == "fused"
    losses_t = eager.fit(X, y, epochs=3, batch_size=batch_size, seed=11, lr=1e-2)
    losses_f = fused.fit(X, y, epochs=3, batch_size=batch_size, seed=11, lr=1e-2)
    assert losses_f.shape == losses_t.shape == (eager.n_members, 3)
    assert losses_f.dtype == np.float64
    np.testing.assert_allclose(losses_f, losses_t, rtol=LOSS_RTOL)
    assert not np.allclose(losses_t[:, 0], losses_t[:, -1])  # training did something
    np.testing.assert_allclose(fused.predict_proba(X), eager.predict_proba(X), rtol=0, atol=PROBA_ATOL)
    np.testing.assert_allclose(fused.params.numpy(), eager.params.numpy(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the two kernels agree
def minibatch_kernel_at_batch_size_1(params, layer_sizes, X, y, orders, lr, dropout, seeds):
    """The minibatch kernel on one row per step (``train_epochs`` runs the one-row kernel there)."""
    losses = np.zeros((params.shape[0], orders.shape[1]))
    bias_correction1, bias_correction2_sqrt = _fused._bias_corrections(orders.shape[1] * orders.shape[2])
    _fused._train_minibatch_kernel(
        params, layer_sizes, X, y, orders, 1, lr, dropout, _fused._keep_threshold(dropout), seeds,
        bias_correction1, bias_correction2_sqrt, losses,
    )
    return losses


KERNEL_CASES = [(2, (), 1), (2, (32,), 1), (33, (64, 64), 1), (2, (32,), 5)]  # (inputs, hidden, members)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("input_dim,hidden,n_members", KERNEL_CASES, ids=lambda c: str(c))
def test_one_row_kernel_equals_minibatch_kernel_at_batch_size_1(input_dim, hidden, n_members, dropout):
    """Same numbers whichever kernel runs a batch of one row: same sums, same dropout stream."""
    X, y = blobs(40, input_dim, seed=8)
    model = FeedForwardClassifier(input_dim, hidden=hidden, n_members=n_members, dropout=dropout, seed=5)
    sizes = np.array(model.layer_sizes, np.int64)
    rng = np.random.default_rng(3)
    orders = np.stack([np.stack([rng.permutation(40) for _ in range(3)]) for _ in range(n_members)])
    seeds = np.arange(11, 11 + n_members, dtype=np.uint64)
    start = model.params.numpy().copy()
    one_row, minibatch = start.copy(), start.copy()
    losses_one_row = _fused.train_epochs(one_row, sizes, X, y, orders, 1, 1e-2, dropout, seeds)
    losses_minibatch = minibatch_kernel_at_batch_size_1(minibatch, sizes, X, y, orders, 1e-2, dropout, seeds)
    np.testing.assert_allclose(losses_one_row, losses_minibatch, rtol=1e-5, atol=0)
    np.testing.assert_allclose(one_row, minibatch, rtol=0, atol=1e-6)
    assert np.abs(one_row - start).max() > 1e-2  # 120 Adam steps at lr 1e-2 moved the weights
    if dropout and hidden:  # the masks were applied (same stream in both kernels, checked above)
        no_dropout = start.copy()
        _fused.train_epochs(no_dropout, sizes, X, y, orders, 1, 1e-2, 0.0, seeds)
        assert np.abs(no_dropout - one_row).max() > 1e-3


def test_train_epochs_picks_the_kernel_by_rows_per_step(monkeypatch):
    ran = []
    for name in ("_train_one_row_kernel", "_train_minibatch_kernel"):
        kernel = getattr(_fused, name)
        monkeypatch.setattr(_fused, name, lambda *args, _kernel=kernel, _name=name: (ran.append(_name), _kernel(*args)))
    X, y = blobs(6, 2, seed=0)
    sizes = np.array([2, 4, 1], np.int64)
    for rows, batch_size in ((6, 1), (6, 2), (6, 6), (1, 4)):
        params = np.zeros((1, 17), np.float32)
        orders = np.arange(rows, dtype=np.int64).reshape(1, 1, rows)
        _fused.train_epochs(params, sizes, X[:rows], y[:rows], orders, batch_size, 1e-3, 0.0, np.zeros(1, np.uint64))
    # A single row of data is one row per step at any batch size.
    one_row, minibatch = "_train_one_row_kernel", "_train_minibatch_kernel"
    assert ran == [one_row, minibatch, minibatch, one_row]


def test_members_are_independent():
    """Member 2 of an ensemble trains exactly like a one-member model given its weights and orders."""
    X, y = blobs(40, 2, seed=2)
    ens = FeedForwardClassifier(2, hidden=(8,), n_members=3, backend="fused", seed=4)
    params = ens.params.numpy().copy()
    rng = np.random.default_rng(0)
    orders = np.stack([np.stack([rng.permutation(40) for _ in range(2)]) for _ in range(3)])
    seeds = np.array([1, 2, 3], dtype=np.uint64)
    sizes = np.array([2, 8, 1], dtype=np.int64)
    losses = _fused.train_epochs(params, sizes, X, y, orders, 4, 1e-2, 0.0, seeds)
    single = ens.params.numpy()[2:3].copy()
    single_losses = _fused.train_epochs(single, sizes, X, y, orders[2:3], 4, 1e-2, 0.0, seeds[2:3])
    np.testing.assert_array_equal(params[2:3], single)
    np.testing.assert_array_equal(losses[2:3], single_losses)


# ---------------------------------------------------------------- hand-computed Adam steps
def adam_steps_by_hand(theta, grads, lr):
    """torch.optim.Adam (default betas/eps, fresh state) applied to a list of gradients, float64."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        m_hat = m / (1 - 0.9**t)
        v_hat = v / (1 - 0.999**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return theta


def test_two_adam_steps_of_logistic_regression_by_hand():
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0]], dtype=np.float32)
    y = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    w0 = np.array([0.3, -0.2, 0.1])  # W (1, 2) row-major, then b
    params = w0.astype(np.float32)[None, :].copy()
    order = np.array([[[2, 0, 1]]], dtype=np.int64)  # batches [2, 0] and [1]
    lr = 0.05
    losses = _fused.train_epochs(
        params, np.array([2, 1], np.int64), X, y, order, 2, lr, 0.0, np.zeros(1, np.uint64)
    )

    Xd, yd = X.astype(np.float64), y.astype(np.float64)
    theta, batch_losses, grads = w0.copy(), [], []
    for rows in ([2, 0], [1]):
        z = Xd[rows] @ theta[:2] + theta[2]
        p = 1 / (1 + np.exp(-z))
        batch_losses.append(np.mean(-(yd[rows] * np.log(p) + (1 - yd[rows]) * np.log(1 - p))))
        r = (p - yd[rows]) / len(rows)
        g = np.concatenate([Xd[rows].T @ r, [r.sum()]])
        theta = adam_steps_by_hand(w0, grads + [g], lr)  # Adam from w0 over all gradients so far
        grads.append(g)
    np.testing.assert_allclose(losses, [[np.mean(batch_losses)]], rtol=1e-6)
    np.testing.assert_allclose(params[0], theta, rtol=0, atol=1e-6)
    # The first step of Adam moves every parameter by lr (|m_hat / sqrt(v_hat)| = 1).
    assert np.abs(theta - w0).max() > lr


@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_dropout_step_by_hand(batch_size):
    """A 2-8-1 MLP, one step with dropout 0.5: the kernel uses its mask stream as documented."""
    hidden, p_drop, seed, lr = 8, 0.5, 12345, 0.01
    model = FeedForwardClassifier(2, hidden=(hidden,), dropout=p_drop, backend="fused", seed=7)
    model.params[0, 2 * hidden : 3 * hidden] = torch.linspace(1.0, 1.5, hidden)  # |W1 x| < 1: all ReLUs active
    theta0 = model.params.numpy()[0].astype(np.float64).copy()
    X = np.array([[0.7, -0.4], [-0.2, 0.9], [0.5, 0.5]], dtype=np.float32)[:batch_size]
    y = np.array([1.0, 0.0, 1.0], dtype=np.float32)[:batch_size]
    losses = _fused.train_epochs(
        model.params.numpy(), np.array([2, hidden, 1], np.int64), X, y,
        np.arange(batch_size, dtype=np.int64).reshape(1, 1, -1), batch_size, lr, p_drop,
        np.array([seed], np.uint64),
    )
    # Decisions are drawn per (unit, row), row fastest: keep[j, b] = stream[j * batch + b].
    keep = _fused.dropout_keep_mask(seed, hidden * batch_size, p_drop).reshape(hidden, batch_size).T
    assert 0 < keep.sum() < keep.size  # the check below needs both kinds of units

    W1 = theta0[: 2 * hidden].reshape(hidden, 2)
    b1 = theta0[2 * hidden : 3 * hidden]
    W2 = theta0[3 * hidden : 4 * hidden]
    b2 = theta0[4 * hidden]
    Xd, yd = X.astype(np.float64), y.astype(np.float64)
    z1 = Xd @ W1.T + b1  # (B, H)
    assert np.all(z1 > 0)
    scale = keep / (1 - p_drop)
    h = z1 * scale
    z2 = h @ W2 + b2  # (B,)
    loss = np.mean(np.logaddexp(0, z2) - yd * z2)
    dz2 = (1 / (1 + np.exp(-z2)) - yd) / batch_size
    dz1 = np.outer(dz2, W2) * scale  # (B, H)
    g = np.concatenate([(dz1.T @ Xd).ravel(), dz1.sum(0), dz2 @ h, [dz2.sum()]])
    expected = adam_steps_by_hand(theta0, [g], lr)
    np.testing.assert_allclose(losses[0, 0], loss, rtol=1e-6)
    np.testing.assert_allclose(model.params.numpy()[0], expected, rtol=0, atol=1e-6)
    # A unit dropped for every row gets no gradient: its incoming weights stay put.
    dropped = ~keep.any(axis=0)
    W1_after = model.params.numpy()[0, : 2 * hidden].reshape(hidden, 2)
    np.testing.assert_array_equal(W1_after[dropped], W1[dropped].astype(np.float32))
    assert np.all(W1_after[~dropped] != W1[~dropped].astype(np.float32))


# ---------------------------------------------------------------- dropout, statistically
@pytest.mark.parametrize("p_drop", [0.1, 0.5])
def test_mask_stream_keep_rate(p_drop):
    n = 200_000
    sd = np.sqrt(p_drop * (1 - p_drop) / n)
    rates = [_fused.dropout_keep_mask(seed, n, p_drop).mean() for seed in (0, 1, 2**63 - 2)]
    for rate in rates:
        assert abs(rate - (1 - p_drop)) < 5 * sd
    first = _fused.dropout_keep_mask(0, n, p_drop)
    np.testing.assert_array_equal(first, _fused.dropout_keep_mask(0, n, p_drop))  # deterministic
    assert (first != _fused.dropout_keep_mask(1, n, p_drop)).mean() > 0.5 * 2 * p_drop * (1 - p_drop)
    # Consecutive decisions are uncorrelated (lag-1 correlation near zero).
    a = first.astype(np.float64)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(n)


def test_dropout_training_matches_torch_statistically_and_changes_the_result():
    X, y = blobs(120, 2, seed=5, spread=0.6)
    finals = {}
    for backend in ("torch", "fused"):
        per_seed = []
        for seed in (0, 1):
            model = create("mlp", input_dim=2, seed=seed, backend=backend, dropout=0.1)
            losses = model.fit(X, y, epochs=8, batch_size=8, seed=100 + seed, lr=1e-2)
            per_seed.append(losses[0, -1])
        finals[backend] = np.mean(per_seed)
    initial = np.log(2.0)
    assert finals["torch"] < 0.5 * initial and finals["fused"] < 0.5 * initial
    assert abs(finals["fused"] - finals["torch"]) < 0.25 * finals["torch"] + 0.02

    with_dropout = create("mlp", input_dim=2, seed=0, backend="fused", dropout=0.1)
    without = create("mlp", input_dim=2, seed=0, backend="fused", dropout=0.0)
    lw = with_dropout.fit(X, y, epochs=2, batch_size=8, seed=9, lr=1e-2)
    lo = without.fit(X, y, epochs=2, batch_size=8, seed=9, lr=1e-2)
    assert np.abs(with_dropout.params.numpy() - without.params.numpy()).max() > 1e-3
    assert not np.allclose(lw, lo)
    # Same seed, same masks: the fused dropout path is deterministic.
    again = create("mlp", input_dim=2, seed=0, backend="fused", dropout=0.1)
    again.fit(X, y, epochs=2, batch_size=8, seed=9, lr=1e-2)
    np.testing.assert_array_equal(again.params.numpy(), with_dropout.params.numpy())


# ---------------------------------------------------------------- integration with the model
def test_fit_twice_continues_training_with_fresh_adam_state():
    X, y = blobs(50, 2, seed=6)
    eager, fused = pair("mlp", 2, hidden=[16])
    before = fused.params.numpy().copy()
    for model in (eager, fused):
        model.fit(X, y, epochs=2, batch_size=4, seed=1, lr=1e-2)
    after_first = fused.params.numpy().copy()
    for model in (eager, fused):
        model.fit(X, y, epochs=2, batch_size=4, seed=2, lr=1e-2)
    assert np.abs(after_first - before).max() > 1e-3
    assert np.abs(fused.params.numpy() - after_first).max() > 1e-3
    # torch builds a new Adam optimizer per fit: equality means the kernel resets its state too.
    np.testing.assert_allclose(fused.params.numpy(), eager.params.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused.last_fit_losses_, eager.last_fit_losses_, rtol=LOSS_RTOL)


def test_fit_updates_the_params_tensor_in_place():
    X, y = blobs(30, 2, seed=7)
    model = create("logistic_regression", input_dim=2, seed=0, backend="fused")
    tensor, ptr = model.params, model.params.data_ptr()
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    with torch.no_grad():
        logits_before = model.logits(x).clone()
    model.fit(X, y, epochs=3, batch_size=1, seed=0, lr=1e-2)
    assert model.params is tensor and model.params.data_ptr() == ptr
    assert model.params.dtype == torch.float32 and not model.params.requires_grad
    W, b = model.params.numpy()[0, :2].astype(np.float64), float(model.params.numpy()[0, 2])
    with torch.no_grad():
        logits_after = model.logits(x)
    np.testing.assert_allclose(logits_after.numpy(), x.numpy() @ W + b, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(logits_after, logits_before)


def test_fused_backend_is_the_default_when_available():
    model = create("mlp", input_dim=2, seed=0)
    assert model.backend == "auto" and model.training_backend() == model.training_backend(32) == "fused"


def test_auto_backend_leaves_wide_large_steps_to_torch(monkeypatch):
    from recourse_ray.models._feedforward import TORCH_MIN_STEP_MACS, TORCH_MIN_WIDTH

    # The study's models (hidden layers of at most 64) stay fused at every batch size.
    for name, d, params in MODEL_CASES + [("deep_ensemble", 33, {"hidden": [64, 64]})]:
        assert create(name, input_dim=d, seed=0, **params).training_backend(10**6) == "fused"
    wide = create("mlp", input_dim=33, seed=0, hidden=[TORCH_MIN_WIDTH, 16])
    per_row = wide.params.shape[1]  # multiply-adds per row and step (one member)
    largest_fused = (TORCH_MIN_STEP_MACS - 1) // per_row
    assert wide.training_backend(1) == wide.training_backend(largest_fused) == "fused"
    assert wide.training_backend(largest_fused + 1) == "torch"
    narrower = create("mlp", input_dim=33, seed=0, hidden=[TORCH_MIN_WIDTH - 1], backend="auto")
    assert narrower.training_backend(10**6) == "fused"
    forced = create("mlp", input_dim=33, seed=0, hidden=[TORCH_MIN_WIDTH, 16], backend="fused")
    assert forced.training_backend(10 * largest_fused) == "fused"

    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel must not run here")

    monkeypatch.setattr(_fused, "train_epochs", refuse)
    X, y = blobs(largest_fused + 1, 33, seed=0)
    wide.fit(X, y, epochs=1, batch_size=len(X), seed=0)  # one torch step: no error
    with pytest.raises(AssertionError, match="must not run"):
        wide.fit(X, y, epochs=1, batch_size=len(X) - 1, seed=0)


def test_unavailable_kernel_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(_fused, "AVAILABLE", False)
    monkeypatch.setattr(_fused, "UNAVAILABLE_REASON", "numba could not be imported (test)")
    auto = create("mlp", input_dim=2, seed=0)
    assert auto.training_backend() == "torch"
    X, y = blobs(10, 2, seed=0)
    assert auto.fit(X, y, epochs=1, batch_size=2, seed=0).shape == (1, 1)
    message = r"fused training backend is unavailable: numba could not be imported \(test\)"
    with pytest.raises(RuntimeError, match=message):
        create("mlp", input_dim=2, seed=0, backend="fused").training_backend()
    with pytest.raises(RuntimeError, match=message):
        _fused.warm_up()


# ---------------------------------------------------------------- argument checks
def test_train_epochs_rejects_bad_arguments():
    sizes = np.array([2, 1], np.int64)
    X = np.zeros((4, 2), np.float32)
    y = np.zeros(4, np.float32)
    orders = np.zeros((1, 1, 4), np.int64)
    seeds = np.zeros(1, np.uint64)
    params = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="params must be C-contiguous and writable"):
        _fused.train_epochs(np.zeros((1, 6), np.float32)[:, ::2], sizes, X, y, orders, 1, 1e-3, 0.0, seeds)
    with pytest.raises(ValueError, match=r"params has 3 columns; layer_sizes \[2, 4, 1\] need 17"):
        _fused.train_epochs(params, np.array([2, 4, 1]), X, y, orders, 1, 1e-3, 0.0, seeds)
    with pytest.raises(ValueError, match=r"orders contains row indices outside \[0, n\)"):
        _fused.train_epochs(params, sizes, X, y, orders + 4, 1, 1e-3, 0.0, seeds)
    both = r"batch_size must be an int >= 1; got 0.*dropout must be a float in \[0, 1\); got 1.0"
    with pytest.raises(ValueError, match=both):
        _fused.train_epochs(params, sizes, X, y, orders, 0, 1e-3, 1.0, seeds)
    assert np.all(params == 0)


# ---------------------------------------------------------------- JIT cache fallback
_CACHE_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    import fused_copy as mod
    import numba
    params = np.array([[0.3, -0.2, 0.1]], np.float32)
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0]], np.float32)
    y = np.array([1.0, 0.0, 1.0], np.float32)
    result = {"cache_dir": numba.config.CACHE_DIR}
    for batch_size, kernel in ((1, mod._train_one_row_kernel), (2, mod._train_minibatch_kernel)):
        p = params.copy()
        mod.train_epochs(p, np.array([2, 1]), X, y, np.array([[[2, 0, 1]]]), batch_size, 0.05, 0.0,
                         np.zeros(1, np.uint64))
        result[batch_size] = {"hits": sum(kernel.stats.cache_hits.values()),
                              "misses": sum(kernel.stats.cache_misses.values()), "params": p.tolist()}
    print(json.dumps(result))
    """
)


def test_jit_cache_falls_back_when_package_and_user_cache_are_unwritable(tmp_path):
    """Neither ``__pycache__`` nor the user cache can be created: a temp cache dir is used."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    module = pkg / "fused_copy.py"
    shutil.copy(_fused.__file__, module)
    (pkg / "__pycache__").write_text("not a directory")  # works even for root, unlike chmod
    blocker = tmp_path / "xdg-cache"
    blocker.write_text("not a directory")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(blocker), TMPDIR=str(tmpdir))

    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE, str(module)], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["cache_dir"].startswith(str(tmpdir))
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cold["cache_dir"]) for name in files)
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0]], np.float32)
    y = np.array([1.0, 0.0, 1.0], np.float32)
    for batch_size in ("1", "2"):  # json keys: the one-row kernel, the minibatch kernel
        assert cold[batch_size]["misses"] == 1 and cold[batch_size]["hits"] == 0
        assert warm[batch_size]["hits"] == 1 and warm[batch_size]["misses"] == 0
        assert warm[batch_size]["params"] == cold[batch_size]["params"]
        # The copy computes what the package's kernel computes.
        params = np.array([[0.3, -0.2, 0.1]], np.float32)
        _fused.train_epochs(params, np.array([2, 1]), X, y, np.array([[[2, 0, 1]]]), int(batch_size), 0.05, 0.0,
                            np.zeros(1, np.uint64))
        np.testing.assert_array_equal(np.array(cold[batch_size]["params"], np.float32), params)
    assert cold["1"]["params"] != cold["2"]["params"]  # three steps against two
