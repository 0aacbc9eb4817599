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
    python benchmarks/bench_training.py --ensemble-only   # ensembles at batch size 1 (below)

Prints a markdown table (see benchmarks/RESULTS.md, "Training").

The ensemble table times ``train_epochs`` at batch size 1 side by side, alternating in
every one of ``--ensemble-rounds`` rounds of ~0.2 s (short rounds: on a shared machine
the best of many short rounds is the least disturbed): one member (the one-row kernel), the same model with ``--members`` members
trained together (the ensemble kernel), those members one after another (the one-row
kernel over all of them, the path before the ensemble kernel) and Adam alone on all
the members' parameters (the same number of updates of the same size: the floor set by
Adam's square root and two divisions per parameter). It also reports the multiply-add
rate against the core's peak, from a clock estimate (a dependent chain of 1-cycle
integer operations) and the FMA units of the CPU model.
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

# Ensembles at batch size 1: (label, input_dim, hidden, dropout).
ENSEMBLE_CONFIGS = [
    ("2-32-1", 2, (32,), 0.0),
    ("33-64-64-1, dropout 0.1", 33, (64, 64), 0.1),
]
# float32 multiply-adds per cycle and core, by LLVM CPU name: FMA pipes x lanes. Zen 5
# (server parts) has two 512-bit FMA pipes; Zen 4 and Intel client cores split or lack
# 512-bit ones. The kernels do not fuse (no FMA contraction): a multiply goes to an FMA
# pipe and the add to one of the two FADD pipes, which sustains the same rate on Zen.
PEAK_MACS_PER_CYCLE = {"znver5": 32, "znver4": 16, "znver3": 16, "skylake-avx512": 32, "icelake-server": 32}

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


def _multiply_adds_per_step(sizes: list[int]) -> int:
    """Multiply-adds of one member's step: forward, weight gradient, errors of the inputs of layers >= 1.

    (A weight-gradient entry is one multiplication; it is counted as one multiply-add.)
    """
    weights = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(weights) + sum(weights[1:])


def clock_estimate_hz(iterations: int = 5_000_000, repeats: int = 20) -> float:
    """Core clock from a chain of dependent shifts and xors (1 cycle each, 6 per iteration).

    Best of ``repeats`` short runs (~7 ms each), so that one of them runs undisturbed on a
    shared machine.
    """
    import numba

    @numba.njit
    def chain(x, count):
        for _ in range(count):
            x ^= x << np.uint64(13)
            x ^= x >> np.uint64(7)
            x ^= x << np.uint64(17)
        return x

    chain(np.uint64(1), 10)
    best = min(_timed(chain, np.uint64(1), iterations) for _ in range(repeats))
    return 6 * iterations / best


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def host_cpu() -> tuple[str, str]:
    """(LLVM's name of the host CPU, the vector features numba compiles for)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    vector = [f for f in ("fma", "avx2", "avx512f", "avx512vl", "avx512dq") if features.get(f)]
    return llvm.get_host_cpu_name(), "+".join(vector)


def ensemble_side_by_side(config, n_members: int, n: int, budget_s: float, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` steps per second at batch size 1; keys below, all on the same data.

    ``one``: one member; ``together``: ``n_members`` members through ``train_epochs``
    (the ensemble kernel); ``one_after_another``: the same members through the one-row
    kernel (which trains them in turn); ``adam_only``: Adam alone on all their
    parameters, as many updates as steps. Alternating within every repeat.
    """
    import numba

    _, d, hidden, dropout = config
    X, y = _data(n, d)
    sizes = np.array([d, *hidden, 1], dtype=np.int64)
    start = FeedForwardClassifier(d, hidden=hidden, n_members=n_members, seed=1).params.numpy()
    seeds = np.arange(1, n_members + 1, dtype=np.uint64)
    rng = np.random.default_rng(0)
    keep = _fused._keep_threshold(dropout)

    @numba.njit(error_model="numpy")
    def adam_only(p, grad, exp_avg, exp_avg_sq, bias_correction1, bias_correction2_sqrt, lr):
        for step in range(bias_correction1.shape[0]):
            _fused._adam_step(p, grad, exp_avg, exp_avg_sq, np.float32(-(lr / bias_correction1[step])),
                              bias_correction2_sqrt[step])

    def runners(epochs: int) -> dict:
        orders = np.stack([np.stack([rng.permutation(n) for _ in range(epochs)]) for _ in range(n_members)])
        corrections = _fused._bias_corrections(epochs * n)
        losses = np.zeros((n_members, epochs))
        grad = rng.normal(scale=1e-2, size=start.size).astype(np.float32)

        def one():
            return _timed(_fused.train_epochs, start[:1].copy(), sizes, X, y, orders[:1], 1, 1e-3, dropout, seeds[:1])

        def together():
            return _timed(_fused.train_epochs, start.copy(), sizes, X, y, orders, 1, 1e-3, dropout, seeds)

        def one_after_another():
            return _timed(_fused._train_one_row_kernel, start.copy(), sizes, X, y, orders, 1e-3, dropout, keep, seeds,
                          *corrections, losses)

        def adam():
            zeros = np.zeros(start.size, np.float32)
            return _timed(adam_only, start.ravel().copy(), grad, zeros, zeros.copy(), *corrections, 1e-3)

        return {"one": one, "together": together, "one_after_another": one_after_another, "adam_only": adam}

    calibrate = runners(1)
    per_epoch = max(calibrate[k]() for k in calibrate)  # also compiles
    epochs = max(1, int(budget_s / max(per_epoch, 1e-9)))
    timed = runners(epochs)
    best = dict.fromkeys(timed, 0.0)
    for _ in range(repeats):
        for name, run in timed.items():
            best[name] = max(best[name], epochs * n / run())
    return best


