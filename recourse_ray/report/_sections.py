"""The content of a report, built once as a ``_document.Document``.

``report_document(ctx)`` lays out every section from a ``ReportContext`` (the
aggregates, the coverage of the sweep and the figures and tables already written), the
results first: one section per dataset (summary figure, final-round tables with the
reference's numbers beside ours when a reference was given, trajectories, surfaces,
compute time), the comparison with the reference implementation, initial model scores,
then how the results came about: status (failures, missing systems), undefined values,
the sweep's settings, versions, hosts and run times, and the files. ``_document`` renders
the result as HTML and as Markdown. ``comparison_blocks`` is also the body of
``comparison.md`` (``recourse_ray.compare.write_comparison``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recourse_ray.report._coverage import Coverage, provenance
from recourse_ray.report._document import (
    Block,
    Callout,
    Code,
    Document,
    Figure,
    Heading,
    Link,
    LinkList,
    Paragraph,
    Preformatted,
    Strong,
    Table,
)
from recourse_ray.report._format import (
    DECISIVENESS_DEFINITIONS,
    SIGNIFICANT_SHARE,
    fmt,
    fmt_mean_std,
    metric_label,
    slug,
)

if TYPE_CHECKING:
    from recourse_ray.compare import Comparison

__all__ = ["ReportContext", "TIMING_SCOPE", "SECTION_ORDER", "comparison_blocks", "report_document"]

TIMING_SCOPE = "timing"
# NaN groups listed in the report at most (all of them are in aggregates.parquet).
MAX_NAN_ROWS = 500
_DASH = "\u2013"

_DEFINITIONS = (
    "Definitions: each number summarises the seeds of one dataset x model x generator cell. mean and std "
    "(sample standard deviation, ddof 1) are taken across seeds, leaving out NaN values; the 95 % interval is "
    "mean \u00b1 t(0.975, n\u22121)\u00b7std/\u221an with n the number of seeds used. \u0394 metrics are each system's "
    "value minus its own round-0 value, aggregated the same way. \u2020 marks a cell where at least "
    f"{SIGNIFICANT_SHARE:.0%} of the seeds have a permutation-test p-value below 0.05. The final round is the last "
    "evaluated round of each cell. See docs/report.md."
)
# Anchors of the level-2 sections in reading order; "ds-*" stands for the dataset sections
# and a section without content (no reference given, no initial scores) is left out.
SECTION_ORDER = ("ds-*", "reference", "initial", "status", "quality", "sweep", "files")
_AGREES = {"yes": "\u2713", "no": "\u2717"}


@dataclass
class ReportContext:
    """Everything the report's sections need, computed once by ``build_report``."""

    out: Path
    source: str
    generated: str
    cov: Coverage
    agg: pl.DataFrame
    final: pl.DataFrame
    scores: pl.DataFrame
    datasets: list[str]
    models: list[str]
    generators: list[str]
    metrics: list[str]
    seed_counts: dict[tuple[str, str, str], int]
    scopes: dict[str, str] = field(default_factory=dict)
    final_metrics: dict[str, set[str]] = field(default_factory=dict)
    agg_metrics: dict[str, set[str]] = field(default_factory=dict)
    figures: dict[str, list[Figure]] = field(default_factory=lambda: defaultdict(list))
    tables: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    data_files: list[Path] = field(default_factory=list)
    comparison: Comparison | None = None

    def seeds_of(self, dataset: str, model: str, generator: str) -> tuple[int, int | None]:
        """Committed and planned (None: unknown) seeds of one cell."""
        return self.seed_counts.get((dataset, model, generator), 0), self.cov.expected_seeds()

    def rel(self, path: Path) -> str:
        """``path`` relative to the report folder, as a link."""
        return path.relative_to(self.out).as_posix()


def report_document(ctx: ReportContext) -> Document:
    """The whole report in reading order (``SECTION_ORDER``): the results, then how they came about."""
    blocks: list[Block] = list(_header(ctx))
    for dataset in ctx.datasets:
        blocks += _dataset(ctx, dataset)
    if ctx.comparison is not None:
        blocks += comparison_blocks(ctx.comparison)
    blocks += [*_initial(ctx), *_status(ctx), *_undefined_values(ctx), *_sweep(ctx), *_files(ctx)]
    return Document(title=ctx.cov.name, blocks=blocks)


