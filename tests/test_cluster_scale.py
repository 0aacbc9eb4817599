"""Sweeps that follow the cluster: in-flight rule, Ray's fake autoscaling cluster, connecting, stop signals, progress.

The autoscaling cluster is Ray's fake multi-node provider (what ``ray.cluster_utils.
AutoscalingCluster`` drives), started here on a free port and its own temp folder:
``AutoscalingCluster.start`` runs ``ray stop --force``, which would kill every other
Ray on the machine, and the wheel lacks the ``example.yaml`` it reads. It is stopped
by killing the process trees that name its temp folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from recourse_ray import spec as spec_mod
from recourse_ray.cli import main as cli_main
from recourse_ray.store import ResultsStore
from recourse_ray.sweep import ClusterError, run_sweep
from recourse_ray.sweep import _cluster
from recourse_ray.sweep._cluster import MIN_PENDING, check_address, in_flight_limit
from recourse_ray.sweep._progress import Progress
from recourse_ray.sweep._tasks import memory_bytes, task_name

SWEEP = """
name: scale
seeds: 2
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic, greedy]
simulation: {rounds: 4, evaluate_every: 2, retrain_epochs: 30}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""


# ---------------------------------------------------------------- the rule, offline
def test_in_flight_limit_follows_the_cluster_and_keeps_demand_on_a_cpu_less_head():
    assert in_flight_limit(0, joined=True) == MIN_PENDING  # head with CPU: 0, no worker yet
    assert in_flight_limit(32, joined=True) == MIN_PENDING  # one c6i.8xlarge
    assert in_flight_limit(64, joined=True) == 128  # grows by twice each node's CPUs
    assert in_flight_limit(256, joined=True) == 512
    assert in_flight_limit(2, joined=False) == 4 and in_flight_limit(0, joined=False) == 1
    assert in_flight_limit(256, joined=True, requested=3) == 3


def test_task_names_and_memory_resource():
    s = spec_mod.loads(SWEEP).systems()[0]
    assert task_name(s) == f"system overlapping/{s.model}/{s.generator}/seed={s.seed}"
    small, big = memory_bytes(200, 2), memory_bytes(100_000, 50)
    assert small >= 512 * 2**20 and small % 2**20 == 0
    assert big > small + 4 * 2**30  # 5e6 values x 1 KiB


def test_status_lines_when_stderr_is_not_a_terminal():
    out = io.StringIO()  # isatty() is False, as under `ray job logs`
    bar = Progress(total=10, already=2, rounds_per_system=4, interval_s=0.0, stream=out)
    bar.update(running=3)
    bar.update(done=1, rounds=4)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert lines[-1].startswith("recourse-ray: 3/10 systems done, 0 failed, 3 running | ")
    assert "rounds/s" in lines[-1] and "ETA" in lines[-1]
    quiet = io.StringIO()
    Progress(total=1, enabled=False, stream=quiet, interval_s=0.0).close()
    assert quiet.getvalue() == ""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unusable_addresses_are_refused_with_one_message(tmp_path, monkeypatch, capsys):
    with pytest.raises(ClusterError, match="Ray Client addresses"):
        check_address("ray://127.0.0.1:10001")
    with pytest.raises(ClusterError, match="job-server"):
        check_address("http://127.0.0.1:8265")
    with pytest.raises(ClusterError, match="HOST:PORT"):
        check_address("nonsense")
    monkeypatch.setattr(_cluster, "CONNECT_TIMEOUT_S", 2.0)
    sweep_file = tmp_path / "scale.yaml"
    sweep_file.write_text(SWEEP)
    for address in (f"127.0.0.1:{_closed_port()}", "ray://127.0.0.1:10001"):
        start = time.monotonic()
        code = cli_main(["run", str(sweep_file), "--results", str(tmp_path / "res"), "--address", address])
        err = capsys.readouterr().err
        assert code == 2 and time.monotonic() - start < 30
        assert err.count("recourse-ray: error:") == 1 and "Traceback" not in err, err
        assert not (tmp_path / "res").exists()  # refused before any results folder is created
    assert "cannot reach the Ray cluster" in err or "Ray Client" in err


# ---------------------------------------------------------------- stop signals and RAY_ADDRESS (subprocess)
def _session_processes(driver_pid: int) -> list[str]:
    """Live processes of the embedded Ray a driver started (its session folder ends with the driver's pid)."""
    marker = f"_{driver_pid}/"
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                found.append(cmd[:120])
    return found


