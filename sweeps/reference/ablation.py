"""The reference mode's ablation: switch each mechanism off in turn and see which cells move.

    python sweeps/reference/ablation.py --results results/ablation --out reports/reference [--seeds 5]
        [--mechanisms lockstep,joint_distance,...]

For every mechanism of ``protocol: ard-0.1.0`` it runs ``ard-overlapping.yaml`` with
``protocol: {name: ard-0.1.0, without: [mechanism]}`` (one sweep each, resumable: a
finished one is skipped), then compares every run with the reference's output file and
with the full reference mode. It writes to ``--out``:

- ``ablation.csv``: one row per (mechanism, model, generator, metric) at the final round:
  our mean without the mechanism, with all mechanisms, the reference's mean, and the
  agreement with the reference either way;
- ``ablation.md``: per mechanism, the agreement rate without it and the cells it moves
  (relative change of the mean > 20 % and absolute change > 0.005, or a flip of the
  agreement verdict), sorted by size.

The runs need the reference's data beside the project (``../shared/reference/``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

from recourse_ray import compare as compare_mod
from recourse_ray import protocols

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "ard-v0.1.0" / "overlapping_output.csv"
METRICS = list(compare_mod.AGREEMENT_METRICS)
MOVE_RELATIVE, MOVE_ABSOLUTE = 0.2, 0.005


def sweep_text(name: str, without: list[str], seeds: int) -> str:
    raw = yaml.safe_load((HERE / "ard-overlapping.yaml").read_text())
    raw["name"] = name
    raw["seeds"] = seeds
    raw["protocol"] = {"name": "ard-0.1.0", "without": without} if without else "ard-0.1.0"
    # The data path is relative to the sweep file's folder.
    raw["datasets"]["overlapping"]["path"] = str((HERE / raw["datasets"]["overlapping"]["path"]).resolve())
    return yaml.safe_dump(raw, sort_keys=False)


def run(name: str, without: list[str], seeds: int, results: Path, work: Path) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(sweep_text(name, without, seeds))
    cmd = [sys.executable, "-m", "recourse_ray.cli", "run", str(path), "--results", str(results), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return results / name


def final_cells(results: Path, reference: pl.DataFrame) -> pl.DataFrame:
    cmp = compare_mod.compare(str(results), reference, reference_source=str(REFERENCE))
    return cmp.table().filter(pl.col("metric").is_in(METRICS)).select(
        "model", "generator", "metric", "ours_mean", "reference_mean", "agree"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "ablation")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "reference")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--mechanisms", default=None, help="comma-separated subset (default: all)")
    args = parser.parse_args()
    names = list(protocols.mechanisms("ard-0.1.0"))
    if args.mechanisms:
        names = [m for m in args.mechanisms.split(",") if m]
        unknown = sorted(set(names) - set(protocols.mechanisms("ard-0.1.0")))
        if unknown:
            sys.exit(f"unknown mechanism(s): {', '.join(unknown)}; see `recourse-ray protocols ard-0.1.0`")
    args.results.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.results / "_sweeps"
    work.mkdir(exist_ok=True)
    reference = compare_mod.read_reference(REFERENCE)

    full = final_cells(run("ard-full", [], args.seeds, args.results, work), reference).rename(
        {"ours_mean": "with_all", "agree": "agree_with_all"}
    )
    frames, lines = [], ["# Reference mode: one mechanism off at a time", ""]
    rate_all = full["agree_with_all"].mean()
    lines += [f"All mechanisms on: {full['agree_with_all'].sum()}/{full.height} final-round cells agree "
              f"({rate_all:.1%}), {args.seeds} seeds.", "",
              f"A cell *moves* when its mean changes by more than {MOVE_RELATIVE:.0%} and {MOVE_ABSOLUTE} or its "
              "agreement verdict flips.", ""]
    for m in names:
        print(f"mechanism {m} off ...", flush=True)
        cells = final_cells(run(f"ard-without-{m}", [m], args.seeds, args.results, work), reference)
        joined = full.join(cells.rename({"ours_mean": "without", "agree": "agree_without"}),
                           on=["model", "generator", "metric", "reference_mean"], how="inner")
        joined = joined.with_columns(pl.lit(m).alias("mechanism"),
                                     ((pl.col("without") - pl.col("with_all")) / pl.col("with_all").abs()).alias("change"))
        moved = joined.filter(
            (((pl.col("without") - pl.col("with_all")).abs() > MOVE_ABSOLUTE) & (pl.col("change").abs() > MOVE_RELATIVE))
            | (pl.col("agree_without") != pl.col("agree_with_all"))
        ).sort(pl.col("change").abs(), descending=True)
        frames.append(joined)
        rate = joined["agree_without"].mean()
        bug = " (a bug of the reference)" if protocols.mechanisms("ard-0.1.0")[m].bug else ""
        lines.append(f"## `{m}`{bug}: agreement {joined['agree_without'].sum()}/{joined.height} ({rate:.1%}) without it")
        lines.append("")
        if moved.is_empty():
            lines += ["No cell moves.", ""]
            continue
        lines += ["| model | generator | metric | with all | without | reference | change | agrees with / without |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in moved.iter_rows(named=True):
            verdict = f"{'yes' if r['agree_with_all'] else 'no'} / {'yes' if r['agree_without'] else 'no'}"
            lines.append(f"| {r['model']} | {r['generator']} | {r['metric']} | {r['with_all']:.4g} | {r['without']:.4g} "
                         f"| {r['reference_mean']:.4g} | {r['change']:+.0%} | {verdict} |")
        lines.append("")
    pl.concat(frames).write_csv(args.out / "ablation.csv")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out / 'ablation.md'}, {args.out / 'ablation.csv'}")


if __name__ == "__main__":
    main()
