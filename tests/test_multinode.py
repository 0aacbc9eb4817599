"""Multi-node sweeps with ray.cluster_utils.Cluster (head + one worker node): slow tests."""

from __future__ import annotations

import os
import threading
import time

import polars as pl
import pytest
import ray
from ray.cluster_utils import Cluster

from recourse_ray import spec as spec_mod
from recourse_ray.store import ResultsStore
from recourse_ray.sweep import run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SWEEP = """
name: multi
seeds: 3
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic, greedy]
simulation: {rounds: 4, evaluate_every: 2, retrain_epochs: 20}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c, worker
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()  # a no-op when the test already shut it down


def _rows(root):
    return ResultsStore(root).read_rows().filter(pl.col("scope") != "timing").sort("system_key", "round", "metric")


def test_tasks_run_on_both_nodes(cluster, tmp_path):
    c, _ = cluster
    sweep = spec_mod.loads(SWEEP)
    outcome = run_sweep(sweep, str(tmp_path / "multi"), address=c.address, progress=False)
    assert outcome.exit_code == 0 and len(outcome.done) == 12
    nodes = {m["node_id"] for m in ResultsStore(tmp_path / "multi").manifests()}
    assert len(nodes) == 2


def test_removing_worker_node_mid_sweep_loses_nothing(cluster, tmp_path):
    c, worker = cluster
    sweep = spec_mod.loads(SWEEP)
    root = tmp_path / "multi"
    manifest_dir = root / "manifest"

    committed_at_removal = []

    def remove_when_started():
        deadline = time.time() + 120
        while time.time() < deadline:
            if manifest_dir.exists() and len(list(manifest_dir.glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        committed_at_removal.append(len(list(manifest_dir.glob("*.json"))))
        c.remove_node(worker, allow_graceful=False)

    killer = threading.Thread(target=remove_when_started)
    killer.start()
    outcome = run_sweep(sweep, str(root), address=c.address, progress=False)
    killer.join()
    assert committed_at_removal and committed_at_removal[0] < 12  # removed mid-sweep
    assert outcome.exit_code == 0, outcome.failed
    assert len(ResultsStore(root).committed_keys()) == 12
    # Same rows as an uninterrupted run on a fresh single-node embedded Ray.
    ray.shutdown()
    c.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    ref = tmp_path / "ref"
    run_sweep(sweep, str(ref), progress=False, num_cpus=2)
    assert _rows(root).equals(_rows(ref))


def test_node_added_mid_sweep_gets_work(tmp_path):
    """A node that joins while the sweep runs raises the in-flight limit and runs systems (head: 1 CPU)."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    root = tmp_path / "grow"
    # Why this test failed before: it added the node from a helper thread, and
    # Cluster.add_node starts a raylet that installs signal handlers, which only the main
    # thread may do ("signal only works in main thread"); the thread died, no node ever
    # joined. So the sweep runs in the helper thread (stop_signals leaves signals alone
    # there) and the node is added from the main thread, once the sweep has written its
    # spec and queued its systems.
    longer = SWEEP.replace("rounds: 4, evaluate_every: 2, retrain_epochs: 20",
                           "rounds: 6, evaluate_every: 3, retrain_epochs: 300")
    result = {}

    def sweep():
        result["outcome"] = run_sweep(spec_mod.loads(longer), str(root), address=c.address, progress=False)

    runner = threading.Thread(target=sweep)
    runner.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (root / "sweep.yaml").exists():
            time.sleep(0.05)
        c.add_node(num_cpus=2)
        runner.join()
        outcome = result["outcome"]
        assert outcome.exit_code == 0 and len(outcome.done) == 12
        by_node: dict = {}
        for m in ResultsStore(root).manifests():
            by_node.setdefault(m["node_id"], []).append(m)
        assert len(by_node) == 2, {k: len(v) for k, v in by_node.items()}  # the node that joined ran systems
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def _most_at_once(manifests: list[dict]) -> int:
    """The largest number of systems whose tasks overlapped in time (manifests' start/end times)."""
    events = sorted([(m["started_at"], 1) for m in manifests] + [(m["ended_at"], -1) for m in manifests])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_memory_resource_keeps_a_node_from_being_overpacked(tmp_path, monkeypatch):
    """A node with 4 CPUs but memory for 2 system tasks runs at most 2 at a time; without the resource, more."""
    from recourse_ray.sweep._tasks import memory_bytes

    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    sweep = spec_mod.loads(SWEEP.replace("retrain_epochs: 20", "retrain_epochs: 200")
                           .replace("setup: {pretrain_epochs: 5}", "setup: {pretrain_epochs: 5, n_samples: 400}"))
    per_task = memory_bytes(400, 2)  # what the driver declares for 400 rows (train + test) of 2 features
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        c.add_node(num_cpus=4, memory=int(2.5 * per_task))
        c.wait_for_nodes()
        runs = {}
        for label, declared in (("with", "1"), ("without", "0")):
            monkeypatch.setenv("RECOURSE_RAY_TASK_MEMORY", declared)
            root = tmp_path / label
            outcome = run_sweep(sweep, str(root), address=c.address, progress=False)
            assert outcome.exit_code == 0 and len(outcome.done) == 12
            runs[label] = _most_at_once(ResultsStore(root).manifests())
            ray.shutdown()
        assert runs["with"] <= 2 < runs["without"], runs
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
