"""Sweeps on an embedded Ray: one file and one manifest per system, resume, failures, reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main as cli_main, status_summary
from recourse_ray.store import ResultsStore
from recourse_ray.sweep import run_sweep

pytestmark = pytest.mark.ray

SWEEP = """
name: tiny
seeds: 2
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic, greedy]
simulation: {rounds: 3, evaluate_every: 2, retrain_epochs: 2}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""

N_METRICS_ROUND0 = 11  # domain x2, model x2, disagreement, decisiveness (study and code), perturbation, f1, accuracy, grid_saturation
N_RECOURSE = 5
N_TIMING = 3


def _rows_without_timing(store: ResultsStore) -> pl.DataFrame:
    return (
        store.read_rows()
        .filter(pl.col("scope") != "timing")
        .sort("system_key", "round", "metric")
    )


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "tiny"
    sweep = spec_mod.loads(SWEEP)
    outcome = run_sweep(sweep, str(root), progress=False, store_states=True)
    return sweep, root, outcome


def test_one_file_and_manifest_per_system(tiny_run):
    sweep, root, outcome = tiny_run
    systems = sweep.systems()
    assert outcome.exit_code == 0 and len(outcome.done) == len(systems) == 8
    files = sorted(root.glob("rows/**/*.parquet"))
    manifests = sorted((root / "manifest").glob("*.json"))
    assert len(files) == len(manifests) == 8
    assert {p.stem for p in files} == {s.key for s in systems} == {p.stem for p in manifests}
    # Hive-style partition folders name the system's coordinates.
    one = systems[0]
    assert (root / f"rows/dataset={one.dataset}/model={one.model}/generator={one.generator}/seed={one.seed}/{one.key}.parquet").exists()
    assert not list((root / ".staging").glob("*"))
    m = json.loads(manifests[0].read_text())
    assert {"settings", "timings", "host", "versions", "n_rows"} <= set(m)


def test_rows_for_every_round_and_metric(tiny_run):
    sweep, root, _ = tiny_run
    rows = ResultsStore(root).read_rows()
    per_system = rows.group_by("system_key", "round").agg(pl.len().alias("n")).sort("system_key", "round")
    assert set(per_system["round"]) == {0, 2, 3}
    counts = dict(zip(zip(per_system["system_key"], per_system["round"]), per_system["n"]))
    for s in sweep.systems():
        assert counts[(s.key, 0)] == N_METRICS_ROUND0 + N_TIMING
        assert counts[(s.key, 2)] == counts[(s.key, 3)] == N_METRICS_ROUND0 + N_RECOURSE + N_TIMING
    # No duplicates of (system, round, metric).
    assert rows.select("system_key", "round", "metric").is_duplicated().sum() == 0


def test_pinned_types_with_polars_scan(tiny_run):
    _, root, _ = tiny_run
    lf = pl.scan_parquet(str(root / "rows" / "**" / "*.parquet"), hive_partitioning=False)
    schema = lf.collect_schema()
    assert schema["seed"] == pl.Int64 and schema["round"] == pl.Int64 and schema["value"] == pl.Float64
    store_schema = ResultsStore(root).scan_rows().collect_schema()
    assert store_schema["p_value"] == pl.Float64 and store_schema["metric"] == pl.String


def test_status_all_done_and_states(tiny_run):
    _, root, _ = tiny_run
    summary = status_summary(str(root))
    assert (summary["done"], summary["failed"], summary["missing"], summary["total"]) == (8, 0, 0, 8)
    store = ResultsStore(root)
    assert len(store.state_keys()) == 8
    state = store.read_state(next(iter(store.state_keys())))
    assert state["surface_final"].shape == (60, 60) and state["X_final"].shape[1] == 2


def test_rerun_is_a_no_op_and_results_equal_single_process(tiny_run, ray_session):
    sweep, root, _ = tiny_run
    before = _rows_without_timing(ResultsStore(root))
    outcome = run_sweep(sweep, str(root), progress=False)
    assert outcome.done == [] and outcome.skipped == 8
    assert _rows_without_timing(ResultsStore(root)).equals(before)


def test_changed_spec_is_refused(tiny_run):
    _, root, _ = tiny_run
    changed = spec_mod.loads(SWEEP.replace("rounds: 3", "rounds: 4"))
    from recourse_ray.sweep import SpecChanged

    with pytest.raises(SpecChanged, match="different sweep spec"):
        run_sweep(changed, str(root), progress=False)


def test_failure_recorded_others_complete_and_retry(ray_session, tmp_path):
    text = SWEEP.replace("generator: [generic, greedy]", "generator: [generic, boom]").replace("seeds: 2", "seeds: 1")
    text += "generators: {boom: {preset: generic, add_terms: [{term: 'faults:Boom'}]}}\n"
    sweep = spec_mod.loads(text)
    root = tmp_path / "tiny"
    outcome = run_sweep(sweep, str(root), progress=False)
    assert outcome.exit_code == 1
    assert len(outcome.failed) == 2 and len(outcome.done) == 2
    store = ResultsStore(root)
    failures = store.failures()
    assert len(failures) == 2
    for f in failures.values():
        assert f["generator"] == "boom"
        assert "injected failure" in f["error"]
        assert "Traceback" in f["traceback"] or "injected failure" in f["traceback"]
    summary = status_summary(str(root))
    assert (summary["done"], summary["failed"], summary["missing"]) == (2, 2, 0)
    # Without --retry-failed a resume runs nothing; with it only the failed systems run (and fail again here).
    again = run_sweep(sweep, str(root), progress=False, retry_failed=False)
    assert again.done == [] and again.failed == {}
    retried = run_sweep(sweep, str(root), progress=False, retry_failed=True)
    assert set(retried.failed) == set(failures) and retried.done == []


