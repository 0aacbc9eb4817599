"""Sweep throughput, parallel efficiency, Ray overhead and memory.

1. The same 24-system sweep (overlapping + moons x 3 models x 2 generators x 2 seeds,
   20 rounds) on an embedded Ray with 1 CPU and with 2 CPUs: wall time, parallel
   efficiency ``T1 / (2 T2)``, and Ray overhead per system
   ``(wall x CPUs - sum of in-task system time) / systems`` (scheduling, object transfer,
   driver commits, pretraining tasks included).
2. Memory during a 500-system sweep (tiny systems, 3 rounds, so it finishes in minutes):
   peak RSS of the driver process, and of the worker processes as recorded by each task
   (``max_rss_mb`` in the manifests: a worker's peak so far, an upper bound per task).

    python benchmarks/bench_sweep.py [--quick] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from recourse_ray import spec as spec_mod  # noqa: E402
from recourse_ray.store import ResultsStore  # noqa: E402
from recourse_ray.sweep import run_sweep  # noqa: E402

THROUGHPUT = """
name: throughput
seeds: {seeds}
grid:
  dataset: [overlapping, moons]
  model: [logistic_regression, mlp, deep_ensemble]
  generator: [generic, greedy]
simulation: {{rounds: {rounds}, evaluate_every: 5}}
metrics: {{n_permutations: 100}}
"""

MEMORY = """
name: memory
seeds: {seeds}
grid:
  dataset: [overlapping, moons, circles, linearly_separable]
  model: [logistic_regression, mlp]
  generator: [generic, greedy, dice, wachter, gravitational]
simulation: {{rounds: 3, evaluate_every: 3, retrain_epochs: 2}}
setup: {{pretrain_epochs: 5}}
metrics: {{n_permutations: 10, n_grid: 200, n_samples: 300}}
"""


def _sweep(text: str, cpus: int) -> dict:
    root = tempfile.mkdtemp(prefix="bench-sweep-")
    try:
        sweep = spec_mod.loads(text)
        start = time.perf_counter()
        outcome = run_sweep(sweep, os.path.join(root, sweep.name), num_cpus=cpus, progress=False)
        wall = time.perf_counter() - start
        manifests = ResultsStore(os.path.join(root, sweep.name)).manifests()
        in_task = sum(m["timings"]["total_s"] for m in manifests)
        return {
            "systems": len(manifests),
            "failed": len(outcome.failed),
            "wall_s": wall,
            "in_task_s": in_task,
            "overhead_per_system_s": (wall * cpus - in_task) / max(1, len(manifests)),
            "task_max_rss_mb": max(m["max_rss_mb"] for m in manifests),
            "driver_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; 100 systems for the memory run")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.quick else 20
    text = THROUGHPUT.format(seeds=2, rounds=rounds)
    one = _sweep(text, 1)
    two = _sweep(text, 2)
    efficiency = one["wall_s"] / (2 * two["wall_s"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs")
    print("| CPUs | systems | wall | sum of in-task time | Ray overhead per system |")
    print("|---|---|---|---|---|")
    for cpus, r in ((1, one), (2, two)):
        print(f"| {cpus} | {r['systems']} | {r['wall_s']:.1f} s | {r['in_task_s']:.1f} s | {r['overhead_per_system_s']:.2f} s |")
    print(f"\nparallel efficiency T1 / (2 T2) = {efficiency:.0%}")
    result = {"one_cpu": one, "two_cpus": two, "efficiency": efficiency}
    if not args.skip_memory:
        seeds = 3 if args.quick else 13  # 4 x 2 x 5 x 13 = 520 systems
        mem = _sweep(MEMORY.format(seeds=seeds), 2)
        print(f"\nmemory sweep: {mem['systems']} systems in {mem['wall_s']:.0f} s; driver peak RSS {mem['driver_max_rss_mb']:.0f} MB; "
              f"largest worker peak RSS {mem['task_max_rss_mb']:.0f} MB")
        result["memory"] = mem
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
