"""Tests of recourse_ray.report on a small hand-made results dataset.

The dataset is written through ResultsStore: datasets overlapping and moons x models
logistic_regression and mlp x generators generic and revise x seeds 0-2, rounds 0, 5,
10. On overlapping one system was never run (mlp/revise/seed 2) and one failed
(mlp/generic/seed 1); on moons only logistic_regression/generic/seed 0 is committed.
A few values are set by hand so that aggregates can be checked against hand
computations; the rest follow a simple formula.
"""

from __future__ import annotations

import ast
import csv
import html
import logging
import math
import re
import shutil
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recourse_ray.report import aggregate, build_report, coverage, final_round_table, initial_scores
from recourse_ray.report._stats import t_critical
from recourse_ray.report.latex import column_format, latex_cell
from recourse_ray.store import (
    IDENTITY_COLUMNS,
    POLARS_SCHEMA,
    ROW_SCHEMA,
    NotAResultsDirectory,
    ResultsStore,
    identity_row,
    rows_to_table,
)

ROOT = Path(__file__).resolve().parents[1]
# Results written by an earlier version of the package (its manifests and rows, as committed then).
EARLIER_RESULTS = ROOT / "tests" / "data" / "earlier-version-results" / "paper-real-world-credit"

SPEC = """\
name: report-test
description: hand-made results for the report tests
seeds: 3
shared_setup: true
grid:
  dataset: [overlapping, moons]
  model: [logistic_regression, mlp]
  generator: [generic, revise]
simulation:
  rounds: 10
  evaluate_every: 5
"""
ROUNDS = (0, 5, 10)
SCOPES = {
    "domain_mmd": "domain", "domain_mmd_negative": "domain", "model_mmd": "model", "model_mmd_grid": "model",
    "disagreement": "model", "decisiveness": "model", "decisiveness_code": "model", "perturbation": "model", "f1": "performance",
    "accuracy": "performance", "recourse_validity": "recourse", "recourse_cost": "recourse",
    "recourse_iterations": "recourse", "n_recourse": "recourse", "share_recourse": "recourse",
    "time_search_s": "timing", "time_retrain_s": "timing", "time_evaluate_s": "timing",
}
WITH_P = {"domain_mmd", "domain_mmd_negative", "model_mmd", "model_mmd_grid"}
NOT_AT_ROUND_0 = {m for m, s in SCOPES.items() if s in ("recourse", "timing")}
NOT_RUN = ("overlapping", "mlp", "revise", 2)
FAILED = ("overlapping", "mlp", "generic", 1)
MOONS_ONLY = ("moons", "logistic_regression", "generic", 0)

# Hand-set values: (dataset, model, generator, metric, round) -> {seed: (value, p_value)}
HAND = {
    ("overlapping", "logistic_regression", "generic", "domain_mmd", 10): {0: (0.1, 0.01), 1: (0.2, 0.2), 2: (0.6, 0.03)},
    ("overlapping", "logistic_regression", "generic", "f1", 0): {0: (0.90, None), 1: (0.92, None), 2: (0.94, None)},
    ("overlapping", "logistic_regression", "generic", "f1", 10): {0: (0.80, None), 1: (0.85, None), 2: (0.78, None)},
    ("overlapping", "logistic_regression", "generic", "recourse_cost", 5): {0: (math.nan, None), 1: (1.0, None), 2: (2.0, None)},
    ("overlapping", "mlp", "generic", "domain_mmd", 10): {0: (0.4, 0.5), 2: (0.5, 0.01)},
}


def _key(dataset, model, generator, seed) -> str:
    return f"{dataset}-{model}-{generator}-s{seed}"


def _value(dataset, model, generator, seed, metric, rnd) -> tuple[float, float | None]:
    hand = HAND.get((dataset, model, generator, metric, rnd), {})
    if seed in hand:
        return hand[seed]
    base = 0.5 + 0.01 * sorted(SCOPES).index(metric) + (0.05 if generator == "revise" else 0.0)
    value = base + 0.01 * seed - 0.004 * rnd + (0.02 if model == "mlp" else 0.0)
    return value, (0.5 if metric in WITH_P else None)


def _systems():
    for dataset in ("overlapping", "moons"):
        for model in ("logistic_regression", "mlp"):
            for generator in ("generic", "revise"):
                for seed in range(3):
                    yield dataset, model, generator, seed


