"""The Ray tasks and actors of a sweep: shared setup (pretraining), one streaming task per
system, and one actor per system of a lockstep cohort.

Tasks do no file I/O. A system task yields one message per evaluation round and a final
summary; a retried task replays from round 0 and, being deterministic, yields the same
rows (the driver keys buffered rows by round, so a replay cannot duplicate them). In
lockstep mode (``simulation.selection: lockstep``) a ``SystemActor`` holds one system
between rounds and the coordinator in ``_lockstep.py`` drives it round by round.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import socket
import time
import traceback

import ray

__all__ = ["pretrain_task", "vae_task", "system_task", "CohortMember", "SystemActor", "versions", "pin_threads",
           "format_exception", "task_name", "memory_bytes", "BASE_MEMORY_MB", "MEMORY_PER_VALUE_BYTES",
           "start_peak_window", "peak_rss_mb"]

#: Peak RSS of a worker running one system before its data counts (torch, numba, Ray's
#: worker), measured at 431-437 MB on ``overlapping`` with 200 to 10,000 rows (Linux,
#: torch 2.13 CPU); rounded up.
BASE_MEMORY_MB = 512
#: Extra peak RSS per value of the split (rows x features): measured 18 MB for 10,000 x 2
#: (about 900 bytes a value: copies in the search, retraining and metric batches); rounded up.
MEMORY_PER_VALUE_BYTES = 1024


def memory_bytes(n_rows: int, n_features: int) -> int | None:
    """Ray ``memory=`` resource of one system (or pretraining) task on a split of that size.

    Declared so that Ray does not place more tasks on a node than its RAM holds
    (``BASE_MEMORY_MB + MEMORY_PER_VALUE_BYTES x rows x features``, whole MiB).

    Ray's autoscaler places such a task only on a node type that advertises ``memory``
    (the AWS provider fills it in from the instance type; hand-written node types must
    declare it): ``RECOURSE_RAY_TASK_MEMORY=0`` leaves the resource out (returns None).

    Args:
        n_rows: rows of the split (train + test). n_features: its features.
    """
    if os.environ.get("RECOURSE_RAY_TASK_MEMORY", "1").strip() in ("0", "off", "false"):
        return None
    extra = MEMORY_PER_VALUE_BYTES * max(0, int(n_rows)) * max(1, int(n_features))
    return (BASE_MEMORY_MB + -(-extra // 2**20)) * 2**20


def task_name(spec, what: str = "system") -> str:
    """The Ray task name of a system's task: what the dashboard, ``ray list tasks`` and the timeline show."""
    return f"{what} {spec.dataset}/{spec.model}/{spec.generator}/seed={spec.seed}"


def start_peak_window() -> str:
    """Free what the last task left and start measuring this task's peak RSS afresh.

    Ray reuses worker processes, so the process's lifetime peak (``ru_maxrss``) mixes
    tasks. Garbage collection and glibc's ``malloc_trim(0)`` return the previous task's
    freed memory to the system; writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0)
    resets the kernel's high-water mark, so :func:`peak_rss_mb` then reads the peak of
    this task alone (libraries already loaded still count: they are resident).

    Returns:
        ``"task"`` when the window was reset, ``"process"`` where it cannot be (the peak
        read later is then the process's lifetime peak, an upper bound for the task).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "task"
    except OSError:
        return "process"


def peak_rss_mb() -> float:
    """Peak resident set size (MiB) since :func:`start_peak_window` (``VmHWM``), or the process's (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pin_threads() -> int:
    """Give torch as many threads as the task was assigned CPUs (1 by default).

    A reused worker keeps the thread count torch fixed at import; without this a 1-CPU
    task may run many threads and oversubscribe the node.
    """
    import torch

    n = 1
    # Outside Ray (tests call the task bodies directly) asking would start a local Ray.
    if ray.is_initialized():
        try:
            n = max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        except Exception:  # the driver, not a task
            pass
    torch.set_num_threads(n)
    return n


