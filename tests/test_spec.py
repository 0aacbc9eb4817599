"""Sweep-file parsing, validation (every problem at once) and grid expansion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from recourse_ray import spec

ROOT = Path(__file__).resolve().parents[1]

BASE = """
name: t
seeds: 2
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic, conservative]
simulation: {rounds: 3, evaluate_every: 1}
metrics: {n_permutations: 10}
generators:
  conservative: {preset: generic, decision_threshold: 0.9}
"""


def test_expands_grid_with_stable_unique_keys():
    s = spec.loads(BASE)
    systems = s.systems()
    assert len(systems) == 1 * 2 * 2 * 2
    assert len({x.key for x in systems}) == len(systems)
    again = spec.loads(BASE).systems()
    assert [x.key for x in systems] == [x.key for x in again]
    cons = [x for x in systems if x.generator == "conservative"][0]
    assert cons.generator_config["decision_threshold"] == 0.9
    assert cons.create_generator().to_dict() == cons.generator_config
    assert cons.create_generator().to_dict() != spec.loads(BASE).systems()[0].create_generator().to_dict()


def test_key_changes_with_any_setting():
    a = spec.loads(BASE).systems()[0]
    b = spec.loads(BASE.replace("rounds: 3", "rounds: 4")).systems()[0]
    c = spec.loads(BASE.replace("n_permutations: 10", "n_permutations: 11")).systems()[0]
    assert len({a.key, b.key, c.key}) == 3


def test_shared_setup_controls_setup_seed():
    shared = spec.loads(BASE).systems()
    assert {x.setup_seed for x in shared} == {0}
    assert len({x.model_key for x in shared}) == 2  # one pretrained model per model, shared by seeds
    own = spec.loads(BASE + "shared_setup: false\n").systems()
    assert {x.setup_seed for x in own} == {0, 1}
    assert len({x.model_key for x in own}) == 4


def test_resolved_yaml_round_trips():
    s = spec.loads(BASE)
    again = spec.loads(s.to_yaml())
    assert again.to_yaml() == s.to_yaml()
    assert [x.key for x in again.systems()] == [x.key for x in s.systems()]


def test_reports_every_problem_at_once():
    bad = textwrap.dedent(
        """
        name: t
        seeds: 0
        grdi: {}
        grid:
          dataset: [overlaping]
          model: [mlp]
          generator: [generic, nope]
        simulation: {rounds: 0, recourse_share: 1.5, round: 3}
        generators:
          g2: {preset: genric}
        """
    )
    with pytest.raises(spec.SpecError) as err:
        spec.loads(bad)
    msg = str(err.value)
    problems = err.value.problems
    assert len(problems) >= 7, problems
    assert "Unknown top-level key 'grdi'" in msg and "Did you mean 'grid'?" in msg
    assert "'seeds'" in msg
    assert "Unknown dataset 'overlaping'" in msg and "Did you mean 'overlapping'?" in msg
    assert "Unknown generator 'nope'" in msg
    assert "'rounds' parameter of simulation" in msg
    assert "'recourse_share' parameter of simulation" in msg
    assert "Unknown key 'round' in 'simulation'" in msg and "Did you mean 'rounds'?" in msg
    assert "Unknown generator preset 'genric'" in msg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: t\ngrid: [", "YAML syntax error"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("name: t\ngrid: {dataset: [], model: [mlp], generator: [generic]}\n", "'grid.dataset' must be a non-empty list"),
        ("name: t\nseeds: [1, 1]\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n", "more than once"),
        ("name: t\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\nmodels: {big: {preset: mlp, hiden: [3]}}\n", "hiden"),
        ("name: t\ngrid: {dataset: [mine], model: [mlp], generator: [generic]}\ndatasets: {mine: {preset: csv, path: nothere.csv, target: y}}\n", "does not exist"),
        ("name: 'a b'\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n", "'name' must be"),
        ("name: t\ntimeout_s: -1\ngrid: {dataset: [moons], model: [mlp], generator: [generic]}\n", "timeout_s"),
    ],
)
def test_bad_files(text, expected):
    with pytest.raises(spec.SpecError, match=expected):
        spec.loads(text)


def test_missing_file():
    with pytest.raises(spec.SpecError, match="does not exist"):
        spec.load("/nonexistent/sweep.yaml")


def test_csv_dataset_path_is_relative_to_sweep_file(tmp_path):
    csv = tmp_path / "d.csv"
    rows = ["a,b,y"] + [f"{i},{i % 7},{i % 2}" for i in range(40)]
    csv.write_text("\n".join(rows) + "\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: t\ngrid: {dataset: [mine], model: [mlp], generator: [generic]}\n"
        "datasets: {mine: {preset: csv, path: d.csv, target: y}}\n"
    )
    s = spec.load(sweep)
    assert s.systems()[0].dataset_options["path"] == str(csv)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    raw = yaml.safe_load(path.read_text())
    from recourse_ray.data import sources

    presets = {d: (raw.get("datasets") or {}).get(d, {}).get("preset", d) for d in raw["grid"]["dataset"]}
    needs_data = bool(set(sources.SOURCES) & set(presets.values()))  # tabular or published synthetic files
    s = spec.load(path, check_data=not needs_data)
    assert len(s.systems()) >= 1


REFERENCE_DATA = ROOT.parent / "shared" / "reference" / "ard-v0.1.0" / "overlapping_data.csv"


@pytest.mark.skipif(not REFERENCE_DATA.exists(), reason="the reference's data (../shared/reference) is absent")
@pytest.mark.parametrize("path", sorted((ROOT / "sweeps" / "reference").glob("ard-*.yaml")), ids=lambda p: p.name)
def test_reference_sweeps_validate_on_the_reference_data(path):
    s = spec.load(path)
    systems = s.systems()
    assert len(systems) == 60 and {x.dataset_options["split_column"] for x in systems} == {"split"}
    assert (s.simulation.selection == "lockstep") == (s.protocol.name == "ard-0.1.0")


PUBLISHED = ROOT.parent / "shared" / "data" / "synthetic"


@pytest.mark.skipif(not (PUBLISHED / "overlapping.csv").exists(), reason="the published data (../shared/data) is absent")
@pytest.mark.parametrize("family", ["main", "mitigation"])
def test_paper_sweeps_in_reference_mode_match_their_default_mode_sweeps(family):
    """Same grid, data and rounds as sweeps/paper-<family>.yaml; the protocol sets the rest."""
    from recourse_ray import data as data_mod

    with data_mod.data_dir(PUBLISHED):
        ref = spec.load(ROOT / "sweeps" / "reference" / f"paper-{family}-reference-mode.yaml")
        default = spec.load(ROOT / "sweeps" / f"paper-{family}.yaml")
    assert ref.protocol.name == "ard-0.1.0" and "run_settings" in ref.protocol.without
    assert ref.grid == default.grid and ref.seeds == default.seeds
    assert ref.simulation.rounds == default.simulation.rounds and ref.setup.n_samples == default.setup.n_samples
    assert [x.dataset_preset for x in ref.systems()] == [x.dataset_preset for x in default.systems()]