def _committed(system) -> bool:
    if system in (NOT_RUN, FAILED):
        return False
    return system[0] == "overlapping" or system == MOONS_ONLY


def _state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    X0 = rng.normal(size=(40, 2))
    y0 = (X0[:, 0] > 0).astype(np.int64)
    x1, x2 = np.linspace(-3, 3, 15), np.linspace(-3, 3, 15)
    g1, g2 = np.meshgrid(x1, x2, indexing="xy")
    return {"X_initial": X0, "y_initial": y0, "X_final": X0 + 0.3, "y_final": y0,
            "surface_x1": x1, "surface_x2": x2, "surface_initial": 1 / (1 + np.exp(-3 * g1)),
            "surface_final": 1 / (1 + np.exp(-3 * (g1 + 0.5 * g2)))}


def make_results(root: Path) -> Path:
    """Write the hand-made sweep and return its directory."""
    path = root / "report-test"
    store = ResultsStore(path)
    store.init(SPEC)
    rng = np.random.default_rng(0)
    for system in _systems():
        dataset, model, generator, seed = system
        key = _key(*system)
        identity = {"sweep": "report-test", "system_key": key, "dataset": dataset, "model": model,
                    "generator": generator, "seed": seed}
        if system == FAILED:
            store.write_failure(key, {**identity, "error": "RuntimeError: injected failure for the report test",
                                      "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: injected",
                                      "time": "2026-01-01T00:00:00"})
            continue
        if not _committed(system):
            continue
        rows = []
        for rnd in ROUNDS:
            for metric, scope in SCOPES.items():
                if rnd == 0 and metric in NOT_AT_ROUND_0:
                    continue
                value, p_value = _value(dataset, model, generator, seed, metric, rnd)
                rows.append({**identity, "round": rnd, "metric": metric, "scope": scope, "value": value, "p_value": p_value})
        manifest = {"settings": {"rounds": 10}, "timings": {"total_s": 1.5 + seed}, "host": "testhost",
                    "versions": {"python": "3.11", "torch": "2.13.0"}}
        store.write_system(identity, rows_to_table(rows), manifest)
        if dataset == "overlapping" and seed == 0:
            store.write_state(key, _state(rng))
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def agg(results) -> pl.DataFrame:
    return aggregate(results)


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    return build_report(results, tmp_path_factory.mktemp("report") / "out")


def _cell(agg, dataset, model, generator, metric, rnd) -> dict:
    rows = agg.filter((pl.col("dataset") == dataset) & (pl.col("model") == model) & (pl.col("generator") == generator)
                      & (pl.col("metric") == metric) & (pl.col("round") == rnd))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


# ---------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157), (30, 2.042272),
                                          (1000, 1.962339)])
def test_t_critical_matches_table_values(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=2e-6)


def test_t_critical_rejects_bad_df():
    with pytest.raises(ValueError, match="The 'df' parameter of t_critical must be an int"):
        t_critical(0)


# ---------------------------------------------------------------------------- aggregation
def test_aggregate_mean_std_interval_and_share_significant(agg):
    cell = _cell(agg, "overlapping", "logistic_regression", "generic", "domain_mmd", 10)
    std = math.sqrt(((0.1 - 0.3) ** 2 + (0.2 - 0.3) ** 2 + (0.6 - 0.3) ** 2) / 2)  # = sqrt(0.07)
    half = 4.302652729749411 * std / math.sqrt(3)
    assert cell["n_seeds"] == 3 and cell["n_nan"] == 0
    assert cell["mean"] == pytest.approx(0.3)
    assert cell["std"] == pytest.approx(std) and std == pytest.approx(0.2645751311)
    assert cell["ci_half_width"] == pytest.approx(half)
    assert cell["ci_low"] == pytest.approx(0.3 - half) and cell["ci_high"] == pytest.approx(0.3 + half)
    assert cell["n_p_values"] == 3 and cell["n_significant"] == 2
    assert cell["share_significant"] == pytest.approx(2 / 3)
    assert cell["scope"] == "domain"


def test_aggregate_delta_f1_is_per_system_change_from_round_0(agg):
    deltas = [0.80 - 0.90, 0.85 - 0.92, 0.78 - 0.94]
    cell = _cell(agg, "overlapping", "logistic_regression", "generic", "delta_f1", 10)
    assert cell["mean"] == pytest.approx(-0.11)
    assert cell["std"] == pytest.approx(statistics.stdev(deltas)) and cell["std"] == pytest.approx(0.0458257569)
    assert cell["share_significant"] is None and cell["n_p_values"] == 0
    assert cell["scope"] == "performance"
    start = _cell(agg, "overlapping", "logistic_regression", "generic", "delta_f1", 0)
    assert start["mean"] == 0 and start["std"] == 0
    assert {"delta_accuracy", "delta_decisiveness"} <= set(agg["metric"].to_list())


