"""The sweep driver: connect to Ray, submit the task DAG, stream rows into the results dataset.

Flow (DESIGN.md, "Data flow of a sweep"): the driver loads and splits each dataset once
and puts it in the object store; one pretraining task per (dataset, model, setup seed)
and one VAE task per (dataset, setup seed) run first; system tasks depend on their
object refs. The driver keeps at most ``max_in_flight`` system tasks running, consumes
whichever stream is ready, buffers each system's rows and commits the system (rows
file, then manifest) when its stream ends. A failing system is recorded and the sweep
goes on. With ``simulation.selection: lockstep`` the systems of a (dataset, seed) run as
one cohort of actors instead (``_lockstep.py``), on the same setup and commit helpers.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import ray

from recourse_ray import spec as spec_mod
from recourse_ray._config import is_real, param_message
from recourse_ray.simulation import prepare_data
from recourse_ray.store import NotAResultsDirectory, ResultsStore, StorageError, rows_to_table
from recourse_ray.sweep import _tasks
from recourse_ray.sweep._cluster import ClusterError, ClusterView, Stopped, check_address, stop_signals
from recourse_ray.sweep._progress import Progress

__all__ = ["SweepOutcome", "run_sweep", "plan", "connect", "SpecChanged", "ClusterError"]

logger = logging.getLogger(__name__)


class SpecChanged(ValueError):
    """The results directory was produced by a different sweep spec."""


class InputsChanged(SpecChanged):
    """A file that committed systems read (a CSV, a user module) has changed since."""


@dataclass
class SweepOutcome:
    """What a call of ``run_sweep`` did."""

    results_dir: str
    total: int
    skipped: int = 0
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    storage_error: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.storage_error) else 0


def connect(address: str | None = None, *, num_cpus: int | None = None, runtime_env: dict | None = None) -> bool:
    """Connect to Ray (``None``: start an embedded local instance). Returns True if we started it.

    Raises:
        ClusterError: ``address`` names a cluster that cannot be reached or used.
    """
    if ray.is_initialized():
        return False
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address is None:
        # The embedded instance serves this process alone, on this machine; Ray 2.60's
        # default token auth adds nothing there (a user who sets RAY_AUTH_MODE wins).
        # address="local": ray.init() would otherwise join the cluster in RAY_ADDRESS,
        # and with auth forced off. Joining is what --address is for.
        if os.environ.get("RAY_ADDRESS"):
            logger.warning("RAY_ADDRESS=%s is set but --address is not: starting an embedded local Ray "
                           "(pass --address auto to run on that cluster).", os.environ["RAY_ADDRESS"])
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus)
        ray.init(**kwargs)
    else:
        check_address(address)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return True


# {system key: {file: sha256}} as hashed by the last ``plan`` of this process (see ``_commit``).
_RUN_INPUTS: dict[str, dict] = {}


def _changed_inputs(systems, store: ResultsStore) -> tuple[dict[str, list[str]], list[str]]:
    """Committed systems whose recorded input files differ from the files now.

    Returns:
        ({key: [changed file, ...]}, [changed file, ...] over all of them).
    """
    by_key = {s.key: s for s in systems}
    current: dict[str, dict] = {}
    changed: dict[str, list[str]] = {}
    for key, entry in store.verified()[0].items():
        recorded = entry.get("inputs")
        s = by_key.get(key)
        if not isinstance(recorded, dict) or s is None:
            continue  # written before inputs were recorded, or not part of this sweep
        if key not in current:
            current[key] = s.input_files()
        files = [f for f, digest in recorded.items() if current[key].get(f, digest) != digest]
        if files:
            changed[key] = files
    return changed, sorted({f for files in changed.values() for f in files})


def _inputs_unchanged(entry: dict, by_key: dict) -> bool:
    recorded = entry.get("inputs")
    s = by_key.get(entry.get("system_key"))
    if not isinstance(recorded, dict) or s is None:
        return True
    current = s.input_files()
    return all(current.get(f, digest) == digest for f, digest in recorded.items())


def check_target(sweep: spec_mod.SweepSpec, store: ResultsStore, *, force: bool = False) -> bool:
    """Check, without writing anything, that ``sweep`` may run in ``store``; True when the spec changed.

    Raises:
        NotAResultsDirectory: the path is a file, a non-empty folder that is not a results
            dataset, or a results dataset with a broken layout.
        SpecChanged: the directory holds another spec (and not ``force``).
        InputsChanged: a file read by committed systems changed (and not ``force``).
        StorageError: the location cannot be reached.
    """
    foreign = store.foreign_content()
    if foreign:
        raise NotAResultsDirectory(foreign + ".")
    if not store.exists():
        return False
    store.check()
    recorded = store.read_spec()
    text = sweep.to_yaml()
    spec_changed = recorded != text and not _same_spec(recorded, text)
    if spec_changed and not force:
        raise SpecChanged(
            f"The results directory {store.uri!r} was produced by a different sweep spec. "
            "Use a new results directory, or pass --force to run the new spec there "
            "(systems whose settings changed get new keys and are rerun; the others are kept)."
        )
    if not force:
        _, files = _changed_inputs(sweep.systems(), store)
        if files:
            shown = ", ".join(repr(f) for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            raise InputsChanged(
                f"The results directory {store.uri!r} holds systems computed from other contents of {shown}: "
                "the file changed since they ran, and mixing old and new results would be silent. Restore the "
                "file, use a new results directory, or pass --force to rerun the systems that read it."
            )
    return spec_changed


def plan(sweep: spec_mod.SweepSpec, store: ResultsStore, *, retry_failed: bool = True, force: bool = False):
    """Initialise/check the results directory and return (all systems, systems to run).

    Run it while holding ``store.lock()`` (``run_sweep`` does). With ``force`` and a
    changed spec, the old spec is first validated away from the directory: the new one
    is loaded again with its data (``spec.loads(..., check_data=True)``) before anything
    is retired; retired manifests move to ``stale/`` with a copy of the old spec, and
    come back by themselves when that spec is run again.
    """
    systems = sweep.systems()
    text = sweep.to_yaml()
    keys = {s.key for s in systems}
    spec_changed = check_target(sweep, store, force=force)
    if store.exists():
        if spec_changed:
            spec_mod.loads(text, source=sweep.source)  # raises SpecError before anything is touched
            store.save_retired_spec()
            store.retire_stale(keys)
            store.write_spec(text)
        # Idempotent recovery of a forced change interrupted half-way: manifests of other
        # specs never count, and this spec's own retired manifests come back (unless a
        # file they read has changed since).
        store.retire_stale(keys)
        by_key = {s.key: s for s in systems}
        store.restore_stale(keys, accept=lambda entry: _inputs_unchanged(entry, by_key))
        if force:
            changed, _ = _changed_inputs(systems, store)
            for key in changed:
                store.retire("manifest", key)
    else:
        store.init(text)
    store.clean_staging()
    # What each system reads, hashed when the run starts (and data is loaded), recorded at commit.
    _RUN_INPUTS.update({s.key: s.input_files() for s in systems})
    done = store.committed_keys()
    failed = store.failed_keys()
    todo = [s for s in systems if s.key not in done and (retry_failed or s.key not in failed)]
    return systems, todo


def _same_spec(recorded: str, text: str) -> bool:
    """Whether a recorded spec means the same sweep as ``text`` once read by this version.

    A newer version may add settings with defaults; re-reading the recorded file fills
    them in, so results written before an upgrade can still be resumed.
    """
    try:
        return spec_mod.loads(recorded, check_data=False).to_yaml() == text
    except spec_mod.SpecError:
        return False


def _cluster_cpus() -> int:
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    except Exception:
        return 1


def _joined() -> bool:
    """Whether the Ray this process is connected to has more than this machine's node (a cluster)."""
    try:
        return sum(1 for n in ray.nodes() if n.get("Alive")) > 1
    except Exception:  # noqa: BLE001
        return False


