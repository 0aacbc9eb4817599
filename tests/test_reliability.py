"""Faults survived, bad results never written: worker kills, Ctrl-C, divergence, storage errors.

The long process-level tests are marked ``slow`` (``make test-slow``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

import recourse_ray as rr
from recourse_ray import spec as spec_mod
from recourse_ray.cli import main as cli_main, status_summary
from recourse_ray.simulation import RecourseSystem, SimulationDiverged, SimulationSettings, SystemIdentity, prepare_data, pretrain_model, SetupSettings
from recourse_ray.store import ResultsStore, StorageError
from recourse_ray.sweep import run_sweep

SWEEP = """
name: rel
seeds: 2
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic]
simulation: {rounds: 3, evaluate_every: 1, retrain_epochs: 30}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""


def _rows(root):
    return ResultsStore(root).read_rows().filter(pl.col("scope") != "timing").sort("system_key", "round", "metric")


# --------------------------------------------------------------------------- divergence
@dataclass(frozen=True)
class _NaNResult:
    counterfactuals: np.ndarray
    proba: np.ndarray
    valid: np.ndarray
    cost: np.ndarray
    iterations: np.ndarray
    finite: np.ndarray


class _NaNGenerator:
    """A generator whose every counterfactual is NaN (a search that blew up)."""

    needs_vae = False

    def search(self, model, factuals, *, n_counterfactuals, seeds, data=None, vae=None):
        n, d = factuals.shape
        cf = np.full((n, n_counterfactuals, d), np.nan, dtype=np.float32)
        shape = (n, n_counterfactuals)
        return _NaNResult(cf, np.full(shape, np.nan), np.zeros(shape, bool), np.full(shape, np.nan),
                          np.full(n, 100), np.zeros(shape, bool))


def test_non_finite_counterfactuals_are_skipped_and_never_written_as_values():
    train, test = prepare_data("overlapping", setup_seed=0)
    model = pretrain_model("logistic_regression", train, setup_seed=0, settings=SetupSettings(pretrain_epochs=5))
    system = RecourseSystem(
        train=train, test=test, model=model, generator=_NaNGenerator(),
        identity=SystemIdentity(dataset="overlapping", model="lr", generator="nan", seed=0, key="nan"),
        settings=SimulationSettings(rounds=2, evaluate_every=1, retrain_epochs=1),
        metric_settings=rr.metrics.MetricSettings(n_permutations=5, n_grid=50),
    )
    rows = [r for out in system.run() for r in out.rows]
    assert np.array_equal(system.X, train.X)  # nothing applied
    values = [r["value"] for r in rows if r["value"] is not None]
    assert np.isfinite(values).all()
    n_rec = [r["value"] for r in rows if r["metric"] == "n_recourse"]
    assert n_rec == [0, 0]
    # Undefined means (no recourse given) are missing values, not NaN.
    assert all(r["value"] is None for r in rows if r["metric"] == "recourse_cost")


def test_diverging_training_raises_clear_error():
    with pytest.raises(SimulationDiverged, match="non-finite .* after retraining in round 1"):
        rr.simulate("overlapping", "mlp", "generic", rounds=2, retrain_lr=1e38,
                    setup={"pretrain_epochs": 2}, metrics={"n_permutations": 5, "n_grid": 50})


@pytest.mark.ray
def test_diverging_system_is_recorded_as_failed(ray_session, tmp_path):
    text = SWEEP.replace("retrain_epochs: 30", "retrain_epochs: 2, retrain_lr: 1.0e+38")
    outcome = run_sweep(spec_mod.loads(text), str(tmp_path / "rel"), progress=False)
    assert outcome.exit_code == 1 and len(outcome.failed) == 4
    assert all("SimulationDiverged" in e and "non-finite" in e for e in outcome.failed.values())
    assert ResultsStore(tmp_path / "rel").committed_keys() == set()


