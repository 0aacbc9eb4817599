"""Results on s3:// for real: an S3-compatible server (moto's server mode) on 127.0.0.1, started by the test.

pyarrow's S3 filesystem finds the server through AWS_ENDPOINT_URL; the driver does all
file I/O (tasks do none), so only the driver's environment needs it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")

import recourse_ray as rr  # noqa: E402
from recourse_ray.cli import main as cli_main, status_summary  # noqa: E402
from recourse_ray.store import ResultsStore  # noqa: E402

pytestmark = pytest.mark.ray

SWEEP = """
name: s3sweep
seeds: 2
grid:
  dataset: [overlapping]
  model: [logistic_regression]
  generator: [generic, greedy]
simulation: {rounds: 2, evaluate_every: 1, retrain_epochs: 2}
setup: {pretrain_epochs: 3}
metrics: {n_permutations: 10, n_grid: 50, n_samples: 100}
"""


@pytest.fixture(scope="module")
def s3_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket="results")
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_run_resume_and_report_on_s3(s3_server, ray_session, tmp_path):
    from recourse_ray import spec as spec_mod

    sweep = spec_mod.loads(SWEEP)
    outcome = rr.run_sweep(sweep, results="s3://results/in-process", progress=False)
    uri = outcome.results_dir
    assert uri == "s3://results/in-process/s3sweep" and outcome.exit_code == 0 and len(outcome.done) == 4
    store = ResultsStore(uri)
    assert len(store.committed_keys()) == 4
    # A lost system (as after a kill between two commits): resume runs exactly it.
    key = sorted(store.committed_keys())[0]
    store.fs.delete_file(f"{store.path}/manifest/{key}.json")
    again = rr.run_sweep(sweep, results="s3://results/in-process", progress=False)
    assert again.done == [key] and again.skipped == 3
    rows = rr.load_results(uri).collect()
    assert rows.height > 0 and rows["system_key"].n_unique() == 4
    assert status_summary(uri)["done"] == 4
    assert cli_main(["report", uri, "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report").exists() and any((tmp_path / "report").iterdir())


@pytest.mark.slow
def test_cli_killed_then_resumed_on_s3(s3_server, tmp_path):
    sweep_file = tmp_path / "s3sweep.yaml"
    sweep_file.write_text(SWEEP.replace("retrain_epochs: 2", "retrain_epochs: 40"))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **s3_server)
    proc = subprocess.Popen([sys.executable, "-m", "recourse_ray.cli", "run", str(sweep_file), "--results",
                             "s3://results/cli", "--no-progress", "--num-cpus", "1", "--max-in-flight", "1"],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    uri = "s3://results/cli/s3sweep"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(ResultsStore(uri).committed_keys()) >= 1:
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(ResultsStore(uri).committed_keys())
    assert 1 <= partial < 4
    done = subprocess.run([sys.executable, "-m", "recourse_ray.cli", "resume", uri, "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{4 - partial} systems run, {partial} already done" in done.stdout
    assert subprocess.run([sys.executable, "-m", "recourse_ray.cli", "report", uri, "-o", str(tmp_path / "r")],
                          env=env, capture_output=True, timeout=600).returncode == 0
