"""Behaviour-preserving refactors prove themselves here: rows equal to the last bit.

    python benchmarks/equivalence/check.py run OUT.parquet     # run the fixed sweep, save its rows
    python benchmarks/equivalence/check.py compare A.parquet B.parquet

``run`` runs ``benchmarks/equivalence/sweep.yaml`` (every generator preset, every model,
variants, a CSV dataset with a ``search:`` block) through the CLI on an embedded Ray and
saves every non-timing row, keyed by the identity columns (dataset, model, generator,
seed, round, metric). It reads the parquet files directly, not through the package, so
it keeps working while the package changes under it. ``compare`` maps the two runs'
rows by identity (system keys may differ between versions) and requires every
``value`` and ``p_value`` to be equal bit for bit (nulls equal nulls); it prints the
count of rows compared and every difference, and exits 1 on any. Metrics that only the
second run has are listed (a change that adds a metric says so), not failed.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
IDENTITY = ["dataset", "model", "generator", "seed", "round", "metric"]


def run(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        cmd = [sys.executable, "-m", "recourse_ray.cli", "run", str(HERE / "sweep.yaml"), "--results", tmp,
               "--py-modules", str(ROOT / "examples"), "--no-progress"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the sweep failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        files = sorted(glob.glob(f"{tmp}/equivalence/rows/**/*.parquet", recursive=True))
        frames = [pl.read_parquet(f, hive_partitioning=False) for f in files]
        rows = pl.concat(frames, how="vertical_relaxed")
    keep = IDENTITY + ["scope", "value", "p_value", "system_key"]
    rows = rows.select([c for c in keep if c in rows.columns]).filter(pl.col("scope") != "timing")
    rows = rows.with_columns(pl.col("seed").cast(pl.Int64), pl.col("round").cast(pl.Int64)).sort(IDENTITY)
    rows.write_parquet(out)
    n_systems = rows.select(IDENTITY[:4]).unique().height
    print(f"{rows.height} rows of {n_systems} systems written to {out}")


def compare(a: str, b: str) -> int:
    old, new = pl.read_parquet(a), pl.read_parquet(b)
    joined = old.join(new, on=IDENTITY, how="full", suffix="_new", coalesce=True)
    problems = []
    # Rows of a metric the new version adds are listed, not failed: a change that adds
    # a metric says so. A row the new version lost is a failure.
    added = joined.filter(pl.col("scope").is_null())
    if added.height:
        print(f"metrics only in the second run ({added.height} rows): {sorted(set(added['metric']))}")
    for row in joined.filter(pl.col("scope_new").is_null()).head(20).iter_rows(named=True):
        problems.append(f"only in the first run: {[row[k] for k in IDENTITY]}")
    joined = joined.filter(pl.col("scope").is_not_null() & pl.col("scope_new").is_not_null())
    for col in ("value", "p_value"):
        x = joined[col].to_numpy().astype(np.float64)
        y = joined[f"{col}_new"].to_numpy().astype(np.float64)
        same = (x.view(np.int64) == y.view(np.int64)) | (np.isnan(x) & np.isnan(y))
        for i in np.flatnonzero(~same)[:50]:
            row = joined.row(int(i), named=True)
            problems.append(f"{col} differs at {[row[k] for k in IDENTITY]}: {x[i]!r} vs {y[i]!r}")
        if (~same).sum() > 50:
            problems.append(f"... {(~same).sum()} {col} differences in all")
    keys = joined.select("system_key", "system_key_new").unique()
    print(f"compared {joined.height} rows ({old.height} vs {new.height}), {keys.height} systems "
          f"({(keys['system_key'] != keys['system_key_new']).sum()} with a new key)")
    for p in problems:
        print("  " + p)
    print("IDENTICAL" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
