"""The driver's progress display, on stderr: a live line on a terminal, plain status lines elsewhere.

On a terminal one line is redrawn in place. Anywhere else (``ray job logs --follow``, a
log file, a notebook) a plain line is written every ``interval_s`` seconds (default
``STATUS_EVERY_S``) and when the run ends, so that the job's log shows how far the sweep is.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress", "STATUS_EVERY_S"]

#: Seconds between two status lines when stderr is not a terminal (RECOURSE_RAY_STATUS_EVERY_S overrides).
STATUS_EVERY_S = 30.0


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
        enabled: show progress (None: yes; a live line on a terminal, status lines elsewhere).
            False: nothing.
        stream: where to write (stderr by default).
        interval_s: seconds between status lines when ``stream`` is not a terminal.
    """

    def __init__(self, *, total: int, already: int = 0, rounds_per_system: int = 1, enabled: bool | None = None,
                 stream=None, interval_s: float | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled is not False
        try:
            self.live = self.stream.isatty()
        except (AttributeError, ValueError):  # a closed or odd stream
            self.live = False
        if interval_s is None:
            try:
                interval_s = float(os.environ.get("RECOURSE_RAY_STATUS_EVERY_S", STATUS_EVERY_S))
            except ValueError:
                interval_s = STATUS_EVERY_S
        self.interval_s = interval_s
        self.total, self.already = total, already
        self.rounds_total = (total - already) * rounds_per_system
        self.done = self.failed = self.running = self.rounds = self.rows = 0
        self.start = time.monotonic()
        self._last = 0.0 if self.live else self.start

    def update(self, *, done: int = 0, failed: int = 0, running: int | None = None, rounds: int = 0, rows: int = 0) -> None:
        self.done += done
        self.failed += failed
        self.rounds += rounds
        self.rows += rows
        if running is not None:
            self.running = running
        self.tick()

    def tick(self) -> None:
        """Write the status if it is time (the driver calls this at least once a second)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.live:
            if now - self._last > 0.2:
                self._last = now
                self._write("\r" + self.line() + "\033[K")
        elif now - self._last >= self.interval_s:
            self._last = now
            self._write(self.status_line() + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the log went away (a closed pipe): progress is not worth failing for
            self.enabled = False

    def rounds_per_s(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.rounds / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.rounds <= 0:
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

    def status_line(self) -> str:
        """One self-contained log line (no redrawing), for ``ray job logs`` and files."""
        finished = self.already + self.done
        return (
            f"recourse-ray: {finished}/{self.total} systems done, {self.failed} failed, {self.running} running | "
            f"{self.rounds_per_s():.2f} rounds/s | elapsed {_fmt_duration(time.monotonic() - self.start)} | "
            f"ETA {self.eta()}"
        )

    def close(self) -> None:
        if not self.enabled:
            return
        self._write("\r" + self.line() + "\033[K\n" if self.live else self.status_line() + "\n")
