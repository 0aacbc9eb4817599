"""Build a sweep's report folder: aggregates, figures, LaTeX tables, HTML and Markdown.

``build_report(results_dir, out_dir)`` reads a results dataset (through
``recourse_ray.store``; nothing is written there) and writes::

    OUT/index.html             the report; figures are linked from figures/, open it from disk
    OUT/report.md              the same sections in Markdown, figures linked from figures/
    OUT/figures/*.png          every figure (also *.svg with formats=("png", "svg"))
    OUT/tables/*.tex           final-round LaTeX tables
    OUT/aggregates.parquet     cross-seed aggregates (every round and metric)
    OUT/final_round.csv|parquet, OUT/initial_scores.csv|parquet, OUT/systems.csv
    OUT/comparison/            with ``reference=``: comparison.csv, comparison.md, agreement.json

Nothing else: the report never copies the rows, manifests or states of the results
dataset into its folder. Rebuilding into a folder that holds an earlier report
removes the figures, tables and data files of that report that this build did not
write again (a figure format or a metric that is gone), and nothing else.

A partial sweep reports too: systems that the grid plans but that are not committed
are listed (failed ones with their first error line), cells with fewer seeds than
planned are marked, and the aggregates use the committed systems only.

Given the output file of the reference implementation (``reference=``), the final-round
tables of the compared dataset show the reference's numbers beside ours, and the report
adds a section "Against the reference implementation" (``recourse_ray.compare``): the
agreement rule, the agreement rates and every compared cell.

The flow: read and aggregate once (``ReportContext``), write the data files, draw the
figures and LaTeX tables, then build the document once (``_sections``) and render it
twice (``_document``: HTML and Markdown).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recourse_ray.report._coverage import coverage
from recourse_ray.report._document import GENERATOR, Figure, render_html, render_markdown
from recourse_ray.report._format import DECISIVENESS_DEFINITIONS, SUMMARY_METRICS, metric_label, order_metrics, slug
from recourse_ray.report._sections import TIMING_SCOPE, ReportContext, report_document
from recourse_ray.report.aggregation import aggregate, final_round_table, initial_scores, open_store, write_table
from recourse_ray.report.figures import (
    DEFAULT_DPI,
    figure_style,
    initial_scores_figure,
    iter_summary_figures,
    iter_trajectory_figures,
    save_figure,
    series_styles,
    state_figure,
)
from recourse_ray.report.latex import final_round_latex
from recourse_ray.store import POLARS_SCHEMA, ResultsStore

if TYPE_CHECKING:
    from recourse_ray.compare import Comparison, ReferenceMapping

__all__ = ["build_report", "LATEX_TABLES"]

logger = logging.getLogger(__name__)

# LaTeX tables per dataset: file suffix -> metrics (columns), when present in the data.
LATEX_TABLES = {
    "": SUMMARY_METRICS,
    "_outcomes": ("f1", "accuracy", "delta_accuracy", "recourse_validity", "recourse_cost", "share_recourse"),
}
# Files of an earlier report that a rebuild may remove when it does not write them again:
# figures/<these stems>.png|svg, tables/final_*.tex and these data files.
_FIGURE_STEMS = re.compile(r"(summary|trajectory|timing|state)_.+|initial_scores")
_DATA_FILES = ("aggregates.csv", "aggregates.parquet", "final_round.csv", "final_round.parquet",
               "initial_scores.csv", "initial_scores.parquet", "systems.csv")
# The trajectory figure of decisiveness also shows the reference code's definition.
_SHOWN_WITH = {"decisiveness": "decisiveness_code"}
# systems.csv: a system's names, its status and its key / first error line
_SYSTEMS_SCHEMA = {**{c: POLARS_SCHEMA[c] for c in ("dataset", "model", "generator", "seed")},
                   "status": pl.String, "system_key": pl.String, "error": pl.String}


# ---------------------------------------------------------------------------- entry point
def build_report(
    results_dir: str | Path | ResultsStore,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    dpi: int = DEFAULT_DPI,
    trajectories: bool = True,
    states: bool = True,
    reference: str | Path | None = None,
    mapping: ReferenceMapping | str | Path | None = None,
) -> Path:
    """Write the full report of one sweep's results dataset into ``out_dir``.

    Args:
        results_dir: the sweep's results directory (``<results-root>/<sweep-name>``),
            a URI pyarrow understands, or a ``ResultsStore``.
        out_dir: the report folder (created; existing files of the same names are replaced).
        formats: figure formats to write, a subset of ("png", "svg"); ("png", "svg")
            adds vector figures. The HTML and Markdown show the PNG when written, else
            the SVG, as linked files.
        dpi: resolution of PNG figures (and of rasterised parts of SVGs).
        trajectories: draw the per-metric trajectory figures (the bulk of the figures).
        states: draw data/decision-surface figures from stored 2-D states.
        reference: the reference implementation's output CSV (``recourse_ray.compare``);
            when given, the report compares the final round with it.
        mapping: reference names -> ours: a ``ReferenceMapping`` or a mapping file (the
            defaults when None). Its ``dataset`` picks the dataset when the results hold
            several; otherwise the only one, or the one the file is named after.

    Returns:
        The path of ``out_dir/index.html``.

    Raises:
        NotAResultsDirectory: if ``results_dir`` holds no results dataset.
        ValueError: for an empty or unknown figure format.
        ComparisonError: for a bad reference file or mapping (checked before anything is written).
    """
    formats = tuple(formats)
    if not formats or any(f not in ("png", "svg") for f in formats):
        raise ValueError(f"The 'formats' parameter of build_report must list 'png' and/or 'svg'. Got {formats!r} instead.")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    store = open_store(results_dir)
    comparison = _comparison(store, reference, mapping) if reference is not None else None
    out = Path(out_dir)
    previous = _earlier_report_files(out)
    _warn_about_results_inside(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    ctx = _context(store, out)
    ctx.comparison = comparison
    phases["read and aggregate"] = time.perf_counter() - started
    logger.info("aggregated %d groups from %d committed systems in %.2fs", ctx.agg.height, len(ctx.cov.committed),
                phases["read and aggregate"])

    mark = time.perf_counter()
    # the full aggregates only as parquet: as CSV they were the largest file of a report
    ctx.data_files += write_table(ctx.agg, out, "aggregates", formats=("parquet",))
    ctx.data_files += write_table(ctx.final, out, "final_round")
    ctx.data_files += write_table(ctx.scores, out, "initial_scores")
    ctx.data_files.append(_write_systems(ctx))
    if comparison is not None:
        from recourse_ray.compare import write_comparison

        ctx.data_files += write_comparison(comparison, out / "comparison",
                                           title=f"{store.sweep_name}: comparison with the reference implementation")
    phases["data files"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with figure_style():
        _draw_figures(ctx, store, formats=formats, dpi=dpi, trajectories=trajectories, states=states)
    phases["figures"] = time.perf_counter() - mark
    n_figures = sum(len(refs) for refs in ctx.figures.values())

    mark = time.perf_counter()
    _write_latex(ctx)
    document = report_document(ctx)
    (out / "report.md").write_text(render_markdown(document, out), encoding="utf-8")
    index = out / "index.html"
    index.write_text(render_html(document, out), encoding="utf-8")
    _remove_stale(ctx, previous)
    phases["documents"] = time.perf_counter() - mark
    phases["total"] = time.perf_counter() - started
    logger.info("report written to %s in %.2fs (%d figures; %s)", out, phases["total"], n_figures,
                ", ".join(f"{k} {v:.2f}s" for k, v in phases.items() if k != "total"),
                extra={"report_phases": phases, "report_figures": n_figures})
    return index


def _comparison(store: ResultsStore, reference: str | Path, mapping: ReferenceMapping | str | Path | None) -> Comparison:
    """The final-round comparison with the reference implementation's output file."""
    from recourse_ray.compare import ReferenceMapping, compare, load_mapping, read_reference

    if not isinstance(mapping, ReferenceMapping):
        mapping = ReferenceMapping() if mapping is None else load_mapping(mapping)
    return compare(store, read_reference(reference, mapping), mapping, reference_source=str(reference))