@pytest.mark.ray
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_stop_signal_is_handled_like_ctrl_c_and_ray_address_is_not_joined(tmp_path, signum):
    sweep_file = tmp_path / "scale.yaml"
    sweep_file.write_text(SWEEP.replace("retrain_epochs: 30", "retrain_epochs: 60"))
    results = tmp_path / "res"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", RECOURSE_RAY_STATUS_EVERY_S="1",
               RAY_ADDRESS=f"127.0.0.1:{_closed_port()}")  # the embedded mode must not join it
    proc = subprocess.Popen(
        [sys.executable, "-m", "recourse_ray.cli", "run", str(sweep_file), "--results", str(results),
         "--num-cpus", "1", "--max-in-flight", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    manifests = results / "scale" / "manifest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (manifests.exists() and any(manifests.glob("*.json"))):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    name = signal.Signals(signum).name
    assert err.count(f"Stopped by {name}") == 1 and "Traceback" not in err and "*** " not in err, err[-3000:]
    assert "RAY_ADDRESS=" in err and "starting an embedded local Ray" in err
    assert "recourse-ray:" in err and "systems done" in err  # status lines (stderr is a pipe)
    assert "-- interrupted" in out
    committed = len(ResultsStore(results / "scale").committed_keys())
    assert 1 <= committed < 8
    time.sleep(3)
    assert _session_processes(proc.pid) == []  # no orphaned Ray processes


# ---------------------------------------------------------------- Ray's fake autoscaling cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_trees(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker``, and their descendants."""
    parent, cmd = {}, {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = frontier = {pid for pid, c in cmd.items() if marker in c and pid != os.getpid()}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier} - found
        found = found | frontier
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class FakeAutoscalingCluster:
    """A 0-CPU head and one worker type of ``worker_cpus`` CPUs, 0..``max_workers`` of them (fake nodes here)."""

    def __init__(self, *, worker_cpus: int = 2, max_workers: int = 3) -> None:
        self.folder = tempfile.mkdtemp(prefix="rrasc", dir="/tmp")  # short: Unix socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = {
            "cluster_name": "fake", "max_workers": max_workers, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "cpu_worker": {"resources": {"CPU": worker_cpus, "object_store_memory": 150_000_000},
                               "node_config": {}, "min_workers": 0, "max_workers": max_workers},
            },
            "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
            "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }

    def start(self) -> None:
        config = Path(self.folder) / "autoscaling.json"
        config.write_text(json.dumps(self.config))
        env = dict(os.environ, AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1", RAY_AUTH_MODE="disabled")
        env.pop("RAY_ADDRESS", None)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={self.port}",
                        f"--temp-dir={self.folder}", "--num-cpus=0", f"--autoscaling-config={config}",
                        "--include-dashboard=false", "--object-store-memory=150000000", "--disable-usage-stats"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def shutdown(self) -> None:
        _kill_trees(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def autoscaling_cluster():
    import ray

    if ray.is_initialized():
        pytest.skip("this test needs a process without a Ray connection (run this file first or alone)")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # The fake node types advertise no `memory`, so the autoscaler would find no node type
    # for a task that asks for it (observed: "No available node types can fulfill ...").
    os.environ["RECOURSE_RAY_TASK_MEMORY"] = "0"
    cluster = FakeAutoscalingCluster()
    cluster.start()
    yield cluster
    os.environ.pop("RECOURSE_RAY_TASK_MEMORY", None)
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def _max_concurrent(manifests: list[dict]) -> int:
    events = sorted([(m["started_at"], 1) for m in manifests] + [(m["ended_at"], -1) for m in manifests],
                    key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.ray
def test_sweep_scales_an_autoscaling_cluster_from_a_cpu_less_head(autoscaling_cluster, tmp_path):
    """0-CPU head, 2-CPU workers (0..3): the sweep's queued demand makes the autoscaler add nodes."""
    # Systems long enough (seconds each) for fake nodes to start while they run; system
    # tasks are demand only once pretraining is done (before, they wait for arguments).
    sweep = spec_mod.loads(SWEEP.replace("rounds: 4, evaluate_every: 2, retrain_epochs: 30",
                                         "rounds: 10, evaluate_every: 5, retrain_epochs: 400"))
    outcome = run_sweep(sweep, str(tmp_path / "scale"), address=autoscaling_cluster.address, progress=False)
    assert outcome.exit_code == 0 and len(outcome.done) == 8, outcome.failed
    manifests = list(ResultsStore(tmp_path / "scale").manifests())
    nodes = {m["node_id"] for m in manifests}
    concurrent = _max_concurrent(manifests)
    print(f"autoscaling: {len(nodes)} worker nodes, {concurrent} systems at once")
    assert len(nodes) > 1 and concurrent > 2  # the old limit (2 x 0 CPUs -> 2) ran two at a time


@pytest.mark.ray
@pytest.mark.slow
def test_lockstep_cohorts_scale_an_autoscaling_cluster(autoscaling_cluster, tmp_path):
    text = SWEEP.replace("seeds: 2", "seeds: 4") + "simulation_selection_placeholder: 0\n"
    text = text.replace("simulation: {rounds: 4,", "simulation: {selection: lockstep, rounds: 4,").replace(
        "simulation_selection_placeholder: 0\n", "")
    outcome = run_sweep(spec_mod.loads(text), str(tmp_path / "lock"), address=autoscaling_cluster.address,
                        progress=False, cohort_cpus=1)
    assert outcome.exit_code == 0 and len(outcome.done) == 16, outcome.failed
    manifests = list(ResultsStore(tmp_path / "lock").manifests())
    nodes = {m["node_id"] for m in manifests}
    print(f"lockstep autoscaling: {len(nodes)} nodes, {_max_concurrent(manifests)} systems at once")
    assert len(nodes) > 1 and _max_concurrent(manifests) > 4  # more than one cohort of 4 at once
