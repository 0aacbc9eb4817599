"""Compare a results dataset with the output file of the reference implementation.

The reference, AlgorithmicRecourseDynamics.jl (v0.1.0), writes one CSV per experiment:
one row per (fold ``k``, round ``n``, ``model``, ``generator``, metric ``name``/``scope``)
with the metric's ``value``, plus per-round recourse columns (``n_individuals``,
``pct_total``, ``success_rate``, ``distance``, ``redundancy``) repeated on every metric
row of a (fold, round, model, generator). This module puts that file next to one of our
sweeps, cell by cell::

    read_reference(path, mapping)         the file -> long rows in our names
    compare(results, reference, mapping)  -> Comparison: per (model, generator, metric,
                                             round) ours vs reference, ratio, agreement
    write_comparison(comparison, out)     comparison.csv, comparison.md, agreement.json

A ``ReferenceMapping`` translates the reference's names into ours (defaults below;
overridden by a YAML/JSON file or ``--map-*`` flags). A cell *agrees* when ours/reference
lies in ``[1/ratio, ratio]`` (x1.5 by default) or the two means differ by at most
``abs_tolerance`` (0.01). The statistics are those of the report: mean and sample
standard deviation (ddof 1) over seeds (ours) or folds (the reference), NaN left out.

Only reads the results dataset (through ``recourse_ray.store`` and the report's row
reader); ``recourse-ray compare`` and ``recourse-ray report --reference`` use it. See
docs/compare.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from recourse_ray._config import check_int, check_real, short_repr, unknown_key_message
from recourse_ray._registry import suggest
from recourse_ray.report._format import fmt, fmt_mean_std
from recourse_ray.report.aggregation import DELTA_METRICS, system_rows, with_deltas
from recourse_ray.store import ResultsStore

__all__ = [
    "AGREEMENT_METRICS",
    "CELL_COLUMNS",
    "COMPARISON_COLUMNS",
    "DEFAULT_ABS_TOLERANCE",
    "DEFAULT_RATIO",
    "RECOURSE_COLUMNS",
    "REFERENCE_COLUMNS",
    "REFERENCE_METRICS",
    "Comparison",
    "agree_text",
    "rate_text",
    "ComparisonError",
    "ReferenceMapping",
    "compare",
    "dataset_from_filename",
    "format_comparison",
    "load_mapping",
    "parse_assignments",
    "read_reference",
    "write_comparison",
]

logger = logging.getLogger(__name__)

# Columns every reference file must have; p_value and the recourse columns are optional.
REFERENCE_COLUMNS = ("value", "name", "scope", "k", "n", "model", "generator")
# Per-(fold, round, model, generator) columns, repeated on each of its metric rows.
RECOURSE_COLUMNS = ("n_individuals", "pct_total", "success_rate", "distance", "redundancy")
# The metric rows of AlgorithmicRecourseDynamics.jl v0.1.0, as "name/scope".
REFERENCE_METRICS = ("mmd/domain", "mmd/model", "mmd_grid/model", "disagreement/model", "decisiveness/model",
                     "perturbation/model", "model_performance/model")

_DEFAULT_MODELS = {"LogisticRegression": "logistic_regression", "FluxModel": "mlp", "FluxEnsemble": "deep_ensemble"}
_DEFAULT_GENERATORS = {"Generic": "generic", "DICE": "dice", "Greedy": "greedy", "REVISE": "revise"}
_DEFAULT_METRICS = {
    "mmd/domain": "domain_mmd",
    "mmd/model": "model_mmd",
    "mmd_grid/model": "model_mmd_grid",
    "disagreement/model": "disagreement",
    # The reference code's |‖p_0 - 0.5‖ - ‖p_t - 0.5‖|, not the study's text definition (docs/metrics.md).
    "decisiveness/model": "decisiveness_code",
    "perturbation/model": "perturbation",
    # 0 at round 0, then negative: the change of the test-set F1 since round 0 (docs/compare.md).
    "model_performance/model": "delta_f1",
    "n_individuals": "n_individuals",
    "pct_total": "share_individuals",
    "success_rate": "success_rate_reference",
    "distance": "distance_reference",
    "redundancy": "redundancy_reference",
}
# The metrics whose cells make the agreement rate by default (3 models x 4 generators x 4 = 48 cells).
AGREEMENT_METRICS = ("domain_mmd", "model_mmd", "model_mmd_grid", "disagreement")
DEFAULT_RATIO = 1.5
DEFAULT_ABS_TOLERANCE = 0.01

# One cell of the comparison, and the long reference rows in our names.
CELL_COLUMNS = ("model", "generator", "metric", "round")
_REFERENCE_SCHEMA = {"model": pl.String, "generator": pl.String, "round": pl.Int64, "metric": pl.String,
                     "replicate": pl.Int64, "value": pl.Float64}
COMPARISON_COLUMNS = (
    "dataset", *CELL_COLUMNS, "ours_mean", "ours_std", "ours_n", "reference_mean", "reference_std", "reference_n",
    "ratio", "abs_diff", "agree", "status", "counted",
)
STATUS_COMPARED, STATUS_NOT_IN_RESULTS, STATUS_NOT_IN_REFERENCE = "compared", "not in results", "not in reference"
_KINDS = ("models", "generators", "metrics")
_SINGULAR = {"models": "model", "generators": "generator", "metrics": "metric"}
_FLAGS = {"models": "--map-model", "generators": "--map-generator", "metrics": "--map-metric"}
# Bad entries quoted in a message at most (the count says how many there are).
_MAX_EXAMPLES = 3


class ComparisonError(ValueError):
    """A reference file, a mapping or the comparison's arguments have problems; ``problems`` lists them all."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = list(dict.fromkeys(problems))
        if len(self.problems) == 1:
            message = f"{what}: {self.problems[0]}"
        else:
            message = f"{what}: {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


