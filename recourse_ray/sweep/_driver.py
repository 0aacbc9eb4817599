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

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field

import ray

from recourse_ray import spec as spec_mod
from recourse_ray._config import is_real, param_message
from recourse_ray.simulation import prepare_data
from recourse_ray.store import ResultsStore, StorageError, rows_to_table
from recourse_ray.sweep import _tasks
from recourse_ray.sweep._progress import Progress

__all__ = ["SweepOutcome", "run_sweep", "plan", "connect", "SpecChanged"]

logger = logging.getLogger(__name__)


class SpecChanged(ValueError):
    """The results directory was produced by a different sweep spec."""


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
    """Connect to Ray (``None``: start an embedded local instance). Returns True if we started it."""
    if ray.is_initialized():
        return False
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address is None:
        # The embedded instance serves this process alone, on this machine; Ray 2.60's
        # default token auth adds nothing there (a user who sets RAY_AUTH_MODE wins).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def plan(sweep: spec_mod.SweepSpec, store: ResultsStore, *, retry_failed: bool = True, force: bool = False):
    """Initialise/check the results directory and return (all systems, systems to run)."""
    systems = sweep.systems()
    text = sweep.to_yaml()
    if store.exists():
        recorded = store.read_spec()
        if recorded != text and not _same_spec(recorded, text):
            if not force:
                raise SpecChanged(
                    f"The results directory {store.uri!r} was produced by a different sweep spec. "
                    "Use a new results directory, or pass --force to run the new spec there "
                    "(systems whose settings changed get new keys and are rerun; the others are kept)."
                )
            store.write_spec(text)
            store.retire_stale({s.key for s in systems})
    else:
        store.init(text)
    store.clean_staging()
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
        address: Ray address (None: embedded local Ray; "auto"; "ray://host:port").
        num_cpus: CPUs of an embedded Ray (default: all).
        retry_failed: also rerun systems recorded as failed.
        force: accept a results directory recorded with a different spec.
        store_states: also store each system's final state.
        max_in_flight: system tasks submitted at once (default: 2 x cluster CPUs). In
            lockstep mode: systems in flight, rounded up to one whole cohort.
        progress: draw a progress line (default: when stderr is a TTY).
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
    try:
        if sweep.simulation.selection == "lockstep":
            # Imported here: _lockstep builds on this module's setup and commit helpers.
            from recourse_ray.sweep._lockstep import run_cohorts

            run_cohorts(systems, todo, store, outcome, bar, store_states=store_states,
                        max_in_flight=max_in_flight or 2 * _cluster_cpus(), cohort_cpus=cohort_cpus)
        else:
            _execute(todo, store, outcome, bar, store_states, max_in_flight or 2 * _cluster_cpus())
    except KeyboardInterrupt:
        outcome.interrupted = True
        logger.warning("Interrupted: in-flight systems were cancelled; committed systems are kept.")
    except StorageError as exc:
        # Disk full, permissions, a vanished bucket: stop cleanly. Every committed system
        # is intact (each write is staged and renamed), the one being written is not
        # committed and will be rerun by `resume`.
        outcome.storage_error = f"cannot write to the results directory {store.uri!r}: {exc}"
        logger.error("Stopping the sweep: %s", outcome.storage_error)
    finally:
        bar.close()
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


def _submit_setup(todo) -> tuple[dict, dict, dict]:
    """Shared setup: data split on the driver, pretraining as tasks, all passed by reference.

    Returns:
        (splits, models, vaes): object refs keyed by data, model and VAE key.
    """
    splits, models, vaes = {}, {}, {}
    for s in todo:
        if s.data_key not in splits:
            splits[s.data_key] = ray.put(
                prepare_data(
                    s.dataset_preset,
                    setup_seed=s.setup_seed,
                    sweep_seed=s.sweep_seed,
                    settings=s.setup,
                    options=s.dataset_options,
                )
            )
    for s in todo:
        if s.model_key not in models:
            models[s.model_key] = _tasks.pretrain_task.remote(splits[s.data_key], s)
        if s.needs_vae and s.vae_key not in vaes:
            vaes[s.vae_key] = _tasks.vae_task.remote(splits[s.data_key], s)
    return splits, models, vaes


class _Execution:
    """The driver loop's state: queued and running systems, and what happens to their messages."""

    def __init__(self, todo, store: ResultsStore, outcome: SweepOutcome, bar: Progress, store_states: bool,
                 max_in_flight: int) -> None:
        self.store, self.outcome, self.bar = store, outcome, bar
        self.store_states, self.max_in_flight = store_states, max_in_flight
        self.splits, self.models, self.vaes = _submit_setup(todo)
        self.queue = deque(todo)
        self.running: dict[object, _Running] = {}

    def submit(self) -> None:
        while self.queue and len(self.running) < self.max_in_flight:
            s = self.queue.popleft()
            vae_ref = self.vaes.get(s.vae_key) if s.needs_vae else None
            gen = _tasks.system_task.remote(s, self.splits[s.data_key], self.models[s.model_key], vae_ref,
                                            self.store_states)
            self.running[gen] = _Running(spec=s, gen=gen)
        self.bar.update(running=len(self.running))

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


def _execute(todo, store: ResultsStore, outcome: SweepOutcome, bar: Progress, store_states: bool, max_in_flight: int):
    _Execution(todo, store, outcome, bar, store_states, max_in_flight).run()


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
        "versions": summary["versions"],
        "committed_at": time.time(),
        "pid": os.getpid(),
        **(extra or {}),
    }
    store.write_system(identity, rows_to_table(rows), manifest)
