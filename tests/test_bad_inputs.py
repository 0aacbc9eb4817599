"""The bad-input corpus (tests/bad_inputs/): every file is refused before anything runs,
with exit code 2 and a message naming the problem, and results on disk stay untouched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main
from recourse_ray.store import ResultsStore, rows_to_table

CORPUS = Path(__file__).parent / "bad_inputs"
SWEEPS = sorted((CORPUS / "sweeps").glob("*.yaml"))
CSV_EXPECTED = yaml.safe_load((CORPUS / "csv" / "EXPECTED.yaml").read_text())


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first[len("# expect: "):]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def existing_results(tmp_path):
    """A results root holding a committed sweep named 'bad' (the corpus's sweep name)."""
    good = spec_mod.loads("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n")
    store = ResultsStore(tmp_path / "results" / "bad")
    store.init(good.to_yaml())
    s = good.systems()[0]
    row = {**s.identity_columns(), "round": 0, "metric": "f1", "scope": "performance", "value": 0.9, "p_value": None}
    store.write_system(s.identity_columns(), rows_to_table([row]), {"settings": s.resolved()})
    return tmp_path / "results"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_bad_sweep_file(path, existing_results, capsys):
    before = _snapshot(existing_results)
    assert main(["run", str(path), "--results", str(existing_results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(_expectation(path), err), err
    assert _snapshot(existing_results) == before


@pytest.mark.parametrize("name", sorted(CSV_EXPECTED), ids=lambda n: n)
def test_bad_csv(name, tmp_path, existing_results, capsys):
    sweep = tmp_path / "csv_sweep.yaml"
    sweep.write_text(
        "name: bad\ngrid: {dataset: [mine], model: [mlp], generator: [generic]}\n"
        f"datasets: {{mine: {{preset: csv, path: {CORPUS / 'csv' / name}, target: y}}}}\n"
    )
    before = _snapshot(existing_results)
    assert main(["run", str(sweep), "--results", str(existing_results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert CSV_EXPECTED[name] in err, err
    assert _snapshot(existing_results) == before


def test_corpus_is_complete():
    assert len(SWEEPS) >= 15 and len(CSV_EXPECTED) == 6
    for name in CSV_EXPECTED:
        assert (CORPUS / "csv" / name).exists()


def test_resume_with_changed_sweep_file_is_refused(existing_results, tmp_path, capsys):
    changed = tmp_path / "changed.yaml"
    changed.write_text("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\nsimulation: {rounds: 7}\n")
    before = _snapshot(existing_results)
    assert main(["resume", str(existing_results / "bad"), "--sweep", str(changed), "--no-progress"]) == 2
    assert "different sweep spec" in capsys.readouterr().err
    assert _snapshot(existing_results) == before


def test_run_changed_spec_into_existing_directory_is_refused(existing_results, tmp_path, capsys):
    changed = tmp_path / "changed.yaml"
    changed.write_text("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\nsimulation: {rounds: 7}\n")
    before = _snapshot(existing_results)
    assert main(["run", str(changed), "--results", str(existing_results), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert _snapshot(existing_results) == before