def test_aggregate_excludes_and_counts_nan(agg):
    cell = _cell(agg, "overlapping", "logistic_regression", "generic", "recourse_cost", 5)
    assert cell["n_seeds"] == 2 and cell["n_nan"] == 1
    assert cell["mean"] == pytest.approx(1.5)
    assert cell["std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    assert cell["ci_half_width"] == pytest.approx(12.706204736 * statistics.stdev([1.0, 2.0]) / math.sqrt(2))
    assert agg.filter(pl.col("n_nan") > 0).height == 1


def test_aggregate_uses_committed_seeds_only(agg):
    # mlp/generic lost seed 1 to a failure: two seeds remain, one of two significant (share 0.5)
    cell = _cell(agg, "overlapping", "mlp", "generic", "domain_mmd", 10)
    assert cell["n_seeds"] == 2
    assert cell["mean"] == pytest.approx(0.45)
    assert cell["share_significant"] == pytest.approx(0.5)
    assert _cell(agg, "overlapping", "mlp", "revise", "f1", 10)["n_seeds"] == 2


def test_aggregate_single_seed_has_no_spread(agg):
    cell = _cell(agg, "moons", "logistic_regression", "generic", "f1", 5)
    assert cell["n_seeds"] == 1
    assert cell["mean"] == pytest.approx(_value(*MOONS_ONLY[:3], 0, "f1", 5)[0])
    assert cell["std"] is None and cell["ci_low"] is None and cell["ci_half_width"] is None


def test_aggregate_same_from_path_store_and_rows(results, agg):
    store = ResultsStore(results)
    assert_frame_equal(aggregate(store), agg, check_exact=False)
    assert_frame_equal(aggregate(store.read_rows()), agg, check_exact=False)  # summation order may differ
    # one row per group: 2 datasets' committed cells x rounds x metrics (+ deltas)
    assert agg.select("dataset", "model", "generator", "metric", "round").is_unique().all()


def test_aggregate_rejects_a_directory_without_results(tmp_path):
    with pytest.raises(NotAResultsDirectory, match="is not a recourse_ray results directory"):
        aggregate(tmp_path)


def test_final_round_table_takes_the_last_round(agg):
    final = final_round_table(agg)
    assert set(final["round"].to_list()) == {10}
    row = final.filter((pl.col("dataset") == "overlapping") & (pl.col("model") == "logistic_regression")
                       & (pl.col("generator") == "generic") & (pl.col("metric") == "domain_mmd"))
    assert row["mean"].item() == pytest.approx(0.3)
    only = final_round_table(agg, metrics=["f1"])
    assert set(only["metric"].to_list()) == {"f1"}
    # 7 committed cells (4 on overlapping... all 4, plus 1 on moons) -> one f1 row each
    assert only.height == 5


def test_initial_scores_average_generators_within_a_seed(results):
    scores = initial_scores(results)
    row = scores.filter((pl.col("dataset") == "overlapping") & (pl.col("model") == "logistic_regression")
                        & (pl.col("metric") == "f1")).row(0, named=True)
    # per seed: mean of generic (hand-set) and revise (formula) at round 0
    per_seed = [(HAND[("overlapping", "logistic_regression", "generic", "f1", 0)][s][0]
                 + _value("overlapping", "logistic_regression", "revise", s, "f1", 0)[0]) / 2 for s in range(3)]
    assert row["n_seeds"] == 3
    assert row["mean"] == pytest.approx(statistics.mean(per_seed))
    assert row["std"] == pytest.approx(statistics.stdev(per_seed))


# ---------------------------------------------------------------------------- the store
def test_row_schema_and_identity_columns_are_one_definition():
    assert IDENTITY_COLUMNS == ("sweep", "system_key", "dataset", "model", "generator", "seed")
    assert ROW_SCHEMA.names[: len(IDENTITY_COLUMNS)] == list(IDENTITY_COLUMNS)
    assert list(POLARS_SCHEMA) == ROW_SCHEMA.names
    assert (POLARS_SCHEMA["seed"], POLARS_SCHEMA["value"], POLARS_SCHEMA["metric"]) == (pl.Int64, pl.Float64, pl.String)
    row = identity_row(sweep="s", system_key="k", dataset="d", model="m", generator="g", seed=np.int64(3))
    assert tuple(row) == IDENTITY_COLUMNS and row["seed"] == 3 and type(row["seed"]) is int


def test_store_for_sweep_names_paths(tmp_path):
    store = ResultsStore.for_sweep(tmp_path / "results", "quick")
    assert Path(store.path) == (tmp_path / "results" / "quick").resolve()
    assert store.sweep_name == "quick"
    assert store.spec_uri == f"{tmp_path / 'results' / 'quick'}/sweep.yaml"
    uri = ResultsStore.for_sweep(f"file://{tmp_path}/results/", "quick")
    assert uri.uri == f"file://{tmp_path}/results/quick" and uri.local and uri.sweep_name == "quick"
    assert not store.exists() and not (tmp_path / "results").exists()  # naming a store writes nothing


# ---------------------------------------------------------------------------- coverage
def test_coverage_lists_missing_and_failed(results):
    cov = coverage(ResultsStore(results))
    assert len(cov.expected) == 24 and len(cov.committed) == 11
    assert len(cov.missing) == 13
    failed = [tuple(s) for s in cov.failed]
    assert failed == [FAILED]
    assert NOT_RUN in [tuple(s) for s in cov.not_run] and len(cov.not_run) == 12
    assert cov.unexpected == [] and cov.expected_seeds() == 3
    assert cov.name == "report-test" and cov.description == "hand-made results for the report tests"


def test_coverage_expands_the_grid_like_the_spec(results):
    from recourse_ray import spec as spec_mod

    cov = coverage(ResultsStore(results))
    systems = spec_mod.loads(SPEC).systems()
    assert [tuple(s) for s in cov.expected] == [(s.dataset, s.model, s.generator, s.seed) for s in systems]
    assert cov.sweep is not None and cov.spec_problems == []
    assert cov.order("generator") == ["generic", "revise"]


def test_coverage_of_a_spec_this_version_cannot_read(tmp_path, caplog):
    store = ResultsStore(tmp_path / "old")
    store.init(SPEC.replace("  evaluate_every: 5\n", "  evaluate_every: 5\n  retired_setting: 1\n"))
    identity = identity_row(sweep="report-test", system_key="k0", dataset="moons", model="mlp", generator="generic", seed=0)
    rows = [{**identity, "round": 0, "metric": "f1", "scope": "performance", "value": 0.9, "p_value": None}]
    store.write_system(identity, rows_to_table(rows), {"versions": {}})
    with caplog.at_level(logging.WARNING, logger="recourse_ray.report._coverage"):
        cov = coverage(store)
    assert "retired_setting" in caplog.text and "cannot list missing systems" in caplog.text
    assert cov.expected is None and cov.sweep is None and any("retired_setting" in p for p in cov.spec_problems)
    assert cov.name == "old" and list(cov.committed.values()) == ["k0"]  # the directory's name
    index = build_report(store, tmp_path / "out", trajectories=False, states=False, formats=("svg",))
    page = index.read_text(encoding="utf-8")
    assert "planned grid is unknown" in page and "retired_setting" in page


@pytest.mark.skipif(not EARLIER_RESULTS.exists(), reason="the committed paper results are not in this checkout")
def test_report_of_results_written_by_an_earlier_version(tmp_path):
    store = ResultsStore(EARLIER_RESULTS)
    cov = coverage(store)
    assert cov.sweep is not None and cov.name == "paper-real-world-credit"
    assert len(cov.expected) == 12 and len(cov.committed) == len(store.manifests()) == 12
    assert cov.missing == [] and cov.unexpected == [] and cov.failed == {}
    index = build_report(store, tmp_path / "out", trajectories=False, states=False, formats=("png",))
    page = index.read_text(encoding="utf-8")
    assert "Complete sweep: every planned system is committed." in page and 'id="ds-credit_default"' in page
    systems = pl.read_csv(tmp_path / "out" / "systems.csv")
    assert systems["status"].to_list() == ["committed"] * 12


# ---------------------------------------------------------------------------- LaTeX
def test_latex_cell_and_column_format():
    assert latex_cell(0.3, 0.2645751311, 2 / 3) == r"$0.300 \pm 0.265^{\dagger}$"
    assert latex_cell(0.3, 0.2645751311, 0.49) == r"$0.300 \pm 0.265$"
    assert latex_cell(-0.0001, None, None) == r"$0.000$"
    assert latex_cell(None, None, None) == "--"
    assert column_format([2.1e-4, 1e-5]) == (-4, 3)
    assert column_format([0.5, -0.11]) == (0, 3)
    assert column_format([45.0]) == (0, 2)


# ---------------------------------------------------------------------------- the full report
def _is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_links_its_png_figures_instead_of_embedding_them(report):
    out = report.parent
    assert report.name == "index.html" and report.exists()
    page = report.read_text(encoding="utf-8")
    assert "data:image" not in page and "<svg" not in page  # nothing inlined
    images = re.findall(r'<img src="([^"]+)" alt="[^"]*" width="(\d+)" height="(\d+)" loading="lazy">', page)
    assert len(images) >= 10 and len(images) == page.count("<img ")
    for rel, width, height in images:
        path = out / rel
        assert rel.startswith("figures/") and rel.endswith(".png") and path.is_file(), rel
        assert _is_png(path.read_bytes()) and _png_size(path) == (int(width), int(height)), rel
    markdown = (out / "report.md").read_text(encoding="utf-8")
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert md_images == [rel for rel, _, _ in images]  # the same figures in the same order
    linked = set(re.findall(r'href="(figures/[^"]+)"', page)) | set(re.findall(r"\]\((figures/[^)]+)\)", markdown))
    assert all((out / rel).is_file() for rel in linked)
    stems = {Path(rel).stem for rel, _, _ in images}
    assert {"summary_overlapping", "summary_moons", "initial_scores", "trajectory_overlapping_delta_f1",
            "state_overlapping_logistic_regression", "state_overlapping_mlp", "timing_overlapping"} <= stems
    # PNG only by default, and every figure written is shown
    assert {p.name for p in (out / "figures").iterdir()} == {f"{stem}.png" for stem in stems}
    # the page holds text and tables only; the figures are palette PNGs (colour type 3)
    assert len(page.encode("utf-8")) < 150_000
    assert all((out / rel).read_bytes()[25] == 3 for rel, _, _ in images)


def _allowed_report_file(rel: Path) -> bool:
    if rel.parts[0] == "figures":
        return len(rel.parts) == 2 and rel.suffix in (".png", ".svg")
    if rel.parts[0] == "tables":
        return len(rel.parts) == 2 and rel.suffix == ".tex"
    if rel.parts[0] == "comparison":
        return rel.name in ("comparison.csv", "comparison.md", "agreement.json")
    return len(rel.parts) == 1 and rel.suffix in (".csv", ".parquet", ".md", ".html")


def test_report_folder_holds_no_rows_dataset(report, results):
    out = report.parent
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.parent.name for p in files} <= {out.name, "figures", "tables"}
    assert [p for p in files if not _allowed_report_file(p.relative_to(out))] == []
    assert not any(p.name == "sweep.yaml" or p.suffix in (".npz", ".json") for p in files)
    # no parquet file of the report holds metric rows (one row per system, round and metric)
    for path in out.glob("*.parquet"):
        columns = set(pl.read_parquet_schema(path))
        assert not {"system_key", "value", "p_value"} & columns, path.name
    rows_bytes = sum(p.stat().st_size for p in (results / "rows").rglob("*") if p.is_file())
    report_bytes = sum(p.stat().st_size for p in files)
    assert rows_bytes > 0 and report_bytes < 3_000_000


