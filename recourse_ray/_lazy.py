"""Names of a package that load their module on first use (PEP 562 ``__getattr__``).

The package ``__init__`` files use it so that importing ``recourse_ray`` (as every Ray
worker does to unpickle a system's spec) loads neither the Python API nor the sweep
driver, and with them polars and pyarrow (docs/cluster.md: about 100 MB per worker).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``package.<names[name]>`` when ``name`` is first asked for.

    The value is then stored in ``namespace`` (the package's globals), so later lookups
    do not come back here.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
