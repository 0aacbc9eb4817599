"""Lockstep cohorts (``simulation.selection: lockstep``): the protocol, on Ray and without.

The reference (AlgorithmicRecourseDynamics.jl) runs every system of a (dataset, seed) in
lockstep and selects each round from the intersection of their candidate sets. Here a
plain in-process loop written with ``recourse_ray.simulation`` is the oracle; the Ray
cohorts (one actor per system, the driver coordinating) must give its rows exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from recourse_ray import spec as spec_mod
from recourse_ray.simulation import (
    RecourseSystem,
    SystemIdentity,
    cohort_candidates,
    prepare_data,
    pretrain_model,
)
from recourse_ray.store import POLARS_SCHEMA, ResultsStore
from recourse_ray.sweep import _lockstep, _tasks, run_sweep

SWEEP = """
name: lock
seeds: [1, 2]
grid:
  dataset: [overlapping]
  model: [logistic_regression, mlp]
  generator: [generic, greedy]
simulation: {rounds: 3, evaluate_every: 2, retrain_epochs: 2, selection: lockstep}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""

# Without retraining, a row leaves the candidate set exactly when it is given a valid
# counterfactual (the unchanged model now predicts it positive); with only valid
# counterfactuals applied and generators that always reach validity (generic given
# enough iterations, greedy), the systems of one model see equal candidate sets.
COINCIDING = """
name: same
seeds: [1]
grid:
  dataset: [overlapping]
  model: [logistic_regression]
  generator: [generic_long, greedy]
generators: {generic_long: {preset: generic, max_iterations: 1000}}
simulation: {rounds: 3, evaluate_every: 1, retrain_epochs: 0, implement_only_valid: true, selection: SELECTION}
setup: {pretrain_epochs: 5}
metrics: {n_permutations: 10, n_grid: 100, n_samples: 200}
"""


def _one_model_one_seed(text: str) -> str:
    """The tiny sweep cut to one cohort of two systems (two actors to start, not four)."""
    return text.replace("seeds: [1, 2]", "seeds: [1]").replace("model: [logistic_regression, mlp]", "model: [logistic_regression]")


def _no_timing(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("scope") != "timing").sort("system_key", "round", "metric")


def _stored(root) -> pl.DataFrame:
    return _no_timing(ResultsStore(root).read_rows())


# ---------------------------------------------------------------------- the oracle
def _build(members: list[spec_mod.SystemSpec]) -> list[RecourseSystem]:
    """The cohort's systems, from the rr.simulation setup functions (as a sweep shares them)."""
    out, models = [], {}
    for s in members:
        train, test = prepare_data(s.dataset_preset, setup_seed=s.setup_seed, sweep_seed=s.sweep_seed,
                                   settings=s.setup, options=s.dataset_options)
        if s.model not in models:
            models[s.model] = pretrain_model(s.model_preset, train, setup_seed=s.setup_seed, sweep_seed=s.sweep_seed,
                                             settings=s.setup, options=s.model_params, dataset_name=s.dataset)
        out.append(RecourseSystem(
            train=train, test=test, model=models[s.model].clone(), generator=s.create_generator(),
            identity=SystemIdentity(dataset=s.dataset, model=s.model, generator=s.generator, seed=s.seed,
                                    setup_seed=s.setup_seed, sweep_seed=s.sweep_seed, key=s.key),
            settings=s.simulation, metric_settings=s.metrics,
        ))
    return out


def _frame(rows: list[dict]) -> pl.DataFrame:
    return _no_timing(pl.DataFrame(rows, schema=POLARS_SCHEMA))


