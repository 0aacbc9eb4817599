"""One home for configuration: type checks, the error template, settings from mappings.

Every user-facing check in the package words its message the same way (STYLE.md, after
scikit-learn): *"The 'n_samples' parameter of setup must be an int in the range [4, inf).
Got 0 instead."* The helpers here write that sentence, so that no module spells it
itself. Settings objects are frozen dataclasses that implement :class:`Checked`
(``problems() -> list[str]``, empty when valid); :func:`build_settings` builds one from
a YAML mapping, rejecting unknown keys with a did-you-mean and collecting every problem.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recourse_ray._registry import suggest

__all__ = [
    "Checked",
    "is_int",
    "is_real",
    "short_repr",
    "INT64_MIN",
    "INT64_MAX",
    "param_message",
    "check_int",
    "check_real",
    "check_fields",
    "unknown_key_message",
    "build_settings",
    "settings_dict",
]

# Long values (a whole list, a huge string) are cut in messages so one stays readable.
MAX_VALUE_CHARS = 200


@runtime_checkable
class Checked(Protocol):
    """Settings that can say what is wrong with them."""

    def problems(self) -> list[str]:
        """One message per problem (the error template); empty when valid."""


def is_int(value: object) -> bool:
    """An int (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """A real number (int or float, Python or numpy), not a bool; NaN and inf included."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


# A bounded repr: a huge value (a list of a million items, an alias-expanded document,
# a 10**6-digit int) is never formatted whole just to be cut afterwards.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 12, 12, 8, 8
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = MAX_VALUE_CHARS, 40, MAX_VALUE_CHARS


def short_repr(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (containers and long ints are cut while formatting)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a user object whose repr raises
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The range of a 64-bit signed integer: what JSON readers, parquet and Arrow's int64 hold.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def param_message(name: str, owner: str, expected: str, value: object) -> str:
    """The house error sentence: ``The 'name' parameter of owner must be expected. Got value instead.``"""
    return f"The '{name}' parameter of {owner} must be {expected}. Got {short_repr(value)} instead."


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}" if isinstance(low, float) else str(low)
    hi = "inf" if high is None else f"{high:g}" if isinstance(high, float) else str(high)
    left = "(" if low is None or low_open else "["
    right = ")" if high is None or high_open else "]"
    return f"{left}{lo}, {hi}{right}"


def check_int(value: object, name: str, owner: str, low: int | None = None, high: int | None = None) -> str | None:
    """None when ``value`` is an int in ``[low, high]`` (None: unbounded), else the message."""
    if is_int(value) and (low is None or value >= low) and (high is None or value <= high):
        return None
    return param_message(name, owner, f"an int in the range {_interval(low, high, False, False)}", value)


def check_real(
    value: object,
    name: str,
    owner: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    kind: str = "a float",
) -> str | None:
    """None when ``value`` is a finite real in the interval, else the message.

    ``low_open`` / ``high_open`` exclude the bound itself; NaN and inf are never accepted.
    """
    ok = is_real(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return None
    return param_message(name, owner, f"{kind} in the range {_interval(low, high, low_open, high_open)}", value)


def check_fields(obj: Any, rules: dict[str, tuple[str, float | None, float | None]], owner: str) -> list[str]:
    """Range and type checks for a dataclass's fields; one message per problem.

    ``rules[name] = (kind, low, high)`` with kind ``"int"`` or ``"float"``; bounds are
    inclusive, None for unbounded.
    """
    out = []
    for name, (kind, low, high) in rules.items():
        value = getattr(obj, name)
        if kind == "int":
            msg = check_int(value, name, owner, low, high)
        else:
            msg = check_real(value, name, owner, low, high, kind="a number")
        if msg:
            out.append(msg)
    return out


def unknown_key_message(key: object, where: str, valid: list[str] | tuple[str, ...]) -> str:
    """``Unknown key 'x' in 'where'. Did you mean 'y'? Valid keys: ...``"""
    return f"Unknown key {short_repr(key)} in '{where}'.{suggest(str(key), list(valid))} Valid keys: {', '.join(valid)}."


def build_settings(cls, raw: Any, where: str, base=None) -> tuple[Any, list[str]]:
    """Build the settings dataclass ``cls`` from a mapping of field values.

    Unknown keys (with a did-you-mean), wrong types and out-of-range values are all
    reported; the settings' own ``problems()`` is used when it has one, and errors raised
    by its constructor otherwise.

    Returns:
        (settings, problems): the built object (``base`` or the defaults when it could
        not be built) and the list of problems (empty when valid).
    """
    problems: list[str] = []
    base = base if base is not None else cls()
    if raw is None:
        return base, problems
    if not isinstance(raw, Mapping):
        return base, [f"'{where}' must be a mapping of settings. Got {type(raw).__name__} instead."]
    valid = [f.name for f in fields(cls)]
    good = {}
    for key, value in raw.items():
        if key in valid:
            good[key] = value
        else:
            problems.append(unknown_key_message(key, where, valid))
    try:
        obj = replace(base, **good)
    except (TypeError, ValueError) as exc:
        return base, problems + [f"In '{where}': {exc}"]
    check = getattr(obj, "problems", None)
    problems.extend(f"In '{where}': {p}" for p in (check() if check is not None else []))
    return obj, problems


def settings_dict(obj: Any) -> dict:
    """A settings dataclass's fields as a plain dict (for hashing and manifests)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
