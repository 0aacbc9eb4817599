"""The top-level sweep API: rr.run_sweep, rr.load_results, rr.build_report (what the CLI does)."""

from __future__ import annotations

import polars as pl
import pytest

import recourse_ray as rr
from recourse_ray.store import NotAResultsDirectory

pytestmark = pytest.mark.ray

SWEEP = """
name: api
seeds: 1
grid:
  dataset: [overlapping]
  model: [logistic_regression]
  generator: [generic, greedy]
simulation: {rounds: 2, evaluate_every: 1, retrain_epochs: 2}
setup: {pretrain_epochs: 3}
metrics: {n_permutations: 10, n_grid: 50, n_samples: 100}
"""


def test_run_load_and_report_from_python(ray_session, tmp_path):
    sweep_file = tmp_path / "api.yaml"
    sweep_file.write_text(SWEEP)
    outcome = rr.run_sweep(sweep_file, results=tmp_path / "results", progress=False)
    assert outcome.exit_code == 0 and len(outcome.done) == 2
    assert outcome.results_dir.endswith("api")
    lf = rr.load_results(outcome.results_dir)
    assert isinstance(lf, pl.LazyFrame)
    schema = lf.collect_schema()
    assert schema["round"] == pl.Int64 and schema["value"] == pl.Float64 and schema["metric"] == pl.String
    rows = lf.collect()
    assert set(rows["generator"]) == {"generic", "greedy"} and set(rows["round"]) == {0, 1, 2}
    from recourse_ray import spec as spec_mod

    again = rr.run_sweep(spec_mod.loads(SWEEP), results=tmp_path / "results", progress=False)  # a SweepSpec too
    assert again.done == [] and again.skipped == 2
    out = rr.build_report(outcome.results_dir, tmp_path / "report", formats=("png",), trajectories=False)
    assert out.exists() and out.name == "index.html"


def test_api_mistakes_are_reported_in_the_house_style(tmp_path):
    with pytest.raises(TypeError, match="The 'path_or_spec' parameter of run_sweep must be a sweep file path"):
        rr.run_sweep(42)
    with pytest.raises(NotAResultsDirectory, match="not a recourse_ray results directory"):
        rr.load_results(tmp_path)
