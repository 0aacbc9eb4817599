"""Lockstep cohorts on Ray: the reference's selection protocol, one actor per system.

With ``simulation.selection: lockstep`` the systems of a sweep that share (dataset, seed)
form a *cohort* (every model x generator of the grid). Each round they select from the
intersection of their candidate sets (``simulation.cohort_candidates``), so every system
of the cohort selects the same rows, as AlgorithmicRecourseDynamics.jl does. The cohort
is the unit of execution and of commit. See docs/lockstep.md.

Execution. One ``_tasks.SystemActor`` per system holds its ``RecourseSystem`` between
rounds. The driver coordinates every cohort in flight: a round is one call per member,
``advance(t, mask)`` with the intersection of the candidate sets the members returned
from their previous call; the members of a cohort run that round concurrently, and the
driver waits for all of them before the next (a barrier per round).

Resources. A cohort of n systems reserves ``cohort_cpus`` CPUs (default min(n, cluster
CPUs)), shared equally by its actors: each asks for ``cohort_cpus / n`` rounded *down*
to Ray's precision of 1e-4 (rounded up, n of them could exceed the cluster and the last
one would never be placed), and runs torch on one thread. The coordinator holds none. A
cohort is admitted only whole (see Cluster below: two cohorts that each hold part of
their actors would wait for each other forever), and only once its setup (data split,
pretrained models, VAE) exists, so that actors never hold the CPUs a pretraining task
needs. Actors are reused from cohort to cohort (a worker
process takes seconds to start); idle ones are released after every admission pass.

Commit and resume. When every member has finished, each member not yet committed is
written as in the default mode (rows file, then manifest; the manifest records the
cohort). A cohort with any member to run is rerun whole; members already committed are
not rewritten (the rerun is deterministic, so they would be identical).

Failures. An error raised in one member fails its cohort: every member not committed is
recorded as failed, naming the member that raised; the sweep goes on with other cohorts.
A lost actor (its worker or node died) reruns the cohort with fresh actors, at most
``MAX_COHORT_RETRIES`` times. ``timeout_s`` is per system; a cohort gets ``timeout_s * n /
cohort_cpus`` (each system keeps the wall time it would have on a CPU of its own),
counted from the cohort's first round-0 reply, or from its admission while no member has
replied (so a member that hangs before round 0 is cancelled too). Ctrl-C, SIGTERM and
SIGHUP kill the actors of every cohort in flight; committed cohorts are kept.

Cluster. Each cohort's actors form one placement group, reserved whole or not at all.
On a cluster the driver joined, cohorts are admitted up to the in-flight limit of
``_cluster.py`` (re-read every few seconds), beyond its CPUs: the pending placement
groups hold nothing and are the demand the autoscaler scales on. On the embedded Ray a
cohort is admitted only while its CPUs fit; the first is admitted whatever the CPUs. Ray task names (``lockstep round T dataset/model/
generator/seed=S``) tell the members' calls apart in the dashboard and timeline.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from recourse_ray import spec as spec_mod
from recourse_ray.simulation import cohort_candidates
from recourse_ray.store import ResultsStore, StorageError
from recourse_ray.sweep import _tasks
from recourse_ray.sweep._cluster import ClusterView
from recourse_ray.sweep._driver import SweepOutcome, _commit, _Running, _submit_setup
from recourse_ray.sweep._progress import Progress

__all__ = ["Cohort", "make_cohorts", "actor_cpus", "cohort_cpus_for", "cohort_timeout", "run_cohorts",
           "MAX_COHORT_RETRIES"]

logger = logging.getLogger(__name__)

#: Reruns of a cohort whose actor was lost (a worker or node died), as tasks' max_retries.
MAX_COHORT_RETRIES = 3
#: Ray's precision for fractional resources.
_CPU_STEPS = 10_000
#: Errors that mean an actor or its data was lost, not that the system raised.
_LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
)


@dataclass(frozen=True)
class Cohort:
    """The systems of one (dataset, seed), run in lockstep.

    Attributes:
        key: hash of the members' system keys (recorded in their manifests).
        label: ``dataset/seed=S``.
        members: every system of the (dataset, seed), in the sweep's order.
        to_write: keys of the members not committed yet (written when the cohort ends).
    """

    key: str
    label: str
    members: tuple[spec_mod.SystemSpec, ...]
    to_write: frozenset[str]

    @property
    def n_systems(self) -> int:
        return len(self.members)


def make_cohorts(systems: Sequence[spec_mod.SystemSpec], todo: Sequence[spec_mod.SystemSpec],
                 committed: set[str]) -> list[Cohort]:
    """Group a sweep's systems by (dataset, seed); keep the cohorts with a member in ``todo``.

    Args:
        systems: every system of the sweep (``SweepSpec.systems()``).
        todo: the systems to run (``plan``'s answer).
        committed: keys of the systems already committed (not rewritten).
    """
    groups: dict[tuple[str, int], list[spec_mod.SystemSpec]] = {}
    for s in systems:
        groups.setdefault((s.dataset, s.seed), []).append(s)
    wanted = {s.key for s in todo}
    out = []
    for (dataset, seed), members in groups.items():
        if not any(m.key in wanted for m in members):
            continue
        key = hashlib.sha256(",".join(sorted(m.key for m in members)).encode()).hexdigest()[: spec_mod.KEY_LENGTH]
        out.append(Cohort(key=key, label=f"{dataset}/seed={seed}", members=tuple(members),
                          to_write=frozenset(m.key for m in members if m.key not in committed)))
    return out


def cohort_cpus_for(n_systems: int, cluster_cpus: float, requested: float | None = None) -> float:
    """CPUs a cohort of ``n_systems`` reserves: ``requested`` (default: all), at most one per system and the cluster."""
    cpus = cluster_cpus if requested is None else requested
    return float(max(1 / _CPU_STEPS, min(cpus, n_systems, cluster_cpus)))


def actor_cpus(cohort_cpus: float, n_systems: int) -> float:
    """Each member actor's share, ``cohort_cpus / n_systems`` rounded down to Ray's 1e-4 (so n of them fit)."""
    return max(1, math.floor(cohort_cpus / n_systems * _CPU_STEPS)) / _CPU_STEPS


def cohort_timeout(timeout_s: float | None, n_systems: int, cohort_cpus: float) -> float | None:
    """A cohort's timeout: each system keeps the wall time it would have on a CPU of its own."""
    return None if timeout_s is None else timeout_s * n_systems / cohort_cpus


@dataclass(eq=False)
class _Gang:
    """The actors of one cohort and the placement group that reserves their CPUs all at once.

    Ray places a placement group whole or not at all, so a cohort waiting for CPUs holds
    none of them (no two cohorts can each hold part of what they need), and its pending
    bundles are demand the autoscaler scales on.
    """

    group: object
    actors: list
    ready: object  # ObjectRef, resolved once every bundle is reserved


class _ActorPool:
    """Gangs of member actors of one CPU size (and ``memory=``), reused across cohorts; ``close`` kills every one."""

    def __init__(self, cpus: float, memory: int | None = None) -> None:
        self.cpus, self.memory = cpus, memory
        self.idle: list[_Gang] = []
        self.live: list[_Gang] = []

    def acquire(self, n: int) -> _Gang:
        """A gang of at least ``n`` actors: an idle one of that size, else a new one (placed when Ray can)."""
        for gang in self.idle:
            if len(gang.actors) == n:
                self.idle.remove(gang)
                return gang
        resources = {"CPU": self.cpus} | ({"memory": self.memory} if self.memory else {})
        group = placement_group([resources] * n, strategy="PACK")
        options = {"num_cpus": self.cpus} | ({"memory": self.memory} if self.memory else {})
        actors = [
            _tasks.SystemActor.options(**options, scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=i)).remote()
            for i in range(n)
        ]
        gang = _Gang(group=group, actors=actors, ready=group.ready())
        self.live.append(gang)
        return gang

    def release(self, gang: _Gang) -> None:
        self.idle.append(gang)

    def discard(self, gang: _Gang) -> None:
        self.live = [g for g in self.live if g is not gang]
        self.idle = [g for g in self.idle if g is not gang]
        for a in gang.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead, or Ray shutting down
                pass
        try:
            remove_placement_group(gang.group)
        except Exception:  # noqa: BLE001 - Ray shutting down
            pass

    def trim(self) -> None:
        """Kill the idle gangs: their CPUs may be what a pretraining task waits for."""
        for gang in list(self.idle):
            self.discard(gang)

    def close(self) -> None:
        for gang in list(self.live):
            self.discard(gang)