def _context(store: ResultsStore, out: Path) -> ReportContext:
    """Read and aggregate the results dataset once, for every output."""
    cov = coverage(store)
    agg = aggregate(store)
    final = final_round_table(agg)
    scores = initial_scores(store)
    seed_counts = Counter((s.dataset, s.model, s.generator) for s in cov.committed)

    def present(column: str) -> set:
        return set(agg[column].unique().to_list()) if agg.height else set()

    return ReportContext(
        out=out, source=store.uri, generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cov=cov, agg=agg, final=final, scores=scores,
        datasets=cov.order("dataset", present("dataset") | {s.dataset for s in cov.failed}),
        models=cov.order("model", present("model") | {s.model for s in cov.failed}),
        generators=cov.order("generator", present("generator") | {s.generator for s in cov.failed}),
        metrics=order_metrics(present("metric")),
        seed_counts=dict(seed_counts),
        scopes=dict(agg.select("metric", "scope").unique(subset="metric").iter_rows()) if agg.height else {},
        final_metrics=_metrics_by_dataset(final),
        agg_metrics=_metrics_by_dataset(agg),
    )


# ---------------------------------------------------------------------------- outputs
def _metrics_by_dataset(frame: pl.DataFrame) -> dict[str, set[str]]:
    if not frame.height:
        return {}
    pairs = frame.select("dataset", "metric").unique()
    out: dict[str, set[str]] = defaultdict(set)
    for dataset, metric in pairs.iter_rows():
        out[dataset].add(metric)
    return dict(out)