def test_report_sections_in_reading_order(report):
    """Results first (per dataset: summary, final round, trajectories, surfaces), the sweep's details after."""
    page = report.read_text(encoding="utf-8")
    sections = re.findall(r'<h2 id="([^"]+)"', page)
    assert sections == ["ds-overlapping", "ds-moons", "initial", "status", "quality", "sweep", "files"]
    overlapping = page[page.index('id="ds-overlapping"'):page.index('id="ds-moons"')]
    marks = ['src="figures/summary_overlapping.png"', 'id="ds-overlapping-final"', 'id="ds-overlapping-trajectories"',
             'id="ds-overlapping-states"', 'id="ds-overlapping-timing"']
    positions = [overlapping.index(mark) for mark in marks]
    assert positions == sorted(positions)
    sweep = page[page.index('<h2 id="sweep"'):page.index('<h2 id="files"')]
    for anchor in ("overview", "settings", "versions", "hosts", "timings"):
        assert f'id="{anchor}"' in sweep, anchor
    assert page.index("Partial sweep: 13 of 24") < page.index('id="ds-overlapping"')  # the banner stays on top
    markdown = (report.parent / "report.md").read_text(encoding="utf-8")
    level2 = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert level2 == ["Dataset: overlapping", "Dataset: moons", "Initial model scores",
                      "Status: failures and missing systems", "Undefined values (NaN)",
                      "Sweep: settings, versions, hosts and run times", "Files and definitions"]
    assert markdown.index("![Summary at the final round](figures/summary_overlapping.png)") < markdown.index(
        "### Final-round results")
    contents = next(line for line in markdown.splitlines() if line.startswith("Contents: "))
    assert contents.startswith("Contents: [overlapping](#dataset-overlapping) \u00b7 [moons](#dataset-moons)")


