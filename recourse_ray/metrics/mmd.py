"""Maximum mean discrepancy (MMD) and its permutation test.

The shift metrics of SPEC §6 (``domain_mmd``, ``model_mmd``, ...) compare a sample at
round 0 with a sample at the current round through the unbiased estimate of the squared
MMD with a Gaussian kernel (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012), as
the study does (Altmeyer et al., SaTML 2023, §4). Significance comes from a permutation
test.

The permutation test is the hot path of evaluation. The reference recomputes the kernel
matrix for every permutation; here the pooled kernel matrix ``K`` is evaluated once and
every permutation is a 0/1 indicator row ``a`` (1 = "belongs to the first sample"), so
that all within- and between-sample kernel sums come from matrix products with the
indicator rows of all permutations at once:

    sum_xx = a' K a,  sum_xy = a' K (1 - a),  sum_yy = (1 - a)' K (1 - a).

``K`` is never held whole: it is evaluated in blocks of rows of its upper triangle
(``_blocked_sums``), each block multiplied with the indicator rows and dropped, so the
memory is a few blocks of at most 2^21 values whatever the sample size (10,000 points
per side would need a 20,000 x 20,000 matrix, 3.2 GB). ``K`` is symmetric, so each
off-diagonal block serves twice and the blocked path does half the arithmetic of one
full ``A @ K`` product.
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

# Upper bound on the elements of one (permutations x pooled points) block of indicator
# rows drawn at once (the draws are chunked this way since the first version, and the
# chunking is kept so that a seed gives the same permutations).
_BLOCK_ELEMENTS = 1 << 21
# The blocked kernel sums evaluate at most this many pooled-kernel values at once
# (float64: 16 MB).
_KERNEL_BLOCK_ELEMENTS = 1 << 21
# Indicator rows multiplied with the kernel blocks in one pass over the kernel: at most
# this many values (float64: 32 MB; the same again for their transposed copy). More
# permutations take several passes, each evaluating the kernel again.
_PASS_ELEMENTS = 1 << 22


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


def _blocked_sums(pooled: np.ndarray, indicators: np.ndarray, lengthscale: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic forms ``a' K a`` of indicator rows and the row sums ``K 1`` of the pooled kernel, block by block.

    ``K = gaussian_kernel(pooled, pooled, lengthscale)`` (unit diagonal) is evaluated a
    block of rows of its upper triangle at a time: for rows ``R`` and the columns from
    ``R`` on, ``a' K a`` gains ``a_R' K_RR a_R + 2 a_R' K_R,>R a_>R`` and the row sums gain
    the block's row sums (and, by symmetry, its column sums for the rows after ``R``).
    A block holds at most ``_KERNEL_BLOCK_ELEMENTS`` values; nothing of the size of ``K``
    is allocated.

    Args:
        pooled: (N, d) float64 points. indicators: (Q, N) float64 rows of 0/1 (any values
            work: the result is the quadratic form). lengthscale: ``l > 0``.

    Returns:
        ((Q,) float64 ``a' K a`` per row, (N,) float64 ``K 1``).
    """
    n_points = pooled.shape[0]
    sq = np.einsum("ij,ij->i", pooled, pooled)
    scale = -1.0 / (2.0 * lengthscale * lengthscale)
    rows = max(1, _KERNEL_BLOCK_ELEMENTS // n_points)
    columns = np.ascontiguousarray(indicators.T)  # (N, Q): the right operand of every block product
    quadratic = np.zeros(indicators.shape[0])
    row_sums = np.zeros(n_points)
    buffer = np.empty(rows * n_points)
    for start in range(0, n_points, rows):
        stop = min(n_points, start + rows)
        size = stop - start
        block = buffer[: size * (n_points - start)].reshape(size, n_points - start)
        np.matmul(pooled[start:stop], pooled[start:].T, out=block)
        # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, as gaussian_kernel computes it (in place).
        block *= -2.0
        block += sq[start:stop, None]
        block += sq[None, start:]
        np.maximum(block, 0.0, out=block)
        diagonal = np.arange(size)
        block[diagonal, diagonal] = 0.0  # exactly 1 after exp, as gaussian_kernel's diagonal
        block *= scale
        np.exp(block, out=block)
        a_rows = indicators[:, start:stop]
        quadratic += np.einsum("qr,rq->q", a_rows, block[:, :size] @ columns[start:stop])
        if stop < n_points:
            beyond = block[:, size:]
            quadratic += 2.0 * np.einsum("qr,rq->q", a_rows, beyond @ columns[stop:])
            row_sums[stop:] += beyond.sum(axis=0)
        row_sums[start:stop] += block.sum(axis=1)
    return quadratic, row_sums


def _blocked_indicator_mmds(pooled: np.ndarray, indicators: np.ndarray, n_x: int, lengthscale: float) -> np.ndarray:
    """``_indicator_mmds`` of the pooled Gaussian kernel without holding it: (Q,) statistics for (Q, N) rows."""
    sum_xx, row_sums = _blocked_sums(pooled, indicators, lengthscale)
    a_k_1 = indicators @ row_sums
    return _mmd_from_sums(sum_xx, row_sums.sum() - 2.0 * a_k_1 + sum_xx, a_k_1 - sum_xx, n_x, pooled.shape[0] - n_x)


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
    m = x.shape[0]
    observed = np.zeros((1, m + y.shape[0]))
    observed[0, :m] = 1.0
    # The pooled kernel block by block (memory bounded for any sample size).
    return float(_blocked_indicator_mmds(np.concatenate([x, y]), observed, m, lengthscale)[0])


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

    The pooled kernel matrix is evaluated once, in blocks that are multiplied with the
    indicator rows of all permutations and dropped (see the module docstring): the cost
    is about half of one ``(P, N) x (N, N)`` product instead of ``P`` kernel
    evaluations, and the memory a few blocks of at most 2^21 values plus the indicator
    rows, whatever the sample size.

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
    observed_indicator = np.zeros((1, N))
    observed_indicator[0, :m] = 1.0
    # All splits first, in the chunks the draws always had (the same seed gives the same
    # permutations). Shuffling the observed indicator row independently per row is a
    # uniformly random split per permutation (what permuting the pooled points does).
    splits = np.empty((n_permutations, N), dtype=bool)
    block = max(1, min(n_permutations, _BLOCK_ELEMENTS // N))
    for start in range(0, n_permutations, block):
        size = min(block, n_permutations - start)
        splits[start : start + size] = rng.permuted(np.broadcast_to(observed_indicator, (size, N)), axis=1)
    # The observed split goes through the same formula as the null splits, in the first
    # pass over the kernel; more permutations than a pass holds take further passes.
    per_pass = max(2, _PASS_ELEMENTS // N)
    first = min(n_permutations, per_pass - 1)
    rows = np.concatenate([observed_indicator, splits[:first]])
    statistics = _blocked_indicator_mmds(pooled, rows, m, lengthscale)
    observed, null = float(statistics[0]), [statistics[1:]]
    for start in range(first, n_permutations, per_pass):
        rows = splits[start : start + per_pass].astype(np.float64)
        null.append(_blocked_indicator_mmds(pooled, rows, m, lengthscale))
    if n_permutations == 0:
        return observed, math.nan
    n_extreme = int(np.count_nonzero(np.concatenate(null) >= observed - _TIE_TOLERANCE))
    return observed, (1.0 + n_extreme) / (1.0 + n_permutations)
