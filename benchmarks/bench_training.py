"""Training throughput: the fused numba kernel against eager torch, side by side.

Measures optimizer steps per second of ``FeedForwardClassifier.fit`` (one step = one
mini-batch update of every member) with ``backend="fused"`` and ``backend="torch"`` on
the same data, in the same process, with one torch thread (a sweep runs one thread per
task). ``fit`` calls ``_fused.train_epochs``, which runs the one-row kernel at batch
size 1 and the minibatch kernel above (the "kernel" column). Also measures the one-time
cost of each kernel: compiling it into an empty numba cache, and loading it from the
cache, in fresh interpreters.

    python benchmarks/bench_training.py            # 6 rounds of 0.5 s per backend and row
    python benchmarks/bench_training.py --quick    # 3 rounds of 0.2 s
    python benchmarks/bench_training.py --batch-sizes 128,512,2048 --rows 5000 --wide
    git show 1810a79:recourse_ray/models/_fused.py > /tmp/fused_before.py
    python benchmarks/bench_training.py --against /tmp/fused_before.py   # kernel vs kernel

Prints a markdown table (see benchmarks/RESULTS.md, "Training").
"""

from __future__ import annotations

import argparse
import importlib.util
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
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

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

# Prints the import time, then the first-call overhead of the one-row kernel (batch 1)
# and of the minibatch kernel (batch 2): the first call minus a second, identical one.
_COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from recourse_ray.models import FeedForwardClassifier
print(time.perf_counter() - t0)
m = FeedForwardClassifier(2, hidden=(32,), backend="fused", seed=0)
X = np.zeros((4, 2), np.float32); y = np.zeros(4, np.float32)
for batch_size in (1, 2):
    t1 = time.perf_counter()
    m.fit(X, y, epochs=1, batch_size=batch_size, seed=0)
    t2 = time.perf_counter()
    m.fit(X, y, epochs=1, batch_size=batch_size, seed=0)
    print((t2 - t1) - (time.perf_counter() - t2))
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


def kernel_steps_per_second(
    train_epochs_by_name: dict, config, batch_size: int, n: int, budget_s: float, repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` steps per second of several ``train_epochs`` on the same arguments.

    Calls the functions directly (no ``fit`` around them), alternating within every
    repeat, each from the same initial weights, row orders and dropout seeds.
    """
    _, d, hidden, members, dropout = config
    X, y = _data(n, d)
    start = FeedForwardClassifier(d, hidden=hidden, n_members=members, seed=1).params.numpy()
    sizes = np.array([d, *hidden, 1], dtype=np.int64)
    seeds = np.arange(1, members + 1, dtype=np.uint64)
    rng = np.random.default_rng(0)

    def orders(epochs: int) -> np.ndarray:
        return np.stack([np.stack([rng.permutation(n) for _ in range(epochs)]) for _ in range(members)])

    def run(train_epochs, order) -> float:
        params = start.copy()
        t = time.perf_counter()
        train_epochs(params, sizes, X, y, order, batch_size, 1e-3, dropout, seeds)
        return time.perf_counter() - t

    one_epoch = orders(1)
    per_epoch = min(run(fn, one_epoch) for fn in train_epochs_by_name.values())  # also compiles
    timed = orders(max(1, int(budget_s / max(per_epoch, 1e-9))))
    steps = timed.shape[1] * -(-n // batch_size)
    best = dict.fromkeys(train_epochs_by_name, 0.0)
    for _ in range(repeats):
        for name, fn in train_epochs_by_name.items():
            best[name] = max(best[name], steps / run(fn, timed))
    return best


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location("fused_against", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache looks the module up by name
    spec.loader.exec_module(module)
    return module


def compile_costs() -> dict[str, float]:
    """One-time kernel costs in seconds, each from a fresh interpreter.

    Keys: ``import``; ``cold one-row``, ``cold minibatch`` (compiling into an empty
    cache); ``cached one-row``, ``cached minibatch`` (loading from it). The runs point
    ``NUMBA_CACHE_DIR`` at an empty directory (it takes precedence over the in-tree
    ``__pycache__``), so the shared cache is left alone.
    """
    costs = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for run in ("cold", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            costs["import"] = float(out[0])
            costs[f"{run} one-row"], costs[f"{run} minibatch"] = float(out[1]), float(out[2])
    return costs


def machine_info() -> str:
    cpu = cpu_model()
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
    parser.add_argument(
        "--against",
        metavar="FILE",
        help="also time train_epochs of another _fused.py (e.g. a previous version) against this one",
    )
    args = parser.parse_args(argv)
    if not _fused.AVAILABLE:
        sys.exit(f"The fused kernel is unavailable: {_fused.UNAVAILABLE_REASON}")
    torch.set_num_threads(1)
    budget, repeats = (0.2, 3) if args.quick else (0.5, 6)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    print(f"Machine: {machine_info()}\n")
    print("| model | batch | kernel | fused steps/s | torch steps/s | fused / torch | `auto` picks |")
    print("|---|---:|---|---:|---:|---:|---|")
    for config in CONFIGS + (WIDE_CONFIGS if args.wide else []):
        for bs in batch_sizes:
            fused, eager = steps_per_second(config, bs, args.rows, budget, repeats)
            _, d, hidden, members, dropout = config
            auto = FeedForwardClassifier(d, hidden=hidden, n_members=members, dropout=dropout, seed=0)
            picks = auto.training_backend(min(bs, args.rows))
            kernel = "one-row" if min(bs, args.rows) == 1 else "minibatch"
            print(
                f"| {config[0]} | {bs} | {kernel} | {fused:,.0f} | {eager:,.0f} | {fused / eager:,.1f}x | {picks} |",
                flush=True,
            )
    if args.against:
        other = _load_module(args.against)
        print(f"\n`train_epochs` against `{args.against}` (called directly, same arguments):\n")
        print("| model | batch | this steps/s | other steps/s | this / other |")
        print("|---|---:|---:|---:|---:|")
        for config in CONFIGS + (WIDE_CONFIGS if args.wide else []):
            for bs in batch_sizes:
                best = kernel_steps_per_second(
                    {"this": _fused.train_epochs, "other": other.train_epochs}, config, bs, args.rows, budget, repeats
                )
                print(
                    f"| {config[0]} | {bs} | {best['this']:,.0f} | {best['other']:,.0f} | "
                    f"{best['this'] / best['other']:,.2f}x |",
                    flush=True,
                )
    if not args.no_compile:
        costs = compile_costs()
        print(
            "\nOne-time kernel cost per process: compile into an empty cache "
            f"{costs['cold one-row']:.2f} s (one-row kernel) + {costs['cold minibatch']:.2f} s (minibatch kernel); "
            f"load from the cache {costs['cached one-row']:.3f} s + {costs['cached minibatch']:.3f} s "
            f"(import of recourse_ray.models {costs['import']:.2f} s)."
        )


if __name__ == "__main__":
    main()