def _locked(run):
    """Run ``run_sweep`` holding the results directory's lock (``ResultsStore.lock``).

    Every refusal that needs no lock (another folder, another spec, changed inputs)
    comes first, so that a refused run leaves nothing behind, not even the lock file;
    then the lock, so that a second writer is refused before it plans, cleans staging
    files or computes anything.
    """

    @functools.wraps(run)
    def locked(sweep, results_dir, *args, force: bool = False, **kwargs):
        if kwargs.get("address") is not None:
            # An unusable cluster is refused before anything is written, even when this
            # process already holds a Ray connection (which the run would then reuse).
            check_address(kwargs["address"])
        store = ResultsStore(results_dir)
        check_target(sweep, store, force=force)
        with store.lock():
            return run(sweep, results_dir, *args, force=force, **kwargs)

    return locked


@_locked
def run_sweep(
    sweep: spec_mod.SweepSpec,
    results_dir: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    retry_failed: bool = True,
    force: bool = False,
    store_states: bool = False,
    max_in_flight: int | None = None,
    progress: bool | None = None,
    runtime_env: dict | None = None,
    cohort_cpus: float | None = None,
) -> SweepOutcome:
    """Run every system of ``sweep`` that is not yet committed in ``results_dir``.

    Args:
        sweep: the validated spec.
        results_dir: the sweep's results directory (local path or URI).
        address: Ray address (None: embedded local Ray, even when RAY_ADDRESS is set;
            "auto" or "host:port": join that cluster). An unreachable cluster, or a
            Ray Client ``ray://`` address, raises ``ClusterError`` before anything is written.
        num_cpus: CPUs of an embedded Ray (default: all).
        retry_failed: also rerun systems recorded as failed.
        force: accept a results directory recorded with a different spec.
        store_states: also store each system's final state.
        max_in_flight: system tasks submitted at once (default: the rule of
            docs/cluster.md, "How much runs at once": 2 x the CPUs the cluster has now,
            and at least 64 on a joined cluster, so that its autoscaler sees the demand).
            In lockstep mode: systems in flight, rounded up to one whole cohort.
        progress: show progress on stderr (default: a live line on a terminal, a plain
            status line every 30 s elsewhere, e.g. in ``ray job logs``); False: none.
        runtime_env: Ray runtime environment for the job (e.g. py_modules for clusters).
        cohort_cpus: lockstep mode only: CPUs reserved per cohort, shared by its actors
            (default: min(systems per cohort, cluster CPUs); see docs/lockstep.md).
    """
    if cohort_cpus is not None and not (is_real(cohort_cpus) and cohort_cpus > 0):
        raise ValueError(param_message("cohort_cpus", "run_sweep", "a number > 0 or None", cohort_cpus))
    start = time.perf_counter()
    store = ResultsStore(results_dir)
    systems, todo = plan(sweep, store, retry_failed=retry_failed, force=force)
    outcome = SweepOutcome(results_dir=store.uri, total=len(systems), skipped=len(systems) - len(todo))
    if not todo:
        outcome.seconds = time.perf_counter() - start
        return outcome

    started_ray = connect(address, num_cpus=num_cpus, runtime_env=runtime_env)
    bar = Progress(total=len(systems), already=outcome.skipped, rounds_per_system=sweep.simulation.rounds, enabled=progress)
    previous_sigint = signal.getsignal(signal.SIGINT)
    received: list[str] = []
    try:
        view = ClusterView(joined=address is not None or (not started_ray and _joined()), requested=max_in_flight)
        with stop_signals() as received:
            if sweep.simulation.selection == "lockstep":
                # Imported here: _lockstep builds on this module's setup and commit helpers.
                from recourse_ray.sweep._lockstep import run_cohorts

                run_cohorts(systems, todo, store, outcome, bar, store_states=store_states, view=view,
                            cohort_cpus=cohort_cpus)
            else:
                _execute(todo, store, outcome, bar, store_states, view)
    except KeyboardInterrupt as exc:
        outcome.interrupted = True
        name = exc.signal_name if isinstance(exc, Stopped) else (received[0] if received else None)
        how = f"Stopped by {name}" if name else "Interrupted"
        logger.warning("%s: in-flight systems were cancelled; committed systems are kept.", how)
    except StorageError as exc:
        # Disk full, permissions, a vanished bucket: stop cleanly. Every committed system
        # is intact (each write is staged and renamed), the one being written is not
        # committed and will be rerun by `resume`.
        outcome.storage_error = f"cannot write to the results directory {store.uri!r}: {exc}"
        logger.error("Stopping the sweep: %s", outcome.storage_error)
    finally:
        bar.close()
        # Only the main thread may set handlers (a sweep run from another thread changed none).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous_sigint)
        if started_ray:
            ray.shutdown()
    outcome.seconds = time.perf_counter() - start
    return outcome