# ---------------------------------------------------------------------------- sections
def _header(ctx: ReportContext) -> list[Block]:
    notice = _partial_notice(ctx.cov)
    banner = (Callout((notice, " ", Link("See the status section.", "#status")), "notice") if notice
              else Callout(("Complete sweep: every planned system is committed.",), "ok"))
    out: list[Block] = [
        Heading(1, f"Recourse dynamics report: {ctx.cov.name}"),
        Paragraph(("Generated ", ctx.generated, " by recourse_ray.report from ", Code(ctx.source), "."), "muted"),
        banner,
    ]
    if ctx.cov.description:
        out.append(Paragraph((ctx.cov.description,)))
    out.append(Paragraph(("Results per dataset come first; the status of every planned system, the sweep's "
                          "settings, software versions, hosts and run times follow them (",
                          Link("Sweep", "#sweep"), ").")))
    return out


def _sweep(ctx: ReportContext) -> list[Block]:
    """How the results came about: the counts, the spec as run, versions, hosts and run times."""
    cov = ctx.cov
    prov = provenance(cov.manifests)
    title = "Sweep: settings, versions, hosts and run times"
    out: list[Block] = [Heading(2, title, "sweep", toc="Sweep"),
                        Heading(3, "Systems and rounds", "overview"),
                        Table(("Item", "Value"), _status_counts(ctx), sortable=False)]
    out += [Heading(3, "Sweep settings (sweep.yaml)", "settings", toc="Settings"),
            Preformatted(cov.spec_text, summary="Resolved spec as run", open=True, language="yaml"),
            Heading(3, "Software versions", "versions", toc="Versions")]
    if prov["versions"]:
        rows = [(pkg, "; ".join(f"{v} ({n} systems)" if len(c) > 1 else v for v, n in c.most_common()))
                for pkg, c in prov["versions"].items()]
        out.append(Table(("Package", "Version"), rows, sortable=False))
        if any(len(c) > 1 for c in prov["versions"].values()):
            out.append(Paragraph(("Systems ran with different software versions (see counts).",), "notice"))
    else:
        out.append(Paragraph(("No versions recorded.",)))
    if prov["hosts"]:
        out += [Heading(3, "Hosts", "hosts"),
                Table(("Host", "Systems"), [(h, (str(n), n)) for h, n in prov["hosts"].most_common()])]
    if prov["timings"]:
        rows = [(k, (fmt(v["total"]), v["total"]), (fmt(v["mean"]), v["mean"]), (fmt(v["max"]), v["max"]),
                 (str(v["n"]), v["n"])) for k, v in prov["timings"].items()]
        out += [Heading(3, "Run times (from the manifests)", "timings"),
                Table(("Timing", "Total (s)", "Mean (s)", "Max (s)", "Systems"), rows)]
    return out


def _status(ctx: ReportContext) -> list[Block]:
    title = "Status: failures and missing systems"
    out: list[Block] = [Heading(2, title, "status", toc=title), *_failures(ctx.cov), *_missing(ctx.cov)]
    cov = ctx.cov
    if cov.unexpected:
        out += [Heading(3, f"Committed systems not in the grid ({len(cov.unexpected)})", "unexpected"),
                Table(("Dataset", "Model", "Generator", "Seed"),
                      [(s.dataset, s.model, s.generator, (str(s.seed), s.seed)) for s in cov.unexpected])]
    rows, classes = [], []
    for r in _coverage_rows(ctx):
        rows.append((r["dataset"], r["model"], r["generator"], (_seed_text(r["committed"], r["planned"]), r["committed"]),
                     ", ".join(map(str, r["failed"])) or _DASH, ", ".join(map(str, r["not_run"])) or _DASH))
        classes.append(_row_class(r["committed"], r["planned"]))
    out += [Heading(3, "Seeds per cell", "coverage"),
            Table(("Dataset", "Model", "Generator", "Committed/planned seeds", "Failed seeds", "Not-run seeds"),
                  rows, row_classes=classes)]
    return out


def _failures(cov: Coverage) -> list[Block]:
    out: list[Block] = [Heading(3, f"Failures ({len(cov.failed)})", "failures")]
    if not cov.failed:
        return out + [Paragraph(("No failed systems.",))]
    rows, tracebacks = [], []
    for sid, rec in sorted(cov.failed.items()):
        error = str(rec.get("error", "")).splitlines()[0] if rec.get("error") else ""
        rows.append((sid.dataset, sid.model, sid.generator, (str(sid.seed), sid.seed), str(rec.get("system_key", "")),
                     str(rec.get("time", "")), error))
        if rec.get("traceback"):
            label = f"{sid.dataset}/{sid.model}/{sid.generator}/seed={sid.seed}"
            tracebacks.append(Preformatted(str(rec["traceback"]), summary=f"Traceback: {label}"))
    table = Table(("Dataset", "Model", "Generator", "Seed", "System key", "Time", "Error"), rows,
                  row_classes=["missing"] * len(rows))
    return [*out, table, *tracebacks]


