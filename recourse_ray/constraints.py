"""Actionability constraints: what a counterfactual may change, and how far.

A dataset may declare :class:`Constraints` (a sweep file's ``datasets.<name>.constraints``
block, or ``simulate(..., constraints=...)``): immutable columns, bounds, one-way
columns, one-hot groups and integer columns, all named by the dataset's columns (a
categorical column ``SEX`` names all of its one-hot columns ``SEX=1``, ``SEX=2``).
:meth:`Constraints.bind` resolves them against one dataset, in the units the model sees
(after the split's z-scoring), as a :class:`Feasibility`: the projection that every
search applies (``generators/engine.py``, the rules per space in docs/constraints.md)
and the violation check that the simulation reports (``constraint_violation_share``).

Validation reports every problem at once, with the house error sentence: the shape of
the block (:meth:`Constraints.parse`), the columns against the dataset
(:meth:`Constraints.column_problems`) and the data themselves (:meth:`Constraints.bind`:
bounds or integer columns that the factual data already violate). This module imports
only the configuration helpers, so data, generators and the simulation can all use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recourse_ray._config import is_real, param_message, short_repr
from recourse_ray._registry import suggest

__all__ = ["Constraints", "Feasibility", "CONSTRAINT_KEYS", "TOLERANCE", "constraint_problems"]

#: The keys of a ``constraints:`` block, in the order of :meth:`Constraints.to_dict`.
CONSTRAINT_KEYS = ("immutable", "bounds", "increase_only", "decrease_only", "one_hot", "integer")

#: The tolerance of the violation check, relative: ``a`` satisfies ``a <= b`` when
#: ``a <= b + TOLERANCE * (1 + |b|)`` (likewise for ``>=`` and ``==``), in the model's
#: units. A projected point meets its constraints exactly in float32 except where a
#: standardized search maps a state back to features (rounding of ``mu + sigma * s``) and
#: where an integer column is rounded in raw units and z-scored again, both ~1e-7.
TOLERANCE = 1e-5

_OWNER = "Constraints"


def _names(value: Any, key: str, problems: list[str]) -> tuple[str, ...]:
    """A list of column names (a single name is a list of one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(sorted(set(value)))  # a set of columns: equal sets, equal constraints
    problems.append(param_message(key, _OWNER, "a list of column names", value))
    return ()


def _bounds(value: Any, problems: list[str]) -> tuple[tuple[str, float | None, float | None], ...]:
    """``{column: [low, high]}`` (either side None) as sorted ``(column, low, high)`` triples."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) and len(v) == 3 for v in value):
        value = {v[0]: [v[1], v[2]] for v in value}  # the normalised form, as given back by the dataclass
    if not isinstance(value, Mapping):
        problems.append(param_message("bounds", _OWNER, "a mapping {column: [low, high]} (null for an open side)", value))
        return ()
    out = []
    for col, pair in value.items():
        if not isinstance(col, str):
            problems.append(param_message("bounds", _OWNER, "a mapping whose keys are column names", col))
            continue
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(v is None or is_real(v) for v in pair)):
            problems.append(param_message(f"bounds.{col}", _OWNER, "a pair [low, high] of numbers or null", pair))
            continue
        low, high = (None if v is None else float(v) for v in pair)
        if any(v is not None and math.isnan(v) for v in (low, high)):
            problems.append(param_message(f"bounds.{col}", _OWNER, "a pair [low, high] without NaN", pair))
            continue
        if low is None and high is None:
            problems.append(f"the bounds of {col!r} leave both sides open (null, null); remove them")
            continue
        if low is not None and high is not None and low > high:
            problems.append(f"the bounds of {col!r} are contradictory: low {low:g} > high {high:g}")
            continue
        out.append((col, low, high))
    return tuple(sorted(out))


def _groups(value: Any, problems: list[str]) -> tuple[tuple[str, ...], ...] | None:
    """None (the dataset's groups) or a tuple of groups, each a tuple of names."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        problems.append(param_message("one_hot", _OWNER, "a list of one-hot groups (a categorical column's name, "
                                      "or a list of its one-hot columns), or null for the dataset's groups", value))
        return None
    out = []
    for g in value:
        if isinstance(g, str):
            out.append((g,))
        elif isinstance(g, (list, tuple)) and g and all(isinstance(c, str) for c in g):
            out.append(tuple(dict.fromkeys(g)))
        else:
            problems.append(param_message("one_hot", _OWNER, "a list whose entries are a column name or a list of "
                                          "column names", g))
    return tuple(out)