@dataclass
class _Running:
    spec: spec_mod.SystemSpec
    gen: object
    rows: dict = field(default_factory=dict)
    started: float | None = None


def _submit_setup(todo) -> tuple[dict, dict, dict, dict]:
    """Shared setup: data split on the driver, pretraining as tasks, all passed by reference.

    Returns:
        (splits, models, vaes, memory): object refs keyed by data, model and VAE key, and
        the ``memory=`` resource (bytes) of a task on each data key's split.
    """
    splits, models, vaes, memory = {}, {}, {}, {}
    for s in todo:
        if s.data_key not in splits:
            train, test = prepare_data(
                s.dataset_preset,
                setup_seed=s.setup_seed,
                sweep_seed=s.sweep_seed,
                settings=s.setup,
                options=s.dataset_options,
            )
            splits[s.data_key] = ray.put((train, test))
            memory[s.data_key] = _tasks.memory_bytes(len(train.X) + len(test.X), train.X.shape[1])
    for s in todo:
        options = {"memory": memory[s.data_key]}
        if s.model_key not in models:
            models[s.model_key] = _tasks.pretrain_task.options(
                name=f"pretrain {s.dataset}/{s.model}/setup_seed={s.setup_seed}", **options).remote(splits[s.data_key], s)
        if s.needs_vae and s.vae_key not in vaes:
            vaes[s.vae_key] = _tasks.vae_task.options(
                name=f"vae {s.dataset}/setup_seed={s.setup_seed}", **options).remote(splits[s.data_key], s)
    return splits, models, vaes, memory


