"""Training throughput: the fused numba kernel against eager torch, side by side.

Measures optimizer steps per second of ``FeedForwardClassifier.fit`` (one step = one
mini-batch update of every member) with ``backend="fused"`` and ``backend="torch"`` on
the same data, in the same process, with one torch thread (a sweep runs one thread per
task). Also measures the one-time cost of the kernel: compiling it into an empty numba
cache, and loading it from the cache, each in a fresh interpreter.

    python benchmarks/bench_training.py            # 6 rounds of 0.5 s per backend and row
    python benchmarks/bench_training.py --quick    # 3 rounds of 0.2 s
    python benchmarks/bench_training.py --batch-sizes 128,512,2048 --rows 5000 --wide

Prints a markdown table (see benchmarks/RESULTS.md, "Training").
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from recourse_ray.models import FeedForwardClassifier
from recourse_ray.models import _fused

# (label, input_dim, hidden, n_members, dropout)
CONFIGS = [
    ("MLP 2-32-1", 2, (32,), 1, 0.0),
    ("MLP 33-64-64-1, dropout 0.1", 33, (64, 64), 1, 0.1),
    ("logistic regression (2 inputs)", 2, (), 1, 0.0),
    ("deep ensemble, 5 x 2-32-1", 2, (32,), 5, 0.0),
    ("deep ensemble, 5 x 33-64-64-1, dropout 0.1", 33, (64, 64), 5, 0.1),
]
# Wider than the study's models: where one-thread torch BLAS overtakes the kernel.
WIDE_CONFIGS = [
    ("MLP 33-128-128-1", 33, (128, 128), 1, 0.0),
    ("MLP 33-256-256-1", 33, (256, 256), 1, 0.0),
]

_COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from recourse_ray.models import FeedForwardClassifier
t1 = time.perf_counter()
m = FeedForwardClassifier(2, hidden=(32,), backend="fused", seed=0)
X = np.zeros((4, 2), np.float32); y = np.zeros(4, np.float32)
t2 = time.perf_counter()
m.fit(X, y, epochs=1, batch_size=1, seed=0)
t3 = time.perf_counter()
m.fit(X, y, epochs=1, batch_size=1, seed=0)
t4 = time.perf_counter()
print(t1 - t0, (t3 - t2) - (t4 - t3))
"""


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    y = (X @ w + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    return X, y


def steps_per_second(config, batch_size: int, n: int, budget_s: float, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` optimizer steps per second of ``fit`` on ``n`` rows: (fused, torch).

    The two backends alternate within every repeat, so that load from other processes
    hits both alike; the best repeat of each is kept.
    """
    _, d, hidden, members, dropout = config
    X, y = _data(n, d)
    steps_per_epoch = -(-n // batch_size)
    runs = {}
    for backend in ("fused", "torch"):
        model = FeedForwardClassifier(d, hidden=hidden, n_members=members, dropout=dropout, backend=backend, seed=1)
        t = time.perf_counter()
        model.fit(X, y, epochs=1, batch_size=batch_size, seed=0)  # warm-up and calibration
        per_epoch = time.perf_counter() - t
        runs[backend] = (model, max(1, int(budget_s / max(per_epoch, 1e-9))))
    best = {"fused": 0.0, "torch": 0.0}
    for r in range(repeats):
        for backend, (model, epochs) in runs.items():
            t = time.perf_counter()
            model.fit(X, y, epochs=epochs, batch_size=batch_size, seed=r + 1)
            best[backend] = max(best[backend], epochs * steps_per_epoch / (time.perf_counter() - t))
    return best["fused"], best["torch"]


def compile_costs() -> tuple[float, float, float]:
    """(cold compile s, cached load s, import s), each from a fresh interpreter.

    The cold run points ``NUMBA_CACHE_DIR`` at an empty directory (it takes precedence
    over the in-tree ``__pycache__``), so the shared cache is left alone.
    """
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        results = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            results.append((float(out[0]), float(out[1])))
    return results[0][1], results[1][1], results[1][0]


def machine_info() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return (
        f"{cpu}, {os.cpu_count()} logical cores visible; Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short measurements (3 rounds of 0.2 s)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--rows", type=int, default=1000, help="training rows (default 1000, the synthetic datasets)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-cost measurement")
    parser.add_argument("--wide", action="store_true", help="also measure wider MLPs (33-128-128-1, 33-256-256-1)")
    args = parser.parse_args(argv)
    if not _fused.AVAILABLE:
        sys.exit(f"The fused kernel is unavailable: {_fused.UNAVAILABLE_REASON}")
    torch.set_num_threads(1)
    budget, repeats = (0.2, 3) if args.quick else (0.5, 6)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    print(f"Machine: {machine_info()}\n")
    print("| model | batch | fused steps/s | torch steps/s | fused / torch | `auto` picks |")
    print("|---|---:|---:|---:|---:|---|")
    for config in CONFIGS + (WIDE_CONFIGS if args.wide else []):
        for bs in batch_sizes:
            fused, eager = steps_per_second(config, bs, args.rows, budget, repeats)
            _, d, hidden, members, dropout = config
            auto = FeedForwardClassifier(d, hidden=hidden, n_members=members, dropout=dropout, seed=0)
            picks = "fused" if auto.uses_fused(min(bs, args.rows)) else "torch"
            print(f"| {config[0]} | {bs} | {fused:,.0f} | {eager:,.0f} | {fused / eager:,.1f}x | {picks} |", flush=True)
    if not args.no_compile:
        cold, cached, imp = compile_costs()
        print(
            f"\nOne-time kernel cost per process: compile into an empty cache {cold:.2f} s; "
            f"load from the cache {cached:.3f} s (import of recourse_ray.models {imp:.2f} s)."
        )


if __name__ == "__main__":
    main()