# ---------------------------------------------------------------------------- mapping
def _metric_key(key: str) -> str:
    """A reference metric as "name/scope"; a bare name is completed when only one scope has it."""
    if "/" in key or key in RECOURSE_COLUMNS:
        return key
    scopes = [m for m in REFERENCE_METRICS if m.split("/")[0] == key]
    return scopes[0] if len(scopes) == 1 else key


@dataclass(frozen=True, kw_only=True)
class ReferenceMapping:
    """How the reference's names translate into the labels of a results dataset.

    Each table maps a reference name to our label, or to None to leave it out.
    Labels may be variant names (``{"Generic": "generic_ref"}``).

    Attributes:
        models: reference model -> our ``model`` label.
        generators: reference generator -> our ``generator`` label.
        metrics: reference metric (``"name/scope"`` for metric rows, e.g. ``"mmd/domain"``;
            the column name for the recourse columns, e.g. ``"success_rate"``) -> our metric.
            A bare name stands for its only scope (``"disagreement"`` = ``"disagreement/model"``).
        dataset: the dataset of the results the reference ran on (None: decided by ``compare``).
        given: ``(table, reference name)`` entries set by a mapping file or a flag rather
            than by the defaults; their labels must exist in the results.
    """

    models: dict[str, str | None] = field(default_factory=lambda: dict(_DEFAULT_MODELS))
    generators: dict[str, str | None] = field(default_factory=lambda: dict(_DEFAULT_GENERATORS))
    metrics: dict[str, str | None] = field(default_factory=lambda: dict(_DEFAULT_METRICS))
    dataset: str | None = None
    given: frozenset[tuple[str, str]] = frozenset()

    def table(self, kind: str) -> dict[str, str | None]:
        """One of the three tables by name: ``"models"``, ``"generators"`` or ``"metrics"``."""
        return getattr(self, kind)

    def labels(self, kind: str) -> list[str]:
        """Our labels of one table, in mapping order, without the left-out entries."""
        return list(dict.fromkeys(v for v in self.table(kind).values() if v is not None))

    def problems(self) -> list[str]:
        """What is wrong with the mapping itself (labels that are not names, duplicate labels)."""
        out = []
        for kind in _KINDS:
            seen: dict[str, str] = {}
            for ref, ours in self.table(kind).items():
                if ours is not None and (not isinstance(ours, str) or not ours):
                    out.append(f"The {_SINGULAR[kind]} label of reference {ref!r} must be a non-empty string or "
                               f"null (left out). Got {short_repr(ours)} instead.")
                elif ours is not None and ours in seen:
                    out.append(f"The reference {_SINGULAR[kind]}s {seen[ours]!r} and {ref!r} both map to {ours!r}; "
                               "each label can stand for one reference name only.")
                elif ours is not None:
                    seen[ours] = ref
            if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
                out.append(f"The 'dataset' of a mapping must be a dataset name. Got {short_repr(self.dataset)} instead.")
        return list(dict.fromkeys(out))

    def override(
        self,
        *,
        models: Mapping[str, str | None] | None = None,
        generators: Mapping[str, str | None] | None = None,
        metrics: Mapping[str, str | None] | None = None,
        dataset: str | None = None,
    ) -> ReferenceMapping:
        """A copy with some entries replaced (or added); the replaced entries count as given."""
        tables: dict[str, dict[str, str | None]] = {kind: dict(self.table(kind)) for kind in _KINDS}
        given = set(self.given)
        for kind, new in (("models", models), ("generators", generators), ("metrics", metrics)):
            for ref, ours in (new or {}).items():
                key = _metric_key(str(ref)) if kind == "metrics" else str(ref)
                tables[kind][key] = ours
                given.add((kind, key))
        return replace(self, **tables, dataset=self.dataset if dataset is None else dataset, given=frozenset(given))

    def to_dict(self) -> dict[str, Any]:
        """The mapping as plain data (the mapping-file layout)."""
        return {"models": dict(self.models), "generators": dict(self.generators), "metrics": dict(self.metrics),
                "dataset": self.dataset}


