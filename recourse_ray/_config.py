"""Building frozen settings dataclasses from user mappings, collecting every problem."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from recourse_ray._registry import suggest

__all__ = ["build_settings"]


def build_settings(cls, raw: Any, where: str, base=None) -> tuple[Any, list[str]]:
    """Build ``cls`` from a mapping of field values.

    Unknown keys (with a did-you-mean), wrong types and out-of-range values are all
    reported; the settings' own ``problems()`` method is used when it has one, and
    errors raised by its constructor otherwise.

    Returns:
        (settings, problems): the built object (``base`` or the defaults when it could
        not be built) and the list of problems (empty when valid).
    """
    problems: list[str] = []
    base = base if base is not None else cls()
    if raw is None:
        return base, problems
    if not isinstance(raw, dict):
        return base, [f"'{where}' must be a mapping of settings. Got {type(raw).__name__} instead."]
    valid = [f.name for f in fields(cls)]
    good = {}
    for key, value in raw.items():
        if key in valid:
            good[key] = value
        else:
            problems.append(f"Unknown key '{key}' in '{where}'.{suggest(str(key), valid)} Valid keys: {', '.join(valid)}.")
    try:
        obj = replace(base, **good)
    except (TypeError, ValueError) as exc:
        return base, problems + [f"In '{where}': {exc}"]
    check = getattr(obj, "problems", None)
    problems.extend(f"In '{where}': {p}" for p in (check() if check is not None else []))
    return obj, problems
