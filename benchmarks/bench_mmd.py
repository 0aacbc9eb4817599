"""Benchmark: the MMD permutation test, blocked, against recomputing the kernel per permutation.

    python benchmarks/bench_mmd.py [--quick] [--threads N]
    python benchmarks/bench_mmd.py --large [--n 10000] [--dim 33] [--permutations 100] [--dense-baseline]

``recourse_ray.metrics.mmd_test`` evaluates the pooled kernel once, in blocks of rows of
its upper triangle that are multiplied with the indicator rows of all permutations and
dropped. The default run compares it at 1,000 points per side with (a) the reference's
algorithm: for every permutation, split the pooled points and compute the MMD from
scratch (vectorised numpy, float64; timed on a subset of the permutations and
extrapolated linearly per permutation, its cost per permutation being constant), and
(b) the dense path that held the whole pooled kernel matrix and multiplied it with all
indicator rows (the implementation before the blocked one, rebuilt here from the
module's ``gaussian_kernel`` and ``_indicator_mmds``; same permutations).

``--large`` measures time and peak resident memory (``ru_maxrss`` of a fresh process per
measurement; the import of ``recourse_ray`` alone, with torch, is ~250 MB) at ``--n``
points per side: the blocked test; the per-permutation recomputation with memory-bounded
(blocked) kernel sums, timed on ``--naive-permutations`` permutations and extrapolated;
with ``--dense-baseline`` also the per-permutation recomputation from the three full kernel
blocks (3 x n^2 float64: 2.4 GB at n = 10,000; timed on one permutation); and the dense
path against the blocked one at the sizes of ``--dense-sizes`` (it holds the (2n)^2 kernel).
The points are Gaussian with standard deviation 0.1 per feature (squared distances ~0.66
in 33 dimensions: kernel values ~0.3 at the lengthscale 0.5, not underflowing to 0).

Threads: BLAS/OpenMP thread counts are fixed with environment variables before numpy is
imported (default 1), so every side runs on the same number of threads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    parser.add_argument("--n", type=int, default=None, help="points per side (default 1000; quick 300; large 10000)")
    parser.add_argument(
        "--permutations", type=int, default=None, help="permutations (default 1000; quick 200; large 100)"
    )
    parser.add_argument(
        "--naive-permutations", type=int, default=None, help="baseline permutations timed (20; quick 5; large 3)"
    )
    parser.add_argument("--dim", type=int, default=None, help="features per point (default 2; large 33)")
    parser.add_argument(
        "--large", action="store_true", help="time and peak memory at --n points per side (fresh processes)"
    )
    parser.add_argument(
        "--dense-baseline", action="store_true", help="large: also the per-permutation baseline from full kernel blocks"
    )
    parser.add_argument(
        "--dense-sizes", default="2000,4000", help="large: points per side for the dense path (default 2000,4000)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement in this process (see child())
    return parser.parse_args(argv)


def set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(threads)


def dense_mmd_test(x, y, *, n_permutations: int, seed: int, n_samples: int, lengthscale: float = 0.5):
    """The pre-blocked ``mmd_test``: the whole pooled kernel, all indicator rows times it (same draws)."""
    import numpy as np

    from recourse_ray.metrics import mmd as _  # noqa: F401  (the package, so that the module is loaded)

    mod = sys.modules["recourse_ray.metrics.mmd"]
    rng = np.random.default_rng(seed)
    x = mod._subsample(x, n_samples, rng)
    y = mod._subsample(y, n_samples, rng)
    m, N = x.shape[0], x.shape[0] + y.shape[0]
    pooled = np.concatenate([x, y])
    kernel = mod.gaussian_kernel(pooled, pooled, lengthscale)
    row_sums = kernel.sum(axis=1)
    indicator = np.zeros((1, N))
    indicator[0, :m] = 1.0
    observed = float(mod._indicator_mmds(kernel, indicator, row_sums, m)[0])
    chunk = max(1, min(n_permutations, mod._BLOCK_ELEMENTS // N))
    extreme = 0
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        null = mod._indicator_mmds(kernel, rng.permuted(np.broadcast_to(indicator, (size, N)), axis=1), row_sums, m)
        extreme += int(np.count_nonzero(null >= observed - mod._TIE_TOLERANCE))
    return observed, (1.0 + extreme) / (1.0 + n_permutations)


def dense_blocks_mmd(x, y, lengthscale: float = 0.5) -> float:
    """The reference's statistic from its three full kernel blocks (m^2 + n^2 + m n values held at once)."""
    from recourse_ray.metrics import gaussian_kernel

    m, n = x.shape[0], y.shape[0]
    k_xx = gaussian_kernel(x, x, lengthscale)
    k_yy = gaussian_kernel(y, y, lengthscale)
    k_xy = gaussian_kernel(x, y, lengthscale)
    return (k_xx.sum() - m) / (m * (m - 1.0)) + (k_yy.sum() - n) / (n * (n - 1.0)) - 2.0 * k_xy.sum() / (m * float(n))