def test_report_shows_both_decisiveness_definitions(report):
    out = report.parent
    markdown = (out / "report.md").read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| Model | Generator | Seeds | Domain MMD"))
    assert "| Decisiveness (study text) | Decisiveness (reference code) |" in header
    assert "mean of (p \u2212 0.5)\u00b2" in markdown and "AlgorithmicRecourseDynamics.jl" in markdown
    # one trajectory figure holds both: the study's definition on top, the code's below
    both = out / "figures" / "trajectory_overlapping_decisiveness.png"
    single = out / "figures" / "trajectory_overlapping_disagreement.png"
    assert not (out / "figures" / "trajectory_overlapping_decisiveness_code.png").exists()
    assert _png_size(both)[1] > 1.6 * _png_size(single)[1]
    assert "![Decisiveness: study text (top) and reference code (bottom)](figures/trajectory_overlapping_decisiveness.png)" \
        in markdown
    tex = (out / "tables" / "final_overlapping.tex").read_text(encoding="utf-8")
    assert "Decisiveness (study text)" in tex


def _write_reference(path: Path) -> Path:
    """A reference output file for overlapping / logistic_regression / generic: domain MMD at rounds 0 and 10."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("value", "p_value", "name", "scope", "k", "n", "model", "generator"))
        for k, value in zip((1, 2, 3), (0.28, 0.30, 0.32)):
            writer.writerow((0.0, 1.0, "mmd", "domain", k, 0, "LogisticRegression", "Generic"))
            writer.writerow((value, 0.0, "mmd", "domain", k, 10, "LogisticRegression", "Generic"))
    return path


def test_final_round_table_shows_the_reference_beside_ours(results, tmp_path):
    reference = _write_reference(tmp_path / "overlapping_output.csv")
    out = tmp_path / "out"
    build_report(results, out, trajectories=False, states=False, reference=reference)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    overlapping = markdown[markdown.index("## Dataset: overlapping"):markdown.index("## Dataset: moons")]
    assert "| Domain MMD (target class) | Domain MMD (target class): reference | Domain MMD (non-target class) |" \
        in overlapping
    # ours: 0.3 +- 0.265 over three seeds, 2 of 3 significant; the reference: 0.30 +- 0.02 over three folds
    assert "| logistic_regression | generic | 3/3 | 0.300 \u00b1 0.265\u2020 | 0.300 \u00b1 0.020 \u2713 |" in overlapping
    assert "| logistic_regression | revise | 3/3 |" in overlapping and "at round 10, beside ours" in overlapping
    moons = markdown[markdown.index("## Dataset: moons"):]
    assert ": reference |" not in moons  # the reference is of one dataset
    level2 = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert level2.index("Dataset: moons") < level2.index("Against the reference implementation") < level2.index(
        "Initial model scores")
    assert sorted(p.name for p in (out / "comparison").iterdir()) == ["agreement.json", "comparison.csv",
                                                                        "comparison.md"]


def test_rebuild_removes_only_the_earlier_reports_stale_files(results, tmp_path, caplog):
    out = tmp_path / "out"
    build_report(results, out, formats=("png", "svg"), trajectories=False, states=False)
    assert list((out / "figures").glob("*.svg"))
    (out / "aggregates.csv").write_text("written by an earlier version\n", encoding="utf-8")
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    (out / "figures" / "sketch.png").write_bytes(b"not a figure of the report")
    with caplog.at_level(logging.INFO, logger="recourse_ray.report.documents"):
        build_report(results, out, trajectories=False, states=False)
    assert not list((out / "figures").glob("*.svg")) and not (out / "aggregates.csv").exists()
    assert (out / "notes.txt").exists() and (out / "figures" / "sketch.png").exists()
    assert "removed" in caplog.text and "aggregates.csv" in caplog.text
    # a folder that holds no earlier report loses nothing
    other = tmp_path / "other"
    (other / "figures").mkdir(parents=True)
    (other / "figures" / "summary_mine.svg").write_text("<svg/>", encoding="utf-8")
    build_report(results, other, trajectories=False, states=False)
    assert (other / "figures" / "summary_mine.svg").exists()


def test_a_results_dataset_in_the_report_folder_is_left_alone_and_warned_about(results, tmp_path, caplog):
    out = tmp_path / "out"
    copy = out / "results" / "report-test"
    shutil.copytree(results, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    with caplog.at_level(logging.WARNING, logger="recourse_ray.report.documents"):
        build_report(results, out, trajectories=False, states=False)
    assert "holds a results dataset" in caplog.text and str(copy) in caplog.text
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_report_html_lists_failure_and_missing_systems(report):
    page = report.read_text(encoding="utf-8")
    assert "RuntimeError: injected failure for the report test" in page
    assert "Partial sweep: 13 of 24 planned systems are missing (1 failed, 12 not run)" in page
    missing = page[page.index('id="missing"'):page.index('id="coverage"')]
    assert missing.count('<tr class="missing">') == 13
    assert "<td>overlapping</td><td>mlp</td><td>revise</td>" in missing and "not run" in missing
    assert 'href="#ds-overlapping"' in page and 'id="ds-overlapping"' in page and 'id="ds-moons"' in page
    assert "name: report-test" in page  # the sweep's settings
    assert "2.13.0" in page  # versions from the manifests
    assert "<table class=\"sortable\">" in page and "<script>" in page
    assert "\u2020" in page  # significant cells are marked
    markdown = (report.parent / "report.md").read_text(encoding="utf-8")
    assert "injected failure" in markdown and "| overlapping | mlp | revise | 2 | not run |" in markdown


def _headings_html(page: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", page)]


def _headings_markdown(text: str) -> list[str]:
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", text, flags=re.M | re.S)  # no code blocks
    return re.findall(r"^#{1,6} (.+)$", prose, flags=re.M)


def _github_anchors(headings: list[str]) -> list[str]:
    """The anchors a Markdown viewer gives these headings (GitHub: duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = []
    for h in headings:
        base = re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
        seen[base] = seen.get(base, -1) + 1
        out.append(base if seen[base] == 0 else f"{base}-{seen[base]}")
    return out


def test_markdown_and_html_have_the_same_sections(report):
    in_html = _headings_html(report.read_text(encoding="utf-8"))
    markdown = (report.parent / "report.md").read_text(encoding="utf-8")
    in_markdown = _headings_markdown(markdown)
    assert in_html == in_markdown
    assert {"Hosts", "Run times (from the manifests)", "Undefined values (NaN)", "Seeds per cell"} <= set(in_markdown)
    assert "| testhost | 11 |" in markdown and "| total_s | 25.5 |" in markdown
    assert "| overlapping | logistic_regression | generic | recourse_cost | 5 | 1 | 2 |" in markdown
    assert "RuntimeError: injected\n```" in markdown  # the traceback
    # internal links point at headings (GitHub's anchors) or at figure files
    anchors = set(_github_anchors(in_markdown))
    targets = re.findall(r"\]\(#([^)]+)\)", markdown)
    assert targets and set(targets) <= anchors


def test_report_latex_tables(report):
    tex = (report.parent / "tables" / "final_overlapping.tex").read_text(encoding="utf-8")
    assert r"$0.300 \pm 0.265^{\dagger}$" in tex  # domain MMD, 2 of 3 seeds significant
    assert r"$0.450 \pm 0.071^{\dagger}$" in tex  # mlp/generic: 2 seeds, share 0.5
    assert r"$-0.110 \pm 0.046$" in tex  # delta F1 of logistic_regression/generic
    assert r"logistic\_regression" in tex and r"\begin{tabular}" in tex and r"\bottomrule" in tex
    assert "2/3" in tex  # seeds column marks the incomplete cells
    moons = (report.parent / "tables" / "final_moons.tex").read_text(encoding="utf-8")
    assert moons.count("--") > 0  # cells without systems
    assert (report.parent / "tables" / "final_overlapping_outcomes.tex").exists()


def test_report_data_files_match_aggregate(report, agg):
    out = report.parent
    # Polars may sum in another order from run to run (threads): equal up to float rounding.
    assert_frame_equal(pl.read_parquet(out / "aggregates.parquet"), agg, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)
    assert not (out / "aggregates.csv").exists()  # the full aggregates only as parquet
    final = pl.read_csv(out / "final_round.csv")
    assert final.height == final_round_table(agg).height
    systems = pl.read_csv(out / "systems.csv")
    assert systems.height == 24
    assert systems.filter(pl.col("status") == "failed").height == 1
    assert systems.filter(pl.col("status") == "not run").height == 12


def test_report_of_an_empty_sweep(tmp_path):
    store = ResultsStore(tmp_path / "empty")
    store.init(SPEC)
    index = build_report(tmp_path / "empty", tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    assert "Partial sweep: 24 of 24 planned systems are missing" in page
    assert "No committed results for this dataset." in page
    assert aggregate(store).height == 0


def test_build_report_rejects_unknown_format(results, tmp_path):
    with pytest.raises(ValueError, match="The 'formats' parameter of build_report"):
        build_report(results, tmp_path / "out", formats=("jpg",))


def test_report_code_imports_neither_torch_nor_ray():
    package = Path(__file__).resolve().parents[1] / "recourse_ray" / "report"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & {"torch", "ray", "pandas"}, source.name


def test_reused_figures_render_like_fresh_ones(agg):
    from recourse_ray.report.figures import (figure_bytes, figure_style, iter_summary_figures,
                                             iter_trajectory_figures, summary_figure, trajectory_figure)

    kw = {"models": ["logistic_regression", "mlp"], "generators": ["generic", "revise"]}
    with figure_style():
        reused = [figure_bytes(fig, "png", dpi=60) for _, fig in iter_trajectory_figures(
            agg, dataset="overlapping", metric_groups=[["f1"], ["domain_mmd"], ["delta_f1"]], **kw)]
        fresh = [figure_bytes(trajectory_figure(agg, dataset="overlapping", metrics=[m], **kw), "png", dpi=60)
                 for m in ("f1", "domain_mmd", "delta_f1")]
        assert reused == fresh and len(set(fresh)) == 3
        final = final_round_table(agg)
        panels = [("moons", ["domain_mmd", "f1"]), ("overlapping", ["domain_mmd", "f1"])]
        reused = [figure_bytes(fig, "png", dpi=60) for _, fig in iter_summary_figures(final, panels=panels,
                                                                                      expected_seeds=3, **kw)]
        fresh = [figure_bytes(summary_figure(final, dataset=d, metrics=m, expected_seeds=3, **kw), "png", dpi=60)
                 for d, m in panels]
        assert reused == fresh


def test_report_without_a_grid_still_lists_what_it_has(tmp_path):
    store = ResultsStore(tmp_path / "nogrid")
    store.init("name: nogrid\n")
    identity = {"sweep": "nogrid", "system_key": "k0", "dataset": "moons", "model": "mlp", "generator": "generic", "seed": 0}
    rows = [{**identity, "round": r, "metric": "f1", "scope": "performance", "value": 0.9 - 0.01 * r, "p_value": None}
            for r in (0, 5)]
    store.write_system(identity, rows_to_table(rows), {"versions": {}})
    store.write_failure("k1", {**identity, "system_key": "k1", "seed": 1, "error": "ValueError: boom\nmore"})
    index = build_report(tmp_path / "nogrid", tmp_path / "out", trajectories=False, states=False, formats=("svg",))
    page = index.read_text(encoding="utf-8")
    assert "planned grid is unknown" in page and "ValueError: boom" in page and "more</td>" not in page
    # SVG-only reports show their SVG files
    shown = re.findall(r'<img src="(figures/[^"]+)"', page)
    assert shown and all(rel.endswith(".svg") and ET.parse(tmp_path / "out" / rel).getroot().tag.endswith("svg")
                         for rel in shown)
    systems = pl.read_csv(tmp_path / "out" / "systems.csv")
    assert sorted(systems["status"].to_list()) == ["committed", "failed"]
    delta = _cell(aggregate(store), "moons", "mlp", "generic", "delta_f1", 5)
    assert delta["mean"] == pytest.approx(-0.05) and delta["n_seeds"] == 1
