"""A one-line live progress display for the driver (stderr, only when it is a TTY)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Counts systems done/running/failed, rounds and rows, and estimates the time left.

    Args:
        total: systems in the sweep. already: systems committed before this run.
        rounds_per_system: rounds each system simulates (for the rounds counter).
        enabled: draw the line (None: only when stderr is a TTY).
        stream: where to draw (stderr by default).
    """

    def __init__(self, *, total: int, already: int = 0, rounds_per_system: int = 1, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.already = total, already
        self.rounds_total = (total - already) * rounds_per_system
        self.done = self.failed = self.running = self.rounds = self.rows = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, *, done: int = 0, failed: int = 0, running: int | None = None, rounds: int = 0, rows: int = 0) -> None:
        self.done += done
        self.failed += failed
        self.rounds += rounds
        self.rows += rows
        if running is not None:
            self.running = running
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or done or failed):
            self._last = now
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def eta(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.rounds == 0:
            return "?"
        remaining = max(0, self.rounds_total - self.rounds)
        return _fmt_duration(elapsed / self.rounds * remaining)

    def line(self) -> str:
        finished = self.already + self.done
        return (
            f"systems {finished}/{self.total} done, {self.running} running, {self.failed} failed | "
            f"rounds {self.rounds}/{self.rounds_total} | rows {self.rows:,} | "
            f"elapsed {_fmt_duration(time.monotonic() - self.start)} | ETA {self.eta()}"
        )

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\033[K\n")
            self.stream.flush()
