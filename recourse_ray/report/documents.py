"""Build a sweep's report folder: aggregates, figures, LaTeX tables, HTML and Markdown.

``build_report(results_dir, out_dir)`` reads a results dataset (through
``recourse_ray.store``; nothing is written there) and writes::

    OUT/index.html             self-contained report (figures embedded), open from disk
    OUT/report.md              the same content in Markdown, figures linked from figures/
    OUT/figures/*.png|svg      every figure
    OUT/tables/*.tex           final-round LaTeX tables
    OUT/aggregates.csv|parquet cross-seed aggregates (every round and metric)
    OUT/final_round.csv|parquet, OUT/initial_scores.csv|parquet, OUT/systems.csv

A partial sweep reports too: systems that the grid plans but that are not committed
are listed (failed ones with their first error line), cells with fewer seeds than
planned are marked, and the aggregates use the committed systems only.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recourse_ray.report._format import (
    SIGNIFICANT_SHARE,
    SUMMARY_METRICS,
    fmt,
    fmt_mean_std,
    metric_label,
    order_metrics,
    slug,
)
from recourse_ray.report.aggregation import aggregate, final_round_table, initial_scores, open_store, write_table
from recourse_ray.report._coverage import Coverage, coverage, provenance
from recourse_ray.report.figures import (
    figure_style,
    initial_scores_figure,
    iter_summary_figures,
    iter_trajectory_figures,
    save_figure,
    series_styles,
    state_figure,
)
from recourse_ray.report.latex import final_round_latex
from recourse_ray.store import ResultsStore

__all__ = ["build_report", "LATEX_TABLES"]

logger = logging.getLogger(__name__)

# LaTeX tables per dataset: file suffix -> metrics (columns), when present in the data.
LATEX_TABLES = {
    "": SUMMARY_METRICS,
    "_outcomes": ("f1", "accuracy", "delta_accuracy", "recourse_validity", "recourse_cost", "share_recourse"),
}
_TIMING_SCOPE = "timing"


@dataclass
class _FigureRef:
    """One figure of the report: where it is written and how it is captioned."""

    anchor: str
    title: str
    caption: str
    files: dict[str, Path]


@dataclass
class _Context:
    """Everything the document writers need, computed once."""

    out: Path
    source: str
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
    figures: dict[str, list[_FigureRef]] = field(default_factory=lambda: defaultdict(list))
    tables: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    data_files: list[Path] = field(default_factory=list)

    def seeds_of(self, dataset: str, model: str, generator: str) -> tuple[int, int | None]:
        return self.seed_counts.get((dataset, model, generator), 0), self.cov.expected_seeds()


# ---------------------------------------------------------------------------- entry point
def build_report(
    results_dir: str | Path | ResultsStore,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
    trajectories: bool = True,
    states: bool = True,
) -> Path:
    """Write the full report of one sweep's results dataset into ``out_dir``.

    Args:
        results_dir: the sweep's results directory (``<results-root>/<sweep-name>``),
            a URI pyarrow understands, or a ``ResultsStore``.
        out_dir: the report folder (created; existing files of the same names are replaced).
        formats: figure formats to write, a subset of ("png", "svg"); the HTML embeds
            the PNG when written, else inlines the SVG.
        dpi: resolution of PNG figures (and of rasterised parts of SVGs).
        trajectories: draw the per-metric trajectory figures (the bulk of the figures).
        states: draw data/decision-surface figures from stored 2-D states.

    Returns:
        The path of ``out_dir/index.html``.

    Raises:
        NotAResultsDirectory: if ``results_dir`` holds no results dataset.
        ValueError: for an empty or unknown figure format.
    """
    formats = tuple(formats)
    if not formats or any(f not in ("png", "svg") for f in formats):
        raise ValueError(f"The 'formats' parameter of build_report must list 'png' and/or 'svg'. Got {formats!r} instead.")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    store = open_store(results_dir)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    cov = coverage(store)
    agg = aggregate(store)
    final = final_round_table(agg)
    scores = initial_scores(store)
    seed_counts = Counter((s.dataset, s.model, s.generator) for s in cov.committed)
    present = lambda col: set(agg[col].unique().to_list()) if agg.height else set()  # noqa: E731
    ctx = _Context(
        out=out, source=store.uri, cov=cov, agg=agg, final=final, scores=scores,
        datasets=cov.order("dataset", present("dataset") | {s.dataset for s in cov.failed}),
        models=cov.order("model", present("model") | {s.model for s in cov.failed}),
        generators=cov.order("generator", present("generator") | {s.generator for s in cov.failed}),
        metrics=order_metrics(present("metric")),
        seed_counts=dict(seed_counts),
        scopes=dict(agg.select("metric", "scope").unique(subset="metric").iter_rows()) if agg.height else {},
        final_metrics=_metrics_by_dataset(final),
        agg_metrics=_metrics_by_dataset(agg),
    )
    phases["read and aggregate"] = time.perf_counter() - started
    logger.info("aggregated %d groups from %d committed systems in %.2fs", agg.height, len(cov.committed),
                phases["read and aggregate"])

    mark = time.perf_counter()
    ctx.data_files += write_table(agg, out, "aggregates")
    ctx.data_files += write_table(final, out, "final_round")
    ctx.data_files += write_table(scores, out, "initial_scores")
    ctx.data_files.append(_write_systems(ctx))
    phases["data files"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with figure_style():
        _draw_figures(ctx, store, formats=formats, dpi=dpi, trajectories=trajectories, states=states)
    phases["figures"] = time.perf_counter() - mark
    n_figures = sum(len(refs) for refs in ctx.figures.values())

    mark = time.perf_counter()
    _write_latex(ctx)
    (out / "report.md").write_text(_markdown(ctx), encoding="utf-8")
    index = out / "index.html"
    index.write_text(_html(ctx), encoding="utf-8")
    phases["documents"] = time.perf_counter() - mark
    phases["total"] = time.perf_counter() - started
    logger.info("report written to %s in %.2fs (%d figures; %s)", out, phases["total"], n_figures,
                ", ".join(f"{k} {v:.2f}s" for k, v in phases.items() if k != "total"),
                extra={"report_phases": phases, "report_figures": n_figures})
    return index


# ---------------------------------------------------------------------------- outputs
def _metrics_by_dataset(frame: pl.DataFrame) -> dict[str, set[str]]:
    if not frame.height:
        return {}
    pairs = frame.select("dataset", "metric").unique()
    out: dict[str, set[str]] = defaultdict(set)
    for dataset, metric in pairs.iter_rows():
        out[dataset].add(metric)
    return dict(out)


def _system_status(ctx: _Context) -> list[dict]:
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


def _write_systems(ctx: _Context) -> Path:
    path = ctx.out / "systems.csv"
    schema = {"dataset": pl.String, "model": pl.String, "generator": pl.String, "seed": pl.Int64,
              "status": pl.String, "system_key": pl.String, "error": pl.String}
    pl.DataFrame(_system_status(ctx), schema=schema).write_csv(path)
    return path


def _draw_figures(ctx: _Context, store: ResultsStore, *, formats, dpi, trajectories, states) -> None:
    fig_dir = ctx.out / "figures"
    styles = series_styles(ctx.generators)

    def emit(section: str, stem: str, title: str, caption: str, fig) -> None:
        files = save_figure(fig, fig_dir, stem, formats=formats, dpi=dpi)
        ctx.figures[section].append(_FigureRef(anchor=f"fig-{stem}", title=title, caption=caption, files=files))

    if ctx.scores.height:
        scored = set(ctx.scores["dataset"].to_list())
        emit("initial", "initial_scores", "Initial model scores",
             "Test-set macro F1 and accuracy of the pretrained models at round 0, mean \u00b1 std across seeds "
             "(values are first averaged over generators within a seed).",
             initial_scores_figure(ctx.scores, datasets=[d for d in ctx.datasets if d in scored], models=ctx.models))

    timing_metrics = [m for m in ctx.metrics if ctx.scopes.get(m) == _TIMING_SCOPE]
    traj_metrics = [m for m in ctx.metrics if m not in timing_metrics]
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
        ds = slug(dataset)
        present = ctx.agg_metrics.get(dataset, set())
        groups = [[m] for m in traj_metrics if m in present]
        timing_here = [m for m in timing_metrics if m in present]
        if timing_here:
            groups.append(timing_here)
        for metrics, fig in iter_trajectory_figures(ctx.agg, dataset=dataset, metric_groups=groups,
                                                    models=ctx.models, generators=ctx.generators, styles=styles):
            if metrics == timing_here:
                emit(f"{dataset}/timing", f"timing_{ds}", "Compute time per evaluation round",
                     "Wall-clock seconds spent per phase, mean across seeds and 95 % t-interval.", fig)
            else:
                metric = metrics[0]
                emit(f"{dataset}/trajectories", f"trajectory_{ds}_{slug(metric)}", metric_label(metric),
                     f"{metric_label(metric)} over rounds: mean across seeds (line) and 95 % t-interval (band).", fig)
    if states:
        _draw_states(ctx, store, emit)


def _draw_states(ctx: _Context, store: ResultsStore, emit) -> None:
    """One figure per (dataset, model) with stored 2-D states: the lowest seed per generator."""
    with_state = store.state_keys()
    if not with_state:
        return
    chosen: dict[tuple[str, str, str], tuple[int, str]] = {}
    for sid, key in ctx.cov.committed.items():
        if key in with_state:
            cell = (sid.dataset, sid.model, sid.generator)
            if cell not in chosen or sid.seed < chosen[cell][0]:
                chosen[cell] = (sid.seed, key)
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


def _write_latex(ctx: _Context) -> None:
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


# ---------------------------------------------------------------------------- shared content
def _status_counts(ctx: _Context) -> list[tuple[str, str]]:
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


def _partial_notice(ctx: _Context) -> str | None:
    cov = ctx.cov
    if cov.expected is not None and not cov.missing:
        return None
    if cov.expected is None:
        return "The sweep's planned grid is unknown, so missing systems cannot be listed; failures are listed below."
    return (f"Partial sweep: {len(cov.missing)} of {len(cov.expected)} planned systems are missing "
            f"({len(cov.failed)} failed, {len(cov.not_run)} not run). Aggregates use the committed systems only; "
            "cells with fewer seeds than planned are marked.")


def _coverage_rows(ctx: _Context) -> list[dict]:
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


def _final_table_rows(ctx: _Context, dataset: str, metrics: Sequence[str]) -> list[dict]:
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


def _final_rounds(ctx: _Context, dataset: str) -> str:
    rounds = sorted(set(ctx.final.filter(pl.col("dataset") == dataset)["round"].to_list()))
    return ", ".join(map(str, rounds)) if rounds else "none"


def _nan_groups(ctx: _Context) -> pl.DataFrame:
    if not ctx.agg.height:
        return ctx.agg
    return ctx.agg.filter(pl.col("n_nan") > 0).select("dataset", "model", "generator", "metric", "round", "n_nan", "n_seeds")


def _final_metric_groups(ctx: _Context, dataset: str) -> list[tuple[str, list[str]]]:
    present = ctx.final_metrics.get(dataset, set())
    timing = [m for m in ctx.metrics if m in present and ctx.scopes.get(m) == _TIMING_SCOPE]
    main = [m for m in ctx.metrics if m in present and m not in timing]
    shift = [m for m in main if ctx.scopes.get(m) in ("domain", "model")]
    rest = [m for m in main if m not in shift]
    return [(title, ms) for title, ms in (("Shifts", shift), ("Performance and recourse", rest), ("Compute time", timing)) if ms]


def _in_grid_order(ctx: _Context, frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by dataset and model in the sweep's grid order, then by metric."""
    rank = {"dataset": {d: i for i, d in enumerate(ctx.datasets)}, "model": {m: i for i, m in enumerate(ctx.models)}}
    return frame.sort(
        pl.col("dataset").replace_strict(rank["dataset"], default=len(rank["dataset"]), return_dtype=pl.Int64),
        pl.col("model").replace_strict(rank["model"], default=len(rank["model"]), return_dtype=pl.Int64),
        pl.col("metric"),
    )


