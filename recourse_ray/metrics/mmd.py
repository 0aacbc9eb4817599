"""Maximum mean discrepancy (MMD) and its permutation test.

The shift metrics of SPEC §6 (``domain_mmd``, ``model_mmd``, ...) compare a sample at
round 0 with a sample at the current round through the unbiased estimate of the squared
MMD with a Gaussian kernel (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012), as
the study does (Altmeyer et al., SaTML 2023, §4). Significance comes from a permutation
test.

The permutation test is the hot path of evaluation. The reference recomputes the kernel
matrix for every permutation; here the pooled kernel matrix ``K`` is computed once and
every permutation is a 0/1 indicator row ``a`` (1 = "belongs to the first sample"), so
that all within- and between-sample kernel sums come from one matrix product
``A @ K`` for a whole block of permutations:

    sum_xx = a' K a,  sum_xy = a' K (1 - a),  sum_yy = (1 - a)' K (1 - a).
"""

from __future__ import annotations

import math

import numpy as np

from recourse_ray._rng import as_rng

__all__ = ["mmd", "mmd_test", "gaussian_kernel"]

# Null statistics within this distance of the observed one count as ties (>=). Every
# term of the statistic is a mean of kernel values in [0, 1], so float64 rounding of the
# block products stays far below it; without it, exact ties (e.g. many equal
# probabilities) could be lost to rounding, as scipy.stats.permutation_test also guards.
_TIE_TOLERANCE = 1e-12

# Upper bound on the elements of one (permutations x pooled points) block; two such
# float64 blocks are alive at once, so a block costs at most ~32 MB.
_BLOCK_ELEMENTS = 1 << 21


