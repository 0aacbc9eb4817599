"""Full rounds and full systems: recourse_ray vs a straightforward reference implementation.

Both sides run the same ``RecourseSystem`` loop with the same data, pretrained weights,
selection, settings and metrics; they differ where a straightforward implementation
differs:

- search: the reference searches one individual at a time (the generator's engine called
  with n = 1 per selected individual, as CARLA and the Julia package do); ours searches
  all n x K states as one batch;
- retraining: the reference uses eager torch (``backend="torch"``: torch.optim.Adam,
  one autograd step per mini-batch of 1); ours uses the fused numba kernel.

For every model on ``overlapping`` (synthetic settings) and ``credit_default`` (the
study's real-world settings: MLP 64-64 + dropout 0.1, pretraining batch 500, search up
to 250 iterations) it reports one full round (select, search, implement, retrain,
evaluate) with its phase breakdown, and a full 50-round system. Our 50-round systems are
measured end to end; the reference's are projected from its measured rounds (its cost
per round is flat: retraining dominates and does not change with the round), which the
table says.

    python benchmarks/bench_system.py [--quick] [--datasets overlapping credit_default]

One torch thread (as in a sweep task). Real-world data needs RECOURSE_RAY_DATA or
../shared/data/tabular.

``--paper-system`` times the paper's synthetic system on one core instead: ``overlapping``,
``mlp``, ``generic``, 50 rounds, evaluated every 10 (6 evaluations), metrics with 100
permutations, 1,000 samples per MMD side and a 1,000-point grid. Each measurement is a
fresh child process (torch threads 1; BLAS/OpenMP threads ``--blas-threads``, default 1
as in a Ray task, set before numpy is imported) that prepares the data, pretrains the
model, runs one untimed system (numba and caches warm) and then ``--reps`` timed systems
(construction + ``run()``, wall and CPU time, phase timings). With ``--baseline TREE`` the children alternate between that
checkout (e.g. ``git worktree add --detach ../sys-before HEAD``) and ``--tree`` (default:
this checkout), ``--alternations`` times each, and the metric rows of the two are
compared (largest absolute difference of values, count of differing p-values)::

    python benchmarks/bench_system.py --paper-system --baseline ../sys-before [--alternations 5] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import recourse_ray as rr
from recourse_ray.metrics import MetricSettings
from recourse_ray.simulation import RecourseSystem, SetupSettings, SimulationSettings, SystemIdentity, prepare_data, pretrain_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("logistic_regression", "mlp", "deep_ensemble")

CONFIG = {
    "overlapping": {
        "setup": SetupSettings(pretrain_epochs=100, pretrain_batch_size=1),
        "models": {"logistic_regression": {}, "mlp": {}, "deep_ensemble": {}},
        "search": {},
    },
    "credit_default": {
        "setup": SetupSettings(n_samples=5000, pretrain_epochs=100, pretrain_batch_size=500),
        "models": {
            "logistic_regression": {},
            "mlp": {"hidden": [64, 64], "dropout": 0.1},
            "deep_ensemble": {"hidden": [64, 64], "dropout": 0.1},
        },
        "search": {"max_iterations": 250},
    },
}


class PerIndividual:
    """The straightforward search: the same generator, one individual at a time."""

    def __init__(self, inner):
        self.inner = inner
        self.needs_vae = inner.needs_vae

    def search(self, model, factuals, *, n_counterfactuals, seeds, data=None, vae=None):
        parts = [
            self.inner.search(model, factuals[i : i + 1], n_counterfactuals=n_counterfactuals, seeds=[int(seeds[i])], data=data, vae=vae)
            for i in range(len(factuals))
        ]
        first = parts[0]
        return type(first)(**{
            f: np.concatenate([getattr(p, f) for p in parts]) for f in ("counterfactuals", "proba", "valid", "cost", "iterations", "finite")
        })


def _system(dataset, model_name, split, pretrained, *, reference: bool, rounds: int):
    cfg = CONFIG[dataset]
    train, test = split
    model = pretrained.clone()
    if reference:
        model.backend = "torch"
    generator = rr.generators.create("generic", **cfg["search"])
    return RecourseSystem(
        train=train, test=test, model=model,
        generator=PerIndividual(generator) if reference else generator,
        identity=SystemIdentity(dataset=dataset, model=model_name, generator="generic", seed=0, key=f"bench-{dataset}-{model_name}"),
        settings=SimulationSettings(rounds=rounds, evaluate_every=10),
        metric_settings=MetricSettings(),
    )


def _round(system, t: int) -> dict:
    """One full round with its phase breakdown (seconds)."""
    before = dict(system.timings)
    start = time.perf_counter()
    stats = system.step(t)
    system.evaluate(t, stats)
    total = time.perf_counter() - start
    phases = {k: system.timings[k] - before[k] for k in before}
    return {"total": total, **phases}


def bench(dataset: str, rounds: int, ref_rounds: int) -> list[dict]:
    cfg = CONFIG[dataset]
    split = prepare_data(dataset, setup_seed=0, settings=cfg["setup"])
    out = []
    for model_name in MODELS:
        t0 = time.perf_counter()
        pretrained = pretrain_model(model_name, split[0], setup_seed=0, settings=cfg["setup"], options=cfg["models"][model_name])
        pretrain_s = time.perf_counter() - t0
        # One full round, both sides, same starting state.
        ours_round = _round(_system(dataset, model_name, split, pretrained, reference=False, rounds=rounds), 1)
        ref = _system(dataset, model_name, split, pretrained, reference=True, rounds=rounds)
        ref_rounds_t = [_round(ref, t) for t in range(1, ref_rounds + 1)]
        ref_round = {k: float(np.mean([r[k] for r in ref_rounds_t])) for k in ref_rounds_t[0]}
        # A whole system, ours end to end.
        system = _system(dataset, model_name, split, pretrained, reference=False, rounds=rounds)
        start = time.perf_counter()
        for _ in system.run():
            pass
        ours_system = time.perf_counter() - start
        ref_system = ref_round["total"] * rounds  # projected from the measured reference rounds
        out.append({
            "dataset": dataset, "model": model_name, "pretrain_s": pretrain_s,
            "ours_round": ours_round, "ref_round": ref_round,
            "ours_system_s": ours_system, "ours_system_phases": dict(system.timings),
            "ref_system_s_projected": ref_system, "ref_rounds_measured": ref_rounds,
        })
        print(json.dumps(out[-1], default=float), file=sys.stderr, flush=True)
    return out


def table(results: list[dict], rounds: int) -> str:
    lines = [
        "| dataset | model | round: ours (search / retrain / evaluate) | round: reference (search / retrain / evaluate) | round ratio "
        f"| {rounds}-round system: ours | reference (projected) | system ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, f = r["ours_round"], r["ref_round"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {o['total']:.3f} s ({o['search']:.3f} / {o['retrain']:.3f} / {o['evaluate']:.3f}) "
            f"| {f['total']:.2f} s ({f['search']:.2f} / {f['retrain']:.2f} / {f['evaluate']:.2f}) | {f['total'] / o['total']:.0f}x "
            f"| {r['ours_system_s']:.1f} s | {r['ref_system_s_projected']:.0f} s | {r['ref_system_s_projected'] / r['ours_system_s']:.0f}x |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the paper's system, on one core
PAPER_METRICS = {"n_permutations": 100, "n_samples": 1000, "n_grid": 1000}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def paper_child(reps: int) -> dict:
    """In a child process: ``reps`` timed paper systems after one untimed one; their timings and last rows."""
    torch.set_num_threads(1)
    setup = SetupSettings(pretrain_epochs=100, pretrain_batch_size=1)
    train, test = prepare_data("overlapping", setup_seed=0, settings=setup)
    pretrained = pretrain_model("mlp", train, setup_seed=0, settings=setup, options={})

    def one() -> tuple[float, float, dict, list]:
        start, cpu = time.perf_counter(), time.process_time()
        system = RecourseSystem(
            train=train, test=test, model=pretrained.clone(), generator=rr.generators.create("generic"),
            identity=SystemIdentity(dataset="overlapping", model="mlp", generator="generic", seed=0, key="paper"),
            settings=SimulationSettings(rounds=50, evaluate_every=10),
            metric_settings=MetricSettings(**PAPER_METRICS),
        )
        rows = [row for output in system.run() for row in output.rows]
        return time.perf_counter() - start, time.process_time() - cpu, dict(system.timings), rows

    one()  # numba kernels loaded, caches warm
    runs = [one() for _ in range(reps)]
    rows = [r for r in runs[-1][3] if r["scope"] != "timing"]
    return {
        "package": rr.__file__, "wall": [r[0] for r in runs], "cpu": [r[1] for r in runs],
        "phases": [r[2] for r in runs], "rows": rows, "torch_threads": torch.get_num_threads(),
    }


def _run_child(tree: Path, reps: int, blas_threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), **{v: str(blas_threads) for v in THREAD_VARIABLES}}
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--paper-child", "--reps", str(reps)],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"the child for {tree} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def _row_differences(a: list[dict], b: list[dict]) -> tuple[int, float, int, list[str]]:
    """(rows compared, largest |value difference|, rows whose p-values differ, metrics on one side only).

    Rows are compared where both sides have the (round, metric); a metric that one
    version computes and the other does not is listed, not compared.
    """
    index = {(r["round"], r["metric"]): r for r in a}
    mine = {(r["round"], r["metric"]) for r in b}
    only = sorted({m for _, m in (set(index) ^ mine)})
    largest, p_differ, n = 0.0, 0, 0
    for r in b:
        o = index.get((r["round"], r["metric"]))
        if o is None:
            continue
        n += 1
        if (o["value"] is None) != (r["value"] is None) or (o["p_value"] is None) != (r["p_value"] is None):
            p_differ += 1
            continue
        if o["value"] is not None:
            largest = max(largest, abs(o["value"] - r["value"]))
        if o["p_value"] is not None and o["p_value"] != r["p_value"]:
            p_differ += 1
    return n, largest, p_differ, only


def paper_system(tree: Path, baseline: Path | None, alternations: int, reps: int, blas_threads: int = 1) -> None:
    import statistics

    sides = {"after": tree} if baseline is None else {"before": baseline, "after": tree}
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(alternations):
        for name, path in sides.items():
            results[name].append(_run_child(path, reps, blas_threads))
            r = results[name][-1]
            print(f"[{i + 1}/{alternations}] {name}: wall {' '.join(f'{w:.3f}' for w in r['wall'])} s, "
                  f"cpu {' '.join(f'{c:.3f}' for c in r['cpu'])} s (load {r['load']:.1f})", file=sys.stderr, flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"1 torch thread, {blas_threads} BLAS thread(s)")
    print("| side | package | systems | wall min | wall median | CPU median | search | retrain | evaluate | load avg (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, runs in results.items():
        wall = [w for r in runs for w in r["wall"]]
        cpu = [c for r in runs for c in r["cpu"]]
        phases = {k: statistics.median(p[k] for r in runs for p in r["phases"]) for k in ("search", "retrain", "evaluate")}
        loads = [r["load"] for r in runs]
        print(f"| {name} | {runs[0]['package']} | {len(wall)} | {min(wall):.3f} s | {statistics.median(wall):.3f} s "
              f"| {statistics.median(cpu):.3f} s | {phases['search']:.3f} s | {phases['retrain']:.3f} s "
              f"| {phases['evaluate']:.3f} s | {min(loads):.1f}-{max(loads):.1f} |")
    if baseline is not None:
        n, largest, p_differ, only = _row_differences(results["before"][-1]["rows"], results["after"][-1]["rows"])
        print(f"rows compared: {n}; largest |value difference|: {largest:.3e}; p-values that differ: {p_differ}"
              + (f"; metrics of one side only: {', '.join(only)}" if only else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10-round systems, 1 reference round, overlapping only")
    parser.add_argument("--datasets", nargs="*", default=["overlapping", "credit_default"], choices=sorted(CONFIG))
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument("--paper-system", action="store_true", help="time the paper's synthetic system on one core")
    parser.add_argument("--tree", type=Path, default=ROOT, help="paper system: the checkout measured (default: this one)")
    parser.add_argument("--baseline", type=Path, default=None, help="paper system: a checkout to alternate with")
    parser.add_argument("--alternations", type=int, default=5, help="paper system: child processes per side")
    parser.add_argument("--reps", type=int, default=3, help="paper system: timed systems per child process")
    parser.add_argument("--blas-threads", type=int, default=1, help="paper system: BLAS/OpenMP threads (default 1)")
    parser.add_argument("--paper-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paper_child:
        print(json.dumps(paper_child(args.reps), default=float))
        return
    if args.paper_system:
        baseline = args.baseline.resolve() if args.baseline else None
        paper_system(args.tree.resolve(), baseline, args.alternations, args.reps, args.blas_threads)
        return
    torch.set_num_threads(1)
    if "RECOURSE_RAY_DATA" not in os.environ and (ROOT.parent / "shared" / "data" / "tabular").is_dir():
        rr.data.set_data_dir(ROOT.parent / "shared" / "data" / "tabular")
    rounds = 10 if args.quick else 50
    datasets = ["overlapping"] if args.quick else args.datasets
    results = []
    for d in datasets:
        results.extend(bench(d, rounds, ref_rounds=1 if (args.quick or d != "overlapping") else 3))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 torch thread")
    print(table(results, rounds))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