def ensemble_table(n_members: int, n: int, budget_s: float, repeats: int) -> None:
    cpu, features = host_cpu()
    clock = clock_estimate_hz()
    peak = PEAK_MACS_PER_CYCLE.get(cpu)
    print(
        f"\nEnsembles at batch size 1, {n_members} members ({n} rows; CPU {cpu_model()}, LLVM target {cpu}, "
        f"{features}; clock estimate {clock / 1e9:.2f} GHz; peak "
        + (f"{peak} float32 multiply-adds per cycle = {peak * clock / 1e9:.0f} G/s" if peak else "unknown")
        + "):\n"
    )
    print(
        f"| model | 1 member steps/s | {n_members} together steps/s | {n_members} one after another steps/s "
        f"| Adam alone ({n_members} members) steps/s | together / 1 member (time) | one after another / 1 member "
        "| Adam alone / together (time) | multiply-adds/s together (share of peak) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config in ENSEMBLE_CONFIGS:
        best = ensemble_side_by_side(config, n_members, n, budget_s, repeats)
        macs = _multiply_adds_per_step([config[1], *config[2], 1]) * n_members * best["together"]
        share = f" ({macs / (peak * clock):.1%})" if peak else ""
        print(
            f"| {config[0]} | {best['one']:,.0f} | {best['together']:,.0f} | {best['one_after_another']:,.0f} | "
            f"{best['adam_only']:,.0f} | {best['one'] / best['together']:.2f}x | "
            f"{best['one'] / best['one_after_another']:.2f}x | {best['together'] / best['adam_only']:.2f} | "
            f"{macs / 1e9:.1f} G{share} |",
            flush=True,
        )


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
    parser.add_argument("--ensemble-only", action="store_true", help="only the ensemble table (batch size 1)")
    parser.add_argument("--members", type=int, default=5, help="members of the ensemble table (default 5)")
    parser.add_argument(
        "--ensemble-rounds", type=int, default=15, help="ensemble table: rounds of 0.2 s per variant (default 15)"
    )
    args = parser.parse_args(argv)
    if not _fused.AVAILABLE:
        sys.exit(f"The fused kernel is unavailable: {_fused.UNAVAILABLE_REASON}")
    torch.set_num_threads(1)
    budget, repeats = (0.2, 3) if args.quick else (0.5, 6)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    print(f"Machine: {machine_info()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    if args.ensemble_only:
        ensemble_table(args.members, args.rows, 0.2, 3 if args.quick else args.ensemble_rounds)
        print(f"\nLoad average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return
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
    ensemble_table(args.members, args.rows, 0.2, 3 if args.quick else args.ensemble_rounds)
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