def _missing(cov: Coverage) -> list[Block]:
    out: list[Block] = [Heading(3, f"Missing systems ({len(cov.missing)})", "missing")]
    if cov.expected is None:
        out.append(Paragraph(("Unknown: sweep.yaml has no usable grid.",)))
        if cov.spec_problems:
            out.append(Paragraph(("This version cannot read sweep.yaml as a sweep file: " + " ".join(cov.spec_problems),)))
    elif cov.missing:
        out.append(Paragraph(("Planned by the grid but not committed: ", Strong("failed"),
                              " ones have a failure record above; ", Strong("not run"),
                              " ones were never started or were interrupted (run ", Code("recourse-ray resume"), ").")))
        rows = [(s.dataset, s.model, s.generator, (str(s.seed), s.seed), "failed" if s in cov.failed else "not run")
                for s in cov.missing]
        out.append(Table(("Dataset", "Model", "Generator", "Seed", "State"), rows, row_classes=["missing"] * len(rows)))
    else:
        out.append(Paragraph(("None: every planned system is committed.",)))
    return out


def _initial(ctx: ReportContext) -> list[Block]:
    if not (ctx.figures.get("initial") or ctx.scores.height):
        return []
    rows = [(r["dataset"], r["model"], metric_label(r["metric"]), (fmt_mean_std(r["mean"], r["std"]), r["mean"]),
             (str(r["n_seeds"]), r["n_seeds"])) for r in _in_grid_order(ctx, ctx.scores).iter_rows(named=True)]
    return [Heading(2, "Initial model scores", "initial", toc="Initial model scores"),
            *ctx.figures.get("initial", []),
            Table(("Dataset", "Model", "Metric", "Round 0 (mean \u00b1 std)", "Seeds"), rows)]


def _dataset(ctx: ReportContext, dataset: str) -> list[Block]:
    anchor = f"ds-{slug(dataset)}"
    cov = ctx.cov
    n_have = sum(v for (d, _, _), v in ctx.seed_counts.items() if d == dataset)
    n_planned = sum(1 for s in (cov.expected or []) if s.dataset == dataset)
    n_missing = sum(1 for s in cov.missing if s.dataset == dataset)
    planned = f" of {n_planned} planned" if cov.expected is not None else ""
    out: list[Block] = [
        Heading(2, f"Dataset: {dataset}", anchor, toc=dataset, toc_group="Datasets"),
        Paragraph((f"{n_have} committed systems{planned}; final round(s): {_final_rounds(ctx, dataset)}.",)),
    ]
    if n_missing:
        out.append(Paragraph((f"{n_missing} planned systems of this dataset are missing; rows with fewer seeds than "
                              "planned are highlighted. ", Link("List", "#missing"), "."), "notice"))
    if not ctx.final_metrics.get(dataset):
        return out + [Paragraph((Strong("No committed results for this dataset."),))]
    out += ctx.figures.get(dataset, [])
    out += _final_results(ctx, dataset, anchor)
    trajectories = ctx.figures.get(f"{dataset}/trajectories", [])
    if trajectories:
        links: list = []
        for fig in trajectories:
            links += [" \u00b7 ", Link(fig.title, f"#{fig.anchor}")]
        out += [Heading(3, "Trajectories", f"{anchor}-trajectories", toc="Trajectories"), Paragraph(links[1:]),
                *trajectories]
    for key, title, toc in (("states", "Data and decision surfaces", "Surfaces"), ("timing", "Compute time", "Compute time")):
        figures = ctx.figures.get(f"{dataset}/{key}", [])
        if figures:
            out += [Heading(3, title, f"{anchor}-{key}", toc=toc), *figures]
    return out


