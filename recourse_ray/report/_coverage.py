"""What a sweep planned versus what its results dataset holds.

The report must be honest about partial sweeps: this module reads the resolved spec
(``sweep.yaml``) with ``recourse_ray.spec``, whose grid expansion (``SweepSpec.systems``)
gives the expected systems, and sets them against the committed manifests and the
failure records. It also summarises the manifests' provenance (software versions,
hosts, timings) for the report's header.

Only reads; sits between ``store`` (the layout) and ``documents`` (the output).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from recourse_ray import spec as spec_mod
from recourse_ray.store import ResultsStore

__all__ = ["SystemId", "Coverage", "coverage", "provenance"]

logger = logging.getLogger(__name__)


class SystemId(NamedTuple):
    """The identity of one recourse system within a sweep (``store.PARTITION_COLUMNS``)."""

    dataset: str
    model: str
    generator: str
    seed: int


def _read_sweep(spec_text: str, source: str) -> tuple[spec_mod.SweepSpec | None, list[str]]:
    """The recorded spec as a ``SweepSpec``, or None with the reasons it cannot be read.

    Results written by an older version may hold a ``sweep.yaml`` that this version no
    longer accepts (a removed setting, a component that is not importable here); the
    report then still works, without the planned grid.
    """
    try:
        return spec_mod.loads(spec_text, source=source, check_data=False), []
    except spec_mod.SpecError as exc:
        problems = list(exc.problems)
    except (ValueError, TypeError, KeyError, ImportError, AttributeError) as exc:
        # a component named by old results may fail in its own way; the report must still be written
        problems = [f"{type(exc).__name__}: {exc}"]
    logger.warning("%s cannot be read as a sweep file by this version (%s); the report cannot list missing systems.",
                   source, " ".join(problems))
    return None, problems


def _axes(sweep: spec_mod.SweepSpec) -> dict[str, list]:
    return {**{axis: list(sweep.grid[axis]) for axis in spec_mod.GRID_AXES}, "seed": list(sweep.seeds)}


def _system_id(entry: Mapping) -> SystemId:
    return SystemId(str(entry.get("dataset")), str(entry.get("model")), str(entry.get("generator")), int(entry.get("seed", -1)))


@dataclass(frozen=True, kw_only=True)
class Coverage:
    """Planned, committed, failed and missing systems of one sweep.

    Attributes:
        name: the sweep's name (from the spec, else the directory name).
        description: the spec's description ("" when it has none or does not parse).
        spec_text: ``sweep.yaml`` as stored.
        sweep: the parsed spec, or None when this version cannot read it.
        spec_problems: why the spec cannot be read (empty when ``sweep`` is not None).
        axes: grid axis values in declared order (``dataset``, ``model``, ``generator``, ``seed``).
        expected: planned systems, or None when the spec cannot be read.
        committed: committed systems -> their system key.
        failed: failed (and not since committed) systems -> their failure record.
        missing: planned systems that are not committed, in grid order (failed ones included).
        unexpected: committed systems that the grid does not plan.
        manifests: all manifest entries.
    """

    name: str
    description: str
    spec_text: str
    sweep: spec_mod.SweepSpec | None = field(repr=False)
    spec_problems: list[str]
    axes: dict[str, list]
    expected: list[SystemId] | None
    committed: dict[SystemId, str]
    failed: dict[SystemId, dict]
    missing: list[SystemId]
    unexpected: list[SystemId]
    manifests: list[dict] = field(repr=False)

    @property
    def not_run(self) -> list[SystemId]:
        """Missing systems that have no failure record (never run, or interrupted)."""
        return [s for s in self.missing if s not in self.failed]

    def expected_seeds(self) -> int | None:
        """Seeds planned per (dataset, model, generator), or None if unknown."""
        seeds = self.axes.get("seed")
        return len(seeds) if seeds else None

    def order(self, axis: str, present: list[str] | set[str] = ()) -> list:
        """Axis values in grid order, followed by any extra values seen in the data (sorted)."""
        declared = list(self.axes.get(axis, []))
        extra = sorted(set(present) - set(declared), key=str)
        return declared + extra


def coverage(store: ResultsStore) -> Coverage:
    """Compare a results dataset's committed and failed systems against its spec's grid."""
    spec_text = store.read_spec()
    sweep, problems = _read_sweep(spec_text, store.spec_uri)
    expected = None if sweep is None else [SystemId(s.dataset, s.model, s.generator, s.seed) for s in sweep.systems()]
    manifests = store.manifests()
    committed = {_system_id(m): str(m.get("system_key")) for m in manifests}
    failed = {}
    for key, record in store.failures().items():
        sid = _system_id({**record, "seed": record.get("seed", -1)})
        if sid not in committed:
            failed[sid] = {**record, "system_key": record.get("system_key", key)}
    if expected is None:
        missing = sorted(failed)
        unexpected: list[SystemId] = []
    else:
        planned = set(expected)
        missing = [s for s in expected if s not in committed]
        unexpected = sorted(s for s in committed if s not in planned)
    return Coverage(name=sweep.name if sweep else store.sweep_name, description=sweep.description if sweep else "",
                    spec_text=spec_text, sweep=sweep, spec_problems=problems, axes=_axes(sweep) if sweep else {},
                    expected=expected, committed=committed, failed=failed, missing=missing, unexpected=unexpected,
                    manifests=manifests)


def provenance(manifests: list[Mapping]) -> dict[str, Any]:
    """Summarise where and with what the committed systems ran.

    Returns:
        A dict with ``versions`` ({package: Counter(version -> n systems)}), ``hosts``
        (Counter), and ``timings`` ({name: {"total", "mean", "max", "n"}}) over the
        numeric entries of the manifests' ``timings``.
    """
    versions: dict[str, Counter] = {}
    hosts: Counter = Counter()
    timing_values: dict[str, list[float]] = {}
    for m in manifests:
        for pkg, ver in (m.get("versions") or {}).items():
            versions.setdefault(str(pkg), Counter())[str(ver)] += 1
        if m.get("host") is not None:
            hosts[str(m["host"])] += 1
        for name, value in (m.get("timings") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                timing_values.setdefault(str(name), []).append(float(value))
    timings = {
        name: {"total": sum(v), "mean": sum(v) / len(v), "max": max(v), "n": len(v)}
        for name, v in sorted(timing_values.items())
    }
    return {"versions": dict(sorted(versions.items())), "hosts": hosts, "timings": timings}