def versions() -> dict:
    import numpy
    import torch

    import recourse_ray

    return {
        "python": platform.python_version(),
        "recourse_ray": recourse_ray.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ray": ray.__version__,
    }


def _pretrain(split, spec) -> dict:
    from recourse_ray.simulation import pretrain_model

    window = start_peak_window()
    pin_threads()
    train, _ = split
    start = time.perf_counter()
    model = pretrain_model(
        spec.model_preset,
        train,
        setup_seed=spec.setup_seed,
        sweep_seed=spec.sweep_seed,
        settings=spec.setup,
        options=spec.model_params,
        dataset_name=spec.dataset,
    )
    return {"model": model, "seconds": time.perf_counter() - start, "max_rss_mb": peak_rss_mb(), "rss_window": window}


def _pretrain_vae(split, spec) -> dict:
    from recourse_ray.simulation import pretrain_vae

    window = start_peak_window()
    pin_threads()
    train, _ = split
    start = time.perf_counter()
    vae = pretrain_vae(
        train, setup_seed=spec.setup_seed, sweep_seed=spec.sweep_seed, settings=spec.setup, dataset_name=spec.dataset,
        owner=spec.vae_owner,
    )
    return {"vae": vae, "seconds": time.perf_counter() - start, "max_rss_mb": peak_rss_mb(), "rss_window": window}


def _build_system(spec, split, pretrained, vae_out):
    """A system's initial state from the shared setup (the pieces every execution mode uses)."""
    from recourse_ray.simulation import RecourseSystem, SystemIdentity

    train, test = split
    return RecourseSystem(
        train=train,
        test=test,
        model=pretrained["model"].clone(),
        generator=spec.create_generator(),
        identity=SystemIdentity(
            dataset=spec.dataset,
            model=spec.model,
            generator=spec.generator,
            seed=spec.seed,
            setup_seed=spec.setup_seed,
            sweep_seed=spec.sweep_seed,
            key=spec.key,
        ),
        settings=spec.simulation,
        metric_settings=spec.metrics,
        vae=vae_out["vae"].clone() if vae_out is not None else None,
    )


def _summary(system, *, seconds: float, pretrained, vae_out, threads: int, store_state: bool, window: str) -> dict:
    """The final message of a system: timings, where it ran, memory, versions and (optionally) its state."""
    setup_peaks = [p.get("max_rss_mb") for p in (pretrained, vae_out) if p is not None and p.get("max_rss_mb")]
    return {
        "kind": "done",
        "seconds": seconds,
        "phase_seconds": dict(system.timings),
        "pretrain_seconds": pretrained["seconds"],
        "vae_seconds": None if vae_out is None else vae_out["seconds"],
        "host": socket.gethostname(),
        "node_id": _node_id(),
        "threads": threads,
        # Peak RSS of this system's task (rss_window "task"), or of the worker process so
        # far where the peak cannot be reset ("process": an upper bound, Ray reuses workers).
        "max_rss_mb": peak_rss_mb(),
        "rss_window": window,
        # The largest peak of the pretraining tasks whose model / VAE this system used.
        "setup_max_rss_mb": max(setup_peaks) if setup_peaks else None,
        "versions": versions(),
        "state": system.state_arrays() if store_state else None,
    }


def _run_system(spec, split, pretrained, vae_out, store_state: bool):
    """Body of the system task (a plain generator, callable without Ray).

    The first message says that the task started (the driver's timeout clock starts
    there, so a system that hangs before its first round is still cancelled).
    """
    started_at = time.time()
    yield {"kind": "started", "time": started_at, "node_id": _node_id(), "pid": os.getpid()}
    window = start_peak_window()
    threads = pin_threads()
    start = time.perf_counter()
    system = _build_system(spec, split, pretrained, vae_out)
    for out in system.run():
        yield {"kind": "round", "round": out.round, "rows": out.rows}
    summary = _summary(system, seconds=time.perf_counter() - start, pretrained=pretrained, vae_out=vae_out,
                       threads=threads, store_state=store_state, window=window)
    yield {**summary, "started_at": started_at, "ended_at": time.time()}


