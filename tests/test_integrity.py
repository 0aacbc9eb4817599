"""Integrity of the results dataset: nothing foreign taken over, nothing mixed, corrupt files never
counted, one writer at a time, reversible --force, paths kept inside, no code from the working directory.

One fault test per item of docs/reliability.md ("Integrity"); each shows that the data stays correct.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main, status_summary
from recourse_ray.store import LOCK_FILE, LockHeld, ResultsStore, rows_to_table
from recourse_ray.sweep import _driver
from recourse_ray.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]

TWO = """
name: integ
seeds: 2
grid: {dataset: [moons], model: [logistic_regression], generator: [generic]}
"""

SMALL_RUN = """
simulation: {rounds: 1, evaluate_every: 1, retrain_epochs: 1}
setup: {pretrain_epochs: 2}
metrics: {n_permutations: 5, n_grid: 50, n_samples: 50}
"""


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fabricate(root: Path, text: str = TWO) -> tuple[ResultsStore, spec_mod.SweepSpec]:
    """A results directory with every system of ``text`` committed by hand (no Ray)."""
    sweep = spec_mod.loads(text)
    store = ResultsStore(root)
    store.init(sweep.to_yaml())
    for i, s in enumerate(sweep.systems()):
        row = {**s.identity_columns(), "round": 0, "metric": "f1", "scope": "performance", "value": 0.5 + i / 10,
               "p_value": None}
        store.write_system(s.identity_columns(), rows_to_table([row]), {"settings": s.resolved()})
    return store, sweep


def _rows(root) -> pl.DataFrame:
    return ResultsStore(root).read_rows().filter(pl.col("scope") != "timing").sort("system_key", "round", "metric")


# --------------------------------------------------------------------------- 1. foreign folders
def test_run_never_takes_over_a_folder_that_is_not_a_results_dataset(tmp_path, capsys):
    mine = tmp_path / "results" / "integ"
    (mine / ".staging").mkdir(parents=True)
    (mine / ".staging" / "draft.txt").write_text("my notes")
    (mine / "thesis.tex").write_text("\\documentclass{article}")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(TWO)
    before = _snapshot(tmp_path / "results")
    assert main(["run", str(sweep), "--results", str(tmp_path / "results"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a recourse_ray results directory" in err and "never taken over" in err
    assert "Traceback" not in err and err.count("recourse-ray: error:") == 1
    assert _snapshot(tmp_path / "results") == before
    assert sorted(p.name for p in mine.iterdir()) == [".staging", "thesis.tex"]


def test_a_results_folder_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "integ"
    target.write_text("a file")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        _driver.check_target(spec_mod.loads(TWO), ResultsStore(target))
    assert target.read_text() == "a file"


# --------------------------------------------------------------------------- 2. changed inputs
@pytest.mark.ray
def test_changed_csv_is_refused_on_resume_and_force_reruns_only_what_read_it(ray_session, tmp_path, capsys):
    csv = tmp_path / "loans.csv"
    csv.write_bytes((ROOT / "examples" / "loans.csv").read_bytes())
    text = ("name: integ\ngrid: {dataset: [loans], model: [logistic_regression], generator: [generic]}\n"
            f"datasets: {{loans: {{preset: csv, path: {csv}, target: approved, drop: [applicant_id], categorical: [region]}}}}\n" + SMALL_RUN)
    root = tmp_path / "r" / "integ"
    assert run_sweep(spec_mod.loads(text), str(root), progress=False).exit_code == 0
    old = _rows(root)
    (entry,) = ResultsStore(root).manifests()
    assert entry["inputs"][str(csv)] == hashlib.sha256(csv.read_bytes()).hexdigest()

    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # same rows, new content
    before = _snapshot(tmp_path / "r")
    assert main(["resume", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "changed since they ran" in err and str(csv) in err and "Traceback" not in err
    assert _snapshot(tmp_path / "r") == before

    assert main(["resume", str(root), "--force", "--no-progress"]) == 0
    fresh = tmp_path / "fresh" / "integ"
    assert run_sweep(spec_mod.loads(text), str(fresh), progress=False).exit_code == 0
    new = _rows(root)
    assert new.drop("sweep").equals(_rows(fresh).drop("sweep"))  # only new-content rows, never a mix
    assert len(ResultsStore(root).manifests()) == 1 and len(new) == len(old)


def test_input_files_record_data_and_user_modules(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_bytes((ROOT / "examples" / "loans.csv").read_bytes())
    sys.path.insert(0, str(ROOT))
    try:
        text = ("name: integ\ngrid: {dataset: [loans], model: [tanh], generator: [generic]}\n"
                "models: {tanh: {preset: 'examples.custom_classifier:tanh_mlp'}}\n"
                f"datasets: {{loans: {{preset: csv, path: {csv}, target: approved, drop: [applicant_id], categorical: [region]}}}}\n")
        (system,) = spec_mod.loads(text).systems()
    finally:
        sys.path.remove(str(ROOT))
    files = system.input_files()
    assert files[str(csv)] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert str(ROOT / "examples" / "custom_classifier.py") in files


# --------------------------------------------------------------------------- 3. corruption
def test_corrupt_manifest_and_rows_files_are_not_committed(tmp_path, caplog):
    store, sweep = _fabricate(tmp_path / "integ")
    a, b = sweep.systems()
    good_rows = store.read_rows()
    rows_a = tmp_path / "integ" / store.rows_relpath(a.identity_columns())
    rows_a.write_bytes(rows_a.read_bytes()[:40])  # truncated
    (tmp_path / "integ" / "manifest" / f"{b.key}.json").write_text("")  # empty
    assert store.committed_keys() == set()
    summary = status_summary(str(tmp_path / "integ"))
    assert summary["done"] == 0 and summary["missing"] == 2 and len(summary["corrupt"]) == 2
    _, todo = _driver.plan(sweep, store)
    assert [s.key for s in todo] == [a.key, b.key]  # resume reruns both
    assert store.read_rows().is_empty()  # readers skip them, with a warning
    assert "does not match the manifest's size and checksum" in caplog.text
    assert "manifest is unreadable" in caplog.text
    store.write_system(a.identity_columns(), rows_to_table(good_rows.filter(pl.col("system_key") == a.key).to_dicts()),
                       {"settings": a.resolved()})
    assert store.committed_keys() == {a.key}


def test_report_skips_a_corrupt_system_with_a_warning(tmp_path, capsys, caplog):
    store, sweep = _fabricate(tmp_path / "integ")
    a, b = sweep.systems()
    (tmp_path / "integ" / store.rows_relpath(a.identity_columns())).write_bytes(b"")
    assert main(["report", str(tmp_path / "integ"), "-o", str(tmp_path / "report")]) == 0
    assert f"Skipping system {a.key}" in caplog.text and "Traceback" not in capsys.readouterr().err


def test_old_manifest_without_checksum_is_checked_by_its_parquet_footer(tmp_path):
    store, sweep = _fabricate(tmp_path / "integ")
    a, _ = sweep.systems()
    path = tmp_path / "integ" / "manifest" / f"{a.key}.json"
    entry = json.loads(path.read_text())
    del entry["rows_sha256"], entry["rows_bytes"]
    path.write_text(json.dumps(entry))
    assert a.key in store.committed_keys()
    rows = tmp_path / "integ" / entry["rows_file"]
    rows.write_bytes(rows.read_bytes()[:-10])
    assert a.key not in store.committed_keys()


# --------------------------------------------------------------------------- 4. one writer
def test_second_writer_is_refused_and_live_staging_survives(tmp_path, capsys):
    store, _ = _fabricate(tmp_path / "r" / "integ")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(TWO)
    with store.lock():
        live = tmp_path / "r" / "integ" / ".staging" / "in-flight.tmp"
        live.write_bytes(b"half a parquet file")
        before = _snapshot(tmp_path / "r")
        assert main(["run", str(sweep), "--results", str(tmp_path / "r"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "in use by another run" in err and f"process {os.getpid()}" in err
        assert _snapshot(tmp_path / "r") == before and live.exists()
        with pytest.raises(LockHeld):
            _driver.run_sweep(spec_mod.loads(TWO), str(tmp_path / "r" / "integ"), progress=False)
    assert not (tmp_path / "r" / "integ" / LOCK_FILE).exists()  # released
    with store.lock():
        pass


def test_object_store_lock_refuses_a_live_writer_and_takes_over_a_dead_one(tmp_path, monkeypatch):
    (tmp_path / "integ").mkdir()
    store = ResultsStore(tmp_path / "integ")
    store.local = False  # the heartbeat lock that object stores get, on a local filesystem
    other = ResultsStore(tmp_path / "integ")
    other.local = False
    with store.lock():
        with pytest.raises(LockHeld, match="in use by another run"):
            other.lock().__enter__()
    assert not (tmp_path / "integ" / LOCK_FILE).exists()
    (tmp_path / "integ" / LOCK_FILE).write_text(json.dumps({"token": "dead", "host": "h", "pid": 1,
                                                            "time": time.time() - 3600}))
    with other.lock() as lock:  # not refreshed for an hour: its writer is gone
        assert json.loads((tmp_path / "integ" / LOCK_FILE).read_text())["token"] == lock.token
    # A fresh lock of a process on this host that has exited (a killed run) is stale at once.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "integ" / LOCK_FILE).write_text(json.dumps({"token": "killed", "host": socket.gethostname(),
                                                            "pid": gone.pid, "time": time.time()}))
    with other.lock() as lock:
        assert json.loads((tmp_path / "integ" / LOCK_FILE).read_text())["token"] == lock.token
    # ... but a fresh lock of a live process on this host is not.
    (tmp_path / "integ" / LOCK_FILE).write_text(json.dumps({"token": "alive", "host": socket.gethostname(),
                                                            "pid": os.getpid(), "time": time.time()}))
    with pytest.raises(LockHeld, match="in use by another run"):
        other.lock().__enter__()


# --------------------------------------------------------------------------- 5. --force
def test_force_validates_the_new_spec_with_its_data_before_retiring_anything(tmp_path):
    store, _ = _fabricate(tmp_path / "integ")
    csv = tmp_path / "d.csv"
    csv.write_bytes((ROOT / "examples" / "loans.csv").read_bytes())
    bad = spec_mod.loads(
        "name: integ\ngrid: {dataset: [loans], model: [logistic_regression], generator: [generic]}\n"
        f"datasets: {{loans: {{preset: csv, path: {csv}, target: approved, drop: [applicant_id], categorical: [region]}}}}\n"
        "setup: {n_samples: 100000}\n", check_data=False)
    before = _snapshot(tmp_path / "integ")
    with pytest.raises(spec_mod.SpecError, match="n_samples=100000"):
        _driver.plan(bad, store, force=True)
    assert _snapshot(tmp_path / "integ") == before


def test_force_is_reversible_and_survives_a_crash_half_way(tmp_path, monkeypatch):
    store, old = _fabricate(tmp_path / "integ")
    rows = store.read_rows()
    new = spec_mod.loads(TWO + "simulation: {rounds: 7}\n")
    _, todo = _driver.plan(new, store, force=True)
    assert len(todo) == 2 and store.committed_keys() == set()
    assert any(p.name.startswith("sweep-") for p in (tmp_path / "integ" / "stale").iterdir())  # the old spec kept
    _, todo = _driver.plan(old, store, force=True)  # forcing the old spec back: nothing to recompute
    assert todo == [] and store.read_rows().equals(rows)

    def crash(text):
        raise OSError("killed")

    monkeypatch.setattr(ResultsStore, "write_spec", lambda self, text: crash(text))
    with pytest.raises(OSError):
        _driver.plan(new, store, force=True)  # manifests retired, the old spec still recorded
    monkeypatch.undo()
    _, todo = _driver.plan(old, store)  # a plain resume of the recorded spec restores them
    assert todo == [] and store.read_rows().equals(rows)


# --------------------------------------------------------------------------- 6. recorded paths
def test_manifest_paths_outside_the_results_directory_are_refused(tmp_path, capsys):
    other, _ = _fabricate(tmp_path / "other")
    store, sweep = _fabricate(tmp_path / "integ", TWO.replace("seeds: 2", "seeds: 1"))
    (s,) = sweep.systems()
    foreign = other.manifests()[0]["rows_file"]
    path = tmp_path / "integ" / "manifest" / f"{s.key}.json"
    for rows_file in (f"../other/{foreign}", str(tmp_path / "other" / foreign), "rows/../../other/x.parquet"):
        entry = json.loads(path.read_text())
        entry["rows_file"] = rows_file
        path.write_text(json.dumps(entry))
        assert store.committed_keys() == set() and store.row_files() == []
        assert store.read_rows().is_empty()
    assert main(["status", str(tmp_path / "integ")]) == 0
    assert "outside the results directory" in capsys.readouterr().out


# --------------------------------------------------------------------------- 7. working-directory code
def test_code_in_the_working_directory_never_runs(tmp_path):
    for module in ("ray", "pyarrow", "polars"):
        (tmp_path / f"{module}.py").write_text(
            f"open({str(tmp_path / 'RAN')!r} + '-{module}', 'w').write('x')\nraise SystemExit(0)\n")
    (tmp_path / "s.yaml").write_text(TWO)
    script = Path(sys.executable).parent / "recourse-ray"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    for args in (["validate", "s.yaml"], ["run", "s.yaml", "--num-cpus", "0", "--no-progress"]):
        done = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == (0 if args[0] == "validate" else 2), done.stderr
    assert not list(tmp_path.glob("RAN-*"))
    assert not (tmp_path / "results").exists()


def test_py_modules_come_after_the_package_on_sys_path(tmp_path, monkeypatch):
    from recourse_ray.cli import _user_code, build_parser

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", list(sys.path))
    args = build_parser().parse_args(["run", "x.yaml", "--py-modules", str(tmp_path / "mine")])
    assert _user_code(args) == {"py_modules": [str(tmp_path / "mine")]}
    assert sys.path[-1] == str(tmp_path)
    assert sys.path.index(str(tmp_path)) > max(i for i, p in enumerate(sys.path) if "site-packages" in p)