def _as_sample(a: object, label: str, caller: str) -> np.ndarray:
    """``a`` as a float64 (n, d) array; 1-D input is (n,) -> (n, 1)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"The '{label}' parameter of {caller} must be a 1-D or 2-D array (n_samples, n_features). "
            f"Got an array of shape {arr.shape} instead."
        )
    return arr


def _check_pair(x: object, y: object, lengthscale: object, caller: str) -> tuple[np.ndarray, np.ndarray, float]:
    x = _as_sample(x, "x", caller)
    y = _as_sample(y, "y", caller)
    problems = []
    for label, arr in (("x", x), ("y", y)):
        if arr.shape[0] == 0:
            problems.append(f"'{label}' is empty (0 rows)")
        elif arr.shape[0] < 2:
            problems.append(f"'{label}' has {arr.shape[0]} row; the unbiased estimate needs at least 2 rows per side")
        if arr.size and not np.isfinite(arr).all():
            problems.append(f"'{label}' contains NaN or infinite values")
    if x.shape[1] != y.shape[1]:
        problems.append(f"'x' has {x.shape[1]} features but 'y' has {y.shape[1]}")
    if (
        isinstance(lengthscale, (bool, np.bool_))
        or not isinstance(lengthscale, (int, float, np.integer, np.floating))
        or not (math.isfinite(float(lengthscale)) and float(lengthscale) > 0)
    ):
        problems.append(f"'lengthscale' must be a finite float in the range (0, inf); got {lengthscale!r}")
    if problems:
        raise ValueError(f"Invalid arguments to {caller}: " + "; ".join(problems) + ".")
    return x, y, float(lengthscale)


def gaussian_kernel(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    """Gaussian kernel matrix ``exp(-||a_i - b_j||^2 / (2 l^2))``.

    Args:
        a: (m, d) float64. b: (n, d) float64. lengthscale: ``l > 0``.

    Returns:
        (m, n) float64. When ``a is b`` the diagonal is exactly 1.
    """
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = sq_a if b is a else np.einsum("ij,ij->i", b, b)
    d2 = sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T)
    # The expansion can dip below zero by rounding; a distance is never negative.
    np.maximum(d2, 0.0, out=d2)
    if b is a:
        np.fill_diagonal(d2, 0.0)
    d2 *= -1.0 / (2.0 * lengthscale * lengthscale)
    return np.exp(d2, out=d2)


def _mmd_from_sums(sum_xx, sum_yy, sum_xy, m: int, n: int):
    """Unbiased squared MMD from kernel sums that still include the (unit) diagonal."""
    return (sum_xx - m) / (m * (m - 1.0)) + (sum_yy - n) / (n * (n - 1.0)) - 2.0 * sum_xy / (m * float(n))


def mmd(x: np.ndarray, y: np.ndarray, *, lengthscale: float = 0.5) -> float:
    """Unbiased estimate of the squared MMD between two samples (Gretton et al. 2012, eq. 3).

    ``MMD_u^2 = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (n(n-1))
    - 2 sum_{i,j} k(x_i,y_j) / (m n)`` with ``k(a,b) = exp(-||a-b||^2 / (2 l^2))``.
    The estimate is unbiased, so it can be slightly negative when both samples come
    from the same distribution. Computed in float64.

    Args:
        x: (m, d) or (m,) first sample (1-D input is treated as (m, 1)); m >= 2.
        y: (n, d) or (n,) second sample; n >= 2, same d as ``x``.
        lengthscale: kernel lengthscale ``l`` (paper: 0.5).

    Returns:
        The estimate as a Python float.

    Raises:
        ValueError: for an empty side, a side with fewer than 2 rows, different widths,
            non-finite values or a lengthscale that is not a positive finite number.
    """
    x, y, lengthscale = _check_pair(x, y, lengthscale, "mmd")
    m, n = x.shape[0], y.shape[0]
    k_xx = gaussian_kernel(x, x, lengthscale)
    k_yy = gaussian_kernel(y, y, lengthscale)
    k_xy = gaussian_kernel(x, y, lengthscale)
    return float(_mmd_from_sums(k_xx.sum(), k_yy.sum(), k_xy.sum(), m, n))


def _permutation_mmds(kernel: np.ndarray, permutations: np.ndarray, n_x: int) -> np.ndarray:
    """MMD statistics of the pooled sample split by each permutation, without recomputing kernels.

    Permutation ``p`` assigns pooled points ``permutations[p, :n_x]`` to the first
    sample and the rest to the second, as ``mmd(Z[perm[:n_x]], Z[perm[n_x:]])`` would.

    Args:
        kernel: (N, N) float64 pooled kernel matrix with unit diagonal.
        permutations: (P, N) integer array; each row a permutation of ``0..N-1``.
        n_x: size of the first sample, 2 <= n_x <= N - 2.

    Returns:
        (P,) float64 statistics.
    """
    N = kernel.shape[0]
    P = permutations.shape[0]
    indicator = np.zeros((P, N), dtype=np.float64)
    np.put_along_axis(indicator, permutations[:, :n_x], 1.0, axis=1)
    return _indicator_mmds(kernel, indicator, kernel.sum(axis=1), n_x)


def _indicator_mmds(kernel: np.ndarray, indicator: np.ndarray, row_sums: np.ndarray, n_x: int) -> np.ndarray:
    """Statistics for 0/1 indicator rows (P, N): one (P, N) x (N, N) product for all P."""
    n_y = kernel.shape[0] - n_x
    total = row_sums.sum()
    ak = indicator @ kernel  # (P, N): a' K
    sum_xx = np.einsum("pn,pn->p", ak, indicator)  # a' K a
    a_k_1 = indicator @ row_sums  # a' K 1
    sum_xy = a_k_1 - sum_xx  # a' K (1 - a)
    sum_yy = total - 2.0 * a_k_1 + sum_xx  # (1 - a)' K (1 - a)
    return _mmd_from_sums(sum_xx, sum_yy, sum_xy, n_x, n_y)


def _subsample(a: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    if a.shape[0] <= n_samples:
        return a
    return a[np.sort(rng.choice(a.shape[0], size=n_samples, replace=False))]


def _check_count(value: object, name: str, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(
            f"The '{name}' parameter of mmd_test must be an int in the range [{low}, inf). Got {value!r} instead."
        )
    return int(value)


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 100,
    seed: int | np.random.Generator,
    lengthscale: float = 0.5,
    n_samples: int = 1000,
) -> tuple[float, float]:
    """Squared-MMD estimate and its permutation-test p-value.

    Each side is first reduced to at most ``n_samples`` rows drawn without
    replacement (sides that are small enough are used whole). The observed statistic
    is :func:`mmd` of the two (sub)samples. Under the null hypothesis the pooled points
    are exchangeable, so the null distribution is sampled by splitting the pooled points
    at random ``n_permutations`` times, keeping the two sample sizes. The p-value is
    ``(1 + #{null >= observed}) / (1 + n_permutations)`` (null statistics within 1e-12
    of the observed one count as ties), which never is 0 and is a
    valid p-value for any number of permutations (the reference's
    ``#{null >= observed} / n_permutations`` is not). With ``n_permutations = 0`` no
    null sample exists and the p-value is ``nan`` ("not computed"), rather than the
    formula's uninformative 1.

    The pooled kernel matrix is computed once; all permutations are evaluated with
    matrix products in blocks (see the module docstring), so the cost is one
    ``(P, N) x (N, N)`` product instead of ``P`` kernel evaluations.

    Args:
        x: (m, d) or (m,) first sample (e.g. round 0). y: (n, d) or (n,) second sample.
        n_permutations: number of random splits ``P`` (study's reported p-values: 100).
        seed: int or numpy Generator driving subsampling and permutations.
        lengthscale: Gaussian kernel lengthscale ``l`` (paper: 0.5).
        n_samples: maximum rows per side (paper: 1000).

    Returns:
        (mmd, p_value) as Python floats.

    Raises:
        ValueError: for invalid samples (see :func:`mmd`) or counts out of range.
    """
    x, y, lengthscale = _check_pair(x, y, lengthscale, "mmd_test")
    n_permutations = _check_count(n_permutations, "n_permutations", 0)
    n_samples = _check_count(n_samples, "n_samples", 2)
    rng = as_rng(seed)
    x = _subsample(x, n_samples, rng)
    y = _subsample(y, n_samples, rng)
    m, n = x.shape[0], y.shape[0]
    N = m + n
    pooled = np.concatenate([x, y])
    kernel = gaussian_kernel(pooled, pooled, lengthscale)
    row_sums = kernel.sum(axis=1)
    observed_indicator = np.zeros((1, N))
    observed_indicator[0, :m] = 1.0
    # The observed split goes through the same formula as the null splits.
    observed = float(_indicator_mmds(kernel, observed_indicator, row_sums, m)[0])
    if n_permutations == 0:
        return observed, math.nan
    block = max(1, min(n_permutations, _BLOCK_ELEMENTS // N))
    n_extreme = 0
    for start in range(0, n_permutations, block):
        size = min(block, n_permutations - start)
        # Shuffling the observed indicator row independently per row is a uniformly
        # random split per permutation (what permuting the pooled points does).
        indicator = rng.permuted(np.broadcast_to(observed_indicator, (size, N)), axis=1)
        null = _indicator_mmds(kernel, indicator, row_sums, m)
        n_extreme += int(np.count_nonzero(null >= observed - _TIE_TOLERANCE))
    return observed, (1.0 + n_extreme) / (1.0 + n_permutations)
