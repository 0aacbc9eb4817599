"""Named protocols: the reference mode's mechanisms as ordinary settings, switchable one at a time."""

from __future__ import annotations

import pytest

from recourse_ray import generators, metrics, protocols
from recourse_ray._config import build_settings
from recourse_ray import spec as spec_mod
from recourse_ray.cli import main as cli_main
from recourse_ray.settings import SetupSettings, SimulationSettings

BASE = """
name: p
seeds: 1
grid: {dataset: [overlapping], model: [logistic_regression, mlp], generator: [generic, dice, greedy, revise]}
simulation: {rounds: 2, evaluate_every: 1}
"""
SECTIONS = {"simulation": SimulationSettings, "setup": SetupSettings, "metrics": metrics.MetricSettings}


@pytest.mark.parametrize("mechanism", list(protocols.mechanisms("ard-0.1.0")))
def test_every_mechanism_is_valid_settings_that_change_something(mechanism):
    """Each mechanism alone builds valid settings, and each of its values differs from our default."""
    m = protocols.mechanisms("ard-0.1.0")[mechanism]
    changed = 0
    for section, cls in SECTIONS.items():
        values = dict(getattr(m, section))
        if not values:
            continue
        built, problems = build_settings(cls, values, section)
        assert problems == [] and all(getattr(built, k) == v for k, v in values.items())
        default = cls()
        for key, value in values.items():
            if key in ("vae_kl_weight", "grid_steps"):  # values that only matter with the mechanism's others
                continue
            assert getattr(default, key) != value, (section, key)
            changed += 1
    if m.search:
        presets = [p for p in generators.reference.reference_presets()
                   if mechanism in generators.reference.reference_mechanisms(p)]
        assert presets
        moved = []
        for preset in presets:
            on = generators.create(preset, **generators.reference.reference_overrides(preset)).to_dict()
            off = generators.create(
                preset, **generators.reference.reference_overrides(preset, without=[mechanism])
            ).to_dict()
            moved.append(on != off)
        # A mechanism changes every preset it applies to; the run's settings (step 0.1, T 100,
        # gamma 0.5) equal some presets' own (Greedy's eps is 0.1 already).
        assert all(moved) if mechanism != "run_settings" else any(moved), (mechanism, presets, moved)
        changed += sum(moved)
    assert changed > 0


def test_protocol_sets_settings_and_the_file_wins():
    s = spec_mod.loads(BASE + "protocol: ard-0.1.0\nmetrics: {n_permutations: 7}\n")
    assert s.simulation.candidates == "not_certain" and s.simulation.selection == "lockstep"
    assert s.metrics.p_value == "reference" and s.metrics.n_permutations == 7  # the file's value wins
    assert s.setup.vae_objective == "reference" and not s.setup.pretrain_shuffle
    revise = [x for x in s.systems() if x.generator == "revise"][0]
    expected = generators.create("revise", **generators.reference.reference_overrides("revise")).to_dict()
    assert revise.generator_config == expected


def test_without_switches_one_mechanism_off():
    on = spec_mod.loads(BASE + "protocol: ard-0.1.0\n")
    off = spec_mod.loads(BASE + "protocol: {name: ard-0.1.0, without: [candidates_not_certain, joint_distance]}\n")
    assert on.simulation.candidates == "not_certain" and off.simulation.candidates == "predicted_negative"
    assert off.simulation.selection == "lockstep"  # the others stay on
    gen = {x.generator: x.generator_config for x in off.systems()}
    distance = [t for t in gen["generic"]["terms"] if t["kind"] == "distance"][0]
    assert "joint" not in distance
    # What is switched off is part of the keys, and of the recorded spec.
    assert {x.key for x in on.systems()}.isdisjoint({x.key for x in off.systems()})
    again = spec_mod.loads(off.to_yaml())
    assert [x.key for x in again.systems()] == [x.key for x in off.systems()]


def test_default_protocol_changes_nothing():
    plain = spec_mod.loads(BASE)
    explicit = spec_mod.loads(BASE + "protocol: default\n")
    assert [x.key for x in plain.systems()] == [x.key for x in explicit.systems()]
    assert "protocol" not in plain.to_dict()


@pytest.mark.parametrize(
    "text, message",
    [
        ("protocol: ard-0.2\n", r"Unknown protocol 'ard-0.2'\. Did you mean 'ard-0.1.0'\?"),
        ("protocol: {name: ard-0.1.0, without: [lockstp]}\n", r"Unknown mechanism 'lockstp'.*Did you mean 'lockstep'\?"),
        ("protocol: {name: ard-0.1.0, withot: []}\n", r"Unknown key 'withot' in 'protocol'"),
        ("protocol: [ard-0.1.0]\n", r"'protocol' must be a protocol name or a mapping"),
    ],
)
def test_bad_protocols_are_refused(text, message):
    with pytest.raises(spec_mod.SpecError, match=message):
        spec_mod.loads(BASE + text)


def test_bugs_are_labelled():
    bugs = {m.name for m in protocols.PROTOCOLS["ard-0.1.0"] if m.bug}
    assert bugs == {"candidates_not_certain", "one_permutation_p_values", "n_individuals_plus_one",
                    "greedy_unbounded_changes", "reference_vae"}


def test_cli_lists_protocols(capsys):
    assert cli_main(["protocols", "ard-0.1.0"]) == 0
    out = capsys.readouterr().out
    assert "candidates_not_certain [bug]" in out and "lockstep:" in out
    assert cli_main(["protocols", "nope"]) == 2