class CohortMember:
    """One system of a lockstep cohort, driven round by round (the body of ``SystemActor``).

    The coordinator (``sweep/_lockstep.py``) calls :meth:`start`, then :meth:`advance`
    for t = 1..rounds with the cohort's intersected candidate set, then :meth:`finish`.
    Each call returns this system's candidate set for the next round, so a round costs one
    call per system. One member object serves several cohorts in turn (``start``
    replaces the system), which spares a worker process start per system and cohort.
    A plain class, callable without Ray (tests drive it directly).
    """

    def __init__(self) -> None:
        import torch

        # One thread: the actor holds a fraction of a CPU (see sweep/_lockstep.py).
        torch.set_num_threads(1)
        self.system = None

    def start(self, spec, split, pretrained, vae_out) -> dict:
        """Build the system and evaluate round 0.

        Returns:
            {"rows": round-0 rows, "candidates": (n_train,) bool, "pid": worker process}.
        """
        self._window = start_peak_window()
        self._clock = (time.perf_counter(), time.process_time())
        self._started_at = time.time()
        # Only the setup's timings and peaks are kept: the model and VAE are cloned into the system.
        self._setup = tuple(None if out is None else {k: out.get(k) for k in ("seconds", "max_rss_mb")}
                            for out in (pretrained, vae_out))
        self.system = _build_system(spec, split, pretrained, vae_out)
        out = self.system.start()
        return {"rows": out.rows, "candidates": self.system.candidates(), "pid": os.getpid()}

    def advance(self, t: int, candidates, want_candidates: bool = True) -> dict:
        """Run round ``t`` selecting from ``candidates`` ((n_train,) bool, the cohort's intersection).

        Returns:
            {"rows": the round's rows or None (not an evaluation round), "candidates": the
            candidate set under the retrained model (None unless ``want_candidates``)}.
        """
        out = self.system.advance(t, candidates=candidates)
        return {"rows": None if out is None else out.rows,
                "candidates": self.system.candidates() if want_candidates else None}

    def finish(self, store_state: bool) -> dict:
        """The system's summary (as ``_run_system``'s last message) plus ``cpu_s``, its process CPU time."""
        wall0, cpu0 = self._clock
        pretrained, vae_out = self._setup
        summary = _summary(self.system, seconds=time.perf_counter() - wall0, pretrained=pretrained, vae_out=vae_out,
                           threads=1, store_state=store_state, window=self._window)
        summary["cpu_s"] = time.process_time() - cpu0
        summary["started_at"], summary["ended_at"] = self._started_at, time.time()
        self.system = self._setup = None
        return summary


def _node_id() -> str | None:
    if not ray.is_initialized():  # asking would start a local Ray
        return None
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


@ray.remote(num_cpus=1, max_retries=3)
def pretrain_task(split, spec) -> dict:
    return _pretrain(split, spec)


@ray.remote(num_cpus=1, max_retries=3)
def vae_task(split, spec) -> dict:
    return _pretrain_vae(split, spec)


@ray.remote(num_cpus=1, max_retries=3, num_returns="streaming")
def system_task(spec, split, pretrained, vae_out, store_state: bool):
    yield from _run_system(spec, split, pretrained, vae_out, store_state)


# An actor is not restarted and its calls are not retried: a lost member makes the
# coordinator rerun the whole cohort (sweep/_lockstep.py), since the others' state has
# moved on. Its CPUs are set per cohort with .options(num_cpus=...).
SystemActor = ray.remote(max_restarts=0, max_task_retries=0)(CohortMember)


def format_exception(exc: BaseException) -> tuple[str, str]:
    """(first line, full traceback) of an error, unwrapping Ray's task error."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    first = f"{type(inner).__name__}: {inner}".strip().splitlines()[0]
    full = str(exc) if isinstance(exc, ray.exceptions.RayError) else "".join(traceback.format_exception(exc))
    return first, full