# --------------------------------------------------------------------------- storage errors
@pytest.mark.ray
def test_storage_error_stops_cleanly_and_resume_completes(ray_session, tmp_path, monkeypatch):
    sweep = spec_mod.loads(SWEEP)
    root = tmp_path / "rel"
    real = ResultsStore.write_system
    calls = {"n": 0}

    def flaky(self, identity, table, manifest):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StorageError("writing rows failed: [Errno 28] No space left on device")
        return real(self, identity, table, manifest)

    monkeypatch.setattr(ResultsStore, "write_system", flaky)
    outcome = run_sweep(sweep, str(root), progress=False, max_in_flight=1)
    assert outcome.exit_code == 1 and "No space left on device" in outcome.storage_error
    committed = ResultsStore(root).committed_keys()
    assert len(committed) == 2
    before = _rows(root)
    monkeypatch.setattr(ResultsStore, "write_system", real)
    again = run_sweep(sweep, str(root), progress=False)
    assert again.exit_code == 0 and again.skipped == 2 and len(again.done) == 2
    after = _rows(root)
    assert after.filter(pl.col("system_key").is_in(list(committed))).equals(before)


def test_results_root_that_is_a_file_fails_clearly(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(SWEEP)
    assert cli_main(["run", str(sweep), "--results", str(blocker), "--no-progress"]) == 1
    assert "cannot write to the results directory" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


# --------------------------------------------------------------------------- process faults
def _system_task_pids() -> list[int]:
    """PIDs of system-task workers of *this* test session's Ray (descendants of this process).

    Other Ray instances on the machine (a user's sweep) are never touched.
    """
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    parent, tasks = {}, []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        pid, ppid = int(parts[0]), int(parts[1])
        parent[pid] = ppid
        # A worker running a system task is titled after the task's name ("system D/M/G/seed=S").
        if "ray::system_task" in parts[2] or "ray::system " in parts[2]:
            tasks.append(pid)

    def ours(pid: int) -> bool:
        seen = set()
        while pid in parent and pid not in seen:
            if pid == os.getpid():
                return True
            seen.add(pid)
            pid = parent[pid]
        return False

    return [pid for pid in tasks if ours(pid)]


@pytest.mark.slow
@pytest.mark.ray
def test_worker_killed_mid_system_is_retried_and_result_equals(ray_session, tmp_path):
    sweep = spec_mod.loads(SWEEP.replace("retrain_epochs: 30", "retrain_epochs: 60"))
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = _system_task_pids()
            if pids:
                time.sleep(0.3)  # let it get into its rounds
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    outcome = run_sweep(sweep, str(tmp_path / "a"), progress=False)
    t.join()
    assert killed, "no system task process was found to kill"
    assert outcome.exit_code == 0 and len(outcome.done) == 4
    reference = run_sweep(sweep, str(tmp_path / "b"), progress=False)
    assert reference.exit_code == 0
    assert _rows(tmp_path / "a").equals(_rows(tmp_path / "b"))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_keeps_committed_and_status_is_right(tmp_path):
    sweep_file = tmp_path / "rel.yaml"
    sweep_file.write_text(SWEEP.replace("seeds: 2", "seeds: 4").replace("retrain_epochs: 30", "retrain_epochs: 60"))
    results = tmp_path / "res"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recourse_ray.cli", "run", str(sweep_file), "--results", str(results),
         "--no-progress", "--num-cpus", "1", "--max-in-flight", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    manifests = results / "rel" / "manifest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifests.exists() and len(list(manifests.glob("*.json"))) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    summary = status_summary(str(results / "rel"))
    assert summary["done"] >= 2 and summary["failed"] == 0
    assert summary["done"] + summary["missing"] == 8
    assert not list((results / "rel" / ".staging").glob("*"))
    # The committed rows are readable and complete per system.
    rows = ResultsStore(results / "rel").read_rows()
    assert rows["system_key"].n_unique() == summary["done"]
