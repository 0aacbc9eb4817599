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

Two properties of the study's samples make most tests much cheaper than ``N^2`` kernel
values, without changing what is computed (:class:`_PooledKernel`):

- **Repeated points.** The two sides of a domain MMD share most of their points (only
  recipients of recourse moved), so the pooled sample holds each of them twice. Equal
  points have equal kernel rows, so the kernel is evaluated on the distinct points only
  and each indicator row becomes a row of counts per distinct point
  (``a' K a = c' K_U c``).
- **Narrow one-dimensional samples.** The model MMDs compare probabilities in [0, 1].
  For 1-D points whose half range ``h`` is at most the lengthscale, the kernel is
  ``exp(-(t_i - t_j)^2 / 2) = g_i g_j sum_k t_i^k t_j^k / k!`` with ``t = (x - centre) / l``,
  ``|t| <= 1`` and ``g = exp(-t^2 / 2)``: the series is cut where its remainder is below
  1e-18 (about 21 terms), so ``K = F F'`` with ``F`` of shape (N, ~21) to far below the
  rounding of the kernel values themselves, and ``a' K a = ||F' a||^2`` costs ``N x 21``
  per split instead of ``N^2``.

Both change only how the float64 sums are formed: the values agree with the blocked sums
over all ``N^2`` values to ~1e-14, the blocked sums' own rounding error (the series is
the closer of the two to an 80-bit computation). The splits are the same draws, so the
p-values are the same unless a null statistic lies within that distance of the tie
tolerance below the observed one.
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
# ... and in at least about this many blocks of rows (of at least _MIN_BLOCK_ROWS rows): a
# single block would be the whole square, and the upper triangle saves arithmetic only
# when there are several (six blocks: 1.5-2x faster than one at 700-2,000 points).
_KERNEL_BLOCKS = 6
_MIN_BLOCK_ROWS = 64
# Indicator rows multiplied with the kernel blocks in one pass over the kernel: at most
# this many values (float64: 32 MB; the same again for their transposed copy). More
# permutations take several passes, each evaluating the kernel again.
_PASS_ELEMENTS = 1 << 22
# The series path (narrow 1-D samples, see the module docstring): used when
# (half range / lengthscale)^2 is at most this, and cut after the term where the bound on
# the remainder of exp(t_i t_j), z^R / R! * e^z with z = that ratio, falls below the
# tolerance. At z <= 1 the alternating terms lose at most a factor e^2 to cancellation.
_SERIES_MAX_SPREAD = 1.0
_SERIES_REMAINDER = 1e-18


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