def _system_status(ctx: ReportContext) -> list[dict]:
    """Every planned, committed or failed system with its status."""
    cov = ctx.cov
    planned = list(cov.expected or [])
    planned_set, unexpected = set(planned), set(cov.unexpected)
    ids = planned + sorted(s for s in cov.committed if s not in planned_set)
    ids += sorted(s for s in cov.failed if s not in planned_set and s not in cov.committed)
    out = []
    for s in ids:
        if s in cov.committed:
            status = "committed (not in grid)" if s in unexpected else "committed"
        elif s in cov.failed:
            status = "failed"
        else:
            status = "not run"
        record = cov.failed.get(s, {})
        out.append({**s._asdict(), "status": status, "system_key": cov.committed.get(s) or record.get("system_key"),
                    "error": record.get("error")})
    return out


def _write_systems(ctx: ReportContext) -> Path:
    path = ctx.out / "systems.csv"
    pl.DataFrame(_system_status(ctx), schema=_SYSTEMS_SCHEMA).write_csv(path)
    return path


def _draw_figures(ctx: ReportContext, store: ResultsStore, *, formats, dpi, trajectories, states) -> None:
    fig_dir = ctx.out / "figures"
    styles = series_styles(ctx.generators)

    def emit(section: str, stem: str, title: str, caption: str, fig) -> None:
        files = save_figure(fig, fig_dir, stem, formats=formats, dpi=dpi)
        ctx.figures[section].append(Figure(anchor=f"fig-{stem}", title=title, caption=caption, files=files))

    if ctx.scores.height:
        scored = set(ctx.scores["dataset"].to_list())
        emit("initial", "initial_scores", "Initial model scores",
             "Test-set macro F1 and accuracy of the pretrained models at round 0, mean \u00b1 std across seeds "
             "(values are first averaged over generators within a seed).",
             initial_scores_figure(ctx.scores, datasets=[d for d in ctx.datasets if d in scored], models=ctx.models))

    with_results = [d for d in ctx.datasets if ctx.final_metrics.get(d)]
    panels = [(d, [m for m in SUMMARY_METRICS if m in ctx.final_metrics[d]]) for d in with_results]
    for dataset, fig in iter_summary_figures(ctx.final, panels=[p for p in panels if p[1]], models=ctx.models,
                                             generators=ctx.generators, expected_seeds=ctx.cov.expected_seeds(),
                                             styles=styles):
        emit(dataset, f"summary_{slug(dataset)}", "Summary at the final round",
             "Final-round mean across seeds (error bars: standard deviation) per generator (bars), model (columns) "
             "and metric (rows). \u2020: at least half of the seeds have p < 0.05; hatched: fewer seeds than "
             "planned; n/a: no committed system.", fig)
    for dataset in with_results if trajectories else []:
        _draw_trajectories(ctx, dataset, emit, styles)
    if states:
        _draw_states(ctx, store, emit)


def _draw_trajectories(ctx: ReportContext, dataset: str, emit, styles: dict) -> None:
    """One figure per metric over rounds, and one of all timing metrics together."""
    ds = slug(dataset)
    present = ctx.agg_metrics.get(dataset, set())
    timing_here = [m for m in ctx.metrics if m in present and ctx.scopes.get(m) == TIMING_SCOPE]
    companions = {m: c for m, c in _SHOWN_WITH.items() if m in present and c in present}
    shown_as_companion = set(companions.values())
    groups = [[m, companions[m]] if m in companions else [m] for m in ctx.metrics
              if m in present and m not in timing_here and m not in shown_as_companion]
    if timing_here:
        groups.append(timing_here)
    for metrics, fig in iter_trajectory_figures(ctx.agg, dataset=dataset, metric_groups=groups,
                                                models=ctx.models, generators=ctx.generators, styles=styles):
        if metrics == timing_here:
            emit(f"{dataset}/timing", f"timing_{ds}", "Compute time per evaluation round",
                 "Wall-clock seconds spent per phase, mean across seeds and 95 % t-interval.", fig)
        elif len(metrics) == 2 and metrics[0] == "decisiveness":
            emit(f"{dataset}/trajectories", f"trajectory_{ds}_decisiveness",
                 "Decisiveness: study text (top) and reference code (bottom)",
                 "Both definitions over rounds: mean across seeds (line) and 95 % t-interval (band). "
                 + DECISIVENESS_DEFINITIONS, fig)
        else:
            metric = metrics[0]
            emit(f"{dataset}/trajectories", f"trajectory_{ds}_{slug(metric)}", metric_label(metric),
                 f"{metric_label(metric)} over rounds: mean across seeds (line) and 95 % t-interval (band).", fig)


