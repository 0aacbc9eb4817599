"""The blocked MMD permutation test (recourse_ray.metrics.mmd) against independent computations.

``mmd_test`` evaluates the pooled Gaussian kernel in blocks of rows of its upper
triangle and never holds it whole. References: a plain per-permutation computation
written here (each split's statistic from its three kernel blocks, the permutations
drawn exactly as ``mmd_test`` documents), the dense path that held the pooled kernel
(rebuilt here from ``gaussian_kernel`` and ``_indicator_mmds``), and properties of the
statistic.
"""

from __future__ import annotations

import math
import sys
import tracemalloc

import numpy as np
import pytest

from recourse_ray.metrics import gaussian_kernel, mmd, mmd_test

mmd_module = sys.modules["recourse_ray.metrics.mmd"]  # the package re-exports a function named mmd


def plain_mmd(x, y, lengthscale=0.5):
    """Unbiased squared MMD from the three kernel blocks, diagonals left out (Gretton et al. 2012, eq. 3)."""
    def kernel(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        return np.exp(-d2 / (2.0 * lengthscale**2))

    m, n = len(x), len(y)
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    return (
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2.0 * kernel(x, y).sum() / (m * n)
    )


def plain_mmd_test(x, y, *, n_permutations, seed, lengthscale=0.5, n_samples=1000):
    """mmd_test's documented procedure, one permutation at a time, with the same random draws.

    From ``np.random.default_rng(seed)``: each side subsampled without replacement (sorted
    indices), then the splits in chunks of ``_BLOCK_ELEMENTS // N`` rows, each split a
    row-wise shuffle of the indicator ``[1] * m + [0] * n``.
    """
    rng = np.random.default_rng(seed)
    if len(x) > n_samples:
        x = x[np.sort(rng.choice(len(x), size=n_samples, replace=False))]
    if len(y) > n_samples:
        y = y[np.sort(rng.choice(len(y), size=n_samples, replace=False))]
    m, n = len(x), len(y)
    pooled = np.concatenate([x, y])
    observed = plain_mmd(x, y, lengthscale)
    if n_permutations == 0:
        return observed, math.nan
    indicator = np.zeros((1, m + n))
    indicator[0, :m] = 1.0
    chunk = max(1, min(n_permutations, mmd_module._BLOCK_ELEMENTS // (m + n)))
    null = []
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        for split in rng.permuted(np.broadcast_to(indicator, (size, m + n)), axis=1):
            first = split.astype(bool)
            null.append(plain_mmd(pooled[first], pooled[~first], lengthscale))
    extreme = np.count_nonzero(np.array(null) >= observed - 1e-12)
    return observed, (1 + extreme) / (1 + n_permutations)


def dense_mmd_test(x, y, *, n_permutations, seed, lengthscale=0.5, n_samples=1000):
    """The path that held the pooled kernel matrix (before the blocked one), from the module's dense helpers."""
    rng = np.random.default_rng(seed)
    x = mmd_module._subsample(np.asarray(x, float), n_samples, rng)
    y = mmd_module._subsample(np.asarray(y, float), n_samples, rng)
    m, N = len(x), len(x) + len(y)
    pooled = np.concatenate([x, y])
    kernel = gaussian_kernel(pooled, pooled, lengthscale)
    row_sums = kernel.sum(axis=1)
    indicator = np.zeros((1, N))
    indicator[0, :m] = 1.0
    observed = float(mmd_module._indicator_mmds(kernel, indicator, row_sums, m)[0])
    if n_permutations == 0:
        return observed, math.nan
    chunk = max(1, min(n_permutations, mmd_module._BLOCK_ELEMENTS // N))
    extreme = 0
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        splits = rng.permuted(np.broadcast_to(indicator, (size, N)), axis=1)
        null = mmd_module._indicator_mmds(kernel, splits, row_sums, m)
        extreme += int(np.count_nonzero(null >= observed - 1e-12))
    return observed, (1 + extreme) / (1 + n_permutations)


def samples(m, n, d, *, seed, shift=0.3, scale=0.4):
    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(m, d)), scale * rng.normal(size=(n, d)) + shift


# ---------------------------------------------------------------- against the plain computation
@pytest.mark.parametrize("rows_per_block", [1, 3, 7, None])
def test_blocked_statistics_equal_plain_per_permutation(monkeypatch, rows_per_block):
    """Blocks of 1, 3 and 7 rows (the last one partial) and the default (one block)."""
    x, y = samples(11, 8, 3, seed=1)
    pooled = np.concatenate([x, y])
    if rows_per_block:
        monkeypatch.setattr(mmd_module, "_KERNEL_BLOCK_ELEMENTS", rows_per_block * len(pooled))
    rng = np.random.default_rng(2)
    splits = np.zeros((25, len(pooled)))
    for row in splits:
        row[rng.permutation(len(pooled))[:11]] = 1.0
    blocked = mmd_module._blocked_indicator_mmds(pooled, splits, 11, 0.5)
    plain = [plain_mmd(pooled[s.astype(bool)], pooled[~s.astype(bool)]) for s in splits]
    np.testing.assert_allclose(blocked, plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "m,n,d,n_permutations,n_samples,seed",
    [(40, 30, 2, 200, 1000, 0), (25, 60, 5, 99, 1000, 1), (90, 70, 1, 50, 35, 2), (6, 5, 3, 300, 1000, 3)],
)
def test_mmd_test_equals_plain_per_permutation_test(m, n, d, n_permutations, n_samples, seed):
    x, y = samples(m, n, d, seed=seed)
    value, p = mmd_test(x, y, n_permutations=n_permutations, seed=seed, n_samples=n_samples)
    plain_value, plain_p = plain_mmd_test(x, y, n_permutations=n_permutations, seed=seed, n_samples=n_samples)
    assert value == pytest.approx(plain_value, abs=1e-12)
    assert p == plain_p
    assert 1 / (1 + n_permutations) <= p <= 1


def test_mmd_equals_plain_mmd_across_blocks(monkeypatch):
    x, y = samples(23, 17, 4, seed=4)
    whole = mmd(x, y)
    monkeypatch.setattr(mmd_module, "_KERNEL_BLOCK_ELEMENTS", 5 * 40)  # blocks of 5 rows
    assert mmd(x, y) == pytest.approx(whole, abs=1e-14)
    assert whole == pytest.approx(plain_mmd(x, y), abs=1e-12)


# ---------------------------------------------------------------- against the dense path
@pytest.mark.parametrize(
    "m,n,d,n_permutations,seed",
    [(300, 300, 2, 100, 0), (250, 400, 20, 100, 1), (1000, 1000, 2, 100, 2), (120, 80, 3, 1000, 3), (50, 40, 2, 0, 4)],
)
def test_mmd_test_equals_the_dense_path(m, n, d, n_permutations, seed):
    x, y = samples(m, n, d, seed=seed, shift=0.05)
    value, p = mmd_test(x, y, n_permutations=n_permutations, seed=seed)
    dense_value, dense_p = dense_mmd_test(x, y, n_permutations=n_permutations, seed=seed)
    assert value == pytest.approx(dense_value, abs=1e-12)
    assert p == dense_p or (math.isnan(p) and math.isnan(dense_p))


def test_several_passes_over_the_kernel_give_the_same_test(monkeypatch):
    """More permutations than one pass holds: the kernel is evaluated once per pass."""
    x, y = samples(30, 26, 2, seed=5, shift=0.1)
    one_pass = mmd_test(x, y, n_permutations=230, seed=7)
    monkeypatch.setattr(mmd_module, "_PASS_ELEMENTS", 56 * 40)  # 40 indicator rows per pass: 6 passes
    monkeypatch.setattr(mmd_module, "_KERNEL_BLOCK_ELEMENTS", 56 * 9)
    calls = []
    blocked_sums = mmd_module._blocked_sums
    monkeypatch.setattr(mmd_module, "_blocked_sums", lambda *a: (calls.append(a[1].shape[0]), blocked_sums(*a))[1])
    several = mmd_test(x, y, n_permutations=230, seed=7)
    assert calls == [40, 40, 40, 40, 40, 31]  # the observed split rides in the first pass
    assert several[0] == pytest.approx(one_pass[0], abs=1e-14)
    assert several[1] == one_pass[1]


# ---------------------------------------------------------------- memory
def test_mmd_test_never_allocates_the_pooled_kernel():
    """3,000 points per side: the pooled kernel alone would be 288 MB; the test stays far below."""
    x, y = samples(3000, 3000, 3, seed=6, shift=0.02)
    pooled_kernel_bytes = 6000 * 6000 * 8
    tracemalloc.start()
    try:
        value, p = mmd_test(x, y, n_permutations=20, seed=0, n_samples=3000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < pooled_kernel_bytes / 6
    assert np.isfinite(value) and 0 < p <= 1


# ---------------------------------------------------------------- properties
def test_mmd_is_symmetric_and_shift_sensitive():
    x, y = samples(200, 150, 3, seed=8)
    assert mmd(x, y) == pytest.approx(mmd(y, x), abs=1e-14)
    assert mmd_test(x, y, n_permutations=50, seed=1)[0] == pytest.approx(mmd(x, y), abs=1e-14)
    assert mmd(x, y) > 0.05
    assert mmd_test(x, y, n_permutations=50, seed=1)[1] == pytest.approx(1 / 51)


def test_mmd_is_near_zero_for_identical_and_for_exchangeable_samples():
    x, _ = samples(400, 1, 2, seed=9)
    # x against a copy of itself: -2 (1 - mean kernel) / (m - 1), a small negative number.
    same = mmd(x, x.copy())
    assert -2 / 399 <= same <= 0
    value, p = mmd_test(x, x.copy(), n_permutations=100, seed=2)
    assert value == pytest.approx(same, abs=1e-14)
    assert p > 0.5
    rng = np.random.default_rng(10)
    x, y = 0.4 * rng.normal(size=(400, 2)), 0.4 * rng.normal(size=(400, 2))
    assert abs(mmd(x, y)) < 0.01