class _Execution:
    """The driver loop's state: queued and running systems, and what happens to their messages."""

    def __init__(self, todo, store: ResultsStore, outcome: SweepOutcome, bar: Progress, store_states: bool,
                 view: ClusterView) -> None:
        self.store, self.outcome, self.bar = store, outcome, bar
        self.store_states, self.view = store_states, view
        self.splits, self.models, self.vaes, self.memory = _submit_setup(todo)
        self.queue = deque(todo)
        self.running: dict[object, _Running] = {}

    def submit(self) -> None:
        """Keep ``view.limit`` systems in flight (the rule in ``_cluster.py``), re-read as the cluster changes."""
        self.view.refresh()
        while self.queue and len(self.running) < self.view.limit:
            s = self.queue.popleft()
            vae_ref = self.vaes.get(s.vae_key) if s.needs_vae else None
            gen = _tasks.system_task.options(name=_tasks.task_name(s), memory=self.memory[s.data_key]).remote(
                s, self.splits[s.data_key], self.models[s.model_key], vae_ref, self.store_states)
            self.running[gen] = _Running(spec=s, gen=gen)
        self.bar.update(running=sum(1 for r in self.running.values() if r.started is not None))

    def fail(self, run: _Running, first: str, full: str) -> None:
        s = run.spec
        self.store.write_failure(
            s.key,
            {**s.identity_columns(), "error": first, "traceback": full, "time": time.time(), "settings": s.resolved()},
        )
        self.outcome.failed[s.key] = first
        self.bar.update(failed=1)
        logger.error("System %s failed: %s", s.label, first)

    def receive(self, gen, now: float) -> None:
        """Take the next message of a ready stream: rows of a round, the summary, or an error."""
        run = self.running[gen]
        try:
            msg = ray.get(next(gen))
        except StopIteration:
            del self.running[gen]
            self.fail(run, "RuntimeError: the system task ended without its summary", "")
            return
        except (ray.exceptions.RayError, Exception) as exc:  # noqa: BLE001 - recorded, sweep goes on
            del self.running[gen]
            self.fail(run, *_tasks.format_exception(exc))
            return
        if msg["kind"] == "started":  # the task is running: its timeout counts from here
            run.started = now
            return
        if run.started is None:
            run.started = now
        if msg["kind"] == "round":
            if msg["round"] not in run.rows:
                self.bar.update(rounds=msg["round"] - max(run.rows, default=0))
            run.rows[msg["round"]] = msg["rows"]
            self.bar.update(rows=len(msg["rows"]))
        else:
            del self.running[gen]
            _commit(run, msg, self.store, self.store_states)
            self.outcome.done.append(run.spec.key)
            self.bar.update(done=1)

    def cancel_overdue(self, now: float) -> None:
        for gen, run in list(self.running.items()):
            timeout = run.spec.timeout_s
            if timeout and run.started is not None and now - run.started > timeout:
                ray.cancel(gen, force=True)
                del self.running[gen]
                self.fail(run, f"TimeoutError: the system exceeded its timeout of {timeout:g} s and was cancelled", "")

    def cancel_all(self) -> None:
        for gen in self.running:
            try:
                ray.cancel(gen, force=True)
            except Exception:  # noqa: BLE001 - best effort while stopping
                pass

    def run(self) -> None:
        self.submit()
        try:
            while self.running:
                ready, _ = ray.wait(list(self.running), num_returns=1, timeout=1.0)
                now = time.perf_counter()
                for gen in ready:
                    self.receive(gen, now)
                self.cancel_overdue(now)
                self.submit()
        except (KeyboardInterrupt, StorageError):
            self.cancel_all()
            raise