def _seed_text(have: int, planned: int | None) -> str:
    return f"{have}/{planned}" if planned is not None else str(have)


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a1a1a;line-height:1.45}
nav{position:fixed;top:0;left:0;bottom:0;width:15rem;overflow-y:auto;background:#f6f6f6;border-right:1px solid #ddd;
padding:1rem;font-size:.85rem;box-sizing:border-box}
nav ul{padding-left:1rem;margin:.2rem 0}nav a{color:#0b4f8a;text-decoration:none}nav a:hover{text-decoration:underline}
main{margin-left:15rem;padding:1rem 2rem;max-width:72rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #0072B2;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:1.8rem}h4{margin:1.2rem 0 .3rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1rem}
th,td{border:1px solid #d6d6d6;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef3f8;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#999;font-size:.75em}
tr:nth-child(even) td{background:#fafafa}
tr.missing td{background:#fde2e1}tr.incomplete td{background:#fff4d6}
.notice{border-left:4px solid #D55E00;background:#fff1e8;padding:.6rem 1rem;margin:1rem 0}
.ok{border-left:4px solid #009E73;background:#e9f7f2;padding:.6rem 1rem;margin:1rem 0}
.scroll{overflow-x:auto}figure{margin:1rem 0}figure img,figure svg{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#444}pre{background:#f6f6f6;padding:.8rem;overflow-x:auto;font-size:.8rem}
code{font-size:.85em}.muted{color:#666}
@media print{nav{display:none}main{margin-left:0}}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
 th.addEventListener('click',function(){
  var table=th.closest('table'),body=table.tBodies[0];
  var idx=Array.prototype.indexOf.call(th.parentNode.children,th);
  var asc=th.getAttribute('data-order')!=='asc';
  th.parentNode.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-order');});
  th.setAttribute('data-order',asc?'asc':'desc');
  function key(row){var c=row.cells[idx];if(!c)return '';var v=c.getAttribute('data-v');
   if(v===null)v=c.textContent.trim();var n=parseFloat(v);return isNaN(n)?v.toLowerCase():n;}
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=key(a),y=key(b);
   if(typeof x!==typeof y){return typeof x==='number'?-1:1;}
   return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});
 });
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence], *, sortable: bool = True,
                row_classes: Sequence[str | None] | None = None) -> str:
    """rows: cells are str (text) or (text, sort_value) for numeric cells."""
    table_open = '<table class="sortable">' if sortable else "<table>"
    out = [f'<div class="scroll">{table_open}<thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else None
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for cell in row:
            if isinstance(cell, tuple):
                text, value = cell
                v = "" if value is None or value != value else repr(float(value))
                out.append(f'<td class="num" data-v="{v}">{_e(text)}</td>')
            else:
                out.append(f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _html_figure(ref: _FigureRef, out: Path) -> str:
    if "png" in ref.files:
        data = base64.b64encode(ref.files["png"].read_bytes()).decode("ascii")
        body = f'<img src="data:image/png;base64,{data}" alt="{_e(ref.title)}">'
    else:
        svg = ref.files["svg"].read_text(encoding="utf-8")
        body = svg[svg.find("<svg"):]
    links = " \u00b7 ".join(f'<a href="{_e(p.relative_to(out).as_posix())}">{fmt_.upper()}</a>' for fmt_, p in ref.files.items())
    return (f'<figure id="{_e(ref.anchor)}">{body}<figcaption><b>{_e(ref.title)}.</b> {_e(ref.caption)} '
            f'<span class="muted">[{links}]</span></figcaption></figure>')


def _html(ctx: _Context) -> str:
    cov = ctx.cov
    prov = provenance(cov.manifests)
    toc: list[str] = []
    body: list[str] = []
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    body.append(f"<h1>Recourse dynamics report: {_e(cov.name)}</h1>")
    body.append(f'<p class="muted">Generated {generated} by recourse_ray.report from <code>{_e(ctx.source)}</code>.</p>')
    notice = _partial_notice(ctx)
    body.append(f'<div class="notice">{_e(notice)} <a href="#status">See the status section.</a></div>' if notice
                else '<div class="ok">Complete sweep: every planned system is committed.</div>')

    # Overview
    toc.append('<li><a href="#overview">Overview</a><ul><li><a href="#settings">Settings</a></li>'
               '<li><a href="#versions">Versions</a></li></ul></li>')
    body.append('<h2 id="overview">Overview</h2>')
    body.append(_html_table(["Item", "Value"], _status_counts(ctx), sortable=False))
    desc = cov.spec.get("description") if isinstance(cov.spec, dict) else None
    if desc:
        body.append(f"<p>{_e(desc)}</p>")
    body.append('<h3 id="settings">Sweep settings (sweep.yaml)</h3>')
    body.append(f"<details open><summary>Resolved spec as run</summary><pre>{_e(cov.spec_text)}</pre></details>")
    body.append('<h3 id="versions">Software versions</h3>')
    if prov["versions"]:
        rows = [(pkg, "; ".join(f"{v} ({n} systems)" if len(c) > 1 else v for v, n in c.most_common()))
                for pkg, c in prov["versions"].items()]
        body.append(_html_table(["Package", "Version"], rows, sortable=False))
        if any(len(c) > 1 for c in prov["versions"].values()):
            body.append('<p class="notice">Systems ran with different software versions (see counts).</p>')
    else:
        body.append("<p>No versions recorded.</p>")
    if prov["hosts"]:
        body.append("<h3 id=\"hosts\">Hosts</h3>")
        body.append(_html_table(["Host", "Systems"], [(h, (str(n), n)) for h, n in prov["hosts"].most_common()]))
    if prov["timings"]:
        body.append('<h3 id="timings">Run times (from the manifests)</h3>')
        body.append(_html_table(["Timing", "Total (s)", "Mean (s)", "Max (s)", "Systems"],
                                [(k, (fmt(v["total"]), v["total"]), (fmt(v["mean"]), v["mean"]), (fmt(v["max"]), v["max"]),
                                  (str(v["n"]), v["n"])) for k, v in prov["timings"].items()]))

    # Status
    toc.append('<li><a href="#status">Status: failures and missing systems</a></li>')
    body.append('<h2 id="status">Status: failures and missing systems</h2>')
    body.append(_html_status(ctx))

    # Initial scores
    if ctx.figures.get("initial") or ctx.scores.height:
        toc.append('<li><a href="#initial">Initial model scores</a></li>')
        body.append('<h2 id="initial">Initial model scores</h2>')
        for ref in ctx.figures.get("initial", []):
            body.append(_html_figure(ref, ctx.out))
        rows = []
        for r in _in_grid_order(ctx, ctx.scores).iter_rows(named=True):
            rows.append((r["dataset"], r["model"], metric_label(r["metric"]), (fmt_mean_std(r["mean"], r["std"]), r["mean"]),
                         (str(r["n_seeds"]), r["n_seeds"])))
        body.append(_html_table(["Dataset", "Model", "Metric", "Round 0 (mean \u00b1 std)", "Seeds"], rows))

    # Datasets
    toc.append("<li>Datasets<ul>")
    for dataset in ctx.datasets:
        anchor = f"ds-{slug(dataset)}"
        subs = [("final", "Final round", bool(ctx.final_metrics.get(dataset))),
                ("trajectories", "Trajectories", bool(ctx.figures.get(f"{dataset}/trajectories"))),
                ("states", "Surfaces", bool(ctx.figures.get(f"{dataset}/states"))),
                ("timing", "Compute time", bool(ctx.figures.get(f"{dataset}/timing")))]
        sub_toc = "".join(f'<li><a href="#{anchor}-{key}">{label}</a></li>' for key, label, shown in subs if shown)
        toc.append(f'<li><a href="#{anchor}">{_e(dataset)}</a>' + (f"<ul>{sub_toc}</ul>" if sub_toc else "") + "</li>")
        body.append(_html_dataset(ctx, dataset, anchor))
    toc.append("</ul></li>")

    # Data quality and files
    toc.append('<li><a href="#quality">Undefined values</a></li>')
    body.append('<h2 id="quality">Undefined values (NaN)</h2>')
    nan = _nan_groups(ctx)
    if nan.height:
        body.append(f"<p>{nan.height} aggregate cells had NaN values, which were left out of mean, std and interval "
                    "(n_seeds counts only the values used).</p>")
        shown = nan.head(500)
        body.append(_html_table(["Dataset", "Model", "Generator", "Metric", "Round", "NaN values", "Values used"],
                                [(r["dataset"], r["model"], r["generator"], r["metric"], (str(r["round"]), r["round"]),
                                  (str(r["n_nan"]), r["n_nan"]), (str(r["n_seeds"]), r["n_seeds"]))
                                 for r in shown.iter_rows(named=True)]))
        if nan.height > shown.height:
            body.append(f"<p>First {shown.height} shown; all are in aggregates.csv (column n_nan).</p>")
    else:
        body.append("<p>No NaN values.</p>")
    toc.append('<li><a href="#files">Files and definitions</a></li>')
    body.append('<h2 id="files">Files and definitions</h2>')
    files = ctx.data_files + [p for ps in ctx.tables.values() for p in ps] + [ctx.out / "report.md"]
    body.append("<ul>" + "".join(f'<li><a href="{_e(p.relative_to(ctx.out).as_posix())}">{_e(p.relative_to(ctx.out).as_posix())}</a></li>'
                                 for p in files) + "</ul>")
    body.append(f"<p>{_e(_DEFINITIONS)}</p>")

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(cov.name)}: recourse dynamics report</title><style>{_CSS}</style></head><body>"
        f"<nav><b>{_e(cov.name)}</b><ul>{''.join(toc)}</ul></nav><main>{''.join(body)}</main>"
        f"<script>{_SORT_JS}</script></body></html>\n"
    )


_DEFINITIONS = (
    "Definitions: each number summarises the seeds of one dataset x model x generator cell. mean and std "
    "(sample standard deviation, ddof 1) are taken across seeds, leaving out NaN values; the 95 % interval is "
    "mean \u00b1 t(0.975, n\u22121)\u00b7std/\u221an with n the number of seeds used. \u0394 metrics are each system's "
    "value minus its own round-0 value, aggregated the same way. \u2020 marks a cell where at least "
    f"{SIGNIFICANT_SHARE:.0%} of the seeds have a permutation-test p-value below 0.05. The final round is the last "
    "evaluated round of each cell. See docs/report.md."
)


def _html_status(ctx: _Context) -> str:
    cov = ctx.cov
    parts = []
    parts.append(f'<h3 id="failures">Failures ({len(cov.failed)})</h3>')
    if cov.failed:
        rows, tracebacks = [], []
        for sid, rec in sorted(cov.failed.items()):
            rows.append((sid.dataset, sid.model, sid.generator, (str(sid.seed), sid.seed), str(rec.get("system_key", "")),
                         str(rec.get("time", "")), str(rec.get("error", "")).splitlines()[0] if rec.get("error") else ""))
            if rec.get("traceback"):
                tracebacks.append(f"<details><summary>Traceback: {_e(f'{sid.dataset}/{sid.model}/{sid.generator}/seed={sid.seed}')}"
                                  f"</summary><pre>{_e(rec['traceback'])}</pre></details>")
        parts.append(_html_table(["Dataset", "Model", "Generator", "Seed", "System key", "Time", "Error"], rows,
                                 row_classes=["missing"] * len(rows)))
        parts += tracebacks
    else:
        parts.append("<p>No failed systems.</p>")
    parts.append(f'<h3 id="missing">Missing systems ({len(cov.missing)})</h3>')
    if cov.expected is None:
        parts.append("<p>Unknown: sweep.yaml has no usable grid.</p>")
    elif cov.missing:
        parts.append("<p>Planned by the grid but not committed: <b>failed</b> ones have a failure record above; "
                     "<b>not run</b> ones were never started or were interrupted (run <code>recourse-ray resume</code>).</p>")
        rows = [(s.dataset, s.model, s.generator, (str(s.seed), s.seed), "failed" if s in cov.failed else "not run")
                for s in cov.missing]
        parts.append(_html_table(["Dataset", "Model", "Generator", "Seed", "State"], rows,
                                 row_classes=["missing"] * len(rows)))
    else:
        parts.append("<p>None: every planned system is committed.</p>")
    if cov.unexpected:
        parts.append(f'<h3 id="unexpected">Committed systems not in the grid ({len(cov.unexpected)})</h3>')
        parts.append(_html_table(["Dataset", "Model", "Generator", "Seed"],
                                 [(s.dataset, s.model, s.generator, (str(s.seed), s.seed)) for s in cov.unexpected]))
    parts.append('<h3 id="coverage">Seeds per cell</h3>')
    rows, classes = [], []
    for r in _coverage_rows(ctx):
        rows.append((r["dataset"], r["model"], r["generator"], (_seed_text(r["committed"], r["planned"]), r["committed"]),
                     ", ".join(map(str, r["failed"])) or "\u2013", ", ".join(map(str, r["not_run"])) or "\u2013"))
        classes.append("missing" if r["committed"] == 0 else
                       "incomplete" if r["planned"] is not None and r["committed"] < r["planned"] else None)
    parts.append(_html_table(["Dataset", "Model", "Generator", "Committed/planned seeds", "Failed seeds", "Not-run seeds"],
                             rows, row_classes=classes))
    return "".join(parts)


def _html_dataset(ctx: _Context, dataset: str, anchor: str) -> str:
    parts = [f'<h2 id="{anchor}">Dataset: {_e(dataset)}</h2>']
    n_have = sum(v for (d, _, _), v in ctx.seed_counts.items() if d == dataset)
    n_planned = sum(1 for s in (ctx.cov.expected or []) if s.dataset == dataset)
    n_missing = sum(1 for s in ctx.cov.missing if s.dataset == dataset)
    parts.append(f"<p>{n_have} committed systems" + (f" of {n_planned} planned" if ctx.cov.expected is not None else "")
                 + f"; final round(s): {_e(_final_rounds(ctx, dataset))}.</p>")
    if n_missing:
        parts.append(f'<p class="notice">{n_missing} planned systems of this dataset are missing; '
                     f'rows with fewer seeds than planned are highlighted. <a href="#missing">List</a>.</p>')
    if not ctx.final_metrics.get(dataset):
        parts.append("<p><b>No committed results for this dataset.</b></p>")
        return "".join(parts)
    for ref in ctx.figures.get(dataset, []):
        parts.append(_html_figure(ref, ctx.out))
    parts.append(f'<h3 id="{anchor}-final">Final-round results</h3>')
    parts.append("<p>Mean \u00b1 std across seeds at the final round; \u2020: at least half of the seeds with p &lt; 0.05. "
                 "Click a column header to sort.</p>")
    for title, metrics in _final_metric_groups(ctx, dataset):
        parts.append(f"<h4>{_e(title)}</h4>")
        rows, classes = [], []
        for r in _final_table_rows(ctx, dataset, metrics):
            cells = [r["model"], r["generator"], (_seed_text(r["have"], r["planned"]), r["have"])]
            for c in r["cells"]:
                cells.append(("\u2013", None) if c is None else
                             (fmt_mean_std(c["mean"], c["std"], c["share_significant"]), c["mean"]))
            rows.append(cells)
            planned = r["planned"]
            classes.append("missing" if r["have"] == 0 else "incomplete" if planned is not None and r["have"] < planned else None)
        parts.append(_html_table(["Model", "Generator", "Seeds"] + [metric_label(m) for m in metrics], rows,
                                 row_classes=classes))
    if ctx.tables.get(dataset):
        parts.append("<p>LaTeX: " + ", ".join(f'<a href="{_e(p.relative_to(ctx.out).as_posix())}">{_e(p.name)}</a>'
                                              for p in ctx.tables[dataset]) + "</p>")
    traj = ctx.figures.get(f"{dataset}/trajectories", [])
    if traj:
        parts.append(f'<h3 id="{anchor}-trajectories">Trajectories</h3><p>'
                     + " \u00b7 ".join(f'<a href="#{_e(r.anchor)}">{_e(r.title)}</a>' for r in traj) + "</p>")
        parts += [_html_figure(r, ctx.out) for r in traj]
    states = ctx.figures.get(f"{dataset}/states", [])
    if states:
        parts.append(f'<h3 id="{anchor}-states">Data and decision surfaces</h3>')
        parts += [_html_figure(r, ctx.out) for r in states]
    timing = ctx.figures.get(f"{dataset}/timing", [])
    if timing:
        parts.append(f'<h3 id="{anchor}-timing">Compute time</h3>')
        parts += [_html_figure(r, ctx.out) for r in timing]
    return "".join(parts)


# ---------------------------------------------------------------------------- Markdown
def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c[0] if isinstance(c, tuple) else c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_figure(ref: _FigureRef, out: Path) -> str:
    main = ref.files.get("png") or ref.files["svg"]
    others = ", ".join(f"[{f.upper()}]({p.relative_to(out).as_posix()})" for f, p in ref.files.items())
    return (f"![{ref.title}]({main.relative_to(out).as_posix()})\n\n"
            f"*{ref.title}.* {ref.caption} ({others})")


def _md_anchor(text: str) -> str:
    return slug(text.lower())


def _markdown(ctx: _Context) -> str:
    cov = ctx.cov
    prov = provenance(cov.manifests)
    md = [f"# Recourse dynamics report: {cov.name}", ""]
    notice = _partial_notice(ctx)
    md += [f"> **{notice}**" if notice else "> Complete sweep: every planned system is committed.", ""]
    md += ["Contents: [Overview](#overview) · [Status](#status) · [Initial model scores](#initial-model-scores) · "
           + " · ".join(f"[{d}](#dataset-{_md_anchor(d)})" for d in ctx.datasets), ""]
    md += ["## Overview", "", _md_table(["Item", "Value"], _status_counts(ctx)), ""]
    md += ["### Sweep settings (sweep.yaml)", "", "```yaml", cov.spec_text.rstrip(), "```", ""]
    if prov["versions"]:
        md += ["### Software versions", "",
               _md_table(["Package", "Version"], [(p, "; ".join(f"{v} ({n} systems)" if len(c) > 1 else v for v, n in c.most_common()))
                                                  for p, c in prov["versions"].items()]), ""]
    md += ["## Status", "", f"### Failures ({len(cov.failed)})", ""]
    if cov.failed:
        md.append(_md_table(["Dataset", "Model", "Generator", "Seed", "Error"],
                            [(s.dataset, s.model, s.generator, s.seed, str(r.get("error", "")).splitlines()[0] if r.get("error") else "")
                             for s, r in sorted(cov.failed.items())]))
    else:
        md.append("No failed systems.")
    md += ["", f"### Missing systems ({len(cov.missing)})", ""]
    if cov.expected is None:
        md.append("Unknown: sweep.yaml has no usable grid.")
    elif cov.missing:
        md.append(_md_table(["Dataset", "Model", "Generator", "Seed", "State"],
                            [(s.dataset, s.model, s.generator, s.seed, "failed" if s in cov.failed else "not run")
                             for s in cov.missing]))
    else:
        md.append("None: every planned system is committed.")
    md.append("")
    md += ["## Initial model scores", ""]
    md += [_md_figure(r, ctx.out) + "\n" for r in ctx.figures.get("initial", [])]
    if ctx.scores.height:
        md += [_md_table(["Dataset", "Model", "Metric", "Round 0 (mean ± std)", "Seeds"],
                         [(r["dataset"], r["model"], metric_label(r["metric"]), fmt_mean_std(r["mean"], r["std"]), r["n_seeds"])
                          for r in _in_grid_order(ctx, ctx.scores).iter_rows(named=True)]), ""]
    for dataset in ctx.datasets:
        md += [f"## Dataset: {dataset}", ""]
        n_missing = sum(1 for s in cov.missing if s.dataset == dataset)
        if n_missing:
            md += [f"> **{n_missing} planned systems of this dataset are missing** (see Status).", ""]
        if not ctx.final_metrics.get(dataset):
            md += ["**No committed results for this dataset.**", ""]
            continue
        md += [_md_figure(r, ctx.out) + "\n" for r in ctx.figures.get(dataset, [])]
        md += [f"### Final-round results (round {_final_rounds(ctx, dataset)})", "",
               "Mean ± std across seeds; † at least half of the seeds with p < 0.05; Seeds: committed/planned.", ""]
        for title, metrics in _final_metric_groups(ctx, dataset):
            rows = []
            for r in _final_table_rows(ctx, dataset, metrics):
                rows.append([r["model"], r["generator"], _seed_text(r["have"], r["planned"])]
                            + ["–" if c is None else fmt_mean_std(c["mean"], c["std"], c["share_significant"]) for c in r["cells"]])
            md += [f"#### {title}", "", _md_table(["Model", "Generator", "Seeds"] + [metric_label(m) for m in metrics], rows), ""]
        if ctx.tables.get(dataset):
            md += ["LaTeX: " + ", ".join(f"[{p.name}]({p.relative_to(ctx.out).as_posix()})" for p in ctx.tables[dataset]), ""]
        for key, heading in (("trajectories", "Trajectories"), ("states", "Data and decision surfaces"), ("timing", "Compute time")):
            refs = ctx.figures.get(f"{dataset}/{key}", [])
            if refs:
                md += [f"### {heading}", ""] + [_md_figure(r, ctx.out) + "\n" for r in refs]
    md += ["## Files and definitions", ""]
    md += [f"- [{p.relative_to(ctx.out).as_posix()}]({p.relative_to(ctx.out).as_posix()})"
           for p in ctx.data_files + [p for ps in ctx.tables.values() for p in ps]]
    md += ["", _DEFINITIONS, ""]
    return "\n".join(md)