def _final_results(ctx: ReportContext, dataset: str, anchor: str) -> list[Block]:
    out: list[Block] = [
        Heading(3, "Final-round results", f"{anchor}-final", toc="Final round"),
        Paragraph(("Mean \u00b1 std across seeds at the final round; \u2020: at least half of the seeds with p < 0.05. "
                   "Click a column header to sort.",)),
    ]
    reference, reference_round = _reference_cells(ctx, dataset)
    compared = {metric for (_, _, metric) in reference}
    if reference:
        out.append(Paragraph(("A column headed \u201creference\u201d holds the reference implementation's mean \u00b1 std "
                              f"across its folds at round {reference_round}, beside ours; \u2713: the two agree, "
                              "\u2717: they do not, by the rule in ",
                              Link("Against the reference implementation", "#reference"), ".")))
    if {"decisiveness", "decisiveness_code"} & ctx.final_metrics.get(dataset, set()):
        out.append(Paragraph((DECISIVENESS_DEFINITIONS,), "muted"))
    for title, metrics in _final_metric_groups(ctx, dataset):
        headers = ["Model", "Generator", "Seeds"]
        for m in metrics:
            headers += [metric_label(m)] + ([f"{metric_label(m)}: reference"] if m in compared else [])
        rows, classes = [], []
        for r in _final_table_rows(ctx, dataset, metrics):
            cells = [r["model"], r["generator"], (_seed_text(r["have"], r["planned"]), r["have"])]
            for m, c in zip(metrics, r["cells"]):
                cells.append((_DASH, None) if c is None
                             else (fmt_mean_std(c["mean"], c["std"], c["share_significant"]), c["mean"]))
                if m in compared:
                    cells.append(_reference_cell(reference.get((r["model"], r["generator"], m))))
            rows.append(cells)
            classes.append(_row_class(r["have"], r["planned"]))
        out += [Heading(4, title), Table(headers, rows, row_classes=classes)]
    if ctx.tables.get(dataset):
        parts: list = ["LaTeX: "]
        for i, path in enumerate(ctx.tables[dataset]):
            parts += [", "] * (i > 0) + [Link(path.name, ctx.rel(path))]
        out.append(Paragraph(parts))
    return out


def _reference_cells(ctx: ReportContext, dataset: str) -> tuple[dict[tuple[str, str, str], dict], int | None]:
    """(model, generator, metric) -> the comparison's row at its last compared round, and that round.

    Empty unless a reference was given for this dataset; cells the reference lacks are left out.
    """
    comparison = ctx.comparison
    if comparison is None or comparison.dataset != dataset or not comparison.rounds:
        return {}, None
    last = max(comparison.rounds)
    table = comparison.table().filter(pl.col("round") == last)
    cells = {(r["model"], r["generator"], r["metric"]): r for r in table.iter_rows(named=True)
             if r["reference_mean"] is not None}
    return cells, last


def _reference_cell(row: dict | None) -> tuple[str, float | None]:
    """The reference's mean ± std with the agreement mark, as a sortable table cell."""
    if row is None:
        return _DASH, None
    from recourse_ray.compare import agree_text

    mark = _AGREES.get(agree_text(row), "")
    text = fmt_mean_std(row["reference_mean"], row["reference_std"])
    return (f"{text} {mark}" if mark else text), row["reference_mean"]


def comparison_blocks(comparison: Comparison, *, level: int = 2) -> list[Block]:
    """Ours against the reference implementation: the rule, the agreement rates and one row per cell.

    Args:
        comparison: a ``recourse_ray.compare.Comparison``.
        level: the level of the section's heading (its parts are one level below).
    """
    from recourse_ray.compare import agree_text, rate_text

    title = "Against the reference implementation"
    agreement = comparison.agreement()
    rounds = ", ".join(map(str, comparison.rounds))
    ratio, tolerance = f"{comparison.ratio:g}", f"{comparison.abs_tolerance:g}"
    source = [" (", Code(comparison.reference_source), ")"] if comparison.reference_source else []
    out: list[Block] = [
        Heading(level, title, "reference", toc=title),
        Paragraph(("Our results on dataset ", Code(comparison.dataset), " against the output file of the reference "
                   "implementation, AlgorithmicRecourseDynamics.jl", *source, f", at round {rounds}. Ours: mean "
                   "\u00b1 std across seeds; reference: mean \u00b1 std across its folds (std with ddof 1). A cell "
                   f"agrees when ours / reference lies in [1/{ratio}, {ratio}] or the two means differ by at most "
                   f"{tolerance}. See docs/compare.md.")),
        Paragraph((Strong(f"Agreement: {rate_text(agreement['overall'])}"),
                   f" of the cells of {', '.join(comparison.metrics)}.")),
        Heading(level + 1, "Agreement rate", "reference-agreement", toc="Agreement rate"),
    ]
    rows = [("all", "", *_rate_cells(agreement["overall"]))]
    for column in ("metric", "model", "generator", "round"):
        if column == "round" and len(comparison.rounds) < 2:
            continue
        rows += [(column, name, *_rate_cells(rate)) for name, rate in agreement[f"by_{column}"].items()]
    out.append(Table(("By", "Name", "Agree", "Compared", "Not compared", "Rate"), rows, sortable=False))
    cells, classes = [], []
    for r in comparison.table().iter_rows(named=True):
        verdict = agree_text(r)
        cells.append((r["model"], r["generator"], r["metric"] + ("" if r["counted"] else " *"),
                      (str(r["round"]), r["round"]),
                      (fmt_mean_std(r["ours_mean"], r["ours_std"]), r["ours_mean"]), (str(r["ours_n"]), r["ours_n"]),
                      (fmt_mean_std(r["reference_mean"], r["reference_std"]), r["reference_mean"]),
                      (str(r["reference_n"]), r["reference_n"]), (fmt(r["ratio"], 3), r["ratio"]),
                      (fmt(r["abs_diff"], 3), r["abs_diff"]), verdict))
        classes.append(None if verdict == "yes" else "disagree" if verdict == "no" else "missing")
    out += [
        Heading(level + 1, "Cells", "reference-cells", toc="Cells"),
        Paragraph(("One row per model x generator x metric; * marks a metric outside the agreement rate. "
                   "Click a column header to sort.",)),
        Table(("Model", "Generator", "Metric", "Round", "Ours (mean \u00b1 std)", "Seeds",
               "Reference (mean \u00b1 std)", "Folds", "Ratio", "|Difference|", "Agrees"), cells, row_classes=classes),
    ]
    return out