@dataclass
class _CohortRun:
    """A cohort in flight: its actors, the round it is in and what its members sent back."""

    cohort: Cohort
    attempt: int
    gang: _Gang
    cpus: float
    timeout: float | None
    admitted: float
    phase: str = "start"  # start -> advance (rounds 1..T) -> finish
    placed: bool = False  # its placement group holds its CPUs (the timeout runs from then)
    t: int = 0
    started: float | None = None
    rounds_counted: int = 0
    pending: dict = field(default_factory=dict)  # object ref -> member index
    masks: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # per member: {round: rows}
    summaries: list = field(default_factory=list)
    # Seconds during which at least ceil(cpus) members were in a call: the cohort could
    # keep its CPUs busy. The rest is the barrier's tail (members waiting for the slowest).
    saturated_s: float = 0.0
    _busy: int = 0
    _since: float = 0.0

    @property
    def actors(self) -> list:
        return self.gang.actors[: self.cohort.n_systems]

    def __post_init__(self) -> None:
        n = self.cohort.n_systems
        self.masks, self.rows, self.summaries = [None] * n, [{} for _ in range(n)], [None] * n
        self._since = self.admitted

    def busy(self, change: int, now: float) -> None:
        """Count members in a call (+1 on dispatch, -1 on reply), integrating the saturated time."""
        if self._busy >= math.ceil(self.cpus - 1e-9):
            self.saturated_s += now - self._since
        self._busy += change
        self._since = now


