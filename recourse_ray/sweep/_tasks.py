"""The Ray tasks of a sweep: shared setup (pretraining) and one streaming task per system.

Tasks do no file I/O. A system task yields one message per evaluation round and a final
summary; a retried task replays from round 0 and, being deterministic, yields the same
rows (the driver keys buffered rows by round, so a replay cannot duplicate them).
"""

from __future__ import annotations

import platform
import resource
import socket
import time
import traceback

import ray

__all__ = ["pretrain_task", "vae_task", "system_task", "versions", "pin_threads"]


def pin_threads() -> int:
    """Give torch as many threads as the task was assigned CPUs (1 by default).

    A reused worker keeps the thread count torch fixed at import; without this a 1-CPU
    task may run many threads and oversubscribe the node.
    """
    import torch

    n = 1
    try:
        n = max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    except Exception:  # outside a Ray task (tests call the task bodies directly)
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
    return {"model": model, "seconds": time.perf_counter() - start}


def _pretrain_vae(split, spec) -> dict:
    from recourse_ray.simulation import pretrain_vae

    pin_threads()
    train, _ = split
    start = time.perf_counter()
    vae = pretrain_vae(
        train, setup_seed=spec.setup_seed, sweep_seed=spec.sweep_seed, settings=spec.setup, dataset_name=spec.dataset
    )
    return {"vae": vae, "seconds": time.perf_counter() - start}


def _run_system(spec, split, pretrained, vae_out, store_state: bool):
    """Body of the system task (a plain generator, callable without Ray)."""
    from recourse_ray.simulation import RecourseSystem, SystemIdentity

    threads = pin_threads()
    start = time.perf_counter()
    train, test = split
    model = pretrained["model"].clone()
    vae = vae_out["vae"].clone() if vae_out is not None else None
    system = RecourseSystem(
        train=train,
        test=test,
        model=model,
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
        vae=vae,
    )
    for out in system.run():
        yield {"kind": "round", "round": out.round, "rows": out.rows}
    summary = {
        "kind": "done",
        "seconds": time.perf_counter() - start,
        "phase_seconds": dict(system.timings),
        "pretrain_seconds": pretrained["seconds"],
        "vae_seconds": None if vae_out is None else vae_out["seconds"],
        "host": socket.gethostname(),
        "node_id": _node_id(),
        "threads": threads,
        # Peak RSS of the worker process so far (Linux reports KiB): an upper bound for this
        # task, since Ray reuses workers across tasks.
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": versions(),
        "state": system.state_arrays() if store_state else None,
    }
    yield summary


def _node_id() -> str | None:
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


def format_exception(exc: BaseException) -> tuple[str, str]:
    """(first line, full traceback) of an error, unwrapping Ray's task error."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    first = f"{type(inner).__name__}: {inner}".strip().splitlines()[0]
    full = str(exc) if isinstance(exc, ray.exceptions.RayError) else "".join(traceback.format_exception(exc))
    return first, full