def _rate_cells(rate: dict) -> tuple:
    share = rate["rate"]
    return ((str(rate["agree"]), rate["agree"]), (str(rate["compared"]), rate["compared"]),
            (str(rate["missing"]), rate["missing"]), (_DASH if share is None else f"{100 * share:.1f} %", share))


def _undefined_values(ctx: ReportContext) -> list[Block]:
    out: list[Block] = [Heading(2, "Undefined values (NaN)", "quality", toc="Undefined values")]
    nan = _nan_groups(ctx)
    if not nan.height:
        return out + [Paragraph(("No NaN values.",))]
    shown = nan.head(MAX_NAN_ROWS)
    out += [
        Paragraph((f"{nan.height} aggregate cells had NaN values, which were left out of mean, std and interval "
                   "(n_seeds counts only the values used).",)),
        Table(("Dataset", "Model", "Generator", "Metric", "Round", "NaN values", "Values used"),
              [(r["dataset"], r["model"], r["generator"], r["metric"], (str(r["round"]), r["round"]),
                (str(r["n_nan"]), r["n_nan"]), (str(r["n_seeds"]), r["n_seeds"])) for r in shown.iter_rows(named=True)]),
    ]
    if nan.height > shown.height:
        out.append(Paragraph((f"First {shown.height} shown; all are in aggregates.parquet (column n_nan).",)))
    return out


def _files(ctx: ReportContext) -> list[Block]:
    files = ctx.data_files + [p for ps in ctx.tables.values() for p in ps] + [ctx.out / "report.md"]
    return [Heading(2, "Files and definitions", "files", toc="Files and definitions"),
            LinkList([Link(ctx.rel(p), ctx.rel(p)) for p in files]),
            Paragraph((_DEFINITIONS,)), Paragraph((DECISIVENESS_DEFINITIONS,))]


# ---------------------------------------------------------------------------- shared content
def _status_counts(ctx: ReportContext) -> list[tuple[str, str]]:
    cov = ctx.cov
    planned = "unknown (sweep.yaml has no grid)" if cov.expected is None else str(len(cov.expected))
    rounds = sorted(set(ctx.agg["round"].to_list())) if ctx.agg.height else []
    n_rows = sum(int(m.get("n_rows") or 0) for m in cov.manifests)
    return [
        ("Planned systems", planned),
        ("Committed", str(len(cov.committed))),
        ("Failed", str(len(cov.failed))),
        ("Not run", str(len(cov.not_run))),
        ("Committed but not in the grid", str(len(cov.unexpected))),
        ("Metric rows", str(n_rows)),
        ("Evaluation rounds", ", ".join(map(str, rounds)) if rounds else "none"),
    ]


