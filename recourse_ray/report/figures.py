"""The report's figures (matplotlib, object-oriented API on the Agg/SVG canvases).

Every function takes already aggregated data (polars frames from ``aggregate``) or
stored states and returns a ``matplotlib.figure.Figure``; ``save_figure`` writes it as
PNG (by default) and/or SVG. PNGs are stored with a 256-colour palette: the figures
are flat colours and anti-aliased edges, so they look the same at about a third of the
size of matplotlib's RGBA files. No pyplot: figures are never registered globally, so
building a report leaves matplotlib's state alone and needs no GUI backend.

Colours follow the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); bars additionally carry hatches for incomplete data and lines carry
markers, so the figures also read in greyscale. Sizes target a paper page: at most
7.2 inches wide with 7-8 pt text.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
from matplotlib.collections import PolyCollection
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

from recourse_ray.report._format import SUMMARY_METRICS, is_missing, is_significant, metric_label

__all__ = [
    "OKABE_ITO",
    "figure_style",
    "series_styles",
    "summary_figure",
    "iter_summary_figures",
    "trajectory_figure",
    "iter_trajectory_figures",
    "state_figure",
    "initial_scores_figure",
    "save_figure",
    "figure_bytes",
    "palette_png",
    "DEFAULT_DPI",
]

# Okabe & Ito (2008), "Color Universal Design"; yellow last because it is faint on white.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
_MODEL_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")
PAGE_WIDTH_IN = 7.2
# 150 dpi: 7-8 pt text is 15-17 px high, sharp on screen and fine in print at page width.
DEFAULT_DPI = 150
PNG_COLOURS = 256
_CLASS_COLOURS = ("#0072B2", "#D55E00")  # non-target, target
# a dagger drawn as two strokes: mathtext markers render tiny and cost a font lookup per figure
_DAGGER = MplPath([(0, -1), (0, 1), (-0.55, 0.4), (0.55, 0.4)],
                  [MplPath.MOVETO, MplPath.LINETO, MplPath.MOVETO, MplPath.LINETO])
_SURFACE_CMAP = LinearSegmentedColormap.from_list("recourse_surface", ["#bcd7ec", "#ffffff", "#f3c9b1"])

_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "errorbar.capsize": 2,
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "recourse_ray",  # deterministic ids, so a re-built report diffs cleanly
    "hatch.linewidth": 0.6,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """The report's matplotlib settings, scoped to the block (global rcParams untouched afterwards)."""
    with matplotlib.rc_context(_RC):
        yield


