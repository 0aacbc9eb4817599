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


@pytest.mark.xfail(strict=False, reason="known gap (issue 18 left open): in one run here every system had already "
                   "been placed on the head when the added node registered; the rule that should spread queued "
                   "systems onto a joining node is not verified")
def test_node_added_mid_sweep_gets_work(tmp_path):
    """A node that joins while the sweep runs raises the in-flight limit and runs systems (head: 1 CPU)."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    root = tmp_path / "grow"
    manifest_dir = root / "manifest"

    def add_when_started():
        deadline = time.time() + 120
        while time.time() < deadline and not (manifest_dir.exists() and any(manifest_dir.glob("*.json"))):
            time.sleep(0.05)
        c.add_node(num_cpus=2)

    grower = threading.Thread(target=add_when_started)
    grower.start()
    try:
        outcome = run_sweep(spec_mod.loads(SWEEP), str(root), address=c.address, progress=False)
        grower.join()
        assert outcome.exit_code == 0 and len(outcome.done) == 12
        manifests = ResultsStore(root).manifests()
        assert len({m["node_id"] for m in manifests}) == 2  # the node that joined ran systems
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
