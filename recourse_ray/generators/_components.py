"""What every pluggable piece of a generator shares: names, settings, descriptions, checks.

A generator's pieces (search spaces, step rules, convergence rules, loss terms) are
frozen dataclasses whose fields are their settings. This module holds the few rules
that apply to all of them, so that a new piece is one class in one file:

- its *kind* is the name it is registered under, or, for a class registered nowhere,
  its import path ``"package.module:Class"``, which any process can import again;
- its *override keys* (the flat keys ``create`` accepts for it, e.g. ``step_size``)
  are its ``override_keys`` class variable, by default its dataclass fields except
  its added options (below);
- its *description* is ``{"kind": KIND, **fields}`` with plain JSON values, and
  :func:`build_component` turns such a description (or a bare kind) back into it;
- an *added option* (:func:`added_option`) is a setting added to a component after its
  description was in use (the reference-compatible mode's switches): it is described
  only when it differs from its default, so every existing description, and every
  system key hashed from one, stays what it was;
- :func:`protocol_problems` says which members of its protocol it lacks.

Where it sits: imported by the piece modules (``spaces``, ``steps``, ``convergence``,
``terms``), the engine and the presets; it imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recourse_ray._config import is_int, is_real, short_repr
from recourse_ray._registry import Registry, import_object, suggest

__all__ = [
    "added_option",
    "is_added_option",
    "raise_problems",
    "component_kind",
    "component_fields",
    "component_dict",
    "override_keys",
    "unknown_field_message",
    "build_component",
    "protocol_members",
    "protocol_problems",
]


# The dataclass field metadata key that marks an added option.
_ADDED_OPTION = "recourse_ray.added_option"


def added_option(default: Any) -> Any:
    """A dataclass field for a setting added after the component's description was fixed.

    Use it as ``random_ties: bool = added_option(False)``. Such a field is left out of the
    component's description while it holds its default (:func:`component_dict`) and is
    not a flat override key unless the class lists it in ``override_keys``; it is set in
    the component's mapping instead (``step_rule={"kind": "greedy", "random_ties": True}``).

    Args:
        default: the field's default, an immutable value (bool, number, str or None).
    """
    return dataclasses.field(default=default, metadata={_ADDED_OPTION: True})


def is_added_option(f: dataclasses.Field) -> bool:
    """Whether the dataclass field ``f`` was declared with :func:`added_option`."""
    return bool(f.metadata.get(_ADDED_OPTION, False))


def raise_problems(problems: list[str]) -> None:
    """Raise one ValueError holding every message of ``problems`` (nothing when empty)."""
    if problems:
        raise ValueError(" ".join(problems))


def component_kind(registry: Registry, component: Any) -> str:
    """The name under which ``component``'s class can be built again in another process.

    Args:
        registry: the registry of the component's role (``STEP_RULES``, ``TERMS``, ...).
        component: an instance (or the class itself).

    Returns:
        The registered name of the class, or its import path ``"module:QualName"``.

    Raises:
        ValueError: if the class is registered nowhere and cannot be imported by path
            (defined inside a function or in ``__main__``): another process could not
            rebuild it.
    """
    cls = component if isinstance(component, type) else type(component)
    for name, entry in registry.items():
        if entry is cls:
            return name
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__":
        why = "it is defined in __main__"
    elif "<locals>" in cls.__qualname__:
        why = "it is defined inside a function"
    else:
        try:
            why = None if import_object(path, registry.kind) is cls else f"{path!r} imports another object"
        except KeyError:
            why = f"{path!r} cannot be imported"
    if why:
        raise ValueError(
            f"The {registry.kind} {cls.__qualname__} cannot be named by an import path ({why}), so no other "
            f"process could rebuild it: define it at the top level of an importable module, or register it."
        )
    return path


def component_fields(cls: type) -> list[str]:
    """The settings of a component class: its init dataclass fields, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def override_keys(component: Any) -> tuple[str, ...]:
    """The flat override keys a component (instance or class) declares.

    A class may set ``override_keys: ClassVar[tuple[str, ...]]`` (a subset of its fields);
    by default every dataclass field but the added options (:func:`added_option`) is an
    override key.
    """
    cls = component if isinstance(component, type) else type(component)
    declared = getattr(cls, "override_keys", None)
    if declared is not None:
        return tuple(declared)
    if not dataclasses.is_dataclass(cls):
        return ()
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and not is_added_option(f))


def _declared_type(cls: type, name: str) -> object:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.type
    return None


