"""Run every benchmark in turn (``make bench``); ``--quick`` passes the quick flag on.

Each script prints its own markdown table; benchmarks/RESULTS.md holds the numbers of
the last full run with the machine they were measured on. bench_dice.py needs the
``bench`` extra (dice-ml) and is skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_training.py", "bench_vae.py", "bench_search.py", "bench_mmd.py", "bench_system.py", "bench_sweep.py", "bench_report.py", "bench_dice.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failed = []
    for script in SCRIPTS:
        if script == "bench_dice.py" and importlib.util.find_spec("dice_ml") is None:
            print(f"\n## {script}: skipped (pip install -e '.[bench]' for dice-ml)")
            continue
        cmd = [sys.executable, str(HERE / script)]
        if args.quick and script != "bench_dice.py":
            cmd.append("--quick")
        print(f"\n## {script}\n", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