def make_data(n: int, dim: int, scale: float, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(n, dim)), scale * rng.normal(loc=0.01, size=(n, dim))


def child(args: argparse.Namespace) -> None:
    """One measurement (``--child CASE``) in a fresh process; prints a JSON line."""
    import resource

    import numpy as np

    from recourse_ray.metrics import mmd, mmd_test

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    x, y = make_data(args.n, args.dim, 0.1)
    mmd_test(x[:50], y[:50], seed=0, n_permutations=10)  # warm-up (imports, BLAS)
    result = {"baseline_rss_mb": rss_mb()}
    start = time.perf_counter()
    if args.child == "blocked":
        result["value"], result["p"] = mmd_test(x, y, n_permutations=args.permutations, seed=0, n_samples=args.n)
    elif args.child == "dense":
        result["value"], result["p"] = dense_mmd_test(x, y, n_permutations=args.permutations, seed=0, n_samples=args.n)
    elif args.child in ("per-permutation-blocked", "per-permutation-dense"):
        statistic = mmd if args.child == "per-permutation-blocked" else dense_blocks_mmd
        pooled = np.concatenate([x, y])
        rng = np.random.default_rng(0)
        result["value"] = float(statistic(x, y))
        result["observed_seconds"] = time.perf_counter() - start
        t = time.perf_counter()
        for _ in range(args.naive_permutations):
            p = rng.permutation(2 * args.n)
            statistic(pooled[p[: args.n]], pooled[p[args.n :]])
        result["per_permutation_seconds"] = (time.perf_counter() - t) / args.naive_permutations
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = rss_mb()
    print(json.dumps(result))


