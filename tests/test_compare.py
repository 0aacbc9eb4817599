"""Tests of recourse_ray.compare and ``recourse-ray compare`` (no Ray needed).

A small reference CSV in the reference implementation's format and a small results
dataset, both written here with values chosen so that means, stds, ratios and agreement
can be computed by hand:

- reference: LogisticRegression and FluxModel x Generic and REVISE x folds 1-3, rounds
  0, 10 and 20, metric rows mmd/domain, mmd_grid/model, disagreement/model and
  model_performance/model, recourse columns n_individuals / success_rate / distance;
- ours (dataset overlapping): logistic_regression and mlp x generic, revise and the
  variant generic_ref x seeds 0-1, rounds 0 and 10. mlp/revise was never run; mlp/generic
  has no disagreement; only logistic_regression has model_mmd (not in the reference).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import polars as pl
import pytest

from recourse_ray.cli import main
from recourse_ray.compare import (
    AGREEMENT_METRICS,
    COMPARISON_COLUMNS,
    ComparisonError,
    ReferenceMapping,
    compare,
    dataset_from_filename,
    format_comparison,
    load_mapping,
    parse_assignments,
    read_reference,
    write_comparison,
)
from recourse_ray.report import build_report
from recourse_ray.store import ResultsStore, rows_to_table

SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ard-v0.1.0" / "overlapping_output.csv"
HEADER = ("value", "p_value", "name", "scope", "k", "n", "model", "generator", "n_individuals", "pct_total",
          "success_rate", "distance", "redundancy")
SPEC = "name: compare-test\nseeds: 2\ngrid: {dataset: [overlapping], model: [logistic_regression, mlp], generator: [generic, revise]}\n"

# Reference values at round 10: (model, generator, "name/scope") -> values of folds 1, 2, 3.
REFERENCE_10 = {
    ("LogisticRegression", "Generic", "mmd/domain"): (0.10, 0.12, 0.14),
    ("LogisticRegression", "Generic", "mmd_grid/model"): (0.040, 0.044, 0.048),
    ("LogisticRegression", "Generic", "disagreement/model"): (0.20, 0.21, 0.22),
    ("LogisticRegression", "Generic", "model_performance/model"): (-0.08, -0.09, -0.10),
    ("LogisticRegression", "REVISE", "mmd/domain"): (0.25, 0.5, 0.75),
    ("LogisticRegression", "REVISE", "mmd_grid/model"): (0.001, 0.002, 0.003),
    ("LogisticRegression", "REVISE", "disagreement/model"): (0.05, 0.05, 0.05),
    ("FluxModel", "Generic", "mmd/domain"): (0.09, 0.09, 0.12),
    ("FluxModel", "Generic", "mmd_grid/model"): (-0.001, 0.0, 0.001),
    ("FluxModel", "Generic", "disagreement/model"): (0.07, 0.08, 0.09),
    ("FluxModel", "REVISE", "mmd/domain"): (0.05, 0.06, 0.07),
    ("FluxModel", "REVISE", "mmd_grid/model"): (0.01, 0.01, 0.01),
    ("FluxModel", "REVISE", "disagreement/model"): (0.03, 0.03, 0.03),
}
METRIC_ROWS = ("mmd/domain", "mmd_grid/model", "disagreement/model", "model_performance/model")
# success_rate per fold at round 10 (repeated on every metric row of the fold)
SUCCESS_10 = (0.9, 0.95, 1.0)

# Ours at round 10: (model, generator, metric) -> values of seeds 0, 1 (f1 also at round 0).
OURS_10 = {
    ("logistic_regression", "generic", "domain_mmd"): (0.20, 0.30),
    ("logistic_regression", "generic", "model_mmd_grid"): (0.050, 0.054),
    ("logistic_regression", "generic", "disagreement"): (0.10, 0.12),
    ("logistic_regression", "generic", "model_mmd"): (0.03, 0.05),
    ("logistic_regression", "generic", "f1"): (0.80, 0.85),
    ("logistic_regression", "revise", "domain_mmd"): (0.5, 1.0),
    ("logistic_regression", "revise", "model_mmd_grid"): (0.008, 0.010),
    ("logistic_regression", "revise", "disagreement"): (0.05, 0.07),
    ("logistic_regression", "revise", "model_mmd"): (0.01, 0.01),
    ("logistic_regression", "generic_ref", "domain_mmd"): (0.11, 0.13),
    ("logistic_regression", "generic_ref", "model_mmd_grid"): (0.04, 0.05),
    ("logistic_regression", "generic_ref", "disagreement"): (0.21, 0.21),
    ("mlp", "generic", "domain_mmd"): (0.08, 0.10),
    ("mlp", "generic", "model_mmd_grid"): (0.02, 0.04),
}
F1_0 = {("logistic_regression", "generic"): (0.90, 0.92)}


def write_reference(path: Path, *, rows: list[tuple] | None = None, header: tuple = HEADER) -> Path:
    """The hand-made reference file (or ``rows`` under ``header``)."""
    if rows is None:
        rows = []
        cells = sorted({(m, g) for m, g, _ in REFERENCE_10})
        for model, generator in cells:
            for k in (1, 2, 3):
                for n in (0, 10, 20):
                    for metric in METRIC_ROWS:
                        name, scope = metric.split("/")
                        values = REFERENCE_10.get((model, generator, metric))
                        if values is None:
                            continue
                        value = 0.0 if n == 0 else values[k - 1] * (1.0 if n == 10 else 1.5)
                        success = "" if n == 0 else SUCCESS_10[k - 1]
                        rows.append((value, "" if n == 0 else 0.0, name, scope, k, n, model, generator, 10 * n + k,
                                     (10 * n + k) / 800, success, "" if n == 0 else 0.2, "" if n == 0 else 0.0))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_results(root: Path) -> ResultsStore:
    store = ResultsStore.for_sweep(root, "compare-test")
    store.init(SPEC)
    systems = sorted({(m, g) for m, g, _ in OURS_10})
    for model, generator in systems:
        for seed in (0, 1):
            identity = {"sweep": "compare-test", "system_key": f"{model}-{generator}-{seed}", "dataset": "overlapping",
                        "model": model, "generator": generator, "seed": seed}
            rows = []
            for (m, g, metric), values in OURS_10.items():
                if (m, g) != (model, generator):
                    continue
                round_0 = F1_0[(m, g)][seed] if metric == "f1" else 0.0
                rows += [{**identity, "round": 0, "metric": metric, "scope": "model", "value": round_0, "p_value": None},
                         {**identity, "round": 10, "metric": metric, "scope": "model", "value": values[seed],
                          "p_value": None}]
            store.write_system(identity, rows_to_table(rows), {"versions": {}})
    return store


@pytest.fixture(scope="module")
def reference_csv(tmp_path_factory) -> Path:
    return write_reference(tmp_path_factory.mktemp("reference") / "overlapping_output.csv")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultsStore:
    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def comparison(store, reference_csv):
    return compare(store, read_reference(reference_csv), reference_source=str(reference_csv))


def _cell(frame: pl.DataFrame, model: str, generator: str, metric: str, rnd: int = 10) -> dict:
    rows = frame.filter((pl.col("model") == model) & (pl.col("generator") == generator)
                        & (pl.col("metric") == metric) & (pl.col("round") == rnd))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def _tree(path: Path) -> list[tuple[str, int]]:
    """Every file under ``path`` with its size (to show that nothing was written there)."""
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- reading the reference
def test_read_reference_long_format_in_our_names(reference_csv):
    ref = read_reference(reference_csv)
    assert ref.columns == ["model", "generator", "round", "metric", "replicate", "value"]
    assert set(ref["model"].unique()) == {"logistic_regression", "mlp"}
    assert set(ref["generator"].unique()) == {"generic", "revise"}
    assert set(ref["metric"].unique()) == {"domain_mmd", "model_mmd_grid", "disagreement", "delta_f1",
                                           "n_individuals", "share_individuals", "success_rate_reference",
                                           "distance_reference", "redundancy_reference"}
    lr_domain = ref.filter((pl.col("model") == "logistic_regression") & (pl.col("generator") == "generic")
                           & (pl.col("metric") == "domain_mmd") & (pl.col("round") == 10)).sort("replicate")
    assert lr_domain["replicate"].to_list() == [1, 2, 3]
    assert lr_domain["value"].to_list() == pytest.approx([0.10, 0.12, 0.14])
    # a recourse column: once per (fold, round, model, generator), not once per metric row
    success = ref.filter((pl.col("model") == "logistic_regression") & (pl.col("generator") == "generic")
                         & (pl.col("metric") == "success_rate_reference") & (pl.col("round") == 10)).sort("replicate")
    assert success["value"].to_list() == pytest.approx(list(SUCCESS_10))



def test_read_reference_leaves_out_names_mapped_to_none(reference_csv):
    mapping = ReferenceMapping().override(generators={"REVISE": None},
                                          metrics={"model_performance": None, "redundancy": None})
    ref = read_reference(reference_csv, mapping)
    assert set(ref["generator"].unique()) == {"generic"}
    assert not {"delta_f1", "redundancy_reference"} & set(ref["metric"].unique())


def test_read_reference_missing_columns(tmp_path):
    path = write_reference(tmp_path / "r.csv", rows=[(0.1, "mmd", 1, 0, "FluxModel", "Generic")],
                           header=("value", "name", "k", "n", "model", "generatr"))
    with pytest.raises(ComparisonError, match=r"missing column\(s\) 'scope', 'generator'\. For 'generator': "
                                              r"Did you mean 'generatr'\?") as exc:
        read_reference(path)
    assert len(exc.value.problems) == 1


def test_read_reference_lists_every_problem_at_once(tmp_path):
    rows = [(0.1, "", "mmd", "domain", 1, 0, "FluxModle", "Generik", 0, 0, "", "", ""),
            ("abc", "", "mmd", "domian", 1, 0, "FluxModel", "Generic", 0, 0, "", "", ""),
            (0.2, "", "mmd", "domain", "x", 0, "FluxModel", "Generic", 0, 0, "", "", "")]
    path = write_reference(tmp_path / "r.csv", rows=rows)
    with pytest.raises(ComparisonError) as exc:
        read_reference(path)
    problems = exc.value.problems
    assert len(problems) == 5, problems
    text = str(exc.value)
    assert text.startswith(f"Reference file {str(path)!r}: 5 problems:")
    assert "column 'value' must hold numbers: 1 entries do not, e.g. 'abc' (line 3)" in text
    assert "column 'k' must hold integers: 1 entries do not, e.g. 'x' (line 4)" in text
    assert "Unknown reference model 'FluxModle' in the file. Did you mean 'FluxModel'?" in text
    assert "Unknown reference generator 'Generik' in the file. Did you mean 'Generic'?" in text
    assert "Unknown reference metric 'mmd/domian' (name/scope) in the file. Did you mean 'mmd/domain'?" in text


def test_read_reference_rejects_duplicate_rows_and_empty_or_missing_files(tmp_path):
    row = (0.1, "", "mmd", "domain", 1, 0, "FluxModel", "Generic", 0, 0, "", "", "")
    with pytest.raises(ComparisonError, match=r"1 \(fold, round, model, generator, metric\) combinations appear "
                                              r"more than once, e\.g\. k=1 n=0 FluxModel/Generic mmd/domain"):
        read_reference(write_reference(tmp_path / "dupes.csv", rows=[row, row]))
    with pytest.raises(ComparisonError, match="it has a header but no rows"):
        read_reference(write_reference(tmp_path / "header.csv", rows=[]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ComparisonError, match="it is empty"):
        read_reference(tmp_path / "empty.csv")
    with pytest.raises(ComparisonError, match=r"Reference file '.*nowhere\.csv': it does not exist\."):
        read_reference(tmp_path / "nowhere.csv")


def test_unknown_names_in_the_mapping(reference_csv):
    mapping = ReferenceMapping().override(generators={"Generik": "generic_ref"}, metrics={"mmd/domian": "mmd"})
    with pytest.raises(ComparisonError) as exc:
        read_reference(reference_csv, mapping)
    text = str(exc.value)
    assert len(exc.value.problems) == 2
    assert ("Unknown reference generator 'Generik' in the mapping (neither a default reference name nor in the "
            "file). Did you mean 'Generic'?") in text
    assert ("Unknown reference metric 'mmd/domian' in the mapping (neither a default reference name nor in the "
            "file). Did you mean 'mmd/domain'?") in text


# ---------------------------------------------------------------------------- the mapping
def test_mapping_defaults():
    mapping = ReferenceMapping()
    assert mapping.models == {"LogisticRegression": "logistic_regression", "FluxModel": "mlp",
                              "FluxEnsemble": "deep_ensemble"}
    assert mapping.generators == {"Generic": "generic", "DICE": "dice", "Greedy": "greedy", "REVISE": "revise"}
    assert mapping.metrics["mmd/domain"] == "domain_mmd" and mapping.metrics["mmd/model"] == "model_mmd"
    assert mapping.metrics["mmd_grid/model"] == "model_mmd_grid"
    assert mapping.metrics["decisiveness/model"] == "decisiveness_code"
    assert mapping.metrics["model_performance/model"] == "delta_f1"
    assert mapping.metrics["success_rate"] == "success_rate_reference"
    assert mapping.metrics["distance"] == "distance_reference"
    assert mapping.metrics["pct_total"] == "share_individuals"
    assert mapping.metrics["redundancy"] == "redundancy_reference"
    assert AGREEMENT_METRICS == ("domain_mmd", "model_mmd", "model_mmd_grid", "disagreement")
    assert mapping.given == frozenset()


def test_mapping_overrides_complete_bare_metric_names():
    mapping = ReferenceMapping().override(generators={"Generic": "generic_ref"}, metrics={"disagreement": "dis"})
    assert mapping.generators["Generic"] == "generic_ref" and mapping.metrics["disagreement/model"] == "dis"
    assert mapping.given == {("generators", "Generic"), ("metrics", "disagreement/model")}
    assert list(mapping.generators) == ["Generic", "DICE", "Greedy", "REVISE"]  # order kept


def test_mapping_rejects_duplicate_labels():
    mapping = ReferenceMapping().override(generators={"DICE": "generic"})
    assert mapping.problems() == ["The reference generators 'Generic' and 'DICE' both map to 'generic'; each label "
                                  "can stand for one reference name only."]


def test_load_mapping_yaml_and_json(tmp_path):
    (tmp_path / "m.yaml").write_text("generators: {Generic: generic_ref}\nmetrics: {model_performance: null}\n"
                                     "dataset: overlapping\n")
    mapping = load_mapping(tmp_path / "m.yaml")
    assert mapping.generators["Generic"] == "generic_ref" and mapping.metrics["model_performance/model"] is None
    assert mapping.dataset == "overlapping" and mapping.models["FluxModel"] == "mlp"
    (tmp_path / "m.json").write_text(json.dumps({"models": {"FluxModel": "mlp_large"}}))
    assert load_mapping(tmp_path / "m.json").models["FluxModel"] == "mlp_large"


def test_load_mapping_problems(tmp_path):
    (tmp_path / "bad.yaml").write_text("generator: {Generic: g}\nmodels: [a, b]\n")
    with pytest.raises(ComparisonError) as exc:
        load_mapping(tmp_path / "bad.yaml")
    assert len(exc.value.problems) == 2
    assert "Unknown key 'generator' in 'mapping'. Did you mean 'generators'?" in str(exc.value)
    assert "'models' must be a mapping of reference name -> our label. Got list instead." in str(exc.value)
    with pytest.raises(ComparisonError, match="it does not exist"):
        load_mapping(tmp_path / "none.yaml")


def test_parse_assignments():
    assert parse_assignments(["Generic=generic_ref", "REVISE="], "--map-generator") == {"Generic": "generic_ref",
                                                                                       "REVISE": None}
    with pytest.raises(ComparisonError, match="The '--map-model' parameter of recourse-ray compare must be "
                                              "REFERENCE=OURS .* Got 'FluxModel' instead."):
        parse_assignments(["FluxModel"], "--map-model")


def test_dataset_from_filename():
    assert dataset_from_filename("x/overlapping_output.csv", ["moons", "overlapping"]) == "overlapping"
    assert dataset_from_filename("x/output.csv", ["moons", "overlapping"]) is None


# ---------------------------------------------------------------------------- comparing
def test_cells_by_hand(comparison):
    table = comparison.table()
    assert comparison.rounds == (10,)  # the reference's round 20 is not in ours
    assert comparison.dataset == "overlapping"
    assert table.columns == list(COMPARISON_COLUMNS)

    cell = _cell(table, "logistic_regression", "generic", "domain_mmd")
    assert cell["ours_mean"] == pytest.approx(0.25) and cell["ours_std"] == pytest.approx(math.sqrt(0.005))
    assert cell["reference_mean"] == pytest.approx(0.12) and cell["reference_std"] == pytest.approx(0.02)
    assert (cell["ours_n"], cell["reference_n"]) == (2, 3)
    assert cell["ratio"] == pytest.approx(0.25 / 0.12) and cell["abs_diff"] == pytest.approx(0.13)
    assert cell["agree"] is False and cell["status"] == "compared" and cell["counted"] is True

    grid = _cell(table, "logistic_regression", "generic", "model_mmd_grid")
    assert grid["ours_std"] == pytest.approx(statistics.stdev([0.050, 0.054]))
    assert grid["ratio"] == pytest.approx(0.052 / 0.044) and grid["agree"] is True

    # exactly x1.5 agrees (the interval is closed)
    boundary = _cell(table, "logistic_regression", "revise", "domain_mmd")
    assert boundary["ratio"] == 1.5 and boundary["agree"] is True
    # x4.5 but only 0.007 apart: agrees by the absolute rule
    small = _cell(table, "logistic_regression", "revise", "model_mmd_grid")
    assert small["ratio"] == pytest.approx(4.5) and small["abs_diff"] == pytest.approx(0.007) and small["agree"] is True
    # a zero reference mean has no ratio; 0.03 apart does not agree
    zero = _cell(table, "mlp", "generic", "model_mmd_grid")
    assert zero["reference_mean"] == 0.0 and zero["ratio"] is None
    assert zero["agree"] is False and zero["abs_diff"] == pytest.approx(0.03)
    assert _cell(table, "logistic_regression", "generic", "disagreement")["agree"] is False
    assert _cell(table, "logistic_regression", "revise", "disagreement")["ratio"] == pytest.approx(1.2)

    # one side missing: a status, no verdict
    for model, generator, metric, status in (("mlp", "generic", "disagreement", "not in results"),
                                             ("mlp", "revise", "domain_mmd", "not in results"),
                                             ("logistic_regression", "generic", "model_mmd", "not in reference"),
                                             ("logistic_regression", "generic", "success_rate_reference",
                                              "not in results")):
        cell = _cell(table, model, generator, metric)
        assert cell["status"] == status and cell["agree"] is None
    # generic_ref is not mapped by default: not in the table
    assert "generic_ref" not in set(table["generator"].to_list())


def test_delta_f1_is_derived_from_our_f1(comparison):
    cell = _cell(comparison.table(), "logistic_regression", "generic", "delta_f1")
    assert cell["ours_mean"] == pytest.approx(-0.085) and cell["ours_std"] == pytest.approx(statistics.stdev([-0.10, -0.07]))
    assert cell["reference_mean"] == pytest.approx(-0.09) and cell["ratio"] == pytest.approx(0.085 / 0.09)
    assert cell["agree"] is True and cell["counted"] is False


def test_agreement_rates_by_hand(comparison):
    agreement = comparison.agreement()
    # compared: LR/generic domain (no), grid (yes), disagreement (no); LR/revise domain, grid, disagreement (yes);
    # mlp/generic domain (yes), grid (no). Not compared: model_mmd x 2 (not in the reference), mlp/generic
    # disagreement and mlp/revise x 3 (not in results).
    assert agreement["overall"] == {"cells": 14, "compared": 8, "agree": 5, "missing": 6, "rate": 5 / 8}
    assert comparison.agreement_rate() == 5 / 8
    assert agreement["by_metric"]["domain_mmd"]["rate"] == pytest.approx(2 / 3)
    assert agreement["by_metric"]["model_mmd_grid"]["rate"] == pytest.approx(2 / 3)
    assert agreement["by_metric"]["disagreement"] == {"cells": 4, "compared": 2, "agree": 1, "missing": 2, "rate": 0.5}
    assert agreement["by_metric"]["model_mmd"] == {"cells": 2, "compared": 0, "agree": 0, "missing": 2, "rate": None}
    assert agreement["by_model"]["logistic_regression"]["rate"] == pytest.approx(4 / 6)
    assert agreement["by_model"]["mlp"]["rate"] == pytest.approx(1 / 2)
    assert agreement["by_generator"]["generic"]["rate"] == pytest.approx(2 / 5)
    assert agreement["by_generator"]["revise"]["rate"] == pytest.approx(1.0)
    assert list(agreement["by_metric"]) == ["domain_mmd", "model_mmd", "model_mmd_grid", "disagreement"]


def test_thresholds_and_metric_set_are_settable(store, reference_csv):
    ref = read_reference(reference_csv)
    loose = compare(store, ref, ratio=2.5, abs_tolerance=0.0)
    assert _cell(loose.table(), "logistic_regression", "generic", "domain_mmd")["agree"] is True  # x2.08
    assert _cell(loose.table(), "logistic_regression", "revise", "model_mmd_grid")["agree"] is False  # x4.5, abs 0
    only = compare(store, ref, metrics=["domain_mmd"])
    assert only.agreement()["overall"] == {"cells": 4, "compared": 3, "agree": 2, "missing": 1, "rate": 2 / 3}
    with pytest.raises(ComparisonError, match=r"The agreement metric 'domain_mdd' is not a label of the mapping\. "
                                              r"Did you mean 'domain_mmd'\?"):
        compare(store, ref, metrics=["domain_mdd"])
    with pytest.raises(ComparisonError, match=r"The 'ratio' parameter of compare must be a float in the range "
                                              r"\(1, inf\)\. Got 1 instead\."):
        compare(store, ref, ratio=1)


def test_rounds(comparison, store, reference_csv):
    every = comparison.at("all")
    assert every.rounds == (0, 10)
    assert set(every.table()["round"].to_list()) == {0, 10}
    round_0 = _cell(every.table(), "logistic_regression", "generic", "domain_mmd", 0)
    assert round_0["ours_mean"] == 0.0 and round_0["reference_mean"] == 0.0 and round_0["agree"] is True
    assert set(comparison.cells["round"].to_list()) == {0, 10, 20}  # all rounds stay available
    assert _cell(comparison.cells, "logistic_regression", "generic", "domain_mmd", 20)["status"] == "not in results"
    assert compare(store, read_reference(reference_csv), rounds=0).rounds == (0,)
    with pytest.raises(ComparisonError, match=r"round\(s\) 20 have no cell that both sides have\. Rounds in both: 0, 10\."):
        comparison.at(20)


def test_variant_labels_through_the_mapping(store, reference_csv):
    mapping = ReferenceMapping().override(generators={"Generic": "generic_ref"})
    result = compare(store, read_reference(reference_csv, mapping), mapping)
    cell = _cell(result.table(), "logistic_regression", "generic_ref", "domain_mmd")
    assert cell["ours_mean"] == pytest.approx(0.12) and cell["ratio"] == pytest.approx(1.0) and cell["agree"] is True
    assert "generic" not in set(result.table()["generator"].to_list())
    assert _cell(result.table(), "mlp", "generic_ref", "domain_mmd")["status"] == "not in results"


def test_explicit_labels_must_exist_in_the_results(store, reference_csv):
    mapping = ReferenceMapping().override(generators={"Generic": "generic_rf"})
    with pytest.raises(ComparisonError, match=r"The generator 'generic_rf' \(mapped from reference 'Generic'\) is not "
                                              r"in the results\. Did you mean 'generic_ref'\?"):
        compare(store, read_reference(reference_csv, mapping), mapping)


def test_no_overlapping_cells(store, tmp_path):
    rows = [(0.1, "", "mmd", "domain", k, 10, "FluxEnsemble", "Generic", 1, 0.1, 1.0, 0.1, 0.0) for k in (1, 2)]
    ref = read_reference(write_reference(tmp_path / "r.csv", rows=rows))
    with pytest.raises(ComparisonError, match=r"Nothing to compare: no \(model, generator, metric, round\) cell has "
                                              r"both our values .* Reference \(in our names\): models deep_ensemble"):
        compare(store, ref)


def test_compare_takes_rows_and_formats_text(store, reference_csv, comparison):
    same = compare(store.read_rows(), read_reference(reference_csv))
    assert same.table().equals(comparison.table())
    text = format_comparison(comparison)
    line = next(l for l in text.splitlines() if l.startswith("logistic_regression  generic ") and " domain_mmd " in l)
    assert "0.250 ± 0.071" in line and "0.120 ± 0.020" in line and line.endswith("no")
    assert "agreement (domain_mmd, model_mmd, model_mmd_grid, disagreement): 5/8 = 62.5 % (6 not compared)" in text


def test_write_comparison_files(comparison, tmp_path):
    paths = write_comparison(comparison, tmp_path / "out")
    assert [p.name for p in paths] == ["comparison.csv", "comparison.md", "agreement.json"]
    table = pl.read_csv(paths[0])
    assert table.height == comparison.table().height and table.columns == list(COMPARISON_COLUMNS)
    agreement = json.loads(paths[2].read_text())
    assert agreement["overall"]["rate"] == 5 / 8 and agreement["rounds"] == [10] and agreement["ratio"] == 1.5
    assert agreement["by_metric"]["model_mmd"]["rate"] is None
    md = paths[1].read_text()
    assert "| logistic_regression | generic | domain_mmd | 10 | 0.250 ± 0.071 | 2 | 0.120 ± 0.020 | 3 | 2.08 |" in md
    assert "**Agreement: 5/8 = 62.5 % (6 not compared)**" in md


# ---------------------------------------------------------------------------- the real reference file
@pytest.fixture(scope="module")
def shared_reference() -> pl.DataFrame:
    if not SHARED_REFERENCE.exists():
        pytest.skip(f"{SHARED_REFERENCE} not found")
    return read_reference(SHARED_REFERENCE)


def test_shared_reference_shape_and_first_look_numbers(shared_reference):
    ref = shared_reference
    domain = ref.filter(pl.col("metric") == "domain_mmd")
    assert domain.height == 5 * 6 * 3 * 4
    assert sorted(domain["replicate"].unique().to_list()) == [1, 2, 3, 4, 5]
    assert sorted(domain["round"].unique().to_list()) == [0, 10, 20, 30, 40, 50]
    assert set(domain["model"].unique()) == {"logistic_regression", "mlp", "deep_ensemble"}
    assert set(domain["generator"].unique()) == {"generic", "dice", "greedy", "revise"}

    def final_mean(model: str, generator: str, metric: str) -> float:
        return ref.filter((pl.col("model") == model) & (pl.col("generator") == generator) & (pl.col("metric") == metric)
                          & (pl.col("round") == 50))["value"].mean()

    # the README's first look: domain MMD / grid MMD / disagreement, final-round means over the folds
    for model, generator, expected in (("logistic_regression", "generic", (0.119, 0.042, 0.213)),
                                       ("mlp", "generic", (0.088, 0.014, 0.080)),
                                       ("mlp", "revise", (0.111, 0.007, 0.074))):
        got = [final_mean(model, generator, m) for m in ("domain_mmd", "model_mmd_grid", "disagreement")]
        assert got == pytest.approx(expected, abs=6e-4), (model, generator)
    # model_performance -> delta_f1: zero at round 0, about -0.05 to -0.18 at round 50
    delta = ref.filter(pl.col("metric") == "delta_f1")
    assert delta.filter(pl.col("round") == 0)["value"].abs().max() == 0.0
    finals = delta.filter(pl.col("round") == 50).group_by("model", "generator").agg(pl.col("value").mean())["value"]
    assert finals.max() < -0.04 and finals.min() > -0.19


def test_shared_reference_against_itself_gives_48_agreeing_cells(shared_reference, tmp_path):
    """Results made from the reference's own values (folds as seeds, x1.2) agree on all 48 default cells."""
    store = ResultsStore.for_sweep(tmp_path, "as-reference")
    store.init("name: as-reference\n")
    for (model, generator, fold), sub in shared_reference.group_by("model", "generator", "replicate"):
        identity = {"sweep": "as-reference", "system_key": f"{model}-{generator}-{fold}", "dataset": "overlapping",
                    "model": model, "generator": generator, "seed": int(fold)}
        rows = [{**identity, "round": r["round"], "metric": r["metric"], "scope": "model", "value": 1.2 * r["value"],
                 "p_value": None} for r in sub.filter(pl.col("metric").is_in(AGREEMENT_METRICS)).iter_rows(named=True)]
        store.write_system(identity, rows_to_table(rows), {})
    result = compare(store, shared_reference)
    assert result.rounds == (50,)
    assert result.agreement()["overall"] == {"cells": 48, "compared": 48, "agree": 48, "missing": 0, "rate": 1.0}
    counted = result.table().filter(pl.col("counted"))
    assert counted["ratio"].to_list() == pytest.approx([1.2] * 48)