def _blocked_sums(
    pooled: np.ndarray, indicators: np.ndarray, lengthscale: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        weights: (N,) float64 ``w``: the second result is ``K w`` instead of ``K 1`` (the
            counts of repeated points, see :class:`_PooledKernel`); None for ``K 1``.

    Returns:
        ((Q,) float64 ``a' K a`` per row, (N,) float64 ``K 1`` or ``K w``).
    """
    n_points = pooled.shape[0]
    sq = np.einsum("ij,ij->i", pooled, pooled)
    scale = -1.0 / (2.0 * lengthscale * lengthscale)
    rows = max(1, min(_KERNEL_BLOCK_ELEMENTS // n_points, max(_MIN_BLOCK_ROWS, -(-n_points // _KERNEL_BLOCKS))))
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
            row_sums[stop:] += beyond.sum(axis=0) if weights is None else weights[start:stop] @ beyond
        row_sums[start:stop] += block.sum(axis=1) if weights is None else block @ weights[start:]
    return quadratic, row_sums


def _blocked_indicator_mmds(pooled: np.ndarray, indicators: np.ndarray, n_x: int, lengthscale: float) -> np.ndarray:
    """``_indicator_mmds`` of the pooled Gaussian kernel without holding it: (Q,) statistics for (Q, N) rows."""
    sum_xx, row_sums = _blocked_sums(pooled, indicators, lengthscale)
    a_k_1 = indicators @ row_sums
    return _mmd_from_sums(sum_xx, row_sums.sum() - 2.0 * a_k_1 + sum_xx, a_k_1 - sum_xx, n_x, pooled.shape[0] - n_x)


def _series_features(pooled: np.ndarray, lengthscale: float) -> np.ndarray | None:
    """``F`` (N, R) with ``F F' = K`` but for a truncation below 1e-18 per entry, for narrow 1-D points; else None.

    With ``t = (x - centre) / l`` (``centre`` the middle of the range) the kernel is
    ``exp(-t_i^2 / 2) exp(-t_j^2 / 2) exp(t_i t_j)``, and ``exp(t_i t_j)`` is its Taylor
    series ``sum_k (t_i^k / sqrt(k!)) (t_j^k / sqrt(k!))``. Only for ``(h / l)^2 <= 1``
    (``h`` the half range), where ``|t_i t_j| <= 1`` bounds both the remainder and the
    cancellation between terms of alternating sign.
    """
    if pooled.shape[1] != 1:
        return None
    x = pooled[:, 0]
    low, high = float(x.min()), float(x.max())
    half = 0.5 * (high - low)
    spread = (half / lengthscale) ** 2
    if not spread <= _SERIES_MAX_SPREAD:
        return None
    t = (x - (low + half)) / lengthscale
    n_terms, bound = 1, math.exp(spread)  # bound: z^R / R! * e^z for R = n_terms
    while bound > _SERIES_REMAINDER:
        bound *= spread / n_terms
        n_terms += 1
    features = np.empty((x.shape[0], n_terms))
    features[:, 0] = np.exp(-0.5 * t * t)
    for k in range(1, n_terms):
        np.multiply(features[:, k - 1], t, out=features[:, k])
        features[:, k] *= 1.0 / math.sqrt(k)
    return features


def _distinct_rows(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The distinct rows of ``pooled`` and how to sum over their copies; None when all are distinct.

    Returns:
        (order (N,) int: ``pooled[order]`` has equal rows next to each other, starts (U,)
        int: where each run of equal rows begins in that order, counts (U,) float64: the
        run lengths); ``pooled[order[starts]]`` are the U distinct rows.
    """
    order = np.lexsort(pooled.T[::-1])
    ordered = pooled[order]
    new_run = np.empty(pooled.shape[0], dtype=bool)
    new_run[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=new_run[1:])
    starts = np.flatnonzero(new_run)
    if starts.shape[0] == pooled.shape[0]:
        return None
    counts = np.diff(np.append(starts, pooled.shape[0])).astype(np.float64)
    return order, starts, counts


class _PooledKernel:
    """The pooled Gaussian kernel of one test, in the form its sums with indicator rows are cheapest in.

    Built once per test (whatever the number of passes over the splits): the series
    features of narrow 1-D points, else the distinct points and their counts (the blocked
    sums then run over the distinct points only), else the points themselves. See the
    module docstring.

    Args:
        pooled: (N, d) float64 points. lengthscale: ``l > 0``.
    """

    def __init__(self, pooled: np.ndarray, lengthscale: float) -> None:
        self.pooled = pooled
        self.lengthscale = lengthscale
        self.features = _series_features(pooled, lengthscale)
        self.distinct = None if self.features is not None else _distinct_rows(pooled)
        if self.distinct is not None:
            order, starts, _ = self.distinct
            self.points = np.ascontiguousarray(pooled[order[starts]])

    def statistics(self, indicators: np.ndarray, n_x: int) -> np.ndarray:
        """(Q,) unbiased MMD^2 of the splits given as (Q, N) 0/1 rows (1 = first sample, ``n_x`` ones each)."""
        if self.features is not None:
            projected = indicators @ self.features  # (Q, R): F' a per row
            column = self.features.sum(axis=0)  # F' 1
            sum_xx = np.einsum("qr,qr->q", projected, projected)
            a_k_1 = projected @ column
            total = float(column @ column)
        elif self.distinct is not None:
            order, starts, counts = self.distinct
            # Each row as counts per distinct point (exact: small integers in float64).
            per_point = np.add.reduceat(indicators[:, order], starts, axis=1)
            sum_xx, weighted = _blocked_sums(self.points, per_point, self.lengthscale, counts)
            a_k_1 = per_point @ weighted
            total = float(counts @ weighted)
        else:
            sum_xx, row_sums = _blocked_sums(self.pooled, indicators, self.lengthscale)
            a_k_1 = indicators @ row_sums
            total = row_sums.sum()
        n_y = self.pooled.shape[0] - n_x
        return _mmd_from_sums(sum_xx, total - 2.0 * a_k_1 + sum_xx, a_k_1 - sum_xx, n_x, n_y)


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
    # The pooled kernel block by block (memory bounded for any sample size), or cheaper (_PooledKernel).
    return float(_PooledKernel(np.concatenate([x, y]), lengthscale).statistics(observed, m)[0])


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
    rows, whatever the sample size. Repeated points are evaluated once, and narrow 1-D
    samples (probabilities) through a ~21-term series of the kernel, which costs ``N x 21``
    per split (the module docstring; same splits, values to ~1e-14).

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
    kernel = _PooledKernel(pooled, lengthscale)
    statistics = kernel.statistics(rows, m)
    observed, null = float(statistics[0]), [statistics[1:]]
    for start in range(first, n_permutations, per_pass):
        rows = splits[start : start + per_pass].astype(np.float64)
        null.append(kernel.statistics(rows, m))
    if n_permutations == 0:
        return observed, math.nan
    n_extreme = int(np.count_nonzero(np.concatenate(null) >= observed - _TIE_TOLERANCE))
    return observed, (1.0 + n_extreme) / (1.0 + n_permutations)