def plain_lockstep(sweep: spec_mod.SweepSpec) -> tuple[pl.DataFrame, dict]:
    """Every cohort of ``sweep`` run in one process, round by round, from the intersection.

    Returns:
        (rows without timings, {(dataset, seed): [whether the members' candidate sets
        were all equal in round t, for t = 1..rounds]}).
    """
    cohorts: dict[tuple, list] = {}
    for s in sweep.systems():
        cohorts.setdefault((s.dataset, s.seed), []).append(s)
    rows, coincided = [], {}
    for cohort, members in cohorts.items():
        systems = _build(members)
        for s, system in zip(members, systems):
            rows += [{**s.identity_columns(), **r} for r in system.start().rows]
        coincided[cohort] = []
        for t in range(1, sweep.simulation.rounds + 1):
            masks = [system.candidates() for system in systems]
            coincided[cohort].append(all(np.array_equal(masks[0], m) for m in masks))
            mask = cohort_candidates(masks)
            assert mask.sum() <= min(m.sum() for m in masks)
            chosen = [system.select(t, mask) for system in systems]
            for c in chosen[1:]:  # the protocol: every system of the cohort selects the same rows
                np.testing.assert_array_equal(c, chosen[0])
            for s, system in zip(members, systems):
                out = system.advance(t, candidates=mask)
                if out is not None:
                    rows += [{**s.identity_columns(), **r} for r in out.rows]
            for system in systems[1:]:
                np.testing.assert_array_equal(system.chosen, systems[0].chosen)
    return _frame(rows), coincided


def plain_independent(sweep: spec_mod.SweepSpec) -> pl.DataFrame:
    """Every system of ``sweep`` run on its own (``RecourseSystem.run``: common random numbers)."""
    rows = []
    members = sweep.systems()
    for s, system in zip(members, _build(members)):
        rows += [{**s.identity_columns(), **r} for out in system.run() for r in out.rows]
    return _frame(rows)


@pytest.fixture(scope="module")
def oracle():
    """The tiny sweep in lockstep, in process: (rows, candidate sets equal per cohort and round)."""
    return plain_lockstep(spec_mod.loads(SWEEP))


@pytest.fixture(scope="module")
def independent():
    """The tiny sweep in the default mode (common random numbers), in process."""
    return plain_independent(spec_mod.loads(SWEEP.replace(", selection: lockstep", "")))