def _draw_states(ctx: ReportContext, store: ResultsStore, emit) -> None:
    """One figure per (dataset, model) with stored 2-D states: the lowest seed per generator."""
    chosen = _lowest_seed_with_state(ctx, store.state_keys())
    if not chosen:
        return
    for dataset in ctx.datasets:
        for model in ctx.models:
            loaded, seeds = {}, {}
            for gen in ctx.generators:
                if (dataset, model, gen) not in chosen:
                    continue
                seed, key = chosen[(dataset, model, gen)]
                try:
                    arrays = store.read_state(key)
                except Exception as exc:  # a damaged optional file must not sink the report
                    logger.warning("could not read state of %s: %s", key, exc)
                    continue
                x = arrays.get("X_initial")
                if x is None or x.ndim != 2 or x.shape[1] != 2:
                    continue
                loaded[gen], seeds[gen] = arrays, seed
            if loaded:
                emit(f"{dataset}/states", f"state_{slug(dataset)}_{slug(model)}", f"Data and decision surface: {model}",
                     f"Training data and predicted probability of the target class at round 0 (top) and at the final "
                     f"round (bottom) for {model}, one seed per generator; the black line is p = 0.5.",
                     state_figure(loaded, dataset=dataset, model=model, generators=ctx.generators, seeds=seeds))


def _lowest_seed_with_state(ctx: ReportContext, with_state: set[str]) -> dict[tuple[str, str, str], tuple[int, str]]:
    """(dataset, model, generator) -> (seed, key) of its lowest committed seed with a stored state."""
    chosen: dict[tuple[str, str, str], tuple[int, str]] = {}
    for sid, key in ctx.cov.committed.items():
        if key in with_state:
            cell = (sid.dataset, sid.model, sid.generator)
            if cell not in chosen or sid.seed < chosen[cell][0]:
                chosen[cell] = (sid.seed, key)
    return chosen


def _earlier_report_files(out: Path) -> set[Path]:
    """The files a rebuild may replace or remove: those of an earlier report in ``out`` (empty if there is none).

    A folder counts as a report folder only when its index.html was written by this
    package, so a report pointed at an unrelated folder never removes anything.
    """
    index = out / "index.html"
    try:
        with index.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return set()
    if GENERATOR not in head and "recourse dynamics report</title>" not in head:
        return set()
    files = {p for p in (out / "figures").glob("*") if p.suffix in (".png", ".svg") and _FIGURE_STEMS.fullmatch(p.stem)}
    files |= set((out / "tables").glob("final_*.tex"))
    files |= {out / name for name in _DATA_FILES if (out / name).is_file()}
    return {p for p in files if p.is_file()}


def _remove_stale(ctx: ReportContext, previous: set[Path]) -> None:
    """Remove the earlier report's files that this build did not write again."""
    written = {p for refs in ctx.figures.values() for fig in refs for p in fig.files.values()}
    written |= {p for paths in ctx.tables.values() for p in paths} | set(ctx.data_files)
    stale = sorted(previous - written)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d files of the earlier report in %s that this build does not write: %s", len(stale),
                    ctx.out, ", ".join(ctx.rel(p) for p in stale[:10]) + (", ..." if len(stale) > 10 else ""))


def _warn_about_results_inside(out: Path) -> None:
    """Warn when the report folder holds a results dataset (e.g. a copy made by hand): it does not belong there."""
    for pattern in ("sweep.yaml", "*/sweep.yaml", "*/*/sweep.yaml"):
        for spec in out.glob(pattern):
            if (spec.parent / "rows").is_dir() or (spec.parent / "manifest").is_dir():
                logger.warning("the report folder %s holds a results dataset (%s); the report neither reads nor "
                               "writes it, and a report folder should hold the report only: move it elsewhere",
                               out, spec.parent)


def _write_latex(ctx: ReportContext) -> None:
    for dataset in ctx.datasets:
        for suffix, wanted in LATEX_TABLES.items():
            metrics = [m for m in wanted if m in ctx.final_metrics.get(dataset, set())]
            if not metrics:
                continue
            seeds = {(m, g): ctx.seeds_of(dataset, m, g) for m in ctx.models for g in ctx.generators}
            text = final_round_latex(ctx.final, dataset=dataset, models=ctx.models, generators=ctx.generators,
                                     metrics=metrics, seeds=seeds, label=f"tab:final-{slug(dataset)}{suffix}")
            path = ctx.out / "tables" / f"final_{slug(dataset)}{suffix}.tex"
            path.write_text(text, encoding="utf-8")
            ctx.tables[dataset].append(path)
