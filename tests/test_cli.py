"""The recourse-ray command line: exit codes and messages for good and bad input (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main
from recourse_ray.store import ResultsStore, rows_to_table

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "name: cli-test\nseeds: 2\ngrid: {dataset: [overlapping], model: [logistic_regression], generator: [generic]}\n"


@pytest.fixture
def results(tmp_path) -> ResultsStore:
    """A results directory of a 2-system sweep: seed 0 committed, seed 1 failed (written by hand, no Ray)."""
    done, failed = spec_mod.loads(SWEEP).systems()
    store = ResultsStore.for_sweep(tmp_path / "results", "cli-test")
    store.init(SWEEP)
    rows = [{**done.identity_columns(), "round": r, "metric": "f1", "scope": "performance", "value": 0.9, "p_value": None}
            for r in (0, 1)]
    store.write_system(done.identity_columns(), rows_to_table(rows), {"versions": {}})
    store.write_failure(failed.key, {**failed.identity_columns(), "error": "RuntimeError: boom"})
    return store


def test_validate_prints_grid(capsys):
    assert main(["validate", str(ROOT / "sweeps" / "quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    assert "72 systems = 2 datasets x 3 models x 4 generators x 3 seeds" in out
    assert "recourse_share: 0.05" in out


def test_validate_lists_systems(capsys):
    assert main(["validate", str(ROOT / "sweeps" / "quickstart.yaml"), "--systems"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "/seed=" in l]
    assert len(lines) == 72


def test_bad_sweep_exits_2_with_all_problems(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {dataset: [moon], model: [mlp], generator: [generic]}\nsimulation: {rounds: 0}\n")
    assert main(["run", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "Did you mean 'moons'?" in err and "'rounds'" in err
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("command", ["status", "resume", "report"])
def test_not_a_results_directory(tmp_path, capsys, command):
    (tmp_path / "keep.txt").write_text("untouched")
    assert main([command, str(tmp_path)]) == 2
    assert "not a recourse_ray results directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_misuse_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert main(["run", str(ROOT / "sweeps" / "quickstart.yaml"), "--num-cpus", "0"]) == 2
    assert "The '--num-cpus' parameter of recourse-ray run must be an int in the range [1, inf). Got 0 instead." in (
        capsys.readouterr().err)
    assert main(["datasets", "fetch", "moons", "--timeout", "0"]) == 2
    assert "The '--timeout' parameter of recourse-ray datasets must be a number in the range (0, inf)." in (
        capsys.readouterr().err)


def test_status_of_a_results_directory(results, capsys):
    assert main(["status", results.uri, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["sweep"], summary["total"], summary["done"], summary["failed"], summary["missing"]) == ("cli-test", 2, 1, 1, 0)
    assert summary["failures"][0]["error"] == "RuntimeError: boom"


def test_report_goes_to_reports_and_the_sweep_name(results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", results.uri]) == 0
    index = tmp_path / "reports" / "cli-test" / "index.html"
    assert index.exists() and f"report written to {Path('reports') / 'cli-test' / 'index.html'}" in capsys.readouterr().out
    assert "RuntimeError: boom" in index.read_text(encoding="utf-8")


def test_listings(capsys):
    assert main(["datasets"]) == 0
    names = capsys.readouterr().out.split()
    for n in ("overlapping", "linearly_separable", "circles", "moons", "credit_default", "gmsc", "california_housing", "german_credit"):
        assert n in names
    assert main(["generators"]) == 0
    out = capsys.readouterr().out
    for n in ("generic", "wachter", "dice", "greedy", "revise", "clue", "claproar", "gravitational"):
        assert f"{n}:" in out
    assert main(["models"]) == 0
    assert "deep_ensemble:" in capsys.readouterr().out
    assert main(["datasets", "info", "moons"]) == 0
    assert "1000 rows, 2 features, classes 0/1 = 500/500" in capsys.readouterr().out
    assert main(["datasets", "info", "moonz"]) == 2
    assert "Did you mean 'moons'" in capsys.readouterr().err