def _by_cell(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("system_key").sort("dataset", "model", "generator", "seed", "round", "metric")


# ---------------------------------------------------------------------- without Ray
def test_cohorts_group_dataset_and_seed_and_keep_what_is_committed():
    sweep = spec_mod.loads(SWEEP)
    systems = sweep.systems()
    cohorts = _lockstep.make_cohorts(systems, systems, committed=set())
    assert [c.label for c in cohorts] == ["overlapping/seed=1", "overlapping/seed=2"]
    assert all(c.n_systems == 4 and len(c.to_write) == 4 for c in cohorts)
    assert {m.seed for m in cohorts[0].members} == {1}
    assert len({c.key for c in cohorts}) == 2
    # Resume: a cohort with one member left runs whole but writes only that member;
    # a cohort with nothing left does not run.
    first = cohorts[0].members
    committed = {m.key for m in first[1:]} | {m.key for m in cohorts[1].members}
    todo = [s for s in systems if s.key not in committed]
    (again,) = _lockstep.make_cohorts(systems, todo, committed)
    assert again.key == cohorts[0].key and again.members == first and again.to_write == {first[0].key}


@pytest.mark.parametrize("cohort_cpus, n_systems", [(2, 12), (1, 12), (2, 4), (3, 7), (1, 3), (8, 12)])
def test_actor_cpus_fit_the_cohort_and_stay_within_ray_precision(cohort_cpus, n_systems):
    each = _lockstep.actor_cpus(cohort_cpus, n_systems)
    assert 0 < each <= cohort_cpus / n_systems
    assert each * n_systems <= cohort_cpus
    assert round(each * 10_000) == each * 10_000  # a multiple of 1e-4: Ray would round anything finer
    assert cohort_cpus / n_systems - each < 1e-4


def test_cohort_cpus_and_timeout_rules():
    assert _lockstep.cohort_cpus_for(12, 2) == 2  # a 12-system cohort takes the 2-CPU machine
    assert _lockstep.cohort_cpus_for(4, 64) == 4  # at most one CPU per system (torch runs one thread)
    assert _lockstep.cohort_cpus_for(12, 64, requested=6) == 6
    assert _lockstep.cohort_cpus_for(12, 2, requested=6) == 2  # never more than the cluster
    # Each system keeps the wall time it would have on a CPU of its own.
    assert _lockstep.cohort_timeout(10.0, 12, 2) == 60.0
    assert _lockstep.cohort_timeout(10.0, 4, 4) == 10.0
    assert _lockstep.cohort_timeout(None, 12, 2) is None


@pytest.fixture
def torch_threads():
    """Restore torch's thread count: the actor body pins it to 1 in whatever process runs it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cohort_members_driven_by_hand_equal_the_plain_loop(torch_threads, oracle):
    """The actor's body (``_tasks.CohortMember``), called without Ray, reproduces the oracle."""
    sweep = spec_mod.loads(SWEEP)
    members = [s for s in sweep.systems() if s.seed == 1]
    split = prepare_data("overlapping", setup_seed=0, settings=members[0].setup)
    pretrained = {m.model: _tasks._pretrain(split, m) for m in members}
    actors = [_tasks.CohortMember() for _ in members]
    replies = [a.start(m, split, pretrained[m.model], None) for a, m in zip(actors, members)]
    rows = [[{**m.identity_columns(), **r} for r in rep["rows"]] for m, rep in zip(members, replies)]
    for t in range(1, sweep.simulation.rounds + 1):
        mask = cohort_candidates([rep["candidates"] for rep in replies])
        replies = [a.advance(t, mask, t < sweep.simulation.rounds) for a in actors]
        for i, (m, rep) in enumerate(zip(members, replies)):
            rows[i] += [{**m.identity_columns(), **r} for r in rep["rows"] or []]
        assert all(rep["candidates"] is None for rep in replies) == (t == sweep.simulation.rounds)
        assert all(rep["rows"] is None for rep in replies) == (t == 1)  # round 1 is not evaluated
    summaries = [a.finish(False) for a in actors]
    assert all(s["cpu_s"] > 0 and s["threads"] == 1 and s["state"] is None for s in summaries)
    expected, _ = oracle
    assert _frame([r for per in rows for r in per]).equals(expected.filter(pl.col("seed") == 1))


def test_coinciding_candidate_sets_make_lockstep_equal_common_random_numbers():
    """The property: when a cohort's candidate sets are equal every round, both protocols give the same rows."""
    sweep = spec_mod.loads(COINCIDING.replace("SELECTION", "lockstep"))
    lockstep, coincided = plain_lockstep(sweep)
    assert all(all(rounds) for rounds in coincided.values())  # the setting does what it claims
    independent = plain_independent(sweep)
    assert lockstep.height > 0 and lockstep.equals(independent)
    # Not vacuous: the two generators' systems differ, only their selections agree.
    by_generator = lockstep.filter(pl.col("metric") == "recourse_cost").group_by("round").agg(
        pl.col("value").n_unique().alias("n"))
    assert by_generator["n"].max() == 2


def test_when_candidate_sets_differ_only_the_rounds_before_agree(oracle, independent):
    """The same property round by round on the tiny sweep, where the models' sets differ:
    a system's rows agree with the default mode up to the first round whose sets differ."""
    lockstep, coincided = oracle
    ours, theirs = _by_cell(lockstep), _by_cell(independent)
    compared = 0
    for (dataset, seed), per_round in coincided.items():
        agree = [True, *np.logical_and.accumulate(per_round)]  # rounds 0..T
        for t, equal in enumerate(agree):
            at = [f.filter((pl.col("dataset") == dataset) & (pl.col("seed") == seed) & (pl.col("round") == t))
                  for f in (ours, theirs)]
            if equal and at[0].height:
                assert at[0].equals(at[1]), f"{dataset}/seed={seed} round {t}"
                compared += 1
    assert compared >= 2  # round 0 of each cohort, at least
    assert not all(all(r) for r in coincided.values())  # the models' candidate sets differ here...
    assert not ours.equals(theirs)  # ...and the intersection changed the results


def test_cohort_cpus_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"The 'cohort_cpus' parameter of run_sweep must be a number > 0 or None\. Got 0"):
        run_sweep(spec_mod.loads(SWEEP), str(tmp_path / "lock"), cohort_cpus=0, progress=False)