class _CohortExecution:
    """The coordinator: admits cohorts, runs their rounds in lockstep, commits or fails them."""

    def __init__(self, cohorts: list[Cohort], store: ResultsStore, outcome: SweepOutcome, bar: Progress, *,
                 store_states: bool, view: ClusterView, cohort_cpus: float | None) -> None:
        self.store, self.outcome, self.bar, self.store_states = store, outcome, bar, store_states
        self.view = view
        # Cohort size is fixed at the start (a head without CPUs counts as one CPU);
        # admission follows the cluster as nodes join and leave (``_fits``).
        self.cluster_cpus = max(1.0, view.cpus)
        self.splits, self.models, self.vaes, memory = _submit_setup([m for c in cohorts for m in c.members])
        # Every cohort of a sweep has the same size (the models x generators of the grid).
        n = max(c.n_systems for c in cohorts)
        self.cohort_cpus = cohort_cpus_for(n, self.cluster_cpus, cohort_cpus)
        self.pool = _ActorPool(actor_cpus(self.cohort_cpus, n), memory=max((m for m in memory.values() if m), default=None))
        self.queue: deque[tuple[Cohort, int]] = deque((c, 0) for c in cohorts)
        self.running: list[_CohortRun] = []
        self.owner: dict = {}  # object ref -> _CohortRun
        self.ready: set[str] = set()  # cohorts whose setup exists
        logger.info("Lockstep: %d cohort(s) of %d systems, %g CPUs each (%g per actor), on %g cluster CPUs.",
                    len(cohorts), n, self.cohort_cpus, self.pool.cpus, self.cluster_cpus)

    # ------------------------------------------------------------------ admission
    def _setup_refs(self, cohort: Cohort) -> list:
        refs = {}
        for s in cohort.members:
            for ref in (self.splits[s.data_key], self.models[s.model_key], self.vaes.get(s.vae_key) if s.needs_vae else None):
                if ref is not None:
                    refs[ref.hex()] = ref
        return list(refs.values())

    def _setup_ready(self, cohort: Cohort) -> bool:
        if cohort.key not in self.ready:
            refs = self._setup_refs(cohort)
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
            if len(done) == len(refs):
                self.ready.add(cohort.key)
        return cohort.key in self.ready

    def _fits(self, cohort: Cohort) -> bool:
        """Whether to admit ``cohort`` now: always when none runs; then by the in-flight rule.

        On a cluster the driver joined, cohorts are admitted up to the systems-in-flight
        limit of ``_cluster.py`` (the independent path's rule), beyond the CPUs there are:
        each waits, holding nothing, until its placement group is placed, and its bundles
        are the demand the autoscaler adds nodes for. On the embedded Ray, which cannot
        grow, only while the cohorts' CPUs fit.
        """
        if not self.running:
            return True
        in_flight = sum(r.cohort.n_systems for r in self.running)
        if in_flight + cohort.n_systems > self.view.limit:
            return False
        used = sum(r.cpus for r in self.running)
        return self.view.joined or used + self.cohort_cpus <= self.cluster_cpus + 1e-9

    def submit(self) -> None:
        """Admit every queued cohort that is ready and fits, in order; then release idle actors."""
        if self.view.refresh():
            self.cluster_cpus = max(1.0, self.view.cpus)
        waiting = deque()
        while self.queue:
            cohort, attempt = self.queue.popleft()
            if self._fits(cohort) and self._setup_ready(cohort):
                self._admit(cohort, attempt)
            else:
                waiting.append((cohort, attempt))
        self.queue = waiting
        self.pool.trim()
        self.bar.update(running=sum(len(r.cohort.to_write) for r in self.running))

    def _admit(self, cohort: Cohort, attempt: int) -> None:
        run = _CohortRun(cohort=cohort, attempt=attempt, gang=self.pool.acquire(cohort.n_systems),
                         cpus=self.cohort_cpus, admitted=time.perf_counter(),
                         timeout=cohort_timeout(cohort.members[0].timeout_s, cohort.n_systems, self.cohort_cpus))
        self.running.append(run)
        for i, (s, actor) in enumerate(zip(cohort.members, run.actors)):
            vae = self.vaes.get(s.vae_key) if s.needs_vae else None
            self._call(run, i, actor.start.options(name=_tasks.task_name(s, "lockstep start")).remote(
                s, self.splits[s.data_key], self.models[s.model_key], vae))

    def _call(self, run: _CohortRun, i: int, ref) -> None:
        run.pending[ref] = i
        run.busy(+1, time.perf_counter())
        self.owner[ref] = run

    # ------------------------------------------------------------------ rounds
    def receive(self, ref, now: float) -> None:
        """Take one member's reply; when the whole cohort has replied, start its next step."""
        run = self.owner.pop(ref, None)
        if run is None:  # its cohort was stopped meanwhile
            return
        i = run.pending.pop(ref)
        run.busy(-1, now)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the member's own error (or its setup's)
            self.fail(run, i, *_tasks.format_exception(exc))
            return
        except _LOST as exc:
            self.lost(run, i, exc)
            return
        except ray.exceptions.RayError as exc:
            self.fail(run, i, *_tasks.format_exception(exc))
            return
        if run.started is None:
            run.started = now
            run.placed = True
        member = run.cohort.members[i]
        if run.phase == "finish":
            run.summaries[i] = reply
        else:
            if reply["rows"] is not None:
                run.rows[i][run.t] = reply["rows"]
                if member.key in run.cohort.to_write:
                    self.bar.update(rows=len(reply["rows"]))
            run.masks[i] = reply["candidates"]
        if not run.pending:
            self._next(run)

    def _next(self, run: _CohortRun) -> None:
        rounds = run.cohort.members[0].simulation.rounds
        if run.phase == "finish":
            self.commit(run)
            return
        if run.t > 0:  # a cohort round advances all its systems
            self.bar.update(rounds=len(run.cohort.to_write))
            run.rounds_counted += len(run.cohort.to_write)
        if run.t < rounds:
            run.t += 1
            run.phase = "advance"
            mask = cohort_candidates(run.masks)
            for i, (s, actor) in enumerate(zip(run.cohort.members, run.actors)):
                name = _tasks.task_name(s, f"lockstep round {run.t}")
                self._call(run, i, actor.advance.options(name=name).remote(run.t, mask, run.t < rounds))
        else:
            run.phase = "finish"
            for i, (s, actor) in enumerate(zip(run.cohort.members, run.actors)):
                self._call(run, i, actor.finish.options(name=_tasks.task_name(s, "lockstep finish")).remote(
                    self.store_states and s.key in run.cohort.to_write))

    # ------------------------------------------------------------------ endings
    def commit(self, run: _CohortRun) -> None:
        """Write every member not committed yet (rows, then manifest), then lend the actors to the next cohort."""
        self.running.remove(run)
        cohort = run.cohort
        wall = time.perf_counter() - run.admitted
        cpu = sum(s["cpu_s"] for s in run.summaries)
        info = {
            "key": cohort.key,
            "label": cohort.label,
            "systems": [m.key for m in cohort.members],
            "cpus": run.cpus,
            "actor_cpus": self.pool.cpus,
            "wall_s": wall,
            "cpu_s": cpu,
            # Process CPU time of the members over the CPUs reserved for the cohort's lifetime
            # (from admission, so it includes starting fresh actors).
            "cpu_utilisation": cpu / (wall * run.cpus) if wall > 0 else None,
            # Share of that time with at least as many members computing as the cohort has CPUs.
            "saturated_share": run.saturated_s / wall if wall > 0 else None,
            "attempt": run.attempt,
        }
        for i, m in enumerate(cohort.members):
            if m.key not in cohort.to_write:
                continue
            summary = run.summaries[i]
            _commit(_Running(spec=m, gen=None, rows=run.rows[i]), summary, self.store, self.store_states,
                    extra={"cohort": info, "cpu_s": summary["cpu_s"]})
            self.outcome.done.append(m.key)
            self.bar.update(done=1)
        self.pool.release(run.gang)
        logger.info("Cohort %s: %d systems in %.1f s, CPU use %.0f%% of %g CPUs (saturated %.0f%% of the time).",
                    cohort.label, cohort.n_systems, wall, 100 * (info["cpu_utilisation"] or 0), run.cpus,
                    100 * (info["saturated_share"] or 0))

    def _stop(self, run: _CohortRun) -> None:
        """Forget a cohort's outstanding calls and kill its actors (one may be stuck or broken)."""
        for ref in run.pending:
            self.owner.pop(ref, None)
        run.pending.clear()
        if run in self.running:
            self.running.remove(run)
        self.pool.discard(run.gang)

    def fail(self, run: _CohortRun, i: int | None, first: str, full: str) -> None:
        """Record every member not committed as failed; member ``i`` (None: the cohort itself) caused it."""
        self._stop(run)
        cohort = run.cohort
        culprit = None if i is None else cohort.members[i]
        for m in cohort.members:
            if m.key not in cohort.to_write:
                continue
            if culprit is None or m is culprit:
                error = first
            else:
                error = f"RuntimeError: its lockstep cohort {cohort.label} failed in system {culprit.label}: {first}"
            self.store.write_failure(
                m.key,
                {**m.identity_columns(), "error": error, "traceback": full, "time": time.time(),
                 "settings": m.resolved(), "cohort": cohort.key,
                 "failed_system": None if culprit is None else culprit.key},
            )
            self.outcome.failed[m.key] = error
            self.bar.update(failed=1)
        logger.error("Cohort %s failed (%s): %s", cohort.label, "cohort" if culprit is None else culprit.label, first)

    def lost(self, run: _CohortRun, i: int, exc: BaseException) -> None:
        """An actor or its data was lost: rerun the cohort from round 0, or fail it after the last retry."""
        if run.attempt >= MAX_COHORT_RETRIES:
            self.fail(run, i, *_tasks.format_exception(exc))
            return
        self._stop(run)
        self.bar.update(rounds=-run.rounds_counted, rows=-sum(
            len(rows) for m, per_round in zip(run.cohort.members, run.rows) if m.key in run.cohort.to_write
            for rows in per_round.values()))
        logger.warning("Cohort %s lost a member (%s); rerunning it (attempt %d of %d).", run.cohort.label,
                       _tasks.format_exception(exc)[0], run.attempt + 2, MAX_COHORT_RETRIES + 1)
        self.queue.appendleft((run.cohort, run.attempt + 1))

    def _placed(self, run: _CohortRun, now: float) -> bool:
        """Whether the cohort's CPUs are reserved; the first time they are, its clock restarts."""
        if not run.placed:
            done, _ = ray.wait([run.gang.ready], timeout=0, fetch_local=False)
            if done:
                run.placed, run.admitted, run._since = True, now, now
        return run.placed

    def cancel_overdue(self, now: float) -> None:
        for run in list(self.running):
            # A cohort waiting for nodes (its placement group pending) is not late.
            if not run.timeout or not self._placed(run, now):
                continue
            # From the first reply, or from placement while none came (a member stuck in start).
            if now - (run.admitted if run.started is None else run.started) > run.timeout:
                s = run.cohort.members[0]
                self.fail(run, None, (
                    f"TimeoutError: the lockstep cohort {run.cohort.label} exceeded its timeout of {run.timeout:g} s "
                    f"(timeout_s {s.timeout_s:g} s x {run.cohort.n_systems} systems / {run.cpus:g} CPUs) "
                    "and was cancelled"), "")

    def cancel_all(self) -> None:
        for run in list(self.running):
            self._stop(run)

    # ------------------------------------------------------------------ loop
    def _waitable(self) -> tuple[list, bool]:
        """What to wait on: members' replies, or (nothing in flight) the setup of queued cohorts."""
        if self.owner:
            return list(self.owner), True
        refs = {ref.hex(): ref for c, _ in self.queue for ref in self._setup_refs(c)}
        return list(refs.values()), False

    def run(self) -> None:
        try:
            self.submit()
            while self.running or self.queue:
                refs, replies = self._waitable()
                if not replies:
                    ray.wait(refs, num_returns=len(refs), timeout=1.0, fetch_local=False)
                    self.submit()
                    continue
                ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                if ready:  # take every reply that is there, not just the first
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                now = time.perf_counter()
                for ref in ready:
                    self.receive(ref, now)
                self.cancel_overdue(now)
                self.submit()
        except (KeyboardInterrupt, StorageError):
            self.cancel_all()
            raise
        finally:
            self.pool.close()


def run_cohorts(systems: Sequence[spec_mod.SystemSpec], todo: Sequence[spec_mod.SystemSpec], store: ResultsStore,
                outcome: SweepOutcome, bar: Progress, *, store_states: bool, view: ClusterView,
                cohort_cpus: float | None = None) -> None:
    """Run the cohorts of ``systems`` that have a member in ``todo`` (Ray must be connected).

    Args:
        systems: every system of the sweep. todo: the systems to run (``plan``).
        store / outcome / bar: where results, the tally and progress go.
        store_states: also store each system's final state.
        view: the cluster's CPUs and the in-flight limit (``_cluster.py``), re-read as nodes
            join and leave; at least one whole cohort runs.
        cohort_cpus: CPUs per cohort (default: min(systems per cohort, cluster CPUs)).
    """
    cohorts = make_cohorts(systems, todo, store.committed_keys())
    if cohorts:
        _CohortExecution(cohorts, store, outcome, bar, store_states=store_states, view=view,
                         cohort_cpus=cohort_cpus).run()
