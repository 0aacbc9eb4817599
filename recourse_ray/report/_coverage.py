"""What a sweep planned versus what its results dataset holds.

The report must be honest about partial sweeps: this module reads the resolved spec
(``sweep.yaml``), expands its grid into the expected systems, and sets them against
the committed manifests and the failure records. It also summarises the manifests'
provenance (software versions, hosts, timings) for the report's header.

Only reads; sits between ``store`` (the layout) and ``documents`` (the output).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from recourse_ray.store import ResultsStore

__all__ = ["SystemId", "Coverage", "coverage", "expected_systems", "provenance"]

logger = logging.getLogger(__name__)


class SystemId(NamedTuple):
    """The identity of one recourse system within a sweep."""

    dataset: str
    model: str
    generator: str
    seed: int


def _grid_label(entry: Any) -> str:
    """Name of a grid entry: a string as is; a mapping by its label/name/id key."""
    if isinstance(entry, Mapping):
        for key in ("label", "name", "id", "preset"):
            if key in entry:
                return str(entry[key])
    return str(entry)


def _seed_list(raw: Any) -> list[int] | None:
    """``seeds: 5`` means seeds 0..4 (as spec.py expands it); a list is taken as is."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return list(range(raw)) if raw >= 1 else None
    if isinstance(raw, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        return list(raw)
    return None


def expected_systems(spec: Mapping) -> tuple[list[SystemId] | None, dict[str, list]]:
    """Expand a parsed sweep spec's grid into the systems it plans.

    Args:
        spec: the parsed ``sweep.yaml`` (keys ``seeds`` and ``grid`` with lists
            ``dataset``, ``model``, ``generator``).

    Returns:
        ``(systems, axes)``: the planned systems in grid order (None when the spec
        has no usable grid) and the axis values in their declared order.
    """
    grid = spec.get("grid") if isinstance(spec, Mapping) else None
    seeds = _seed_list(spec.get("seeds", 1)) if isinstance(spec, Mapping) else None
    axes: dict[str, list] = {}
    if isinstance(grid, Mapping):
        for axis in ("dataset", "model", "generator"):
            values = grid.get(axis)
            if isinstance(values, list) and values:
                axes[axis] = [_grid_label(v) for v in values]
    if seeds is not None:
        axes["seed"] = seeds
    if set(axes) != {"dataset", "model", "generator", "seed"}:
        return None, axes
    systems = [SystemId(d, m, g, int(s)) for d, m, g, s in itertools.product(
        axes["dataset"], axes["model"], axes["generator"], axes["seed"])]
    return systems, axes


def _system_id(entry: Mapping) -> SystemId:
    return SystemId(str(entry.get("dataset")), str(entry.get("model")), str(entry.get("generator")), int(entry.get("seed", -1)))


@dataclass(frozen=True, kw_only=True)
class Coverage:
    """Planned, committed, failed and missing systems of one sweep.

    Attributes:
        name: the sweep's name (from the spec, else the directory name).
        spec_text: ``sweep.yaml`` as stored.
        spec: the parsed spec ({} when it does not parse).
        axes: grid axis values in declared order (``dataset``, ``model``, ``generator``, ``seed``).
        expected: planned systems, or None when the spec has no usable grid.
        committed: committed systems -> their system key.
        failed: failed (and not since committed) systems -> their failure record.
        missing: planned systems that are not committed, in grid order (failed ones included).
        unexpected: committed systems that the grid does not plan.
        manifests: all manifest entries.
    """

    name: str
    spec_text: str
    spec: dict
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
    try:
        spec = yaml.safe_load(spec_text) or {}
        if not isinstance(spec, dict):
            spec = {}
    except yaml.YAMLError as exc:
        logger.warning("sweep.yaml does not parse (%s); the report cannot list missing systems.", exc)
        spec = {}
    expected, axes = expected_systems(spec)
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
    name = str(spec.get("name") or store.path.rstrip("/").rsplit("/", 1)[-1])
    return Coverage(name=name, spec_text=spec_text, spec=spec, axes=axes, expected=expected,
                    committed=committed, failed=failed, missing=missing, unexpected=unexpected,
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