_MAPPING_KEYS = ("models", "generators", "metrics", "dataset")


def load_mapping(path: str | Path, base: ReferenceMapping | None = None) -> ReferenceMapping:
    """Read a mapping file (YAML or JSON) over ``base`` (the defaults when None).

    The file holds any of ``models:``, ``generators:``, ``metrics:`` (each a mapping of
    reference name -> our label, or null to leave it out) and ``dataset:``::

        generators: {Generic: generic_ref}
        metrics: {model_performance: null, "mmd/domain": domain_mmd}
        dataset: overlapping

    Raises:
        ComparisonError: the file is missing or unreadable, or has unknown keys or bad
            entries (all of them listed).
    """
    what = f"Invalid mapping file {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComparisonError(what, ["it does not exist."]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComparisonError(what, [f"it cannot be read ({exc})."]) from None
    try:
        raw = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ComparisonError(what, [f"it is neither YAML nor JSON: {str(exc).splitlines()[0]}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ComparisonError(what, [f"it must hold a mapping with keys {', '.join(_MAPPING_KEYS)}. "
                                     f"Got {type(raw).__name__} instead."])
    problems = [unknown_key_message(k, "mapping", _MAPPING_KEYS) for k in raw if k not in _MAPPING_KEYS]
    tables: dict[str, dict[str, str | None]] = {}
    for kind in _KINDS:
        entries = raw.get(kind)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            problems.append(f"'{kind}' must be a mapping of reference name -> our label. "
                            f"Got {type(entries).__name__} instead.")
            continue
        tables[kind] = {str(ref): ours for ref, ours in entries.items()}
    dataset = raw.get("dataset")
    mapping = (base or ReferenceMapping()).override(**tables, dataset=dataset)
    problems += mapping.problems()
    if problems:
        raise ComparisonError(what, problems)
    return mapping


def parse_assignments(items: Iterable[str] | None, flag: str, owner: str = "recourse-ray compare") -> dict[str, str | None]:
    """``["Generic=generic_ref", "REVISE="]`` -> ``{"Generic": "generic_ref", "REVISE": None}``.

    An empty label leaves the reference name out.

    Raises:
        ComparisonError: listing every item without ``=`` or without a reference name.
    """
    out: dict[str, str | None] = {}
    problems = []
    for item in items or ():
        ref, sep, ours = str(item).partition("=")
        if not sep or not ref.strip():
            problems.append(f"The '{flag}' parameter of {owner} must be REFERENCE=OURS (an empty OURS leaves the "
                            f"name out). Got {short_repr(item)} instead.")
            continue
        out[ref.strip()] = ours.strip() or None
    if problems:
        raise ComparisonError(f"Invalid {flag}", problems)
    return out


