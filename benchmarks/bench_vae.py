"""VAE training throughput: the fused numba kernel against eager torch, side by side.

Measures Adam steps per second of ``VAE.fit`` (one step = one mini-batch of 50 rows)
with ``backend="fused"`` and ``backend="torch"`` on the same data, in the same process,
alternating, with one torch thread (a sweep runs one thread per task). The two sizes
are the study's: a synthetic set (2 features, latent 2, 800 training rows) and a
real-world one (23 features, latent 8, 4,000 rows); hidden width 32. Also checks that
the two backends agree on one 10-epoch retraining (the per-round work of a REVISE
system), and measures the kernel's one-time cost in fresh interpreters: compiling into
an empty numba cache, and loading from it.

    python benchmarks/bench_vae.py            # 6 rounds of 0.5 s per backend and size
    python benchmarks/bench_vae.py --quick    # 3 rounds of 0.2 s
    python benchmarks/bench_vae.py --hidden 128,256 --no-compile   # wider than the study's VAE

Prints a markdown table (see benchmarks/RESULTS.md, "VAE training").
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

from recourse_ray.models import VAE, _fused_vae
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

# (label, input_dim, latent_dim, rows)
CONFIGS = [
    ("synthetic: d=2, latent 2, 800 rows", 2, 2, 800),
    ("real-world: d=23, latent 8, 4000 rows", 23, 8, 4000),
]
BATCH = 50

# Prints the import time (recourse_ray.models and the kernel's module, numba included),
# then the first-call overhead of the kernel: the first fit minus a second, identical one.
_COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from recourse_ray.models import VAE, _fused_vae
print(time.perf_counter() - t0)
X = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
vae = VAE(2, seed=0, backend="fused")
t1 = time.perf_counter()
vae.fit(X, epochs=1, seed=0)
t2 = time.perf_counter()
vae.fit(X, epochs=1, seed=0)
print((t2 - t1) - (time.perf_counter() - t2))
"""


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Correlated Gaussian features with unequal scales (so the scaled likelihood matters)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing * rng.uniform(0.3, 2.0, size=d)).astype(np.float32)


def steps_per_second(config, hidden: int, budget_s: float, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` Adam steps per second of ``VAE.fit``: (fused, torch).

    The backends alternate within every repeat, so that load from other processes hits
    both alike; the best repeat of each is kept.
    """
    _, d, latent, n = config
    X = _data(n, d)
    steps_per_epoch = -(-n // BATCH)
    runs = {}
    for backend in ("fused", "torch"):
        vae = VAE(d, latent_dim=latent, hidden=hidden, seed=1, backend=backend)
        t = time.perf_counter()
        vae.fit(X, epochs=1, batch_size=BATCH, seed=0)  # warm-up (compiles or loads the kernel) and calibration
        per_epoch = time.perf_counter() - t
        if backend == "fused":  # the first call included the compilation
            t = time.perf_counter()
            vae.fit(X, epochs=1, batch_size=BATCH, seed=0)
            per_epoch = time.perf_counter() - t
        runs[backend] = (vae, max(1, int(budget_s / max(per_epoch, 1e-9))))
    best = {"fused": 0.0, "torch": 0.0}
    for r in range(repeats):
        for backend, (vae, epochs) in runs.items():
            t = time.perf_counter()
            vae.fit(X, epochs=epochs, batch_size=BATCH, seed=r + 1)
            best[backend] = max(best[backend], epochs * steps_per_epoch / (time.perf_counter() - t))
    return best["fused"], best["torch"]


def agreement(config, hidden: int, epochs: int = 10) -> tuple[float, float]:
    """Max relative per-epoch loss difference and max parameter difference, fused vs torch.

    Both start from the same weights after the same 20-epoch pretraining (each on its own
    backend), then retrain ``epochs`` epochs with the same seed.
    """
    _, d, latent, n = config
    X = _data(n, d)
    fused = VAE(d, latent_dim=latent, hidden=hidden, seed=2, backend="fused")
    eager = VAE(d, latent_dim=latent, hidden=hidden, seed=2, backend="torch")
    for vae in (fused, eager):
        vae.fit(X, epochs=20, batch_size=BATCH, seed=3)
    a = fused.fit(X, epochs=epochs, batch_size=BATCH, seed=4)
    b = eager.fit(X, epochs=epochs, batch_size=BATCH, seed=4)
    return float(np.max(np.abs(a / b - 1))), float((fused.flat - eager.flat).abs().max())


def compile_costs() -> dict[str, float]:
    """One-time kernel costs in seconds, each from a fresh interpreter.

    Keys: ``import`` (of recourse_ray.models and numba), ``cold`` (compiling into an empty cache),
    ``cached`` (loading from it). The runs point ``NUMBA_CACHE_DIR`` at an empty
    directory (it takes precedence over the in-tree ``__pycache__``), so the shared
    cache is left alone.
    """
    costs = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for run in ("cold", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            costs["import"], costs[run] = float(out[0]), float(out[1])
    return costs


def machine_info() -> str:
    cpu = cpu_model()
    import numba

    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} logical cores visible{load}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short measurements (3 rounds of 0.2 s)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-cost measurement")
    parser.add_argument("--hidden", default="32", help="comma-separated hidden widths (default 32, the study's)")
    args = parser.parse_args(argv)
    if not _fused_vae.AVAILABLE:
        sys.exit(f"The fused kernel is unavailable: {_fused_vae.UNAVAILABLE_REASON}")
    torch.set_num_threads(1)
    budget, repeats = (0.2, 3) if args.quick else (0.5, 6)

    print(f"Machine: {machine_info()}\n")
    print(
        f"| VAE (batch {BATCH}) | hidden | fused steps/s | torch steps/s | fused / torch "
        "| 10-epoch retraining fused | torch | max rel. loss diff | max param diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for hidden in (int(h) for h in args.hidden.split(",")):
        for config in CONFIGS:
            fused, eager = steps_per_second(config, hidden, budget, repeats)
            loss_diff, param_diff = agreement(config, hidden)
            steps = 10 * -(-config[3] // BATCH)
            print(
                f"| {config[0]} | {hidden} | {fused:,.0f} | {eager:,.0f} | {fused / eager:,.1f}x "
                f"| {steps / fused * 1e3:,.1f} ms | {steps / eager:,.2f} s | {loss_diff:.1e} | {param_diff:.1e} |",
                flush=True,
            )
    if not args.no_compile:
        costs = compile_costs()
        print(
            f"\nOne-time kernel cost per process: compile into an empty cache {costs['cold']:.2f} s; "
            f"load from the cache {costs['cached']:.3f} s "
            f"(import of recourse_ray.models and numba {costs['import']:.2f} s)."
        )


if __name__ == "__main__":
    main()