# ---------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def lock_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("lockstep") / "lock"
    sweep = spec_mod.loads(SWEEP)
    outcome = run_sweep(sweep, str(root), progress=False, store_states=True)
    return sweep, root, outcome


@pytest.mark.ray
def test_lockstep_on_ray_equals_the_plain_loop(lock_run, oracle):
    sweep, root, outcome = lock_run
    assert outcome.exit_code == 0 and len(outcome.done) == 8
    expected, _ = oracle
    assert expected.height > 0 and _stored(root).equals(expected)


@pytest.mark.ray
def test_a_cohort_selects_the_same_rows_and_records_itself(lock_run):
    sweep, root, _ = lock_run
    rows = _stored(root)
    # generic and greedy always return finite counterfactuals, so each system of a cohort
    # implemented recourse for exactly the rows the cohort selected.
    per_round = rows.filter(pl.col("metric") == "n_recourse").group_by("seed", "round").agg(
        pl.col("value").n_unique().alias("distinct"), pl.len().alias("systems"), pl.col("value").first())
    assert per_round.height == 2 * 2  # 2 cohorts x evaluation rounds 2 and 3
    assert (per_round["distinct"] == 1).all() and (per_round["systems"] == 4).all()
    assert (per_round["value"] > 0).all()
    manifests = ResultsStore(root).manifests()
    cohorts = {m["cohort"]["key"] for m in manifests}
    assert len(cohorts) == 2
    for m in manifests:
        info = m["cohort"]
        assert m["settings"]["simulation"]["selection"] == "lockstep"
        assert m["system_key"] in info["systems"] and len(info["systems"]) == 4
        assert info["label"] == f"overlapping/seed={m['seed']}"
        assert info["cpus"] == 2 and info["actor_cpus"] == 0.5
        assert m["cpu_s"] > 0 and 0 < info["cpu_utilisation"] <= 1.5 and 0 <= info["saturated_share"] <= 1
        assert info["attempt"] == 0
    store = ResultsStore(root)
    assert store.state_keys() == store.committed_keys()
    assert store.read_state(m["system_key"])["X_final"].shape[1] == 2


def test_lockstep_systems_have_their_own_keys():
    lockstep = spec_mod.loads(SWEEP).systems()
    crn = spec_mod.loads(SWEEP.replace(", selection: lockstep", "")).systems()
    assert {s.key for s in crn}.isdisjoint({s.key for s in lockstep})


@pytest.mark.ray
def test_coinciding_candidate_sets_on_ray_equal_the_default_mode(ray_session, tmp_path):
    values = {}
    for selection in ("lockstep", "common_random_numbers"):
        root = tmp_path / selection / "same"
        outcome = run_sweep(spec_mod.loads(COINCIDING.replace("SELECTION", selection)), str(root), progress=False)
        assert outcome.exit_code == 0 and len(outcome.done) == 2
        values[selection] = _stored(root).drop("system_key").sort("generator", "round", "metric")
    assert values["lockstep"].height > 0 and values["lockstep"].equals(values["common_random_numbers"])


@pytest.mark.ray
def test_resume_reruns_incomplete_cohorts_whole_and_rewrites_nothing_committed(lock_run, tmp_path):
    sweep, root, _ = lock_run
    partial = tmp_path / "lock"
    shutil.copytree(root, partial)
    store = ResultsStore(partial)
    by_seed = {seed: [s for s in sweep.systems() if s.seed == seed] for seed in (1, 2)}
    # Cohort seed=1 lost one manifest (the driver died while committing it), cohort seed=2 all.
    removed = [by_seed[1][2].key] + [s.key for s in by_seed[2]]
    for key in removed:
        (partial / "manifest" / f"{key}.json").unlink()
    kept = {p.name: p.read_text() for p in (partial / "manifest").glob("*.json")}
    assert len(kept) == 3
    outcome = run_sweep(sweep, str(partial), progress=False)
    assert outcome.exit_code == 0 and sorted(outcome.done) == sorted(removed) and outcome.skipped == 3
    for name, text in kept.items():  # committed members were rerun with their cohort, not rewritten
        assert (partial / "manifest" / name).read_text() == text
    assert _stored(partial).equals(_stored(root))
    assert len(store.committed_keys()) == 8


