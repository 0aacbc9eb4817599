"""Run the whole study (every paper family, 5 seeds) on this machine and time each family.

    python benchmarks/run_study.py --data DIR [--results results/study] [--reports reports]
        [--families paper-main paper-mitigation ...] [--num-cpus 2]

``DIR`` must hold the study's published synthetic CSVs and the real-world CSVs
(``recourse-ray datasets fetch study california_housing credit_default gmsc``, or links
to ``../shared/data``). Each family is one ``recourse-ray run`` (embedded Ray) followed by
``recourse-ray report`` into ``REPORTS/<family>``. The wall time of every family and
of the whole study, the machine and its load are written to ``REPORTS/study-times.json``
and printed as a Markdown table (benchmarks/RESULTS.md quotes it). A family already complete in ``--results`` is resumed, i.e. costs nothing:
pass a fresh ``--results`` folder to time a study from scratch.
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

FAMILIES = ["paper-main", "paper-mitigation", "paper-latent", "paper-real-world", "paper-real-world-mitigation"]
SYNTHETIC = {"paper-main", "paper-mitigation", "paper-latent"}
ROOT = Path(__file__).resolve().parent.parent


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("recourse-ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "recourse_ray.cli"]


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="data directory with the synthetic and real-world CSVs")
    ap.add_argument("--results", default="results/study", help="results root (default: results/study)")
    ap.add_argument("--reports", default="reports", help="where the reports go (default: reports)")
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    args = ap.parse_args(argv)
    env = {**os.environ, "RECOURSE_RAY_DATA": str(Path(args.data).resolve())}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    times, start = {}, time.perf_counter()
    for family in args.families:
        sweep = ROOT / "sweeps" / f"{family}.yaml"
        run = [*_cli(), "run", str(sweep), "--results", args.results, "--no-progress"]
        if family in SYNTHETIC:
            run.append("--store-states")  # the report's probability surfaces (2-D data only)
        if args.num_cpus:
            run += ["--num-cpus", str(args.num_cpus)]
        load0, t0 = _load(), time.perf_counter()
        subprocess.run(run, check=True, env=env)
        t1 = time.perf_counter()
        out = Path(args.reports) / family
        subprocess.run([*_cli(), "report", str(Path(args.results) / family), "-o", str(out)], check=True, env=env)
        times[family] = {"run_s": round(t1 - t0, 1), "report_s": round(time.perf_counter() - t1, 1),
                         "load_at_start": load0, "load_at_end": _load()}
        print(f"{family}: run {t1 - t0:.0f} s, report {time.perf_counter() - t1:.0f} s", flush=True)
    total = time.perf_counter() - start
    record = {"families": times, "total_s": round(total, 1), "cpus": args.num_cpus or os.cpu_count(),
              "cpu": _cpu_model(), "python": platform.python_version(), "finished_at": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.reports).mkdir(parents=True, exist_ok=True)
    (Path(args.reports) / "study-times.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n| family | run | report |\n|---|---:|---:|")
    for family, t in times.items():
        print(f"| {family} | {t['run_s'] / 60:.1f} min | {t['report_s']:.0f} s |")
    print(f"| **whole study** | **{total / 60:.1f} min** (runs and reports) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