def _execute(todo, store: ResultsStore, outcome: SweepOutcome, bar: Progress, store_states: bool, view: ClusterView):
    _Execution(todo, store, outcome, bar, store_states, view).run()


def _commit(run: _Running, summary: dict, store: ResultsStore, store_states: bool, extra: dict | None = None) -> None:
    """Write one finished system: its state (optional), rows file, then manifest (``extra`` added to it)."""
    s = run.spec
    identity = s.identity_columns()
    rows = [{**identity, **row} for r in sorted(run.rows) for row in run.rows[r]]
    if store_states and summary.get("state") is not None:
        store.write_state(s.key, summary["state"])
    manifest = {
        "settings": s.resolved(),
        "timings": {
            "total_s": summary["seconds"],
            "pretrain_s": summary["pretrain_seconds"],
            "vae_s": summary["vae_seconds"],
            **{f"{k}_s": v for k, v in summary["phase_seconds"].items()},
        },
        "host": summary["host"],
        "node_id": summary["node_id"],
        "threads": summary["threads"],
        "max_rss_mb": summary["max_rss_mb"],
        "rss_window": summary.get("rss_window"),
        "setup_max_rss_mb": summary.get("setup_max_rss_mb"),
        # Wall-clock times (time.time()) at which the system's task started and ended.
        "started_at": summary.get("started_at"),
        "ended_at": summary.get("ended_at"),
        "versions": summary["versions"],
        "committed_at": time.time(),
        "pid": os.getpid(),
        "inputs": _RUN_INPUTS[s.key] if s.key in _RUN_INPUTS else s.input_files(),
        **(extra or {}),
    }
    store.write_system(identity, rows_to_table(rows), manifest)
