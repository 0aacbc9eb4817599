"""Fault injection for the sweep tests, shipped to Ray workers like user code.

``Boom`` is a loss term that raises when the search evaluates it, so a generator
variant ``{preset: generic, add_terms: [{term: "faults:Boom"}]}`` fails inside its
system task: the failure-handling tests use it instead of a hook in production code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recourse_ray.generators.terms import Term


@dataclass(frozen=True, kw_only=True)
class Boom(Term):
    """A term whose evaluation raises ``RuntimeError("injected failure")``."""

    name: ClassVar[str] = "boom"

    def value(self, batch, aux):
        raise RuntimeError("injected failure (tests/faults: the Boom term)")


@dataclass(frozen=True, kw_only=True)
class Hang(Term):
    """A term whose evaluation sleeps ``seconds`` (a system that hangs in its search)."""

    name: ClassVar[str] = "hang"
    seconds: float = 600.0

    def value(self, batch, aux):
        import time

        time.sleep(self.seconds)
        raise RuntimeError("the Hang term woke up: the timeout did not cancel its system")