def test_timeout_cancels_and_records(ray_session, tmp_path):
    text = SWEEP.replace("seeds: 2", "seeds: 1").replace("model: [logistic_regression, mlp]", "model: [mlp]")
    text = text.replace("generator: [generic, greedy]", "generator: [stuck]")
    text += "generators: {stuck: {preset: generic, add_terms: [{term: 'faults:Hang'}]}}\n"
    text += "timeout_s: 2\n"
    outcome = run_sweep(spec_mod.loads(text), str(tmp_path / "t"), progress=False)
    assert outcome.exit_code == 1
    (first,) = outcome.failed.values()
    assert "timeout of 2 s" in first


def _cli_env():
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_cli_kill_driver_then_resume_equals_uninterrupted(tmp_path, tiny_run):
    """SIGKILL the whole driver process group part-way, then `resume`: same rows, no duplicates."""
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(SWEEP.replace("retrain_epochs: 2", "retrain_epochs: 40"))
    results = tmp_path / "res"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recourse_ray.cli", "run", str(sweep_file), "--results", str(results), "--no-progress",
         "--num-cpus", "1", "--max-in-flight", "1"],
        env=_cli_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    manifest_dir = results / "tiny" / "manifest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifest_dir.exists() and len(list(manifest_dir.glob("*.json"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(manifest_dir.glob("*.json")))
    assert 2 <= partial < 8
    store = ResultsStore(results / "tiny")
    assert status_summary(str(results / "tiny"))["missing"] + status_summary(str(results / "tiny"))["done"] == 8
    code = subprocess.run(
        [sys.executable, "-m", "recourse_ray.cli", "resume", str(results / "tiny"), "--no-progress"],
        env=_cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert code.returncode == 0, code.stdout + code.stderr
    assert f"{8 - partial} systems run, {partial} already done" in code.stdout
    resumed = _rows_without_timing(store)
    # The uninterrupted reference: the same sweep run in one go in-process.
    ref_root = tmp_path / "ref"
    run_sweep(spec_mod.load(sweep_file), str(ref_root / "tiny"), progress=False)
    reference = _rows_without_timing(ResultsStore(ref_root / "tiny"))
    assert resumed.height == reference.height
    assert resumed.equals(reference)
    assert resumed.select("system_key", "round", "metric").is_duplicated().sum() == 0


def test_resume_accepts_a_spec_recorded_before_new_defaults_existed(tmp_path):
    """A results folder written by an older version (a setting it did not know is absent
    from its sweep.yaml) still resumes: the recorded file is re-read with today's defaults."""
    from recourse_ray.sweep import plan

    sweep = spec_mod.loads(SWEEP)
    new_text = sweep.to_yaml()
    old_text = new_text.replace(", lengthscale: 0.5", "")  # as if written before 'lengthscale' existed
    assert old_text != new_text
    store = ResultsStore(tmp_path / "tiny")
    store.init(old_text)
    systems, todo = plan(sweep, store)
    assert len(todo) == len(systems) == 8
    assert store.read_spec() == old_text  # nothing rewritten
    changed = spec_mod.loads(SWEEP.replace("rounds: 3", "rounds: 5"))
    from recourse_ray.sweep import SpecChanged

    with pytest.raises(SpecChanged):
        plan(changed, store)


CSV_SWEEP = """
name: moved
seeds: 1
grid:
  dataset: [loans]
  model: [logistic_regression]
  generator: [generic]
datasets:
  loans: {preset: csv, path: PATH, target: approved, drop: [applicant_id], categorical: [region]}
simulation: {rounds: 2, evaluate_every: 1, retrain_epochs: 1}
setup: {pretrain_epochs: 3, pretrain_batch_size: 8}
metrics: {n_permutations: 10, n_grid: 50, n_samples: 100}
"""


def _values(root: Path) -> pl.DataFrame:
    return _rows_without_timing(ResultsStore(root)).select("round", "metric", "value", "p_value").sort("round", "metric")


def test_results_do_not_depend_on_where_the_data_lives(ray_session, tmp_path):
    """The same CSV in two folders gives the same numbers (random streams were once keyed on its path)."""
    source = Path(__file__).resolve().parents[1] / "examples" / "loans.csv"
    values = []
    for folder in ("a", "b/deeper"):
        csv = tmp_path / folder / "loans.csv"
        csv.parent.mkdir(parents=True)
        csv.write_bytes(source.read_bytes())
        sweep = spec_mod.loads(CSV_SWEEP.replace("PATH", str(csv)))
        outcome = run_sweep(sweep, str(tmp_path / folder / "results"), progress=False)
        assert outcome.exit_code == 0
        values.append(_values(tmp_path / folder / "results"))
    assert values[0].height > 0 and values[0].equals(values[1])


def test_a_sweep_system_equals_simulate(tiny_run):
    """A system run by the sweep and the same system run by ``rr.simulate`` give the same rows."""
    import recourse_ray as rr

    sweep, root, _ = tiny_run
    rows = _rows_without_timing(ResultsStore(root)).filter(
        (pl.col("model") == "mlp") & (pl.col("generator") == "greedy") & (pl.col("seed") == 1)
    )
    result = rr.simulate(
        "overlapping", "mlp", "greedy", seed=1, rounds=3, evaluate_every=2, retrain_epochs=2,
        setup={"pretrain_epochs": 5}, metrics={"n_permutations": 10, "n_grid": 100, "n_samples": 200},
    )
    ours = result.metrics.filter(pl.col("scope") != "timing").select("round", "metric", "value", "p_value")
    theirs = rows.select("round", "metric", "value", "p_value")
    assert theirs.height > 0
    assert ours.sort("round", "metric").equals(theirs.sort("round", "metric"))
