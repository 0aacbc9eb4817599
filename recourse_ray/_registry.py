"""Name -> factory registries shared by datasets, models, generators and metrics.

Every component a sweep file can name is looked up here. Registration is explicit
(the name is given, never derived from a function name), duplicates raise, and an
unknown name is answered with the valid names and the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "suggest", "import_object", "is_import_path", "user_error"]


def is_import_path(name: object) -> bool:
    """Whether ``name`` has the ``"package.module:attribute"`` form of a user component."""
    return isinstance(name, str) and ":" in name and not name.startswith(":") and not name.endswith(":")


def import_object(path: str, kind: str = "component"):
    """Import ``"package.module:attribute"`` (the attribute may be dotted).

    Raises:
        KeyError: with a message saying what failed (module not found, attribute missing).
    """
    module_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise KeyError(
            f"Cannot import the {kind} {path!r}: {exc}. Is the module on the Python path of the driver "
            "and the workers (install it, or ship it with `--py-modules`)?"
        ) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: anything it raises, sys.exit() included
        raise KeyError(f"Cannot import the {kind} {path!r}: {user_error(module_name, exc)}.") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise KeyError(f"Cannot import the {kind} {path!r}: module {module_name!r} has no attribute {attr!r}.") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a module __getattr__ of user code
            raise KeyError(f"Cannot import the {kind} {path!r}: {user_error(module_name, exc)}.") from None
    return obj


def user_error(module: str, exc: BaseException) -> str:
    """``module 'm' raised RuntimeError: why`` (cut to a readable length), for errors of user code."""
    text = str(exc) if not isinstance(exc, SystemExit) else f"exit status {exc.code!r}"
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"module {module!r} raised {type(exc).__name__}: {text}"


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a ' Did you mean ...?' hint for ``name`` among ``choices`` ('' if none is close)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """A named collection of entries (usually factories) of one kind.

    Args:
        kind: what the entries are, used in messages ("dataset", "model", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; usable as a decorator when ``entry`` is omitted.

        Raises:
            ValueError: if ``name`` is already registered or is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string. Got {name!r} instead.")

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"The {self.kind} {name!r} is already registered.")
            self._entries[name] = value
            return value

        if entry is None:
            return add
        return add(entry)

    def get(self, name: str) -> T:
        """Return the entry registered under ``name``, or the object an import path names.

        A name of the form ``"package.module:attribute"`` that is not registered is
        imported: user components need no registration to be named in a sweep file.

        Raises:
            KeyError: for an unknown name, listing the valid names and the closest match.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if is_import_path(name):
                return import_object(name, self.kind)
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """The message used for an unknown name (also used by sweep-file validation)."""
        names = self.names()
        return (
            f"Unknown {self.kind} {name!r}.{suggest(str(name), names)} "
            f"Valid {self.kind} names: {', '.join(names)} (or an import path 'package.module:attribute')."
        )

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
