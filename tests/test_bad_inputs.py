"""The bad-input corpus (tests/bad_inputs/): every file is refused before anything runs,
with exit code 2 and a message naming the problem, and results on disk stay untouched."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

import pytest
import yaml

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main
from recourse_ray.store import ResultsStore, rows_to_table

CORPUS = Path(__file__).parent / "bad_inputs"
SWEEPS = sorted((CORPUS / "sweeps").glob("*.yaml"))
USER_CODE = sorted((CORPUS / "user_code").glob("*.yaml"))
CSV_EXPECTED = yaml.safe_load((CORPUS / "csv" / "EXPECTED.yaml").read_text())


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first[len("# expect: "):]


def _one_clean_message(err: str) -> None:
    """Exactly one error, no traceback, no line of it too long to read (values are capped)."""
    assert err.count("recourse-ray: error:") == 1, err
    assert "Traceback" not in err, err
    assert max(map(len, err.splitlines())) <= 1100, max(map(len, err.splitlines()))


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
    _one_clean_message(err)
    assert _snapshot(existing_results) == before


@pytest.mark.parametrize("path", USER_CODE, ids=lambda p: p.stem)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_user_code_that_raises_or_exits(path, command, existing_results, capsys, monkeypatch):
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    before = _snapshot(existing_results)
    args = [command, str(path), "--py-modules", str(CORPUS / "user_code" / "badmods")]
    if command == "run":
        args += ["--results", str(existing_results), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(_expectation(path), err), err
    _one_clean_message(err)
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
    _one_clean_message(err)
    assert _snapshot(existing_results) == before


def test_corpus_is_complete():
    assert len(SWEEPS) >= 32 and len(CSV_EXPECTED) == 10 and len(USER_CODE) == 5
    for name in CSV_EXPECTED:
        assert (CORPUS / "csv" / name).exists()


def _refused(args: list[str], root: Path, capsys, expect: str, code: int = 2) -> str:
    before = _snapshot(root) if root.exists() else None
    assert main(args) == code
    captured = capsys.readouterr()
    err = captured.err if code == 2 else captured.out + captured.err
    assert expect in err, err
    if code == 2:
        _one_clean_message(err)
    assert (_snapshot(root) if root.exists() else None) == before
    return err


# ------------------------------------------------------------------ sweep files that are not files
def test_sweep_file_that_is_a_device_a_fifo_or_a_directory(tmp_path, existing_results, capsys):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, expect in (("/dev/zero", "is not a regular file"), (str(fifo), "is not a regular file"),
                         (str(tmp_path), "is a directory, not a file")):
        for command in (["run", path, "--results", str(existing_results), "--no-progress"], ["validate", path]):
            _refused(command, existing_results, capsys, expect)


def test_sweep_file_too_large(tmp_path, existing_results, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("name: bad\ndescription: '" + "x" * (spec_mod.MAX_SPEC_BYTES + 10) + "'\n")
    _refused(["run", str(big), "--results", str(existing_results)], existing_results, capsys, "larger than 1024 KiB")


# ------------------------------------------------------------------ CSV limits
def test_csv_larger_than_the_limit_is_refused(tmp_path, existing_results, capsys, monkeypatch):
    from recourse_ray.data import tabular

    monkeypatch.setattr(tabular, "MAX_CSV_BYTES", 30)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: bad\ngrid: {dataset: [mine], model: [mlp], generator: [generic]}\n"
                     f"datasets: {{mine: {{preset: csv, path: {CORPUS / 'csv' / 'nan_inf.csv'}, target: y}}}}\n")
    _refused(["run", str(sweep), "--results", str(existing_results)], existing_results, capsys,
             "more than the limit of 30 (recourse_ray.data.tabular.MAX_CSV_BYTES)")


# ------------------------------------------------------------------ results folders that are broken
def test_spec_file_that_is_a_folder(existing_results, tmp_path, capsys):
    odd = tmp_path / "odd" / "bad"
    (odd / "sweep.yaml").mkdir(parents=True)
    for args in (["status", str(odd)], ["resume", str(odd)], ["report", str(odd), "-o", str(tmp_path / "rep")]):
        _refused(args, tmp_path / "odd", capsys, "its sweep.yaml is not a file")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n")
    _refused(["run", str(sweep), "--results", str(tmp_path / "odd")], tmp_path / "odd", capsys,
             "its sweep.yaml is not a file")


def test_manifest_that_is_a_file(existing_results, tmp_path, capsys):
    root = existing_results / "bad"
    for p in (root / "manifest").iterdir():
        p.unlink()
    (root / "manifest").rmdir()
    (root / "manifest").write_text("oops")
    _refused(["status", str(root)], existing_results, capsys, "'manifest' in it is not a folder")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n")
    _refused(["run", str(sweep), "--results", str(existing_results)], existing_results, capsys,
             "'manifest' in it is not a folder")


def test_corrupt_failure_record_is_reported_not_raised(existing_results, capsys):
    root = existing_results / "bad"
    (root / "failures" / "0123456789abcdef.json").write_text('{"error": "trunc')
    _refused(["status", str(root)], existing_results, capsys, "failure record failures/0123456789abcdef.json is unreadable",
             code=0)


def test_report_output_that_cannot_be_written(existing_results, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    root = existing_results / "bad"
    _refused(["report", str(root), "-o", str(afile)], existing_results, capsys, "exists and is not a folder")
    _refused(["report", str(root), "-o", str(afile / "sub")], existing_results, capsys, "cannot create the report folder")
    _refused(["report", str(root), "-o", str(root / "rep")], existing_results, capsys, "lies inside the results directory")
    assert afile.read_text() == "x"


def test_unknown_uri_scheme_and_unreachable_object_store(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: bad\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n")
    for args in (["run", str(sweep), "--results", "nosuch://bucket/x"], ["status", "nosuch://bucket/x"],
                 ["report", "nosuch://bucket/x"], ["resume", "nosuch://bucket/x"]):
        _refused(args, tmp_path / "none", capsys, "Cannot use the results location 'nosuch://")
    unreachable = "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http"
    _refused(["status", unreachable], tmp_path / "none", capsys, "cannot reach")


# ------------------------------------------------------------------ the Python API
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seed": -1}, r"The 'seed' parameter of simulate must be an int in the range \[0, 9223372036854775807\]. Got -1"),
    ({"seed": 2**64}, r"The 'seed' parameter of simulate .* Got 18446744073709551616 instead"),
    ({"sweep_seed": -3}, r"The 'sweep_seed' parameter of simulate"),
    ({"rounds": 10**12}, r"The 'rounds' parameter of simulate must be an int in the range \[1, 100000\]"),
    ({"dataset": np.zeros((3, 2))}, r"The 'dataset' parameter of simulate must be a dataset name \(str\) or a Dataset. "
                                    r"Got array\("),
    ({"model": 3}, r"The 'model' parameter of simulate must be a model name"),
    ({"generator": 3}, r"The 'generator' parameter of simulate must be a generator preset name"),
])
def test_simulate_checks_its_arguments_before_any_work(kwargs, match):
    import recourse_ray as rr

    with pytest.raises(ValueError, match=match):
        rr.simulate(**kwargs)


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