def _plain(value: Any, declared: object, where: str) -> Any:
    """``value`` as a JSON value; a number follows its field's declared type (1 -> 1.0 for a float)."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return bool(value) if isinstance(value, np.bool_) else value
    # Equal settings must give equal descriptions: an int given for a float field is a float.
    if declared in (float, "float") and is_real(value):
        return float(value)
    if is_int(value):
        return int(value)
    if is_real(value):
        return float(value)
    if isinstance(value, (Sequence, np.ndarray)):
        return [_plain(v, None, where) for v in value]
    raise TypeError(f"The setting {where} cannot be described as JSON: a {type(value).__name__} ({short_repr(value)}).")


def component_dict(registry: Registry, component: Any) -> dict:
    """``{"kind": KIND, **fields}`` with plain JSON values, fields in sorted order.

    An added option (:func:`added_option`) appears only when it differs from its default.

    Raises:
        ValueError: if the component cannot be named in another process (see :func:`component_kind`).
        TypeError: if a field holds a value with no JSON form.
    """
    cls = type(component)
    kind = component_kind(registry, component)
    at_default = {
        f.name for f in dataclasses.fields(cls) if is_added_option(f) and getattr(component, f.name) == f.default
    }
    values = {
        name: _plain(getattr(component, name), _declared_type(cls, name), f"{name!r} of the {registry.kind} {kind!r}")
        for name in sorted(component_fields(cls))
        if name not in at_default
    }
    return {"kind": kind, **values}


def unknown_field_message(key: object, what: str, valid: Sequence[str]) -> str:
    """``unknown parameter 'x' of the step rule 'greedy'. Did you mean 'y'? Valid parameters: ...``"""
    return (
        f"unknown parameter {short_repr(key)} of {what}.{suggest(str(key), list(valid))} "
        f"Valid parameters: {', '.join(valid) or '(none)'}"
    )


def build_component(registry: Registry, spec: Any, where: str) -> tuple[Any, list[str]]:
    """Build a component from a kind or a description ``{"kind": KIND, **fields}``.

    Args:
        registry: the registry of the role; ``KIND`` is a registered name or an import path.
        spec: ``KIND`` or a mapping with a ``kind`` key and field values.
        where: the key being built (``"step_rule"``), the prefix of every message.

    Returns:
        (component or None, problems): None with at least one problem when it cannot be
        built. Sequences (lists in a JSON description) become tuples, so that a frozen
        component stays hashable and equals the one described.
    """
    if isinstance(spec, Mapping):
        fields_ = dict(spec)
        if "kind" not in fields_:
            return None, [f"'{where}' needs a 'kind' key (a registered {registry.kind} name or an import path). "
                          f"Got {short_repr(dict(spec))} instead"]
        kind = fields_.pop("kind")
    else:
        kind, fields_ = spec, {}
    try:
        cls = registry.get(kind)
    except KeyError as exc:
        return None, [f"'{where}': {exc.args[0]}"]
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return None, [
            f"'{where}': {kind!r} must name a dataclass (its fields are its settings). Got {short_repr(cls)} instead"
        ]
    valid = component_fields(cls)
    problems = [f"'{where}': {unknown_field_message(k, f'the {registry.kind} {kind!r}', valid)}"
                for k in fields_ if k not in valid]
    if problems:
        return None, problems
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fields_.items()}
    try:
        return cls(**values), []
    except (TypeError, ValueError) as exc:
        return None, [f"'{where}': {exc}"]


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The attributes and methods a ``typing.Protocol`` class declares (its own, not inherited)."""
    names = set(getattr(protocol, "__annotations__", {}))
    names.update(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))
    return tuple(sorted(names))


def protocol_problems(component: Any, protocol: type, where: str, owner: str) -> list[str]:
    """Why ``component`` cannot serve as ``protocol`` (empty when it can).

    Args:
        component: the object to check.
        protocol: a ``runtime_checkable`` Protocol (``StepRule``, ...).
        where: the parameter it was passed as (``"step_rule"``).
        owner: who received it, for the message (``"Generator"``).
    """
    expected = f"a {protocol.__name__} instance (a dataclass with {', '.join(protocol_members(protocol))})"
    lead = f"The '{where}' parameter of {owner} must be {expected}"
    if isinstance(component, type):
        name = component.__qualname__
        return [f"{lead}. Got the class {name} instead: pass an instance, {name}()."]
    if not isinstance(component, protocol):
        missing = [m for m in protocol_members(protocol) if not hasattr(component, m)]
        return [f"{lead}. Got {short_repr(component)} instead, which lacks {', '.join(missing)}."]
    if not dataclasses.is_dataclass(component):
        return [f"{lead}. Got {short_repr(component)} instead, which is not a dataclass."]
    return []