@pytest.mark.ray
def test_a_failing_system_fails_its_cohort_and_the_sweep_goes_on(ray_session, tmp_path):
    text = _one_model_one_seed(SWEEP).replace("dataset: [overlapping]", "dataset: [overlapping, bad]")
    text += "datasets: {bad: {preset: overlapping, search: {add_terms: [{term: 'faults:Boom'}]}}}\n"
    sweep = spec_mod.loads(text)
    root = tmp_path / "lock"
    outcome = run_sweep(sweep, str(root), progress=False)
    assert outcome.exit_code == 1
    bad = {s.key for s in sweep.systems() if s.dataset == "bad"}
    assert len(bad) == 2 and set(outcome.failed) == bad and len(outcome.done) == 2
    store = ResultsStore(root)
    failures = store.failures()
    assert set(failures) == bad and not bad & store.committed_keys()
    assert len({f["cohort"] for f in failures.values()}) == 1
    culprits = [f for f in failures.values() if f["failed_system"] == f["system_key"]]
    others = [f for f in failures.values() if f["failed_system"] != f["system_key"]]
    assert len(culprits) == 1 and len(others) == 1
    assert culprits[0]["error"].startswith("RuntimeError: injected failure")
    for f in others:
        assert f["error"].startswith("RuntimeError: its lockstep cohort bad/seed=1 failed in system bad/")
        assert "injected failure" in f["error"]
    # Without --retry-failed a resume has no cohort to run.
    again = run_sweep(sweep, str(root), progress=False, retry_failed=False)
    assert again.done == [] and again.failed == {} and again.skipped == 4


@pytest.mark.ray
def test_a_lost_actor_reruns_its_cohort_from_round_0(ray_session, tmp_path, monkeypatch):
    import ray

    sweep = spec_mod.loads(_one_model_one_seed(SWEEP))
    killed = []
    step = _lockstep._CohortExecution._next

    def kill_a_member_in_round_2(self, run):
        step(self, run)
        if run.t == 2 and run.phase == "advance" and not killed:
            killed.append(run.actors[1])
            ray.kill(run.actors[1])  # as if its worker died mid-round

    monkeypatch.setattr(_lockstep._CohortExecution, "_next", kill_a_member_in_round_2)
    root = tmp_path / "lock"
    outcome = run_sweep(sweep, str(root), progress=False)
    assert killed and outcome.exit_code == 0 and len(outcome.done) == 2
    assert {m["cohort"]["attempt"] for m in ResultsStore(root).manifests()} == {1}
    expected, _ = plain_lockstep(sweep)
    assert _stored(root).equals(expected)


@pytest.mark.ray
def test_a_cohort_timeout_cancels_all_its_systems(ray_session, tmp_path):
    text = _one_model_one_seed(SWEEP).replace("generator: [generic, greedy]", "generator: [generic, stuck]")
    text += "generators: {stuck: {preset: generic, add_terms: [{term: 'faults:Hang'}]}}\ntimeout_s: 1.5\n"
    start = time.perf_counter()
    outcome = run_sweep(spec_mod.loads(text), str(tmp_path / "t"), progress=False)
    assert time.perf_counter() - start < 120  # the hanging actor was killed, not waited for (600 s)
    assert outcome.exit_code == 1 and len(outcome.failed) == 2
    for error in outcome.failed.values():
        assert "lockstep cohort overlapping/seed=1 exceeded its timeout of 1.5 s" in error
        assert "(timeout_s 1.5 s x 2 systems / 2 CPUs)" in error


