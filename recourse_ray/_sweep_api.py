"""The Python API of sweeps: what ``recourse-ray run | report`` do, callable from a script or a notebook.

``run_sweep`` loads a sweep file (or takes a ``SweepSpec``), runs it on Ray into
``<results>/<sweep name>`` and returns the ``SweepOutcome``; ``load_results`` opens a
results directory as a ``polars.LazyFrame`` with pinned column types; ``build_report``
writes the report. Mistakes raise ``ValueError`` / ``TypeError`` with the house message.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recourse_ray._config import param_message

__all__ = ["run_sweep", "load_results", "build_report"]


def _sweep(path_or_spec):
    from recourse_ray import spec as spec_mod

    if isinstance(path_or_spec, spec_mod.SweepSpec):
        return path_or_spec
    if isinstance(path_or_spec, (str, Path)):
        return spec_mod.load(path_or_spec)
    raise TypeError(param_message("path_or_spec", "run_sweep", "a sweep file path or a SweepSpec", path_or_spec))


def run_sweep(path_or_spec, *, results: str | Path = "results", address: str | None = None,
              num_cpus: int | None = None, retry_failed: bool = False, force: bool = False,
              store_states: bool = False, max_in_flight: int | None = None, progress: bool | None = None,
              py_modules: list[str] | None = None):
    """Run a sweep (as ``recourse-ray run``): every system not yet committed under ``results``.

    Args:
        path_or_spec: a sweep file (YAML) or a ``recourse_ray.spec.SweepSpec``.
        results: the results root (a local folder or ``s3://bucket/prefix``); the sweep
            writes to ``<results>/<sweep name>``. Default "results".
        address: Ray address; None: an embedded local Ray (or the Ray this process is
            already connected to); "auto" / "host:port": join that cluster.
        num_cpus: CPUs of the embedded Ray (default: all).
        retry_failed: also rerun systems recorded as failed (the CLI's ``--retry-failed``).
        force: accept a results directory recorded with a different spec.
        store_states: also store each system's final state.
        max_in_flight: systems in flight at once (default: docs/cluster.md's rule).
        progress: None: a live line on a terminal, a status line every 30 s elsewhere
            (a notebook); False: none.
        py_modules: local packages with user components, shipped to the workers.

    Returns:
        The ``SweepOutcome``: ``results_dir``, ``done``, ``failed``, ``exit_code``, ...

    Raises:
        recourse_ray.spec.SpecError: the sweep file is invalid.
        recourse_ray.sweep.ClusterError: the cluster at ``address`` cannot be used.
    """
    from recourse_ray.store import ResultsStore
    from recourse_ray.sweep import run_sweep as _run

    sweep = _sweep(path_or_spec)
    runtime_env = {"py_modules": [str(Path(m).resolve()) for m in py_modules]} if py_modules else None
    return _run(sweep, ResultsStore.for_sweep(results, sweep.name).uri, address=address, num_cpus=num_cpus,
                retry_failed=retry_failed, force=force, store_states=store_states, max_in_flight=max_in_flight,
                progress=progress, runtime_env=runtime_env)


def load_results(path: str | Path) -> pl.LazyFrame:
    """The rows of a sweep's results directory as a ``polars.LazyFrame`` with pinned types.

    One row per (system, round, metric): the system's coordinates (``dataset``, ``model``,
    ``generator``, ``seed``, ``system_key``), ``round``, ``scope``, ``metric``, ``value``
    (Float64), ``p_value`` (Float64), ... (``recourse_ray.store.POLARS_SCHEMA``).

    Args:
        path: the sweep's results directory (``<results>/<sweep name>``), local or a URI.

    Raises:
        recourse_ray.store.NotAResultsDirectory: ``path`` holds no sweep results.
    """
    from recourse_ray.store import ResultsStore

    store = ResultsStore(str(path))
    store.check()
    return store.scan_rows()


def build_report(path: str | Path, out: str | Path | None = None, **options) -> Path:
    """Write the report of a results directory (as ``recourse-ray report``); returns its folder.

    Args:
        path: the sweep's results directory.
        out: the report folder (default: ``reports/<sweep name>``).
        **options: passed to ``recourse_ray.report.build_report`` (``formats``, ``dpi``,
            ``trajectories``, ``states``, ``reference``, ``mapping``).
    """
    from recourse_ray.report import build_report as _build
    from recourse_ray.store import ResultsStore

    store = ResultsStore(str(path))
    store.check()
    return _build(str(path), out if out is not None else Path("reports") / store.sweep_name, **options)