# ---------------------------------------------------------------------------- the command line
def test_cli_compare_prints_and_writes(store, reference_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _tree(Path(store.path))
    assert main(["compare", store.uri, "--reference", str(reference_csv)]) == 0
    out = capsys.readouterr().out
    assert "agreement (domain_mmd, model_mmd, model_mmd_grid, disagreement): 5/8 = 62.5 %" in out
    folder = tmp_path / "reports" / "compare-test" / "comparison"
    assert sorted(p.name for p in folder.iterdir()) == ["agreement.json", "comparison.csv", "comparison.md"]
    assert json.loads((folder / "agreement.json").read_text())["overall"]["agree"] == 5
    assert _tree(Path(store.path)) == before


def test_cli_compare_options(store, reference_csv, tmp_path, capsys):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("generators: {REVISE: null}\n")
    out = tmp_path / "out"
    argv = ["compare", store.uri, "--reference", str(reference_csv), "--mapping", str(mapping), "--map-generator",
            "Generic=generic_ref", "--all-rounds", "--metrics", "domain_mmd", "--ratio", "2", "--abs", "0", "-o", str(out)]
    assert main(argv) == 0
    table = pl.read_csv(out / "comparison.csv")
    assert set(table["generator"].to_list()) == {"generic_ref"} and set(table["round"].to_list()) == {0, 10}
    agreement = json.loads((out / "agreement.json").read_text())
    assert agreement["metrics"] == ["domain_mmd"] and agreement["ratio"] == 2 and agreement["abs_tolerance"] == 0
    # logistic_regression, round 0: 0 vs 0 has no ratio, and |0 - 0| <= 0 agrees; round 10: 0.12 vs 0.12.
    # mlp has no generic_ref: 2 cells not compared
    assert agreement["overall"] == {"cells": 4, "compared": 2, "agree": 2, "missing": 2, "rate": 1.0}
    assert main(["compare", store.uri, "--reference", str(reference_csv), "--round", "0", "-o", str(out)]) == 0
    assert set(pl.read_csv(out / "comparison.csv")["round"].to_list()) == {0}
    capsys.readouterr()


def _bad(argv_tail: list[str], store: ResultsStore, reference_csv: Path, tmp_path: Path, capsys, *,
         reference: str | None = None) -> str:
    """Run a compare that must fail: exit 2, one message, nothing written anywhere."""
    before = _tree(Path(store.path))
    out = tmp_path / "never"
    argv = ["compare", store.uri, "--reference", reference or str(reference_csv), "-o", str(out), *argv_tail]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("recourse-ray: error:") == 1 and captured.err.startswith("recourse-ray: error:")
    assert _tree(Path(store.path)) == before and not out.exists()
    return captured.err


def test_cli_compare_bad_inputs(store, reference_csv, tmp_path, capsys):
    err = _bad([], store, reference_csv, tmp_path, capsys, reference=str(tmp_path / "missing.csv"))
    assert "missing.csv': it does not exist." in err
    bad_csv = write_reference(tmp_path / "bad.csv", rows=[(0.1, "mmd", 1)], header=("value", "name", "k"))
    assert "missing column(s) 'scope', 'n', 'model', 'generator'" in _bad([], store, reference_csv, tmp_path, capsys,
                                                                           reference=str(bad_csv))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('value,name\n0.1,"mmd\n')
    assert "it cannot be read as CSV" in _bad([], store, reference_csv, tmp_path, capsys, reference=str(ragged))
    assert "Unknown reference generator 'Generik' in the mapping" in _bad(
        ["--map-generator", "Generik=generic"], store, reference_csv, tmp_path, capsys)
    assert "Did you mean 'generic_ref'?" in _bad(["--map-generator", "Generic=generic_rf"], store, reference_csv,
                                                 tmp_path, capsys)
    assert "must be REFERENCE=OURS" in _bad(["--map-model", "FluxModel"], store, reference_csv, tmp_path, capsys)
    assert "Did you mean 'domain_mmd'?" in _bad(["--metrics", "domain_mdd"], store, reference_csv, tmp_path, capsys)
    assert ("The '--ratio' parameter of recourse-ray compare must be a number in the range (1, inf). Got 1.0 instead."
            in _bad(["--ratio", "1"], store, reference_csv, tmp_path, capsys))
    assert "The '--abs' parameter" in _bad(["--abs", "-0.1"], store, reference_csv, tmp_path, capsys)
    assert "round(s) 20 have no cell that both sides have" in _bad(["--round", "20"], store, reference_csv, tmp_path,
                                                                   capsys)
    assert "'nowhere' is not in the results." in _bad(["--dataset", "nowhere"], store, reference_csv, tmp_path, capsys)
    (tmp_path / "bad_mapping.yaml").write_text("generatorz: {}\n")
    assert "Did you mean 'generators'?" in _bad(["--mapping", str(tmp_path / "bad_mapping.yaml")], store,
                                                reference_csv, tmp_path, capsys)
    no_overlap = write_reference(tmp_path / "ensemble.csv", rows=[
        (0.1, "", "mmd", "domain", 1, 10, "FluxEnsemble", "Generic", 1, 0.1, 1.0, 0.1, 0.0)])
    assert "Nothing to compare" in _bad([], store, reference_csv, tmp_path, capsys, reference=str(no_overlap))


def test_cli_compare_refuses_to_write_into_the_results(store, reference_csv, capsys):
    before = _tree(Path(store.path))
    assert main(["compare", store.uri, "--reference", str(reference_csv), "-o", str(Path(store.path) / "cmp")]) == 2
    assert "lies inside the results directory" in capsys.readouterr().err
    assert _tree(Path(store.path)) == before


def test_cli_compare_not_a_results_directory(tmp_path, reference_csv, capsys):
    assert main(["compare", str(tmp_path), "--reference", str(reference_csv)]) == 2
    assert "not a recourse_ray results directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def report_with_reference(store, reference_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    build_report(store.uri, out, formats=("svg",), trajectories=False, states=False, reference=reference_csv)
    return out


def test_report_section_against_the_reference(report_with_reference):
    md = (report_with_reference / "report.md").read_text(encoding="utf-8")
    page = (report_with_reference / "index.html").read_text(encoding="utf-8")
    assert "## Against the reference implementation" in md
    assert "[Against the reference implementation](#against-the-reference-implementation)" in md
    assert "**Agreement: 5/8 = 62.5 % (6 not compared)**" in md
    assert "| logistic_regression | generic | domain_mmd | 10 | 0.250 ± 0.071 | 2 | 0.120 ± 0.020 | 3 | 2.08 |" in md
    assert '<h2 id="reference">Against the reference implementation</h2>' in page
    assert '<a href="#reference">Against the reference implementation</a>' in page
    assert '<tr class="disagree">' in page and '<tr class="missing">' in page
    # the section sits between the datasets and the undefined values
    assert md.index("## Dataset: overlapping") < md.index("## Against the reference") < md.index("## Undefined values")
    assert (report_with_reference / "comparison" / "agreement.json").exists()
    assert "comparison/comparison.csv" in md


def test_report_without_reference_has_no_such_section(store, tmp_path):
    out = tmp_path / "plain"
    build_report(store.uri, out, formats=("svg",), trajectories=False, states=False)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "reference implementation" not in md and not (out / "comparison").exists()
    assert "reference" not in (out / "index.html").read_text(encoding="utf-8").split("<main>")[0]


def test_cli_report_with_reference(store, reference_csv, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", store.uri, "-o", str(out), "--reference", str(reference_csv)]) == 0
    assert "## Against the reference implementation" in (out / "report.md").read_text(encoding="utf-8")
    capsys.readouterr()
    bad = tmp_path / "bad_rep"
    before = _tree(Path(store.path))
    assert main(["report", store.uri, "-o", str(bad), "--reference", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("recourse-ray: error:") == 1 and "it does not exist" in err
    assert not bad.exists() and _tree(Path(store.path)) == before
    assert main(["report", store.uri, "-o", str(bad), "--mapping", "m.yaml"]) == 2
    assert "--mapping needs --reference" in capsys.readouterr().err
