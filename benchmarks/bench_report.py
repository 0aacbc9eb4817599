"""Benchmark: aggregating and reporting a large synthetic results dataset.

    python benchmarks/bench_report.py [--quick] [--keep DIR]

Synthesises a results dataset through ``ResultsStore`` (the same files a sweep writes),
then times ``recourse_ray.report.aggregate`` and ``build_report``. Full size: 5 datasets
x 4 models x 5 generators x 5 seeds = 500 systems, 50 rounds evaluated every 5 rounds
(rounds 0, 5, ..., 50: 11 evaluation rounds), 17 metrics per evaluation round (9 at
round 0, where the 5 recourse and 3 timing metrics are absent), i.e. 179 rows per
system and 89,500 rows; 2 of the 5 datasets are 2-D and store a final state for seed 0
(40 states of 1,000 points with 60 x 60 probability surfaces). ``--quick``: 2 datasets x
2 models x 3 generators x 5 seeds = 60 systems, 20 rounds evaluated every 5.

Values are random but shaped like the real metrics (MMDs with p-values, scores in
[0, 1], a few NaNs). Writing the dataset is not timed. The report timings are single runs (a report is built once), aggregate() is best of 3. Wall
and process CPU time are both printed: on a shared machine the wall time follows the load.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recourse_ray.report import aggregate, build_report
from recourse_ray.store import ResultsStore, rows_to_table

METRICS = {
    "domain_mmd": "domain", "domain_mmd_negative": "domain", "model_mmd": "model", "model_mmd_grid": "model",
    "disagreement": "model", "decisiveness": "model", "perturbation": "model", "f1": "performance",
    "accuracy": "performance", "recourse_validity": "recourse", "recourse_cost": "recourse",
    "recourse_iterations": "recourse", "n_recourse": "recourse", "share_recourse": "recourse",
    "time_search_s": "timing", "time_retrain_s": "timing", "time_evaluate_s": "timing",
}
NOT_AT_ROUND_0 = {m for m, s in METRICS.items() if s in ("recourse", "timing")}
WITH_P = {"domain_mmd", "domain_mmd_negative", "model_mmd", "model_mmd_grid"}
DATASETS = ("overlapping", "moons", "california_housing", "credit_default", "gmsc")
TWO_D = {"overlapping", "moons", "circles", "linearly_separable"}
MODELS = ("logistic_regression", "mlp", "deep_ensemble", "mlp_wide")
GENERATORS = ("generic", "greedy", "revise", "dice", "gravitational")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 systems, 20 rounds (smoke run)")
    parser.add_argument("--keep", type=Path, default=None, help="write the dataset and report here and keep them")
    return parser.parse_args()


def synthesize(path: Path, *, datasets, models, generators, n_seeds: int, rounds: int, every: int) -> dict:
    """Write a results dataset of the product grid; returns its size."""
    seeds = list(range(n_seeds))
    spec = (f"name: bench-report\nseeds: {n_seeds}\ngrid:\n  dataset: {list(datasets)}\n  model: {list(models)}\n"
            f"  generator: {list(generators)}\nsimulation:\n  rounds: {rounds}\n  evaluate_every: {every}\n"
            "models: {mlp_wide: {preset: mlp, hidden: [128]}}\n")
    store = ResultsStore(path)
    store.init(spec)
    rng = np.random.default_rng(0)
    eval_rounds = sorted(set(range(0, rounds + 1, every)) | {rounds})
    n_rows = n_states = 0
    for d in datasets:
        for m in models:
            for gi, g in enumerate(generators):
                for s in seeds:
                    key = f"{d}-{m}-{g}-{s}"
                    identity = {"sweep": "bench-report", "system_key": key, "dataset": d, "model": m, "generator": g, "seed": s}
                    rows = []
                    for r in eval_rounds:
                        progress = r / rounds
                        for metric, scope in METRICS.items():
                            if r == 0 and metric in NOT_AT_ROUND_0:
                                continue
                            value = float(0.05 * (gi + 1) * progress + rng.normal(scale=0.01))
                            if metric in ("f1", "accuracy"):
                                value = 0.9 - 0.1 * progress * (gi + 1) / len(generators) + rng.normal(scale=0.01)
                            if rng.random() < 0.002:
                                value = float("nan")
                            p = float(rng.uniform(0, 0.1 if progress > 0.5 else 1)) if metric in WITH_P else None
                            rows.append({**identity, "round": r, "metric": metric, "scope": scope, "value": value, "p_value": p})
                    manifest = {"settings": {"rounds": rounds}, "timings": {"total_s": float(rng.uniform(10, 20))},
                                "host": f"node-{s % 3}", "versions": {"python": platform.python_version(), "recourse_ray": "0.1.0"}}
                    store.write_system(identity, rows_to_table(rows), manifest)
                    n_rows += len(rows)
                    if d in TWO_D and s == 0:
                        X = rng.normal(size=(1000, 2)).astype(np.float32)
                        y = (X[:, 0] > 0).astype(np.int64)
                        g1 = np.linspace(-3, 3, 60, dtype=np.float32)
                        grid1, grid2 = np.meshgrid(g1, g1, indexing="xy")
                        store.write_state(key, {
                            "X_initial": X, "y_initial": y, "X_final": X + 0.2, "y_final": y,
                            "surface_x1": g1, "surface_x2": g1,
                            "surface_initial": 1 / (1 + np.exp(-3 * grid1)), "surface_final": 1 / (1 + np.exp(-3 * (grid1 + grid2)))})
                        n_states += 1
    return {"systems": len(datasets) * len(models) * len(generators) * n_seeds, "rows": n_rows,
            "evaluation_rounds": len(eval_rounds), "states": n_states}


class _PhaseCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.phases: dict = {}
        self.n_figures = 0

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "report_phases"):
            self.phases = dict(record.report_phases)
            self.n_figures = record.report_figures


def _size(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    args = parse_args()
    if args.quick:
        shape = dict(datasets=DATASETS[:2], models=MODELS[:2], generators=GENERATORS[:3], n_seeds=5, rounds=20, every=5)
    else:
        shape = dict(datasets=DATASETS, models=MODELS, generators=GENERATORS, n_seeds=5, rounds=50, every=5)
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_report_"))
    results = base / "results" / "bench-report"
    if results.exists():
        shutil.rmtree(results)
    t0 = time.perf_counter()
    size = synthesize(results, **shape)
    print(f"synthesised {size['systems']} systems, {size['rows']:,} rows, {size['evaluation_rounds']} evaluation rounds, "
          f"{size['states']} states in {time.perf_counter() - t0:.1f}s (not timed below)")

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        agg = aggregate(results)
        times.append(time.perf_counter() - t0)
    print(f"aggregate(): {agg.height:,} groups, best of 3 {min(times):.3f}s (runs: {', '.join(f'{t:.3f}' for t in times)})")

    catcher = _PhaseCatcher()
    logger = logging.getLogger("recourse_ray.report.documents")
    logger.addHandler(catcher)
    logger.setLevel(logging.INFO)
    variants = [("full report (PNG + SVG)", {})]
    if not args.quick:
        variants += [("PNG only", {"formats": ("png",)}), ("no trajectory figures", {"trajectories": False})]
    print("| variant | wall | CPU | read+aggregate | data files | figures (count) | documents | output size |")
    print("|---|---|---|---|---|---|---|---|")
    for name, kwargs in variants:
        out = base / f"report-{len(kwargs)}-{'-'.join(map(str, kwargs))}"
        if out.exists():
            shutil.rmtree(out)
        t0, c0 = time.perf_counter(), time.process_time()
        index = build_report(results, out, **kwargs)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        ph = catcher.phases
        print(f"| {name} | {total:.1f}s | {cpu:.1f}s | {ph.get('read and aggregate', 0):.2f}s | {ph.get('data files', 0):.2f}s | "
              f"{ph.get('figures', 0):.1f}s ({catcher.n_figures}) | {ph.get('documents', 0):.2f}s | "
              f"{_size(out):.1f} MB (index.html {index.stat().st_size / 1e6:.1f} MB) |")
    print(f"python {platform.python_version()}, {platform.machine()}, {sys.platform}")
    if args.keep is None:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