def _partial_notice(cov: Coverage) -> str | None:
    if cov.expected is not None and not cov.missing:
        return None
    if cov.expected is None:
        return "The sweep's planned grid is unknown, so missing systems cannot be listed; failures are listed below."
    return (f"Partial sweep: {len(cov.missing)} of {len(cov.expected)} planned systems are missing "
            f"({len(cov.failed)} failed, {len(cov.not_run)} not run). Aggregates use the committed systems only; "
            "cells with fewer seeds than planned are marked.")


def _coverage_rows(ctx: ReportContext) -> list[dict]:
    """Per (dataset, model, generator): committed and planned seeds (None if unknown), failed and not-run seeds."""
    cov = ctx.cov
    known = cov.expected is not None

    def cell(key: tuple) -> dict:
        return cells.setdefault(key, {"planned": 0 if known else None, "failed": [], "not_run": []})

    cells: dict[tuple, dict] = {}
    for s in (cov.expected or []):
        cell((s.dataset, s.model, s.generator))["planned"] += 1
    for key in ctx.seed_counts:
        cell(key)
    for s in cov.missing:
        entry = cell((s.dataset, s.model, s.generator))
        (entry["failed"] if s in cov.failed else entry["not_run"]).append(s.seed)
    for s in cov.failed:
        entry = cell((s.dataset, s.model, s.generator))
        if s.seed not in entry["failed"]:
            entry["failed"].append(s.seed)
    return [{"dataset": d, "model": m, "generator": g, "committed": ctx.seed_counts.get((d, m, g), 0),
             "planned": e["planned"], "failed": sorted(e["failed"]), "not_run": sorted(e["not_run"])}
            for (d, m, g), e in cells.items()]


def _final_table_rows(ctx: ReportContext, dataset: str, metrics: Sequence[str]) -> list[dict]:
    """Rows (model, generator) with the final-round cells of ``metrics`` (None where absent)."""
    sub = ctx.final.filter(pl.col("dataset") == dataset)
    data = {(r["model"], r["generator"], r["metric"]): r for r in sub.iter_rows(named=True)}
    rows = []
    planned_cells = {(s.model, s.generator) for s in (ctx.cov.expected or []) if s.dataset == dataset}
    for model in ctx.models:
        for gen in ctx.generators:
            have, planned = ctx.seeds_of(dataset, model, gen)
            if have == 0 and (model, gen) not in planned_cells and not any((model, gen, m) in data for m in metrics):
                continue
            rows.append({"model": model, "generator": gen, "have": have, "planned": planned,
                         "cells": [data.get((model, gen, m)) for m in metrics]})
    return rows


def _final_rounds(ctx: ReportContext, dataset: str) -> str:
    rounds = sorted(set(ctx.final.filter(pl.col("dataset") == dataset)["round"].to_list()))
    return ", ".join(map(str, rounds)) if rounds else "none"


def _nan_groups(ctx: ReportContext) -> pl.DataFrame:
    if not ctx.agg.height:
        return ctx.agg
    return ctx.agg.filter(pl.col("n_nan") > 0).select("dataset", "model", "generator", "metric", "round", "n_nan", "n_seeds")


def _final_metric_groups(ctx: ReportContext, dataset: str) -> list[tuple[str, list[str]]]:
    present = ctx.final_metrics.get(dataset, set())
    timing = [m for m in ctx.metrics if m in present and ctx.scopes.get(m) == TIMING_SCOPE]
    main = [m for m in ctx.metrics if m in present and m not in timing]
    shift = [m for m in main if ctx.scopes.get(m) in ("domain", "model")]
    rest = [m for m in main if m not in shift]
    return [(title, ms) for title, ms in (("Shifts", shift), ("Performance and recourse", rest), ("Compute time", timing)) if ms]


def _in_grid_order(ctx: ReportContext, frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by dataset and model in the sweep's grid order, then by metric."""
    rank = {"dataset": {d: i for i, d in enumerate(ctx.datasets)}, "model": {m: i for i, m in enumerate(ctx.models)}}
    return frame.sort(
        pl.col("dataset").replace_strict(rank["dataset"], default=len(rank["dataset"]), return_dtype=pl.Int64),
        pl.col("model").replace_strict(rank["model"], default=len(rank["model"]), return_dtype=pl.Int64),
        pl.col("metric"),
    )


def _seed_text(have: int, planned: int | None) -> str:
    return f"{have}/{planned}" if planned is not None else str(have)


def _row_class(have: int, planned: int | None) -> str | None:
    """Red for a cell without any committed system, amber for fewer seeds than planned."""
    if have == 0:
        return "missing"
    return "incomplete" if planned is not None and have < planned else None