def constraint_problems(raw: Any, where: str = "constraints") -> list[str]:
    """Every problem of a ``constraints:`` block's shape (empty when it is well formed)."""
    return Constraints.parse(raw, where)[1]


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """What counterfactuals of one dataset may change (SPEC: none by default).

    Columns are the dataset's feature names; a categorical column's name (``SEX``) stands
    for all its one-hot columns (``SEX=1``, ``SEX=2``).

    Attributes:
        immutable: columns a counterfactual keeps at the factual's value.
        bounds: ``{column: (low, high)}``, either side None (open), in the column's raw
            units (before z-scoring); stored as sorted ``(column, low, high)`` triples.
        increase_only: columns that may only grow (``x' >= x``).
        decrease_only: columns that may only shrink (``x' <= x``).
        one_hot: the one-hot groups, each kept exactly one-hot (the largest entry becomes
            1, the others 0; ties to the first column); each group a categorical
            column's name or a list of columns. None (default): the dataset's own groups
            (the ``csv`` loader's ``categorical`` columns, the real-world loaders' study
            groups); ``()`` for none.
        integer: columns that hold integers in raw units (ordinal codes, counts): the
            reported counterfactual rounds them to the nearest integer within bounds.
    """

    immutable: tuple[str, ...] = ()
    bounds: tuple[tuple[str, float | None, float | None], ...] = ()
    increase_only: tuple[str, ...] = ()
    decrease_only: tuple[str, ...] = ()
    one_hot: tuple[tuple[str, ...], ...] | None = None
    integer: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key in ("immutable", "increase_only", "decrease_only", "integer"):
            object.__setattr__(self, key, _names(getattr(self, key), key, problems))
        object.__setattr__(self, "bounds", _bounds(self.bounds, problems))
        object.__setattr__(self, "one_hot", _groups(self.one_hot, problems))
        both = sorted(set(self.increase_only) & set(self.decrease_only))
        if both:
            problems.append(f"{', '.join(map(repr, both))} cannot be both increase_only and decrease_only "
                            "(list them under immutable)")
        if problems:
            raise ValueError("Invalid constraints: " + "; ".join(p.rstrip(".") for p in problems) + ".")

    # ------------------------------------------------------------------ description
    @classmethod
    def parse(cls, raw: Any, where: str = "constraints") -> tuple[Constraints | None, list[str]]:
        """A ``constraints:`` block as (Constraints, []) or (None, every problem).

        Args:
            raw: a mapping with keys among :data:`CONSTRAINT_KEYS`, or None (no constraints).
            where: the block's place, for messages (``"datasets.credit.constraints"``).
        """
        if raw is None:
            return cls(), []
        if not isinstance(raw, Mapping):
            return None, [f"'{where}' must be a mapping with keys among {', '.join(CONSTRAINT_KEYS)}. "
                          f"Got {short_repr(raw)} instead."]
        problems = [
            f"Unknown key {short_repr(k)} in '{where}'.{suggest(str(k), CONSTRAINT_KEYS)} "
            f"Valid keys: {', '.join(CONSTRAINT_KEYS)}."
            for k in raw if k not in CONSTRAINT_KEYS
        ]
        try:
            built = cls(**{k: v for k, v in raw.items() if k in CONSTRAINT_KEYS})
        except ValueError as exc:
            problems.append(f"'{where}': {str(exc).removeprefix('Invalid constraints: ')}")
            built = None
        return (None, problems) if problems else (built, [])

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Constraints:
        """Rebuild from :meth:`to_dict` (or a sweep file's block).

        Raises:
            ValueError: listing every problem of the block.
        """
        built, problems = cls.parse(raw)
        if problems:
            raise ValueError("Invalid constraints: " + " ".join(problems))
        return built

    def to_dict(self) -> dict[str, Any]:
        """The canonical description: only the keys that are set (``{}`` for none).

        Empty constraints describe as ``{}``, so that a system without constraints keeps
        the key it had before constraints existed.
        """
        out: dict[str, Any] = {}
        for key in ("immutable", "increase_only", "decrease_only", "integer"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.bounds:
            out["bounds"] = {c: [lo, hi] for c, lo, hi in self.bounds}
        if self.one_hot is not None:
            out["one_hot"] = [list(g) for g in self.one_hot]
        return {k: out[k] for k in CONSTRAINT_KEYS if k in out}

    @property
    def is_empty(self) -> bool:
        """Whether nothing is declared (the dataset's own one-hot groups still apply)."""
        return not self.to_dict()

    # ------------------------------------------------------------------ columns
    def column_problems(self, feature_names: Sequence[str], dataset_groups: Sequence[Sequence[str]] = ()) -> list[str]:
        """Every problem of the columns against one dataset's (empty when they resolve)."""
        return self._resolve(tuple(feature_names), dataset_groups)[1]

    def _resolve(self, names: tuple[str, ...], dataset_groups: Sequence[Sequence[str]]) -> tuple[dict, list[str]]:
        """The column indices of every constraint, and every problem."""
        index = {n: j for j, n in enumerate(names)}
        prefixes: dict[str, list[int]] = {}
        for j, n in enumerate(names):
            if "=" in n:
                prefixes.setdefault(n.split("=", 1)[0], []).append(j)
        choices = list(names) + sorted(prefixes)
        problems: list[str] = []

        def cols(name: str, key: str) -> list[int]:
            if name in index:
                return [index[name]]
            if name in prefixes:
                return list(prefixes[name])
            problems.append(f"the {key} column {name!r} is not a column of the data.{suggest(name, choices)} "
                            f"Columns: {', '.join(map(repr, choices[:30]))}{' ...' if len(choices) > 30 else ''}")
            return []

        out: dict[str, Any] = {}
        for key in ("immutable", "increase_only", "decrease_only", "integer"):
            out[key] = sorted({j for n in getattr(self, key) for j in cols(n, key)})
        out["bounds"] = []
        for c, lo, hi in self.bounds:
            js = cols(c, "bounds")
            if len(js) > 1:
                problems.append(f"bounds apply to one numeric column, but {c!r} names the one-hot group "
                                f"{', '.join(names[j] for j in js)}")
            elif js:
                out["bounds"].append((js[0], lo, hi))
        groups_given = self.one_hot if self.one_hot is not None else tuple(tuple(g) for g in dataset_groups)
        groups: list[list[int]] = []
        for g in groups_given:
            js = [j for n in g for j in cols(n, "one_hot")]
            if len(set(js)) < 2:
                if js:
                    problems.append(f"the one-hot group {list(g)!r} has fewer than 2 columns")
                continue
            groups.append(sorted(set(js)))
        seen: dict[int, int] = {}
        for gi, js in enumerate(groups):
            for j in js:
                if j in seen:
                    problems.append(f"the column {names[j]!r} is in two one-hot groups")
                seen[j] = gi
        out["one_hot"] = groups
        # A one-hot column moves only as its group does: a bound, a direction or rounding
        # of one column could leave a row with no 1 or with two.
        for key in ("increase_only", "decrease_only", "integer"):
            clash = [names[j] for j in out[key] if j in seen]
            if clash:
                problems.append(f"the one-hot column(s) {', '.join(map(repr, clash))} cannot be {key} "
                                "(a group stays one-hot; list the group under immutable to keep it)")
        clash = [names[j] for j, _, _ in out["bounds"] if j in seen]
        if clash:
            problems.append(f"the one-hot column(s) {', '.join(map(repr, clash))} cannot have bounds")
        immutable = set(out["immutable"])
        for js in groups:
            part = immutable & set(js)
            if part and part != set(js):
                problems.append(f"immutable holds part of the one-hot group {[names[j] for j in js]!r} "
                                f"({', '.join(names[j] for j in sorted(part))}); make the whole group immutable")
        for j, lo, hi in out["bounds"]:
            if j in out["integer"] and (lo is not None and hi is not None) and math.ceil(lo) > math.floor(hi):
                problems.append(f"the bounds [{lo:g}, {hi:g}] of the integer column {names[j]!r} hold no integer")
        return out, problems

    # ------------------------------------------------------------------ binding
    def bind(self, dataset: Any, *, check_data: bool = True) -> Feasibility | None:
        """Resolve against ``dataset`` in the units its ``X`` is in; None when nothing applies.

        Args:
            dataset: a :class:`~recourse_ray.data.Dataset` (its ``feature_names``,
                ``one_hot_groups``, ``X`` and, after a z-scoring split, ``standardizer``).
            check_data: also refuse data that already violate a bound, an integer column
                or a one-hot group (the factuals must be feasible).

        Raises:
            ValueError: listing every column and data problem at once.
        """
        names = tuple(dataset.feature_names)
        resolved, problems = self._resolve(names, getattr(dataset, "one_hot_groups", ()))
        d = len(names)
        scaler = getattr(dataset, "standardizer", None)
        mean = np.zeros(d) if scaler is None else np.asarray(scaler.mean, np.float64)
        scale = np.ones(d) if scaler is None else np.asarray(scaler.scale, np.float64)
        if problems:
            raise ValueError(f"Invalid constraints for dataset {dataset.name!r}: " + "; ".join(problems) + ".")
        feas = Feasibility.build(resolved, names, mean, scale)
        if feas is None:
            return None
        if check_data:
            problems = feas.data_problems(np.asarray(dataset.X))
            if problems:
                raise ValueError(f"Invalid constraints for dataset {dataset.name!r}: the data already violate "
                                 "them: " + "; ".join(problems) + ".")
        return feas


def _slack(b: np.ndarray) -> np.ndarray:
    """The check's slack at ``b``: ``TOLERANCE * (1 + |b|)``."""
    return TOLERANCE * (1.0 + np.abs(b))


@dataclass(frozen=True, kw_only=True, eq=False)
class Feasibility:
    """Constraints resolved against one dataset, in its model units (z-scores where standardised).

    Every array has one entry per feature (d).

    Attributes:
        feature_names: the columns.
        immutable / increase / decrease / integer: (d,) bool.
        low / high: (d,) float64 bounds in model units (-inf / inf when open; for an
            integer column the nearest integers inside the raw bounds).
        groups: the one-hot groups, each an int64 array of column indices.
        on / off: (d,) float64 the model-unit values of 1 and 0 of a one-hot column.
        mean / scale: (d,) float64 the z-scoring (raw = mean + scale * x).
    """

    feature_names: tuple[str, ...]
    immutable: np.ndarray
    increase: np.ndarray
    decrease: np.ndarray
    integer: np.ndarray
    low: np.ndarray
    high: np.ndarray
    groups: tuple[np.ndarray, ...]
    on: np.ndarray
    off: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    _tensors: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, resolved: dict, names: tuple[str, ...], mean: np.ndarray, scale: np.ndarray) -> Feasibility | None:
        """From :meth:`Constraints._resolve`'s indices; None when no constraint applies."""
        d = len(names)

        def mask(key: str) -> np.ndarray:
            m = np.zeros(d, bool)
            m[resolved[key]] = True
            return m

        integer = mask("integer")
        low, high = np.full(d, -np.inf), np.full(d, np.inf)
        for j, lo, hi in resolved["bounds"]:
            if integer[j]:
                lo = None if lo is None else math.ceil(lo)
                hi = None if hi is None else math.floor(hi)
            if lo is not None:
                low[j] = (lo - mean[j]) / scale[j]
            if hi is not None:
                high[j] = (hi - mean[j]) / scale[j]
        groups = tuple(np.asarray(g, np.int64) for g in resolved["one_hot"])
        feas = cls(
            feature_names=names, immutable=mask("immutable"), increase=mask("increase_only"),
            decrease=mask("decrease_only"), integer=integer, low=low, high=high, groups=groups,
            on=(1.0 - mean) / scale, off=(0.0 - mean) / scale, mean=mean, scale=scale,
        )
        active = feas.immutable.any() or feas.increase.any() or feas.decrease.any() or integer.any()
        active = active or np.isfinite(low).any() or np.isfinite(high).any() or bool(groups)
        return feas if active else None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def describe(self) -> dict[str, Any]:
        """What applies, by column name (for logs and tests)."""
        names = self.feature_names
        return {
            "immutable": [names[j] for j in np.flatnonzero(self.immutable)],
            "increase_only": [names[j] for j in np.flatnonzero(self.increase)],
            "decrease_only": [names[j] for j in np.flatnonzero(self.decrease)],
            "integer": [names[j] for j in np.flatnonzero(self.integer)],
            "bounded": [names[j] for j in np.flatnonzero(np.isfinite(self.low) | np.isfinite(self.high))],
            "one_hot": [[names[j] for j in g] for g in self.groups],
        }

    # ------------------------------------------------------------------ numpy: the check
    def violations(self, points: np.ndarray, factuals: np.ndarray) -> np.ndarray:
        """Which points violate a constraint, within :data:`TOLERANCE`.

        Args:
            points: (n, d) or (n, K, d) counterfactuals in model units.
            factuals: (n, d) the factuals they were searched for.

        Returns:
            (n,) or (n, K) bool; a non-finite point counts as a violation.
        """
        x = np.asarray(points, np.float64)
        f = np.asarray(factuals, np.float64)
        if x.ndim == 3:
            f = f[:, None, :]
        bad = ~np.isfinite(x)
        bad |= self.immutable & (np.abs(x - f) > _slack(f))
        bad |= self.increase & (x < f - _slack(f))
        bad |= self.decrease & (x > f + _slack(f))
        bad |= x < self.low - _slack(np.where(np.isfinite(self.low), self.low, 0.0))
        bad |= x > self.high + _slack(np.where(np.isfinite(self.high), self.high, 0.0))
        if self.integer.any():
            raw = self.mean + self.scale * x
            nearest = (np.round(raw) - self.mean) / self.scale
            bad |= self.integer & (np.abs(x - nearest) > _slack(nearest))
        out = bad.any(axis=-1)
        for g in self.groups:
            out |= ~self._one_hot_rows(x, g)
        return out

    def data_problems(self, X: np.ndarray) -> list[str]:
        """What the data ``X`` (N, d) already violate (bounds, integers, one-hot groups)."""
        X = np.asarray(X, np.float64)
        problems = []
        raw = self.mean + self.scale * X
        for j in range(self.n_features):
            lo, hi = self.low[j], self.high[j]
            if np.isfinite(lo) or np.isfinite(hi):
                out = (X[:, j] < lo - _slack(lo if np.isfinite(lo) else 0.0)) | (
                    X[:, j] > hi + _slack(hi if np.isfinite(hi) else 0.0))
                if out.any():
                    rlo, rhi = (self.mean[j] + self.scale[j] * v for v in (lo, hi))
                    problems.append(
                        f"{int(out.sum())} of {X.shape[0]} rows hold {self.feature_names[j]!r} outside its bounds "
                        f"[{rlo:g}, {rhi:g}] (the data range from {raw[:, j].min():g} to {raw[:, j].max():g})"
                    )
            if self.integer[j]:
                frac = np.abs(raw[:, j] - np.round(raw[:, j])) > TOLERANCE * (1 + np.abs(raw[:, j]))
                if frac.any():
                    problems.append(f"{int(frac.sum())} of {X.shape[0]} rows hold a non-integer "
                                    f"{self.feature_names[j]!r} (e.g. {raw[frac, j][0]:g})")
        for g in self.groups:
            bad = ~self._one_hot_rows(X, g)
            if bad.any():
                cols = [self.feature_names[j] for j in g]
                problems.append(f"{int(bad.sum())} of {X.shape[0]} rows are not one-hot in the group {cols!r}")
        return problems

    def _one_hot_rows(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """(...,) bool: where the group ``g``'s columns of ``x`` (..., d) hold exactly one 1 and 0s."""
        v = x[..., g]
        is_on = np.abs(v - self.on[g]) <= _slack(self.on[g])
        is_off = np.abs(v - self.off[g]) <= _slack(self.off[g])
        return (is_on | is_off).all(axis=-1) & (is_on.sum(axis=-1) == 1)

    # ------------------------------------------------------------------ torch: the projection
    def tensors(self, device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """The arrays as torch tensors on ``device`` (cached per device and dtype)."""
        key = (str(device), dtype)
        if key not in self._tensors:
            t = {k: torch.as_tensor(getattr(self, k), device=device) for k in ("immutable", "increase", "decrease", "integer")}
            for k in ("low", "high", "on", "off"):
                t[k] = torch.as_tensor(getattr(self, k), dtype=dtype, device=device)
            t["mean"] = torch.as_tensor(self.mean, dtype=torch.float64, device=device)
            t["scale"] = torch.as_tensor(self.scale, dtype=torch.float64, device=device)
            t["groups"] = [torch.as_tensor(g, device=device) for g in self.groups]
            t["bounded"] = bool(np.isfinite(self.low).any() or np.isfinite(self.high).any())
            self._tensors[key] = t
        return self._tensors[key]

    def project(self, points: torch.Tensor, factuals: torch.Tensor, *, final: bool = False) -> torch.Tensor:
        """The feasible point for each of ``points``, differentiable where it is not clamped.

        In this order: each one-hot group becomes one-hot (its largest entry 1, the others
        0; ties to the first column); with ``final``, integer columns are rounded to the
        nearest integer in raw units; one-way columns are clamped at the factual
        (``max(x', x)`` / ``min(x', x)``); bounds are clamped; immutable columns take the
        factual's value. For feasible factuals the result meets every constraint.

        Args:
            points: (m, K, d) points in model units.
            factuals: (m, d) the factuals.
            final: also round integer columns (done on the reported counterfactual only:
                during the search they stay continuous, so small steps can add up).

        Returns:
            (m, K, d) projected points, a new tensor.
        """
        t = self.tensors(points.device, points.dtype)
        f = factuals[:, None, :].to(points.dtype)
        x = points
        if t["groups"]:
            x = x.clone()
            for g in t["groups"]:
                sub = x.index_select(-1, g)
                pick = torch.nn.functional.one_hot(sub.argmax(dim=-1), g.numel()).bool()
                x[..., g] = torch.where(pick, t["on"][g], t["off"][g])
        if final and bool(t["integer"].any()):
            raw = torch.round(t["mean"] + t["scale"] * x.double())
            rounded = ((raw - t["mean"]) / t["scale"]).to(x.dtype)
            x = torch.where(t["integer"], rounded, x)
        x = torch.where(t["increase"], torch.maximum(x, f), x)
        x = torch.where(t["decrease"], torch.minimum(x, f), x)
        if t["bounded"]:
            x = torch.maximum(torch.minimum(x, t["high"]), t["low"])
        x = torch.where(t["immutable"], f.expand_as(x), x)
        return x

    def blocked(self, points: torch.Tensor, factuals: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """(m, K, d) bool: coordinates a step against ``grad`` must not move.

        An immutable column, and a column at a bound (or, one-way, at the factual) whose
        step would leave it: gradient steps and Greedy's choice then ignore them (a
        search space whose states are an increasing elementwise map of the points, so
        the gradient's sign is the point's direction).
        """
        t = self.tensors(points.device, points.dtype)
        f = factuals[:, None, :].to(points.dtype)
        up, down = grad < 0, grad > 0  # the step is -grad
        eps = 1e-6
        out = t["immutable"].expand_as(points).clone()
        if t["bounded"]:
            out |= up & (points >= t["high"] - eps * (1 + t["high"].abs()))
            out |= down & (points <= t["low"] + eps * (1 + t["low"].abs()))
        out |= t["increase"] & down & (points <= f + eps * (1 + f.abs()))
        out |= t["decrease"] & up & (points >= f - eps * (1 + f.abs()))
        return out