def run_child(case: str, n: int, args: argparse.Namespace, naive: int = 1) -> dict:
    command = [
        sys.executable, os.path.abspath(__file__), "--child", case, "--n", str(n), "--dim", str(args.dim),
        "--permutations", str(args.permutations), "--naive-permutations", str(naive), "--threads", str(args.threads),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def large(args: argparse.Namespace) -> None:
    args.n = args.n or 10_000
    args.dim = args.dim or 33
    args.permutations = args.permutations or 100
    naive = args.naive_permutations or 3
    print(f"{machine()}; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| what | points per side | permutations | time | peak RSS | RSS after imports | MMD^2 | p |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def row(label, n, r, seconds=None):
        seconds = r["seconds"] if seconds is None else seconds
        p = r.get("p", math.nan)
        print(
            f"| {label} | {n:,} | {args.permutations} | {seconds:.2f} s | {r['peak_rss_mb']:.0f} MB | "
            f"{r['baseline_rss_mb']:.0f} MB | {r['value']:.6g} | {p:.4f} |",
            flush=True,
        )

    blocked = run_child("blocked", args.n, args)
    row("blocked `mmd_test`", args.n, blocked)
    per_perm = run_child("per-permutation-blocked", args.n, args, naive)
    projected = per_perm["observed_seconds"] + args.permutations * per_perm["per_permutation_seconds"]
    row(f"per permutation, blocked kernel sums (timed on {naive}, projected)", args.n, per_perm, projected)
    if args.dense_baseline:
        dense = run_child("per-permutation-dense", args.n, args, 1)
        projected_dense = dense["observed_seconds"] + args.permutations * dense["per_permutation_seconds"]
        row("per permutation, three full kernel blocks (timed on 1, projected)", args.n, dense, projected_dense)
    for n in [int(v) for v in args.dense_sizes.split(",") if v]:
        a, b = run_child("blocked", n, args), run_child("dense", n, args)
        row("blocked `mmd_test`", n, a)
        row("dense path (whole pooled kernel)", n, b)
        print(f"|  | {n:,} |  | blocked / dense: {a['seconds'] / b['seconds']:.2f}x time |  |  | "
              f"diff {abs(a['value'] - b['value']):.1e} | diff {abs(a['p'] - b['p']):.1e} |")
    print(f"\nblocked / per permutation (blocked sums): {projected / blocked['seconds']:.0f}x faster")
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


def machine() -> str:
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import cpu_model

    return (
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
        f"python {sys.version.split()[0]}, numpy {np.__version__}"
    )


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    if args.child:
        child(args)
        return
    if args.large:
        large(args)
        return
    import numpy as np

    from recourse_ray.metrics.mmd import _permutation_mmds, gaussian_kernel, mmd, mmd_test

    n = args.n or (300 if args.quick else 1000)
    n_perm = args.permutations or (200 if args.quick else 1000)
    n_naive = args.naive_permutations or (5 if args.quick else 20)
    dim = args.dim or 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim))
    y = rng.normal(loc=0.1, size=(n, dim))

    mmd_test(x[:50], y[:50], seed=0, n_permutations=10)  # warm-up (imports, allocator)
    vec_times, dense_times = [], []
    for rep in range(3):  # the blocked and the dense path alternate
        t0 = time.perf_counter()
        value, p_value = mmd_test(x, y, seed=rep, n_permutations=n_perm, n_samples=n)
        vec_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dense_value, dense_p = dense_mmd_test(x, y, seed=rep, n_permutations=n_perm, n_samples=n)
        dense_times.append(time.perf_counter() - t0)
    vec_time, dense_time = min(vec_times), min(dense_times)

    # Baseline: the same number of permutations, each recomputing the kernel.
    pooled = np.concatenate([x, y])
    perms = np.stack([rng.permutation(2 * n) for _ in range(n_naive)])
    t0 = time.perf_counter()
    observed = dense_blocks_mmd(x, y)
    t_observed = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_null = np.array([dense_blocks_mmd(pooled[p[:n]], pooled[p[n:]]) for p in perms])
    t_null = time.perf_counter() - t0
    per_perm = t_null / n_naive
    naive_time = t_observed + per_perm * n_perm

    # Same permutations through the dense and the blocked statistics: they must agree.
    fast_null = _permutation_mmds(gaussian_kernel(pooled, pooled, 0.5), perms, n)
    indicators = np.zeros((n_naive, 2 * n))
    np.put_along_axis(indicators, perms[:, :n], 1.0, axis=1)
    blocked_null = sys.modules["recourse_ray.metrics.mmd"]._blocked_indicator_mmds(pooled, indicators, n, 0.5)
    max_diff = float(np.max(np.abs(fast_null - naive_null)))
    max_diff_blocked = float(np.max(np.abs(blocked_null - naive_null)))

    lines = [
        f"points per side: {n}, features: {dim}, permutations: {n_perm}, threads: {args.threads}",
        f"{machine()}; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"blocked mmd_test: {vec_time:.3f} s (best of 3; {', '.join(f'{t:.3f}' for t in vec_times)}); "
        f"mmd={value:.5f}, p={p_value:.4f}",
        f"dense path (whole pooled kernel): {dense_time:.3f} s "
        f"(best of 3; {', '.join(f'{t:.3f}' for t in dense_times)}); "
        f"|diff| mmd {abs(value - dense_value):.1e}, p {abs(p_value - dense_p):.1e}; blocked / dense time "
        f"{vec_time / dense_time:.2f}",
        f"per-permutation kernel recomputation: {per_perm * 1e3:.1f} ms per permutation "
        f"(timed on {n_naive} permutations, extrapolated to {n_perm}) -> {naive_time:.2f} s",
        f"speed-up of the blocked test: {naive_time / vec_time:.0f}x",
        f"max |dense - recomputed| null statistic over the {n_naive} shared permutations: {max_diff:.2e}; "
        f"max |blocked - recomputed|: {max_diff_blocked:.2e}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
