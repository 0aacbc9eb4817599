"""Aggregation of a sweep's metric rows across seeds (polars, lazy until the end).

The results dataset holds one row per (system, round, metric). The report summarises
each cell of the grid, ``dataset x model x generator x round x metric``, across the
seeds (the study's "folds"):

- ``mean`` and ``std`` (sample standard deviation, ddof = 1; null with one seed);
- a two-sided 95 % Student-t interval for the mean: ``mean +- t(0.975, n - 1) * std / sqrt(n)``
  with ``n = n_seeds`` (null with one seed);
- ``n_seeds``: values that entered the statistics; ``n_nan``: values that were NaN
  (undefined, e.g. an F1 without positives) and were left out;
- ``share_significant``: among those values with a p-value, the share with ``p < 0.05``.

Derived metrics ``delta_f1``, ``delta_accuracy`` and ``delta_decisiveness`` are
computed per system as ``value(round) - value(round 0)`` before aggregating, so their
spread is the spread of the systems' own changes (SPEC.md section 6: reports show
changes relative to round 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recourse_ray.report._stats import t_critical
from recourse_ray.store import POLARS_SCHEMA, ResultsStore

__all__ = [
    "GROUP_COLUMNS",
    "DELTA_METRICS",
    "SIGNIFICANCE_LEVEL",
    "CONFIDENCE",
    "open_store",
    "system_rows",
    "with_deltas",
    "aggregate",
    "final_round_table",
    "initial_scores",
    "write_table",
]

GROUP_COLUMNS = ("dataset", "model", "generator", "scope", "metric", "round")
# derived metric -> the metric it is the change of
DELTA_METRICS = {"delta_f1": "f1", "delta_accuracy": "accuracy", "delta_decisiveness": "decisiveness"}
SIGNIFICANCE_LEVEL = 0.05
CONFIDENCE = 0.95

Source = ResultsStore | str | Path | pl.LazyFrame | pl.DataFrame


def open_store(source: ResultsStore | str | Path) -> ResultsStore:
    """A ResultsStore for a path/URI (or the store itself); raises if it is not a results dataset."""
    store = source if isinstance(source, ResultsStore) else ResultsStore(source)
    store.check()
    return store


def system_rows(source: Source) -> pl.LazyFrame:
    """The rows of a results dataset (or given rows) as a LazyFrame with the pinned schema."""
    if isinstance(source, pl.DataFrame):
        source = source.lazy()
    if isinstance(source, pl.LazyFrame):
        return source.select([pl.col(c).cast(t) for c, t in POLARS_SCHEMA.items()])
    return open_store(source).scan_rows()


def with_deltas(rows: pl.LazyFrame, deltas: dict[str, str] = DELTA_METRICS) -> pl.LazyFrame:
    """Append per-system change-from-round-0 rows (``delta_<metric>``) to ``rows``.

    A delta row exists for every round of a system that also has the metric at round 0;
    its scope is the base metric's, its p_value is null, and it is NaN when either
    value is NaN.
    """
    if not deltas:
        return rows
    base_to_delta = {base: delta for delta, base in deltas.items()}
    base = rows.filter(pl.col("metric").is_in(list(base_to_delta)))
    reference = (
        base.filter(pl.col("round") == 0)
        .group_by("system_key", "metric")
        .agg(pl.col("value").first().alias("_reference"))
    )
    delta_rows = (
        base.join(reference, on=["system_key", "metric"], how="inner")
        .with_columns(
            (pl.col("value") - pl.col("_reference")).alias("value"),
            pl.col("metric").replace_strict(base_to_delta, return_dtype=pl.String).alias("metric"),
            pl.lit(None, dtype=pl.Float64).alias("p_value"),
        )
        .drop("_reference")
    )
    return pl.concat([rows, delta_rows], how="vertical")


def _add_intervals(frame: pl.DataFrame, confidence: float) -> pl.DataFrame:
    """Add t critical values and the interval columns (needs the collected n_seeds)."""
    dfs = sorted({int(n) - 1 for n in frame["n_seeds"].unique().to_list() if n is not None and n >= 2})
    crit = pl.DataFrame(
        {"n_seeds": [d + 1 for d in dfs], "t_critical": [t_critical(d, confidence) for d in dfs]},
        schema={"n_seeds": frame.schema["n_seeds"], "t_critical": pl.Float64},
    )
    half = pl.col("t_critical") * pl.col("std") / pl.col("n_seeds").cast(pl.Float64).sqrt()
    return (
        frame.join(crit, on="n_seeds", how="left")
        .with_columns(half.alias("ci_half_width"))
        .with_columns(
            (pl.col("mean") - pl.col("ci_half_width")).alias("ci_low"),
            (pl.col("mean") + pl.col("ci_half_width")).alias("ci_high"),
        )
    )


AGGREGATE_COLUMNS = (
    *GROUP_COLUMNS,
    "n_seeds", "n_nan", "mean", "std", "ci_low", "ci_high", "ci_half_width", "t_critical",
    "min", "max", "n_p_values", "n_significant", "share_significant",
)


def aggregate(
    source: Source,
    *,
    deltas: dict[str, str] = DELTA_METRICS,
    significance_level: float = SIGNIFICANCE_LEVEL,
    confidence: float = CONFIDENCE,
) -> pl.DataFrame:
    """Aggregate metric values across seeds for every dataset x model x generator x round x metric.

    Args:
        source: a results directory (path/URI), a ``ResultsStore``, or rows with the
            store's schema (DataFrame or LazyFrame).
        deltas: derived change-from-round-0 metrics to add, ``{name: base metric}``.
        significance_level: p-values below it count as significant (0.05).
        confidence: coverage of the t interval (0.95).

    Returns:
        One row per group, columns ``AGGREGATE_COLUMNS``: the group keys
        (``dataset, model, generator, scope, metric, round``), ``n_seeds`` (non-NaN
        values), ``n_nan`` (NaN or null values, excluded), ``mean``, ``std`` (ddof 1),
        ``ci_low``/``ci_high``/``ci_half_width`` (t interval; null when n_seeds < 2),
        ``t_critical``, ``min``, ``max``, ``n_p_values`` (valid values that carry a
        p-value), ``n_significant`` (of those, p < level) and ``share_significant``
        (their ratio; null without p-values). Sorted by the group keys.
    """
    # cache(): the delta rows re-read the same scan; without it polars scans every file twice
    rows = with_deltas(system_rows(source).cache(), deltas)
    valid = pl.col("value").is_not_null() & pl.col("value").is_not_nan()
    has_p = valid & pl.col("p_value").is_not_null() & pl.col("p_value").is_not_nan()
    value = pl.col("value").filter(valid)
    grouped = (
        rows.group_by(list(GROUP_COLUMNS))
        .agg(
            valid.sum().cast(pl.Int64).alias("n_seeds"),
            (~valid).sum().cast(pl.Int64).alias("n_nan"),
            value.mean().alias("mean"),
            value.std(ddof=1).alias("std"),
            value.min().alias("min"),
            value.max().alias("max"),
            has_p.sum().cast(pl.Int64).alias("n_p_values"),
            (has_p & (pl.col("p_value") < significance_level)).sum().cast(pl.Int64).alias("n_significant"),
        )
        .with_columns(
            # polars gives NaN-free groups a null std for n = 1 already; make n = 0 explicit too
            pl.when(pl.col("n_seeds") >= 2).then(pl.col("std")).otherwise(None).alias("std"),
            pl.when(pl.col("n_p_values") > 0)
            .then(pl.col("n_significant") / pl.col("n_p_values"))
            .otherwise(None)
            .alias("share_significant"),
        )
        .sort(list(GROUP_COLUMNS))
        .collect()
    )
    return _add_intervals(grouped, confidence).select(AGGREGATE_COLUMNS).sort(list(GROUP_COLUMNS))


def final_round_table(source: Source | pl.DataFrame, *, metrics: Sequence[str] | None = None) -> pl.DataFrame:
    """The aggregates at each (dataset, model, generator)'s final round.

    Args:
        source: an ``aggregate()`` result, or anything ``aggregate`` accepts.
        metrics: keep only these metrics (all by default).

    Returns:
        The aggregate rows whose round is the largest round present for their
        (dataset, model, generator), one row per metric (long format).
    """
    agg = source if isinstance(source, pl.DataFrame) and "n_seeds" in source.columns else aggregate(source)
    out = agg.filter(pl.col("round") == pl.col("round").max().over("dataset", "model", "generator"))
    if metrics is not None:
        out = out.filter(pl.col("metric").is_in(list(metrics)))
    return out.sort("dataset", "model", "generator", "metric")


def initial_scores(source: Source, *, metrics: Sequence[str] = ("f1", "accuracy")) -> pl.DataFrame:
    """Round-0 model scores per dataset x model, across seeds.

    At round 0 nothing has moved yet, so the generator does not matter: values are first
    averaged over generators within (dataset, model, seed), then summarised across seeds
    (mean, std with ddof 1, n_seeds). NaN values are excluded.
    """
    rows = system_rows(source)
    valid = pl.col("value").is_not_null() & pl.col("value").is_not_nan()
    per_seed = (
        rows.filter((pl.col("round") == 0) & pl.col("metric").is_in(list(metrics)) & valid)
        .group_by("dataset", "model", "metric", "seed")
        .agg(pl.col("value").mean())
    )
    return (
        per_seed.group_by("dataset", "model", "metric")
        .agg(
            pl.len().cast(pl.Int64).alias("n_seeds"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
        )
        .sort("dataset", "model", "metric")
        .collect()
    )


def write_table(frame: pl.DataFrame, out_dir: str | Path, stem: str, *,
                formats: Sequence[str] = ("csv", "parquet")) -> list[Path]:
    """Write ``frame`` as ``<stem>.csv`` and/or ``<stem>.parquet`` into ``out_dir``; returns the paths."""
    unknown = [f for f in formats if f not in ("csv", "parquet")]
    if unknown or not formats:
        raise ValueError(f"The 'formats' parameter of write_table must list 'csv' and/or 'parquet'. Got {tuple(formats)!r} instead.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "csv":
            frame.write_csv(path, float_precision=None)
        else:
            frame.write_parquet(path)
        paths.append(path)
    return paths