# ---------------------------------------------------------------------------- reading the reference
def _bad_entries(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> tuple[pl.Series, str | None]:
    """The column cast to ``dtype``, and a message about the entries that are not of that type."""
    raw = frame[column]
    cast = raw.cast(dtype, strict=False)
    bad = raw.is_not_null() & cast.is_null()
    if not bad.any():
        return cast, None
    rows = frame.with_row_index("_line").filter(bad)
    examples = ", ".join(repr(v) for v in rows[column].head(_MAX_EXAMPLES).to_list())
    lines = ", ".join(str(i + 2) for i in rows["_line"].head(_MAX_EXAMPLES).to_list())  # +2: header, 1-based
    kind = "integers" if dtype == pl.Int64 else "numbers"
    return cast, (f"column {column!r} must hold {kind}: {rows.height} entries do not, e.g. {examples} "
                  f"(line {lines}).")


def _unknown_names(found: Iterable[str], known: Sequence[str], kind: str, where: str, hint: str) -> list[str]:
    """One message per name of ``found`` that ``known`` lacks, with the closest known name."""
    out = []
    for name in sorted(set(found) - set(known)):
        out.append(f"Unknown reference {kind} {name!r} {where}.{suggest(name, list(known))} "
                   f"Known reference {kind}s: {', '.join(known)}. {hint}".rstrip())
    return out


def _read_csv(path: Path, what: str) -> pl.DataFrame:
    if not path.exists():
        raise ComparisonError(what, ["it does not exist."])
    if not path.is_file():
        raise ComparisonError(what, ["it is not a file."])
    try:
        return pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise ComparisonError(what, ["it is empty."]) from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComparisonError(what, [f"it cannot be read as CSV: {first}"]) from None


def read_reference(path: str | Path, mapping: ReferenceMapping | None = None) -> pl.DataFrame:
    """Read the reference implementation's output CSV into long rows in our names.

    Args:
        path: the reference's output file (``value, p_value, name, scope, k, n, model,
            generator`` and optionally the recourse columns ``n_individuals, pct_total,
            success_rate, distance, redundancy``).
        mapping: reference names -> ours (``ReferenceMapping()``, the defaults, when None).

    Returns:
        One row per (model, generator, round, metric, replicate) with columns ``model,
        generator, round, metric, replicate, value`` (our labels; ``round`` = the file's
        ``n``, ``replicate`` = its fold ``k``). Names mapped to None are left out; a
        recourse column appears once per (fold, round, model, generator). Values may be
        null or NaN (the statistics leave them out).

    Raises:
        ComparisonError: listing every problem at once: a missing or unreadable file,
            missing columns, entries that are not numbers, names the mapping does not
            know (with the closest match), mapping entries that name nothing known, and
            duplicated rows.
    """
    mapping = mapping or ReferenceMapping()
    what = f"Reference file {str(path)!r}"
    frame = _read_csv(Path(path), what)
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        close = {c: suggest(c, [x for x in frame.columns if x not in REFERENCE_COLUMNS]) for c in missing}
        hints = "".join(f" For {c!r}:{h}" for c, h in close.items() if h)
        raise ComparisonError(what, [
            f"missing column(s) {', '.join(map(repr, missing))}.{hints} Its columns: {', '.join(frame.columns)}. "
            f"A reference output has {', '.join(REFERENCE_COLUMNS)} (+ p_value, {', '.join(RECOURSE_COLUMNS)})."])
    if frame.height == 0:
        raise ComparisonError(what, ["it has a header but no rows."])

    problems: list[str] = []
    typed: dict[str, pl.Series] = {}
    numeric = {"value": pl.Float64, "k": pl.Int64, "n": pl.Int64}
    numeric |= {c: pl.Float64 for c in RECOURSE_COLUMNS if c in frame.columns}
    for column, dtype in numeric.items():
        typed[column], problem = _bad_entries(frame, column, dtype)
        if problem:
            problems.append(problem)
    for column in ("name", "scope", "model", "generator", "k", "n"):
        n_null = frame[column].null_count()
        if n_null:
            problems.append(f"column {column!r} has {n_null} empty entries; every row needs one.")
    frame = frame.with_columns(*(s.alias(c) for c, s in typed.items()),
                               (pl.col("name") + "/" + pl.col("scope")).alias("_metric"))

    # Names the mapping was given that are neither the reference's defaults nor in the file are
    # typos: say so (and leave them out of the duplicate-label check, which would only confuse).
    hint = "Map it with a mapping file or a --map-* flag (an empty label leaves it out)."
    metric_rows = frame["_metric"].drop_nulls().unique().to_list()
    vocabulary = {
        "models": [*_DEFAULT_MODELS, *frame["model"].drop_nulls().unique().sort().to_list()],
        "generators": [*_DEFAULT_GENERATORS, *frame["generator"].drop_nulls().unique().sort().to_list()],
        "metrics": [*REFERENCE_METRICS, *RECOURSE_COLUMNS, *sorted(metric_rows)],
    }
    typos: dict[str, list[str]] = {}
    for kind in _KINDS:
        known = list(dict.fromkeys(vocabulary[kind]))
        typos[kind] = sorted(ref for k, ref in mapping.given if k == kind and ref not in known)
        extra = "Write metric rows as name/scope, e.g. 'mmd/domain'." if kind == "metrics" else ""
        problems += _unknown_names(typos[kind], known, _SINGULAR[kind],
                                   "in the mapping (neither a default reference name nor in the file)", extra)
    mapping = replace(mapping, **{kind: {k: v for k, v in mapping.table(kind).items() if k not in typos[kind]}
                                  for kind in _KINDS})
    problems += mapping.problems()
    for kind, column in (("models", "model"), ("generators", "generator")):
        present = frame[column].drop_nulls().unique().to_list()
        problems += _unknown_names(present, list(mapping.table(kind)), _SINGULAR[kind], "in the file", hint)
    row_metrics = [m for m in mapping.metrics if m not in RECOURSE_COLUMNS]
    problems += _unknown_names(metric_rows, row_metrics, "metric", "(name/scope) in the file", hint)

    dupes = frame.group_by("k", "n", "model", "generator", "_metric").agg(pl.len()).filter(pl.col("len") > 1)
    if dupes.height:
        first = dupes.sort("k", "n", "model", "generator", "_metric").row(0, named=True)
        problems.append(f"{dupes.height} (fold, round, model, generator, metric) combinations appear more than "
                        f"once, e.g. k={first['k']} n={first['n']} {first['model']}/{first['generator']} "
                        f"{first['_metric']} ({first['len']} rows).")
    if problems:
        raise ComparisonError(what, problems)

    def in_our_names(rows: pl.DataFrame, metric: pl.Expr, value: pl.Expr) -> pl.DataFrame:
        return rows.select(
            pl.col("model").replace_strict(mapping.models, return_dtype=pl.String).alias("model"),
            pl.col("generator").replace_strict(mapping.generators, return_dtype=pl.String).alias("generator"),
            pl.col("n").alias("round"), metric.alias("metric"), pl.col("k").alias("replicate"), value.alias("value"),
        )

    row_map = {m: ours for m, ours in mapping.metrics.items() if m not in RECOURSE_COLUMNS}
    parts = [in_our_names(frame, pl.col("_metric").replace_strict(row_map, return_dtype=pl.String), pl.col("value"))]
    cells = frame.group_by("k", "n", "model", "generator", maintain_order=True).first()
    for column in RECOURSE_COLUMNS:
        ours = mapping.metrics.get(column)
        if ours is not None and column in frame.columns:
            parts.append(in_our_names(cells, pl.lit(ours, dtype=pl.String), pl.col(column)))
    out = pl.concat(parts, how="vertical").cast(_REFERENCE_SCHEMA)
    kept = pl.all_horizontal(pl.col("model", "generator", "metric").is_not_null())
    return out.filter(kept).select(list(_REFERENCE_SCHEMA)).sort("model", "generator", "metric", "round", "replicate")


def dataset_from_filename(path: str | Path, datasets: Iterable[str]) -> str | None:
    """The dataset a reference file is named after (``overlapping_output.csv`` -> ``overlapping``), if one fits."""
    stem = Path(path).name
    fits = [d for d in datasets if stem.startswith(f"{d}_") or stem == f"{d}.csv"]
    return max(fits, key=len) if fits else None


# ---------------------------------------------------------------------------- comparing
def _summaries(rows: pl.LazyFrame | pl.DataFrame, prefix: str) -> pl.LazyFrame:
    """Mean, std (ddof 1) and count of the valid (non-null, non-NaN) values of each cell."""
    valid = pl.col("value").is_not_null() & pl.col("value").is_not_nan()
    value = pl.col("value").filter(valid)
    return (
        rows.lazy().group_by(list(CELL_COLUMNS))
        .agg(value.mean().alias(f"{prefix}_mean"), value.std(ddof=1).alias(f"{prefix}_std"),
             valid.sum().cast(pl.Int64).alias(f"{prefix}_n"))
        .with_columns(pl.when(pl.col(f"{prefix}_n") >= 2).then(pl.col(f"{prefix}_std")).alias(f"{prefix}_std"))
    )


def _rate(frame: pl.DataFrame) -> dict[str, Any]:
    compared = frame.filter(pl.col("status") == STATUS_COMPARED)
    n_agree = int(compared["agree"].sum()) if compared.height else 0
    return {"cells": frame.height, "compared": compared.height, "agree": n_agree,
            "missing": frame.height - compared.height,
            "rate": n_agree / compared.height if compared.height else None}


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Ours against the reference, cell by cell.

    Attributes:
        cells: every (model, generator, metric, round) of the mapped labels that either
            side has, all rounds, columns ``COMPARISON_COLUMNS``: ``ours_mean/std/n`` (over
            seeds), ``reference_mean/std/n`` (over folds), ``ratio`` (ours / reference; null
            when the reference mean is 0), ``abs_diff``, ``agree`` (null unless both sides
            have values), ``status`` (``compared``, ``not in results``, ``not in reference``)
            and ``counted`` (the metric is one of ``metrics``).
        rounds: the rounds of ``table()`` and ``agreement()`` (by default the final round
            that both sides have).
        dataset: the dataset of our rows that was compared.
        metrics: the metrics whose cells make the agreement rate.
        ratio: a cell agrees when ours / reference is in ``[1/ratio, ratio]`` ...
        abs_tolerance: ... or ``|ours - reference| <= abs_tolerance``.
        reference_source: where the reference rows came from (for messages and documents).
    """

    cells: pl.DataFrame
    rounds: tuple[int, ...]
    dataset: str
    metrics: tuple[str, ...]
    ratio: float = DEFAULT_RATIO
    abs_tolerance: float = DEFAULT_ABS_TOLERANCE
    reference_source: str | None = None

    @property
    def common_rounds(self) -> list[int]:
        """Rounds with at least one cell that both sides have."""
        compared = self.cells.filter(pl.col("status") == STATUS_COMPARED)
        return sorted(set(compared["round"].to_list()))

    def at(self, rounds: int | Sequence[int] | str) -> Comparison:
        """The same comparison at other rounds (``"final"``, ``"all"``, a round or a list of rounds)."""
        return replace(self, rounds=_select_rounds(self.cells, rounds))

    def table(self) -> pl.DataFrame:
        """The cells at ``rounds``, in mapping order (models, generators, metrics), then by round."""
        return self.cells.filter(pl.col("round").is_in(list(self.rounds)))

    def agreement(self) -> dict[str, Any]:
        """Agreement at ``rounds`` over the cells of ``metrics``.

        Returns:
            ``{"overall": rate, "by_metric": {metric: rate}, "by_model": ..., "by_generator":
            ..., "by_round": ...}`` where each rate is ``{"cells", "compared", "agree",
            "missing", "rate"}``: ``rate = agree / compared`` (None when nothing was compared);
            ``missing`` cells lack one side and are not in the rate.
        """
        counted = self.table().filter(pl.col("counted"))
        out: dict[str, Any] = {"overall": _rate(counted)}
        for column in ("metric", "model", "generator", "round"):
            keys = list(dict.fromkeys(counted[column].to_list()))
            out[f"by_{column}"] = {str(k): _rate(counted.filter(pl.col(column) == k)) for k in keys}
        return out

    def agreement_rate(self) -> float | None:
        """The share of compared cells that agree (None when nothing was compared)."""
        return self.agreement()["overall"]["rate"]

    def summary(self) -> dict[str, Any]:
        """Settings and agreement as plain data (``agreement.json``)."""
        return {"dataset": self.dataset, "rounds": list(self.rounds), "metrics": list(self.metrics),
                "ratio": self.ratio, "abs_tolerance": self.abs_tolerance, "reference": self.reference_source,
                "rule": f"ours/reference in [1/{self.ratio:g}, {self.ratio:g}] or |ours - reference| <= "
                        f"{self.abs_tolerance:g}", **self.agreement()}


def _select_rounds(cells: pl.DataFrame, rounds: int | Sequence[int] | str) -> tuple[int, ...]:
    compared = sorted(set(cells.filter(pl.col("status") == STATUS_COMPARED)["round"].to_list()))
    if not compared:
        raise ComparisonError("Nothing to compare", ["no cell has both our values and the reference's."])
    if rounds == "final":
        return (compared[-1],)
    if rounds == "all":
        return tuple(compared)
    wanted = [rounds] if not isinstance(rounds, (list, tuple)) else list(rounds)
    problems = [p for r in wanted if (p := check_int(r, "rounds", "compare", low=0))]
    if not wanted:
        problems.append("The 'rounds' parameter of compare must name at least one round. Got [] instead.")
    if problems:
        raise ComparisonError("Invalid rounds", problems + ["Use 'final', 'all', a round or a list of rounds."])
    absent = [r for r in wanted if r not in compared]
    if absent:
        raise ComparisonError("Invalid rounds", [
            f"round(s) {', '.join(map(str, absent))} have no cell that both sides have. "
            f"Rounds in both: {', '.join(map(str, compared))}."])
    return tuple(sorted(set(wanted)))


def _choose_dataset(ours: pl.LazyFrame, dataset: str | None, mapping: ReferenceMapping, source: str | None) -> str:
    """The explicit dataset, else the mapping's, else the only one, else the one the reference file is named after."""
    present = sorted(ours.select("dataset").unique().collect()["dataset"].drop_nulls().to_list())
    wanted = dataset or mapping.dataset
    if not present:
        raise ComparisonError("Nothing to compare", ["the results dataset has no committed rows."])
    if wanted is None:
        named = dataset_from_filename(source, present) if source else None
        if len(present) == 1 or named:
            return present[0] if len(present) == 1 else named
        raise ComparisonError("Which dataset?", [
            f"the results hold several datasets ({', '.join(present)}); name the one the reference ran on "
            "(--dataset, or 'dataset:' in the mapping file)."])
    if wanted not in present:
        raise ComparisonError("Invalid dataset", [
            f"{wanted!r} is not in the results.{suggest(wanted, present)} Datasets in the results: {', '.join(present)}."])
    return wanted


def _check_labels(ours: pl.DataFrame, mapping: ReferenceMapping, derivable: set[str]) -> list[str]:
    """Labels that a mapping file or a flag named, and that the results lack."""
    present = {"models": set(ours["model"].unique().to_list()),
               "generators": set(ours["generator"].unique().to_list()),
               "metrics": set(ours["metric"].unique().to_list()) | derivable}
    out = []
    for kind, ref in sorted(mapping.given):
        label = mapping.table(kind).get(ref)
        if label is None or label in present[kind]:
            continue
        choices = sorted(present[kind])
        out.append(f"The {_SINGULAR[kind]} {label!r} (mapped from reference {ref!r}) is not in the results."
                   f"{suggest(label, choices)} {_SINGULAR[kind].capitalize()}s in the results: {', '.join(choices)}.")
    return out


def _order(frame: pl.DataFrame, mapping: ReferenceMapping) -> pl.DataFrame:
    def rank(column: str, kind: str) -> pl.Expr:
        order = {label: i for i, label in enumerate(mapping.labels(kind))}
        return pl.col(column).replace_strict(order, default=len(order), return_dtype=pl.Int64)

    return frame.sort(rank("model", "models"), rank("generator", "generators"), rank("metric", "metrics"),
                      pl.col("model"), pl.col("generator"), pl.col("metric"), pl.col("round"))


def compare(
    results_rows: ResultsStore | str | Path | pl.DataFrame | pl.LazyFrame,
    reference: pl.DataFrame,
    mapping: ReferenceMapping | None = None,
    *,
    rounds: int | Sequence[int] | str = "final",
    dataset: str | None = None,
    metrics: Sequence[str] | None = None,
    ratio: float = DEFAULT_RATIO,
    abs_tolerance: float = DEFAULT_ABS_TOLERANCE,
    reference_source: str | None = None,
) -> Comparison:
    """Compare our results with the reference's, per (model, generator, metric, round).

    Args:
        results_rows: a results directory (path/URI), a ``ResultsStore``, or rows with the
            store's schema. ``delta_*`` metrics (``delta_f1``, ...) are derived from them as
            in the report (per system, value minus its round-0 value).
        reference: rows from ``read_reference`` (columns ``model, generator, round, metric,
            replicate, value``, our labels).
        mapping: the mapping ``reference`` was read with (its order orders the tables;
            labels it was given explicitly must exist in the results). Defaults when None.
        rounds: ``"final"`` (the largest round both sides have; default), ``"all"``, a
            round, or a list of rounds. Every round is in ``Comparison.cells`` anyway.
        dataset: our dataset to compare (default: the mapping's, else the only one, else
            the one ``reference_source``'s file name starts with: ``overlapping_output.csv``).
        metrics: our metrics whose cells make the agreement rate (default
            ``AGREEMENT_METRICS``); each must be a label of the mapping.
        ratio: agreement factor, > 1 (1.5: ours/reference in [1/1.5, 1.5]).
        abs_tolerance: agreement by absolute difference, >= 0 (0.01).
        reference_source: the path ``reference`` was read from (for documents and the dataset).

    Returns:
        A ``Comparison``.

    Raises:
        ComparisonError: bad arguments, unknown labels, or no cell that both sides have.
    """
    mapping = mapping or ReferenceMapping()
    problems = list(mapping.problems())
    problems += [p for p in (check_real(ratio, "ratio", "compare", low=1, low_open=True),
                             check_real(abs_tolerance, "abs_tolerance", "compare", low=0)) if p]
    labels = mapping.labels("metrics")
    metrics = tuple(AGREEMENT_METRICS if metrics is None else metrics)
    for m in metrics:
        if m not in labels:
            problems.append(f"The agreement metric {m!r} is not a label of the mapping.{suggest(m, labels)} "
                            f"Mapped metrics: {', '.join(labels)}.")
    if not metrics:
        problems.append("The 'metrics' parameter of compare must name at least one metric. Got [] instead.")
    missing_columns = [c for c in _REFERENCE_SCHEMA if c not in reference.columns]
    if missing_columns:
        problems.append(f"The 'reference' parameter of compare must be rows from read_reference; it lacks "
                        f"{', '.join(missing_columns)}.")
    if problems:
        raise ComparisonError("Invalid comparison", problems)

    rows = system_rows(results_rows)
    dataset = _choose_dataset(rows, dataset, mapping, reference_source)
    rows = rows.filter(pl.col("dataset") == dataset)
    names = rows.select("model", "generator", "metric").unique().collect()
    present = set(names["metric"].to_list())
    deltas = {d: base for d, base in DELTA_METRICS.items() if d in labels and d not in present and base in present}
    problems = _check_labels(names, mapping, set(deltas))
    if problems:
        raise ComparisonError("Invalid mapping", problems)
    models, generators = mapping.labels("models"), mapping.labels("generators")
    rows = rows.filter(pl.col("model").is_in(models) & pl.col("generator").is_in(generators))
    ours_rows = with_deltas(rows, deltas).filter(pl.col("metric").is_in(labels)).collect()

    ref_rows = reference.filter(pl.col("model").is_in(models) & pl.col("generator").is_in(generators)
                                & pl.col("metric").is_in(labels))
    ours = _summaries(ours_rows.select(*CELL_COLUMNS, "value"), "ours")
    ref = _summaries(ref_rows.select(*CELL_COLUMNS, "value"), "reference")
    both = pl.col("ours_n").fill_null(0).gt(0) & pl.col("reference_n").fill_null(0).gt(0)
    within = (pl.col("ratio") >= 1 / ratio) & (pl.col("ratio") <= ratio)
    cells = (
        ours.join(ref, on=list(CELL_COLUMNS), how="full", coalesce=True)
        .with_columns(
            pl.lit(dataset, dtype=pl.String).alias("dataset"),
            pl.when(pl.col("reference_mean") != 0).then(pl.col("ours_mean") / pl.col("reference_mean")).alias("ratio"),
            (pl.col("ours_mean") - pl.col("reference_mean")).abs().alias("abs_diff"),
            pl.col("ours_n").fill_null(0), pl.col("reference_n").fill_null(0),
        )
        .with_columns(
            pl.when(both).then(within.fill_null(False) | (pl.col("abs_diff") <= abs_tolerance)).alias("agree"),
            pl.when(both).then(pl.lit(STATUS_COMPARED))
            .when(pl.col("ours_n") == 0).then(pl.lit(STATUS_NOT_IN_RESULTS))
            .otherwise(pl.lit(STATUS_NOT_IN_REFERENCE)).alias("status"),
            pl.col("metric").is_in(list(metrics)).alias("counted"),
        )
        .select(COMPARISON_COLUMNS)
        .collect()
    )
    cells = _order(cells, mapping)
    if not cells.filter(pl.col("status") == STATUS_COMPARED).height:
        raise ComparisonError("Nothing to compare", [_no_overlap(ours_rows, ref_rows, dataset)])
    comparison = Comparison(cells=cells, rounds=(), dataset=dataset, metrics=metrics, ratio=float(ratio),
                            abs_tolerance=float(abs_tolerance), reference_source=reference_source)
    comparison = comparison.at(rounds)
    logger.info("compared %d cells at round(s) %s: agreement %s", comparison.table().height,
                ", ".join(map(str, comparison.rounds)), comparison.agreement()["overall"])
    return comparison


def _no_overlap(ours: pl.DataFrame, ref: pl.DataFrame, dataset: str) -> str:
    def listing(frame: pl.DataFrame, column: str) -> str:
        values = sorted({str(v) for v in frame[column].to_list()})
        return ", ".join(values) if values else "none"

    return (f"no (model, generator, metric, round) cell has both our values (dataset {dataset!r}) and the "
            f"reference's. Ours: models {listing(ours, 'model')}; generators {listing(ours, 'generator')}; "
            f"metrics {listing(ours, 'metric')}; rounds {listing(ours, 'round')}. Reference (in our names): models "
            f"{listing(ref, 'model')}; generators {listing(ref, 'generator')}; metrics {listing(ref, 'metric')}; "
            f"rounds {listing(ref, 'round')}. Map the names with a mapping file or --map-* flags.")


# ---------------------------------------------------------------------------- output
def agree_text(row: Mapping[str, Any]) -> str:
    """A cell's verdict: ``yes``, ``no``, or why it was not compared."""
    if row["status"] != STATUS_COMPARED:
        return str(row["status"])
    return "yes" if row["agree"] else "no"


def rate_text(rate: Mapping[str, Any]) -> str:
    """``31/48 = 64.6 %`` (+ how many cells lack a side)."""
    share = "n/a" if rate["rate"] is None else f"{100 * rate['rate']:.1f} %"
    missing = f" ({rate['missing']} not compared)" if rate["missing"] else ""
    return f"{rate['agree']}/{rate['compared']} = {share}{missing}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as plain text: one line per cell, then the agreement rates."""
    table = comparison.table()
    header = ("model", "generator", "metric", "round", "ours (mean ± std)", "n", "reference (mean ± std)", "n",
              "ratio", "agree")
    lines = [header]
    for r in table.iter_rows(named=True):
        lines.append((r["model"], r["generator"], r["metric"] + ("" if r["counted"] else " *"), str(r["round"]),
                      fmt_mean_std(r["ours_mean"], r["ours_std"]), str(r["ours_n"]),
                      fmt_mean_std(r["reference_mean"], r["reference_std"]), str(r["reference_n"]),
                      fmt(r["ratio"], 3), agree_text(r)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    agreement = comparison.agreement()
    rounds = ", ".join(map(str, comparison.rounds))
    text += ["", f"dataset {comparison.dataset}, round(s) {rounds}; agree: ours/reference within x{comparison.ratio:g} "
             f"or |difference| <= {comparison.abs_tolerance:g}; * = not in the agreement rate",
             f"agreement ({', '.join(comparison.metrics)}): {rate_text(agreement['overall'])}"]
    for column in ("metric", "model", "generator"):
        parts = [f"{k} {rate_text(v)}" for k, v in agreement[f"by_{column}"].items()]
        text.append(f"  by {column}: " + "; ".join(parts))
    return "\n".join(text)


def write_comparison(comparison: Comparison, out_dir: str | Path, *, title: str | None = None) -> list[Path]:
    """Write ``comparison.csv``, ``comparison.md`` and ``agreement.json`` into ``out_dir``.

    Args:
        comparison: what ``compare`` returned.
        out_dir: the folder (created; files of the same names are replaced).
        title: the Markdown document's title (default: names the dataset).

    Returns:
        The paths written.
    """
    from recourse_ray.report._document import Document, Heading, render_markdown
    from recourse_ray.report._sections import comparison_blocks

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, json_path = out / "comparison.csv", out / "comparison.md", out / "agreement.json"
    comparison.table().write_csv(csv_path, float_precision=None)
    json_path.write_text(json.dumps(_json_safe(comparison.summary()), indent=1) + "\n", encoding="utf-8")
    heading = title or f"Comparison with the reference implementation ({comparison.dataset})"
    document = Document(title=heading, blocks=[Heading(1, heading), *comparison_blocks(comparison, level=2)])
    md_path.write_text(render_markdown(document, out), encoding="utf-8")
    return [csv_path, md_path, json_path]


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