def series_styles(names: Sequence[str], colours: Sequence[str] = OKABE_ITO) -> dict[str, dict]:
    """A stable style per name: colour cycles through the palette, line style changes per cycle."""
    styles = {}
    for i, name in enumerate(names):
        styles[name] = {
            "color": colours[i % len(colours)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[(i // len(colours)) % len(_LINESTYLES)],
        }
    return styles


def _grid(
    n_rows: int,
    n_cols: int,
    *,
    panel: tuple[float, float],
    margins: tuple[float, float, float, float],
    gaps: tuple[float, float] = (0.25, 0.3),
    **subplot_kw,
) -> tuple[Figure, np.ndarray]:
    """A figure with an ``n_rows x n_cols`` grid of fixed-size panels (inches).

    A fixed layout instead of matplotlib's constrained layout: the latter measures every
    tick label again on each save and made rendering several times slower.

    Args:
        panel: (width, height) of one panel; the width shrinks to fit PAGE_WIDTH_IN.
        margins: (left, right, top, bottom) in inches.
        gaps: (horizontal, vertical) space between panels in inches.
    """
    left, right, top, bottom = margins
    panel_w = min(panel[0], (PAGE_WIDTH_IN - left - right - (n_cols - 1) * gaps[0]) / n_cols)
    width = left + right + n_cols * panel_w + (n_cols - 1) * gaps[0]
    height = top + bottom + n_rows * panel[1] + (n_rows - 1) * gaps[1]
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(
        n_rows, n_cols, squeeze=False,
        gridspec_kw={"left": left / width, "right": 1 - right / width, "top": 1 - top / height,
                     "bottom": bottom / height, "wspace": gaps[0] / panel_w, "hspace": gaps[1] / panel[1]},
        **subplot_kw,
    )
    return fig, axes


def _legend_top(n_items: int, max_cols: int = 6) -> tuple[int, float]:
    """(legend columns, inches reserved above the panels for legend and titles)."""
    ncols = max(1, min(n_items, max_cols))
    rows = -(-n_items // ncols)
    return ncols, 0.1 + 0.17 * rows


def _top_legend(fig: Figure, handles: list, ncols: int) -> None:
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncols=ncols,
               handlelength=1.6, columnspacing=1.2, borderaxespad=0.2)


def _lookup(frame: pl.DataFrame, keys: Sequence[str]) -> dict[tuple, dict]:
    """Index a frame's rows by a tuple of key columns."""
    return {tuple(r[k] for k in keys): r for r in frame.iter_rows(named=True)}


def _legend_handles(generators: Sequence[str], styles: Mapping[str, dict], *, bars: bool) -> list:
    if bars:
        return [Patch(facecolor=styles[g]["color"], edgecolor="black", linewidth=0.4, label=g) for g in generators]
    return [Line2D([], [], color=styles[g]["color"], marker=styles[g]["marker"], linestyle=styles[g]["linestyle"], label=g)
            for g in generators]


def iter_summary_figures(
    final: pl.DataFrame,
    *,
    panels: Sequence[tuple[str, Sequence[str]]],
    models: Sequence[str],
    generators: Sequence[str],
    expected_seeds: int | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Iterator[tuple[str, Figure]]:
    """The study's summary figure per dataset: final-round bars per generator.

    Rows are metrics, columns are ``models``; each bar is the mean across seeds at the
    final round with the standard deviation as error bar. A hatched bar has fewer seeds
    than planned; a dagger marks a significant shift (at least half of the seeds with
    p < 0.05); 'n/a' marks a generator without data.

    Figures with the same number of rows are one ``Figure`` redrawn in place (axes and
    ticks are built once); save each yielded figure before advancing the iterator.

    Args:
        final: ``final_round_table`` rows.
        panels: ``(dataset, metrics)`` per figure, metrics in row order (e.g. SUMMARY_METRICS).
        models, generators: column and bar order.
        expected_seeds: planned seeds per cell, for the hatching (None: no hatching).
        styles: ``series_styles(generators)`` to keep colours consistent across figures.

    Yields:
        ``(dataset, figure)`` per entry of ``panels``.
    """
    styles = styles or series_styles(generators)
    by_dataset = final.partition_by("dataset", as_dict=True) if final.height else {}
    n_cols = max(len(models), 1)
    canvases: dict[int, tuple[Figure, np.ndarray, list]] = {}
    for dataset, metrics in panels:
        part = by_dataset.get((dataset,))
        data = _lookup(part, ("model", "generator", "metric")) if part is not None else {}
        n_rows = len(metrics)
        if n_rows not in canvases:
            _, top = _legend_top(len(generators) + 1)
            fig, axes = _grid(n_rows, n_cols, panel=(1.6, 1.0), margins=(0.85, 0.1, top + 0.2, 0.12),
                              gaps=(0.55, 0.22), sharex=True)
            for i in range(n_rows):
                for j, model in enumerate(models):
                    ax = axes[i, j]
                    ax.set_xlim(-0.6, len(generators) - 0.4)
                    ax.axhline(0, color="black", linewidth=0.6)
                    ax.yaxis.set_major_locator(MaxNLocator(4))
                    ax.set_xticks([])
                    ax.grid(axis="x", visible=False)
                    if i == 0:
                        ax.set_title(model)
            canvases[n_rows] = (fig, axes, [])
        fig, axes, drawn = canvases[n_rows]
        for artist in drawn:
            artist.remove()
        drawn.clear()
        for legend in list(fig.legends):
            legend.remove()
        incomplete_seen = False
        for i, metric in enumerate(metrics):
            for j, model in enumerate(models):
                ax = axes[i, j]
                # one bar() call per panel: a call per bar builds an error-bar container each time
                xs, means, stds, colours, hatched, marked, tops = [], [], [], [], [], [], []
                for k, gen in enumerate(generators):
                    row = data.get((model, gen, metric))
                    if row is None or is_missing(row["mean"]):
                        drawn.append(ax.text(k, 0, "n/a", ha="center", va="bottom", fontsize=6, color="#555555"))
                        continue
                    std = 0.0 if is_missing(row["std"]) else row["std"]
                    incomplete = expected_seeds is not None and row["n_seeds"] < expected_seeds
                    incomplete_seen |= incomplete
                    xs.append(k)
                    means.append(row["mean"])
                    stds.append(std)
                    colours.append(styles[gen]["color"])
                    hatched.append(incomplete)
                    tops.append(row["mean"] + std if row["mean"] >= 0 else row["mean"] - std)
                    marked.append(is_significant(row["share_significant"]))
                lo, hi = min([0.0, *tops]), max([0.0, *tops])
                pad = 0.18 * (hi - lo) if hi > lo else 0.1
                ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)
                if xs:
                    bars = ax.bar(xs, means, width=0.75, color=colours, edgecolor="black", linewidth=0.4, yerr=stds,
                                  ecolor="#333333", error_kw={"elinewidth": 0.8})
                    drawn.append(bars)
                    if bars.errorbar is not None:  # a separate container: removing the bars leaves it behind
                        drawn.append(bars.errorbar)
                    for bar, hatch in zip(bars, hatched):
                        if hatch:
                            bar.set_hatch("////")
                    if any(marked):
                        # daggers just beyond each marked bar's error bar, as one artist
                        mx = [x for x, m in zip(xs, marked) if m]
                        my = [t + (0.07 if t >= 0 else -0.07) * (hi - lo or 1.0) for t, m in zip(tops, marked) if m]
                        drawn.append(ax.scatter(mx, my, marker=_DAGGER, s=28, facecolors="none", edgecolors="black",
                                                linewidths=0.9))
                if j == 0:
                    ax.set_ylabel(metric_label(metric).replace(" (", "\n("))
        handles = _legend_handles(generators, styles, bars=True)
        if incomplete_seen:
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", linewidth=0.4,
                                 label="fewer seeds than planned"))
        _top_legend(fig, handles, _legend_top(len(handles))[0])
        yield dataset, fig


def summary_figure(
    final: pl.DataFrame,
    *,
    dataset: str,
    models: Sequence[str],
    generators: Sequence[str],
    metrics: Sequence[str] = SUMMARY_METRICS,
    expected_seeds: int | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Figure:
    """One dataset's summary figure (see ``iter_summary_figures``)."""
    return next(iter_summary_figures(final, panels=[(dataset, metrics)], models=models, generators=generators,
                                     expected_seeds=expected_seeds, styles=styles))[1]


def _band_collection(ax, series: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> PolyCollection | None:
    """One PolyCollection for all interval bands of an axis (much cheaper than fill_between per line)."""
    verts, colours = [], []
    for x, lo, hi, colour in series:
        keep = ~(np.isnan(lo) | np.isnan(hi))
        if keep.sum() < 2:
            continue
        xs, los, his = x[keep], lo[keep], hi[keep]
        verts.append(np.column_stack([np.concatenate([xs, xs[::-1]]), np.concatenate([los, his[::-1]])]))
        colours.append(colour)
    if not verts:
        return None
    collection = PolyCollection(verts, facecolors=colours, edgecolors="none", alpha=0.2)
    ax.add_collection(collection, autolim=False)
    ax.update_datalim(np.concatenate(verts))  # relim() ignores collections, so extend the limits by hand
    return collection


def iter_trajectory_figures(
    agg: pl.DataFrame,
    *,
    dataset: str,
    metric_groups: Sequence[Sequence[str]],
    models: Sequence[str],
    generators: Sequence[str],
    styles: Mapping[str, dict] | None = None,
) -> Iterator[tuple[list[str], Figure]]:
    """Trajectories over rounds for one dataset, one figure per group of metrics.

    Each figure shows, per generator, the mean across seeds (line) and the 95 % t-interval
    (band, where at least two seeds give one); rows are the group's metrics, columns are
    ``models``, and the panels of a row share their y axis.

    Figures with the same number of rows are one ``Figure`` redrawn in place: the axes,
    ticks and legend are built once and only the data artists change, which saves
    20-40 % of the cost of a report's many trajectory figures. Save each yielded
    figure before advancing the iterator.

    Yields:
        ``(metrics, figure)`` per entry of ``metric_groups``.
    """
    styles = styles or series_styles(generators)
    wanted = sorted({m for group in metric_groups for m in group})
    sub = agg.filter((pl.col("dataset") == dataset) & pl.col("metric").is_in(wanted)).sort("round")
    parts = sub.partition_by("metric", "model", "generator", as_dict=True)
    rounds = sorted(set(sub["round"].to_list()))
    n_cols = max(len(models), 1)
    canvases: dict[int, tuple[Figure, np.ndarray, list]] = {}
    for group in metric_groups:
        metrics = list(group)
        n_rows = len(metrics)
        if n_rows not in canvases:
            legend_cols, top = _legend_top(len(generators))
            fig, axes = _grid(n_rows, n_cols, panel=(1.6, 1.25), margins=(0.85, 0.1, top + 0.2, 0.4),
                              gaps=(0.15, 0.25), sharex=True, sharey="row")
            for i in range(n_rows):
                for j, model in enumerate(models):
                    ax = axes[i, j]
                    ax.yaxis.set_major_locator(MaxNLocator(4))
                    if len(rounds) <= 6:
                        ax.set_xticks(rounds)
                    else:
                        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
                    if i == 0:
                        ax.set_title(model)
                    if i == n_rows - 1:
                        ax.set_xlabel("Round")
            _top_legend(fig, _legend_handles(generators, styles, bars=False), legend_cols)
            canvases[n_rows] = (fig, axes, [])
        fig, axes, drawn_artists = canvases[n_rows]
        for artist in drawn_artists:
            artist.remove()
        drawn_artists.clear()
        for i, metric in enumerate(metrics):
            for j, model in enumerate(models):
                ax = axes[i, j]
                bands = []
                for gen in generators:
                    part = parts.get((metric, model, gen))
                    if part is None or part.height == 0:
                        continue
                    x = part["round"].to_numpy().astype(float)
                    st = styles[gen]
                    drawn_artists += ax.plot(x, part["mean"].to_numpy().astype(float), color=st["color"],
                                             marker=st["marker"], linestyle=st["linestyle"], markersize=2.5)
                    bands.append((x, part["ci_low"].fill_null(np.nan).to_numpy().astype(float),
                                  part["ci_high"].fill_null(np.nan).to_numpy().astype(float), st["color"]))
                ax.relim()
                collection = _band_collection(ax, bands)
                if collection is not None:
                    drawn_artists.append(collection)
                if not bands:
                    drawn_artists.append(ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center",
                                                 va="center", color="#555555"))
                if j == 0:
                    ax.set_ylabel(metric_label(metric).replace(" (", "\n("))
            for ax in axes[i]:
                ax.autoscale_view()
        yield metrics, fig


def trajectory_figure(
    agg: pl.DataFrame,
    *,
    dataset: str,
    metrics: Sequence[str],
    models: Sequence[str],
    generators: Sequence[str],
    styles: Mapping[str, dict] | None = None,
) -> Figure:
    """One trajectory figure: rows are ``metrics``, columns ``models`` (see ``iter_trajectory_figures``)."""
    return next(iter_trajectory_figures(agg, dataset=dataset, metric_groups=[metrics], models=models,
                                        generators=generators, styles=styles))[1]


def state_figure(
    states: Mapping[str, Mapping[str, np.ndarray]],
    *,
    dataset: str,
    model: str,
    generators: Sequence[str],
    seeds: Mapping[str, int] | None = None,
) -> Figure:
    """Data and decision surface before (round 0) and after (final round), per generator.

    Args:
        states: generator -> stored state arrays (``X_initial``, ``y_initial``,
            ``X_final``, ``y_final`` of shape (n, 2)/(n,); optionally ``surface_x1`` (G,),
            ``surface_x2`` (G,), ``surface_initial``/``surface_final`` (G, G) with
            ``surface[i, j]`` the predicted probability at ``(x1[j], x2[i])``).
        dataset, model: for the title.
        generators: column order; generators without a state are skipped.
        seeds: generator -> the seed shown, for the column titles.
    """
    gens = [g for g in generators if g in states]
    n_cols = max(len(gens), 1)
    side = min(1.6, (PAGE_WIDTH_IN - 0.75 - 0.1 - 0.1 * (n_cols - 1)) / n_cols)
    fig, axes = _grid(2, n_cols, panel=(side, side), margins=(0.75, 0.1, 0.5, 0.5), gaps=(0.12, 0.12),
                      sharex=True, sharey=True)
    all_x = [np.asarray(s[k]) for s in states.values() for k in ("X_initial", "X_final") if k in s]
    all_x += [np.column_stack([np.asarray(s["surface_x1"])[[0, -1]], np.asarray(s["surface_x2"])[[0, -1]]])
              for s in states.values() if "surface_x1" in s and "surface_x2" in s]
    stacked = np.concatenate(all_x) if all_x else np.zeros((1, 2))
    lo, hi = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    margin = 0.03 * np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - margin, hi + margin
    for j, gen in enumerate(gens):
        state = states[gen]
        for i, phase in enumerate(("initial", "final")):
            ax = axes[i, j]
            ax.grid(False)
            surface = state.get(f"surface_{phase}")
            if surface is not None and "surface_x1" in state and "surface_x2" in state:
                x1, x2 = np.asarray(state["surface_x1"]), np.asarray(state["surface_x2"])
                # the surface is on a regular grid, so an image shows it exactly and draws far faster than contourf
                ax.imshow(np.asarray(surface, dtype=float), extent=(x1[0], x1[-1], x2[0], x2[-1]), origin="lower",
                          cmap=_SURFACE_CMAP, vmin=0.0, vmax=1.0, interpolation="bilinear", aspect="auto")
                ax.contour(x1, x2, np.asarray(surface), levels=[0.5], colors="black", linewidths=0.8)
            X, y = state.get(f"X_{phase}"), state.get(f"y_{phase}")
            if X is not None and y is not None:
                X, y = np.asarray(X), np.asarray(y).reshape(-1)
                for label, (colour, marker) in enumerate(zip(_CLASS_COLOURS, ("o", "^"))):
                    pts = X[y == label]
                    ax.scatter(pts[:, 0], pts[:, 1], s=3, c=colour, marker=marker, linewidths=0, alpha=0.8,
                               rasterized=True)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.tick_params(labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(4, prune="upper"))
            ax.yaxis.set_major_locator(MaxNLocator(4, prune="upper"))
            if i == 0:
                seed = f" (seed {seeds[gen]})" if seeds and gen in seeds else ""
                ax.set_title(f"{gen}{seed}", fontsize=7)
            if j == 0:
                ax.set_ylabel("Round 0" if phase == "initial" else "Final round")
    handles = [Line2D([], [], linestyle="none", marker=m, color=c, label=lab)
               for c, m, lab in zip(_CLASS_COLOURS, ("o", "^"), ("y = 0", "y = 1 (target)"))]
    handles.append(Line2D([], [], color="black", linewidth=0.8, label="p = 0.5"))
    _top_legend(fig, handles, 3)
    fig.text(0.5, 0.02, f"{dataset} / {model}", ha="center", va="bottom", fontsize=8)
    return fig


def initial_scores_figure(
    scores: pl.DataFrame,
    *,
    datasets: Sequence[str],
    models: Sequence[str],
    metrics: Sequence[str] = ("f1", "accuracy"),
) -> Figure:
    """Round-0 test scores per dataset (groups) and model (bars), mean ± std across seeds."""
    styles = series_styles(models, _MODEL_COLOURS)
    data = _lookup(scores, ("dataset", "model", "metric"))
    legend_cols, top = _legend_top(len(models))
    fig, axes = _grid(1, len(metrics), panel=(0.4 + 0.55 * max(len(datasets), 1), 1.5),
                      margins=(0.5, 0.1, top + 0.2, 0.75), gaps=(0.2, 0.2), sharey=True)
    axes = axes[0]
    n = max(len(models), 1)
    bar_w = 0.8 / n
    x = np.arange(len(datasets))
    for ax, metric in zip(axes, metrics):
        for k, model in enumerate(models):
            means, stds = [], []
            for d in datasets:
                row = data.get((d, model, metric))
                means.append(np.nan if row is None or is_missing(row["mean"]) else row["mean"])
                stds.append(0.0 if row is None or is_missing(row["std"]) else row["std"])
            ax.bar(x - 0.4 + bar_w * (k + 0.5), means, width=bar_w, yerr=stds, color=styles[model]["color"],
                   edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.8}, label=model)
        ax.set_xticks(x, list(datasets), rotation=30, ha="right")
        ax.grid(axis="x", visible=False)
        ax.set_title(metric_label(metric) + " at round 0")
        ax.set_ylim(0, 1.05)
    _top_legend(fig, [Patch(facecolor=styles[m]["color"], edgecolor="black", linewidth=0.4, label=m) for m in models],
                legend_cols)
    return fig


def figure_bytes(fig: Figure, fmt: str, *, dpi: int = DEFAULT_DPI, palette: bool = True) -> bytes:
    """Render a figure to PNG or SVG bytes with deterministic metadata.

    Args:
        fig: the figure.
        fmt: "png" or "svg".
        dpi: resolution of the PNG (and of rasterised parts of an SVG).
        palette: store a PNG with a 256-colour palette (``palette_png``) instead of RGBA.
    """
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with figure_style():
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    if fmt == "png" and palette:
        return palette_png(buf.getvalue())
    return buf.getvalue()


def palette_png(data: bytes, *, colours: int = PNG_COLOURS) -> bytes:
    """A PNG re-encoded with a palette of at most ``colours`` colours (median cut, no dithering).

    The report's figures are drawn on an opaque white background, so the alpha channel
    carries nothing and is dropped. Pillow is a dependency of matplotlib.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, format="PNG",
                                                                                          optimize=True)
    return out.getvalue()


def save_figure(fig: Figure, directory: str | Path, stem: str, *, formats: Sequence[str] = ("png",),
                dpi: int = DEFAULT_DPI) -> dict[str, Path]:
    """Write ``fig`` as ``<directory>/<stem>.<fmt>`` for each format ("png", "svg"); returns fmt -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        if fmt not in ("png", "svg"):
            raise ValueError(f"The 'formats' parameter of save_figure must list 'png' and/or 'svg'. Got {fmt!r} instead.")
        path = directory / f"{stem}.{fmt}"
        path.write_bytes(figure_bytes(fig, fmt, dpi=dpi))
        paths[fmt] = path
    return paths