@pytest.mark.ray
def test_ctrl_c_kills_the_cohorts_actors(ray_session, tmp_path, monkeypatch):
    import ray

    created = []
    acquire = _lockstep._ActorPool.acquire

    def recording(self, n):
        gang = acquire(self, n)
        created.extend(gang.actors)
        return gang

    def interrupt_once_started(self, now):
        if any(run.t >= 1 for run in self.running):
            raise KeyboardInterrupt

    monkeypatch.setattr(_lockstep._ActorPool, "acquire", recording)
    monkeypatch.setattr(_lockstep._CohortExecution, "cancel_overdue", interrupt_once_started)
    root = tmp_path / "lock"
    outcome = run_sweep(spec_mod.loads(_one_model_one_seed(SWEEP)), str(root), progress=False)
    assert outcome.interrupted and outcome.exit_code == 130
    assert outcome.done == [] and ResultsStore(root).committed_keys() == set()
    assert len(created) == 2
    for actor in created:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.finish.remote(False), timeout=60)


def _cli_env() -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@pytest.mark.ray
@pytest.mark.slow
def test_cli_kill_driver_then_resume_equals_uninterrupted(tmp_path, ray_session):
    """SIGKILL the driver's process group once a cohort is (being) committed, then `resume`."""
    sweep_file = tmp_path / "lock.yaml"
    sweep_file.write_text(SWEEP.replace("seeds: [1, 2]", "seeds: [1, 2, 3]").replace("retrain_epochs: 2", "retrain_epochs: 30"))
    results = tmp_path / "res"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recourse_ray.cli", "run", str(sweep_file), "--results", str(results), "--no-progress",
         "--num-cpus", "2"],
        env=_cli_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    manifest_dir = results / "lock" / "manifest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest_dir.exists() and len(list(manifest_dir.glob("*.json"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(manifest_dir.glob("*.json")))
    assert 1 <= partial < 12
    resumed = subprocess.run(
        [sys.executable, "-m", "recourse_ray.cli", "resume", str(results / "lock"), "--no-progress"],
        env=_cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{12 - partial} systems run, {partial} already done" in resumed.stdout
    cohorts = {json.loads(p.read_text())["cohort"]["key"] for p in manifest_dir.glob("*.json")}
    assert len(cohorts) == 3
    reference = tmp_path / "ref" / "lock"
    run_sweep(spec_mod.load(sweep_file), str(reference), progress=False)
    ours = _stored(results / "lock")
    assert ours.height > 0 and ours.equals(_stored(reference))
    assert ours.select("system_key", "round", "metric").is_duplicated().sum() == 0


def test_admission_keeps_demand_beyond_the_cpus_on_a_joined_cluster_only():
    """The in-flight rule of _cluster.py admits cohorts past the CPUs there are on a joined cluster (autoscaler
    demand: their placement groups wait, holding nothing); the embedded Ray admits only what fits."""
    from types import SimpleNamespace

    from recourse_ray.sweep._cluster import MIN_PENDING, in_flight_limit
    from recourse_ray.sweep._lockstep import Cohort, _CohortExecution

    cohort = Cohort(key="k", label="overlapping/seed=0", members=(None,) * 4, to_write=frozenset())
    ex = object.__new__(_CohortExecution)
    ex.cohort_cpus, ex.cluster_cpus = 1.0, 1.0  # a CPU-less head counts as one CPU
    ex.view = SimpleNamespace(joined=True, limit=in_flight_limit(0, joined=True))
    ex.running = []
    assert ex._fits(cohort)
    ex.running = [SimpleNamespace(cpus=1.0, cohort=cohort)] * 3  # 3 CPUs in flight on 1
    assert ex._fits(cohort)
    ex.running = [SimpleNamespace(cpus=1.0, cohort=cohort)] * (MIN_PENDING // 4)  # the limit: 64 systems
    assert not ex._fits(cohort)
    ex.view = SimpleNamespace(joined=False, limit=in_flight_limit(2, joined=False) * 4)
    ex.cluster_cpus = 2.0
    ex.running = [SimpleNamespace(cpus=1.0, cohort=cohort)]
    assert ex._fits(cohort)
    ex.running = [SimpleNamespace(cpus=1.0, cohort=cohort)] * 2
    assert not ex._fits(cohort)
