"""The ensemble kernel of recourse_ray.models._fused against independent computations.

At batch size 1, ``train_epochs`` trains the members of an ensemble together
(``_train_ensemble_kernel``). The references here do not use that kernel: a float32
numpy training loop written out in this file (every member side by side, sums in the
documented order, dropout masks from ``dropout_keep_mask``), the eager torch path, and
the one-row kernel, which trains the members one after another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from recourse_ray.models import FeedForwardClassifier, create
from recourse_ray.models import _fused

pytestmark = pytest.mark.skipif(not _fused.AVAILABLE, reason=f"fused kernel unavailable: {_fused.UNAVAILABLE_REASON}")

F32 = np.float32


def blobs(n: int, d: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs in ``d`` dimensions (a learnable binary problem)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    X = rng.normal(size=(2, d))[y.astype(int)] + rng.normal(size=(n, d))
    return X.astype(np.float32), y


def training_arguments(input_dim, hidden, n_members, *, rows, epochs, seed=0, dropout=0.0):
    """Initial weights, layer sizes, data, row orders and dropout seeds of one training call."""
    X, y = blobs(rows, input_dim, seed=seed)
    model = FeedForwardClassifier(input_dim, hidden=hidden, n_members=n_members, dropout=dropout, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    orders = np.stack([np.stack([rng.permutation(rows) for _ in range(epochs)]) for _ in range(n_members)])
    seeds = rng.integers(0, 2**63 - 1, size=n_members).astype(np.uint64)
    return model.params.numpy().copy(), np.array(model.layer_sizes, np.int64), X, y, orders, seeds


def numpy_training(params, sizes, X, y, orders, lr, dropout, seeds):
    """Batch-1 Adam on BCE with logits, written out in float32 numpy; returns (params, losses).

    All members side by side (every operation is element-wise across members). Each
    output sums its inputs in input order, then adds the bias; the error of an input
    sums over the outputs in output order; Adam as torch.optim.Adam (fresh state, bias
    correction); dropout keeps unit u of a step when decision ``step * hidden + u`` of the
    member's stream (``dropout_keep_mask``) says so.
    """
    n_members, n_layers = params.shape[0], len(sizes) - 1
    weights, biases, offset = [], [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(params[:, offset : offset + fan_in * fan_out].reshape(n_members, fan_out, fan_in).copy())
        offset += fan_in * fan_out
        biases.append(params[:, offset : offset + fan_out].copy())
        offset += fan_out
    tensors = weights + biases
    moments = [(np.zeros_like(t), np.zeros_like(t)) for t in tensors]
    n_epochs, n = orders.shape[1], orders.shape[2]
    hidden = int(sum(sizes[1:-1]))
    if dropout:
        keep = np.stack([_fused.dropout_keep_mask(int(s), n_epochs * n * hidden, dropout) for s in seeds])
    keep_scale = F32(1.0) / F32(1.0 - dropout)
    losses = np.zeros((n_members, n_epochs))
    step = 0
    for e in range(n_epochs):
        for s in range(n):
            rows = orders[:, e, s]
            a = X[rows]
            inputs, mults, drawn = [a], [], step * hidden
            for l in range(n_layers):
                z = np.zeros((n_members, sizes[l + 1]), F32)
                for i in range(sizes[l]):
                    z = z + weights[l][:, :, i] * a[:, i : i + 1]
                z = z + biases[l]
                if l == n_layers - 1:
                    logit = z[:, 0]
                    break
                scale = np.ones_like(z)
                if dropout:
                    scale = np.where(keep[:, drawn : drawn + z.shape[1]], keep_scale, F32(0.0))
                drawn += z.shape[1]
                a = np.where(z > 0, z * scale, F32(0.0))
                mults.append(np.where(z > 0, scale, F32(0.0)))
                inputs.append(a)
            target = y[rows]
            ez = np.exp(-np.abs(logit))
            losses[:, e] += ((F32(1.0) - target) * logit - (np.minimum(logit, F32(0.0)) - np.log1p(ez))).astype(float)
            d = (np.where(logit >= 0, F32(1.0) / (F32(1.0) + ez), ez / (F32(1.0) + ez)) - target)[:, None]
            grads_w, grads_b = [None] * n_layers, [None] * n_layers
            for l in range(n_layers - 1, -1, -1):
                grads_w[l] = d[:, :, None] * inputs[l][:, None, :]
                grads_b[l] = d
                if l > 0:
                    d_in = np.zeros((n_members, sizes[l]), F32)
                    for j in range(sizes[l + 1]):
                        d_in = d_in + weights[l][:, j, :] * d[:, j : j + 1]
                    d = d_in * mults[l - 1]
            t = step + 1
            neg_step = F32(-(lr / (1.0 - 0.9**t)))
            bias_correction2_sqrt = F32((1.0 - 0.999**t) ** 0.5)
            for tensor, grad, (exp_avg, exp_avg_sq) in zip(tensors, grads_w + grads_b, moments):
                exp_avg[...] = exp_avg + F32(1.0 - 0.9) * (grad - exp_avg)
                exp_avg_sq[...] = exp_avg_sq * F32(0.999) + F32(1.0 - 0.999) * grad * grad
                tensor[...] = tensor + neg_step * exp_avg / (np.sqrt(exp_avg_sq) / bias_correction2_sqrt + F32(1e-8))
            step += 1
        losses[:, e] /= n
    flat = [np.concatenate([w.reshape(n_members, -1), b], axis=1) for w, b in zip(weights, biases)]
    return np.concatenate(flat, axis=1), losses


# ---------------------------------------------------------------- against numpy
@pytest.mark.parametrize(
    "input_dim,hidden,n_members,dropout",
    [
        (2, (32,), 5, 0.1),  # the synthetic deep ensemble
        (33, (64, 64), 5, 0.1),  # the real-world deep ensemble
        (2, (), 5, 0.0),  # logistic regressions
        (3, (7, 17, 5), 3, 0.3),  # odd widths, three hidden layers
        (1, (1,), 8, 0.0),  # the widest group, a single hidden unit
        (4, (9,), 2, 0.5),
    ],
    ids=str,
)
def test_ensemble_kernel_equals_a_numpy_training_loop(input_dim, hidden, n_members, dropout):
    start, sizes, X, y, orders, seeds = training_arguments(input_dim, hidden, n_members, rows=48, epochs=3,
                                                           dropout=dropout)
    params = start.copy()
    losses = _fused.train_epochs(params, sizes, X, y, orders, 1, 1e-2, dropout, seeds)
    expected, expected_losses = numpy_training(start, sizes, X, y, orders, 1e-2, dropout, seeds)
    # numpy's float32 exp/log1p may round differently from the kernel's: not bit for bit.
    np.testing.assert_allclose(params, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert np.abs(params - start).max() > 1e-2  # 144 Adam steps at lr 1e-2 moved the weights
    if dropout and hidden:
        no_dropout = start.copy()
        _fused.train_epochs(no_dropout, sizes, X, y, orders, 1, 1e-2, 0.0, seeds)
        assert np.abs(no_dropout - params).max() > 1e-3


def test_ensemble_kernel_equals_numpy_on_500_rows():
    """The study-sized check: 3 epochs of 500 rows, 5 x 33-64-64-1 with dropout 0.1."""
    start, sizes, X, y, orders, seeds = training_arguments(33, (64, 64), 5, rows=500, epochs=3, dropout=0.1)
    params = start.copy()
    _fused.train_epochs(params, sizes, X, y, orders, 1, 1e-3, 0.1, seeds)
    expected, _ = numpy_training(start, sizes, X, y, orders, 1e-3, 0.1, seeds)
    np.testing.assert_allclose(params, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- against torch
@pytest.mark.parametrize("input_dim,hidden", [(2, [32]), (33, [64, 64])], ids=str)
def test_ensemble_kernel_equals_torch_without_dropout(input_dim, hidden):
    X, y = blobs(40, input_dim, seed=1)
    eager = create("deep_ensemble", input_dim=input_dim, hidden=hidden, seed=3, backend="torch")
    fused = create("deep_ensemble", input_dim=input_dim, hidden=hidden, seed=3, backend="fused")
    assert fused.n_members == 5
    losses_t = eager.fit(X, y, epochs=3, batch_size=1, seed=11, lr=1e-2)
    losses_f = fused.fit(X, y, epochs=3, batch_size=1, seed=11, lr=1e-2)
    np.testing.assert_allclose(losses_f, losses_t, rtol=1e-4)
    np.testing.assert_allclose(fused.params.numpy(), eager.params.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused.predict_proba(X), eager.predict_proba(X), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- against the one-row kernel
ONE_AFTER_ANOTHER_CASES = [
    (2, (32,), 5, 0.0), (33, (64, 64), 5, 0.1), (2, (), 5, 0.0), (33, (64, 64), 3, 0.0), (4, (7, 9, 3), 8, 0.3),
    (2, (32,), 2, 0.1), (5, (17, 33), 13, 0.2), (1, (1,), 4, 0.0), (3, (40,), 10, 0.5), (6, (16, 8), 7, 0.0),
]


@pytest.mark.parametrize("input_dim,hidden,n_members,dropout", ONE_AFTER_ANOTHER_CASES, ids=str)
def test_ensemble_kernel_equals_members_trained_one_after_another(input_dim, hidden, n_members, dropout):
    """Bit for bit what the one-row kernel computes member by member, for 2-13 members (groups of <= 8)."""
    start, sizes, X, y, orders, seeds = training_arguments(input_dim, hidden, n_members, rows=30, epochs=2,
                                                           dropout=dropout)
    together = start.copy()
    losses = _fused.train_epochs(together, sizes, X, y, orders, 1, 1e-2, dropout, seeds)
    one_by_one = start.copy()
    corrections = _fused._bias_corrections(orders.shape[1] * orders.shape[2])
    expected_losses = np.zeros_like(losses)
    _fused._train_one_row_kernel(one_by_one, sizes, X, y, orders, 1e-2, dropout, _fused._keep_threshold(dropout),
                                 seeds, *corrections, expected_losses)
    np.testing.assert_array_equal(together, one_by_one)
    np.testing.assert_array_equal(losses, expected_losses)
    assert np.abs(together - start).max() > 1e-3


def test_members_of_an_ensemble_are_independent():
    """Member 3 of seven trained together ends where it ends trained with two others."""
    start, sizes, X, y, orders, seeds = training_arguments(3, (12, 6), 7, rows=25, epochs=2, dropout=0.2)
    seven = start.copy()
    _fused.train_epochs(seven, sizes, X, y, orders, 1, 1e-2, 0.2, seeds)
    three = start[2:5].copy()
    _fused.train_epochs(three, sizes, X, y, orders[2:5], 1, 1e-2, 0.2, seeds[2:5])
    np.testing.assert_array_equal(seven[2:5], three)


# ---------------------------------------------------------------- dispatch
def test_train_epochs_runs_the_ensemble_kernel_for_several_members_at_one_row_per_step(monkeypatch):
    ran = []
    for name in ("_train_one_row_kernel", "_train_minibatch_kernel", "_train_ensemble_kernel"):
        kernel = getattr(_fused, name)

        def spy(*args, _kernel=kernel, _name=name):
            ran.append((_name, args[0].shape[0]))
            return _kernel(*args)

        monkeypatch.setattr(_fused, name, spy)
    X, y = blobs(6, 2, seed=0)
    sizes = np.array([2, 4, 1], np.int64)
    for members, batch_size in ((1, 1), (5, 1), (5, 2), (17, 1)):
        params = np.zeros((members, 17), np.float32)
        orders = np.tile(np.arange(6, dtype=np.int64), (members, 1, 1))
        _fused.train_epochs(params, sizes, X, y, orders, batch_size, 1e-3, 0.0, np.zeros(members, np.uint64))
    ensemble = "_train_ensemble_kernel"
    assert ran == [("_train_one_row_kernel", 1), (ensemble, 5), ("_train_minibatch_kernel", 5),
                   (ensemble, 6), (ensemble, 5), (ensemble, 6)]


def test_member_groups_are_balanced_and_cover_every_member():
    for n_members in range(2, 40):
        groups = _fused._member_groups(n_members)
        assert groups[0][0] == 0 and groups[-1][1] == n_members
        assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
        sizes = [stop - start for start, stop in groups]
        assert max(sizes) <= 8 and max(sizes) - min(sizes) <= 1
        assert len(groups) == -(-n_members // 8)


def test_warm_up_runs_the_ensemble_kernel_for_the_group_size(monkeypatch):
    kernel = _fused._train_ensemble_kernel
    group_sizes = []

    def spy(*args):
        group_sizes.append(len(args[-1]))  # the lanes tuple: one entry per member
        return kernel(*args)

    monkeypatch.setattr(_fused, "_train_ensemble_kernel", spy)
    for members in (6, 1, 20):
        _fused.warm_up(ensemble_members=members)
    assert group_sizes == [6, 8]  # 1 skips the ensemble kernel; groups hold at most 8
    assert 6 in {sig[-1].count for sig in kernel.signatures}  # compiled (or loaded) for 6


# ---------------------------------------------------------------- JIT cache
_CACHE_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from recourse_ray.models import _fused
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    params = rng.normal(scale=0.3, size=(5, 3 * 4 + 4 + 4 + 1)).astype(np.float32)
    orders = np.stack([rng.permutation(9)[None] for _ in range(5)])
    _fused.train_epochs(params, np.array([3, 4, 1]), X, y, orders, 1, 0.05, 0.2, np.arange(5, dtype=np.uint64))
    kernel = _fused._train_ensemble_kernel
    print(json.dumps({"hits": sum(kernel.stats.cache_hits.values()),
                      "misses": sum(kernel.stats.cache_misses.values()), "params": params.tolist()}))
    """
)


def test_ensemble_kernel_is_cached_on_disk(tmp_path):
    """A fresh process compiles the kernel into an empty cache; the next one loads it."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(_fused.__file__)))
    path = os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=path)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert (cold["misses"], cold["hits"]) == (1, 0)
    assert (warm["misses"], warm["hits"]) == (0, 1)
    assert warm["params"] == cold["params"]
