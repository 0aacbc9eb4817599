"""Batched counterfactual search vs a per-individual loop.

CARLA and the Julia reference search one individual at a time: a fresh optimisation loop
per factual, K states, up to T steps. ``recourse_ray.generators`` searches all n x K
states as one tensor. This script times both on the same model with the same initial
states and checks that they return the same counterfactuals.

    python benchmarks/bench_search.py [--quick]

Baselines:
- ``loop``: a straightforward per-individual torch loop for the ``generic`` generator
  (BCE + 0.1 * L2, gradient step 0.01), written here independently of the engine;
- ``engine x n``: the engine itself called once per individual (n = 1 each).

Modes: ``full T`` disables early stopping (every individual runs T = 100 steps; fair
timing), ``threshold`` is the generator's default (an individual stops when its K states
all reach p >= 0.5). Times are the best of several runs (7 batched; 3 per-individual for
n <= 100, 1 above).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray.generators import stream_rng
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

K = 5
T = 100


def per_individual_loop(model, X, seeds, *, early_stop: bool):
    """One individual at a time, the way CARLA / the Julia package search."""
    out, iterations = [], []
    for x_np, seed in zip(X, seeds):
        x = torch.from_numpy(x_np)
        noise = stream_rng("init", seed).normal(0.0, 0.1, size=(K, x_np.size)).astype(np.float32)
        s = (x + torch.from_numpy(noise)).clone()
        it = 0
        for _ in range(T):
            s.requires_grad_(True)
            logits = model.logits(s)
            if early_stop and bool((torch.sigmoid(logits) >= 0.5).all()):
                break
            loss = F.softplus(-logits).sum() + 0.1 * torch.linalg.vector_norm(s - x, dim=1).sum()
            (g,) = torch.autograd.grad(loss, s)
            s = (s - 0.01 * g).detach()
            it += 1
        out.append(s.detach().numpy())
        iterations.append(it)
    return np.stack(out), np.array(iterations)


def timed(fn, repeat=1):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def machine_info() -> str:
    cpu = cpu_model()
    return (
        f"{cpu}, {os.cpu_count()} logical cores (shared), Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}, torch threads = {torch.get_num_threads()}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 25 and 100 only, no per-preset table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    data = rr.data.load("overlapping", seed=0)
    train, _ = data.split(seed=0)
    model = rr.models.create("mlp", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=20, batch_size=8, seed=0)
    negatives = train.X[model.predict(train.X) == 0]
    sizes = (25, 100) if args.quick else (25, 100, 500)

    print(f"Machine: {machine_info()}")
    print(f"Load average at start: {os.getloadavg()[0]:.1f}")
    print(f"Model: MLP (2-32-1) on `overlapping`; generic generator, K = {K}, T = {T}, step 0.01.")
    print(f"{len(negatives)} distinct negatives, repeated with distinct per-individual seeds for larger n.\n")
    print("| n | mode | batched (s) | loop (s) | speed-up vs loop | engine x n (s) | speed-up vs engine x n | max abs diff | mean iterations |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        X = negatives[np.arange(n) % len(negatives)]
        seeds = list(range(1000, 1000 + n))
        for mode, gen, early in (
            ("full T", G.create("generic", convergence={"kind": "full", "tolerance": 0.0}), False),
            ("threshold", G.create("generic"), True),
        ):
            # best of several runs: the timings are taken on shared machines
            t_batch, res = timed(lambda: gen.search(model, X, n_counterfactuals=K, seeds=seeds), repeat=7)
            slow_repeat = 3 if n <= 100 else 1
            t_loop, (cf_loop, it_loop) = timed(
                lambda: per_individual_loop(model, X, seeds, early_stop=early), repeat=slow_repeat
            )
            t_eng, singles = timed(
                lambda: [gen.search(model, X[i : i + 1], n_counterfactuals=K, seeds=[seeds[i]]) for i in range(n)],
                repeat=slow_repeat,
            )
            cf_eng = np.concatenate([r.counterfactuals for r in singles])
            diff = max(np.abs(res.counterfactuals - cf_loop).max(), np.abs(res.counterfactuals - cf_eng).max())
            assert np.array_equal(res.iterations, it_loop), "iteration counts differ from the loop"
            assert diff < 1e-4, f"batched and per-individual results differ by {diff}"
            print(
                f"| {n} | {mode} | {t_batch:.3f} | {t_loop:.2f} | {t_loop / t_batch:.0f}x | {t_eng:.2f} | "
                f"{t_eng / t_batch:.0f}x | {diff:.1e} | {res.iterations.mean():.1f} |",
                flush=True,
            )

    if not args.quick:
        vae = rr.models.VAE(2, seed=0)
        vae.fit(train.X, epochs=100, seed=0)
        n = 100
        X = negatives[:n]
        seeds = list(range(n))
        print(f"\nEvery preset, default settings, n = {n}, K = {K} (engine batched vs engine once per individual):\n")
        print("| preset | batched (s) | engine x n (s) | speed-up | validity | mean iterations |")
        print("|---|---|---|---|---|---|")
        for name in G.names():
            gen = G.create(name)
            kw = dict(n_counterfactuals=K, data=(train.X, train.y), vae=vae)
            t_batch, res = timed(lambda: gen.search(model, X, seeds=seeds, **kw), repeat=5)
            t_eng, singles = timed(lambda: [gen.search(model, X[i : i + 1], seeds=[seeds[i]], **kw) for i in range(n)])
            diff = np.abs(res.counterfactuals - np.concatenate([r.counterfactuals for r in singles])).max()
            assert diff < 1e-4, f"{name}: batched and per-individual results differ by {diff}"
            print(
                f"| {name} | {t_batch:.3f} | {t_eng:.2f} | {t_eng / t_batch:.0f}x | {res.valid.mean():.2f} | "
                f"{res.iterations.mean():.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
