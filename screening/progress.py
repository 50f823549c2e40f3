"""The progress every long job shows (featurize, screen, fetch-mp), on a terminal or in a log.

A context manager that yields ``advance(n)``, so the computing code only counts and the display
stays in this one shell-side place. On a terminal (stderr is a TTY) it is a bar whose time columns
say what they are::

    screening (local, 1 worker) ━━━━━━━━━━━━╸━━━━━━━ 1200/2000 elapsed 0:00:14 ETA 0:00:09

In a log (stderr redirected, where a bar would appear only at the end) it prints a plain line
at the first count after each ``interval`` seconds (default 15) and one when the job is done::

    screening (local, 1 worker): 1,200 / 2,000 records (60%), 85 records/s, elapsed 14 s, ETA 9 s

The rate is that of this run (work found done when it started does not count). Counts are
exact: ``set_total`` corrects a total that was an estimate, a count past the total (an ASE file
of many frames counts once in :func:`screening.io.sources.count_records`) raises the total, so
nothing ever shows ``133/130``, and a job that finishes ends with ``total == completed``.
Disabled, it prints nothing (and still counts). Everything goes to stderr, so stdout keeps only
a command's results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOG_INTERVAL_S = 15.0


def format_duration(seconds: float) -> str:
    """``9 s``, ``2 min 05 s``, ``1 h 02 min``: a duration as a person reads it in a log."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plural(n: int, word: str) -> str:
    """``1 worker``, ``2 workers``, ``1,200 records``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def progress_line(
    description: str, done: int, total: int | None, unit: str, rate: float | None, elapsed_s: float
) -> str:
    """One log line: done / total, percentage, rate, elapsed and ETA, each labelled (pure)."""
    parts = [f"{done:,} / {total:,} {unit} ({100 * done / total:.0f}%)" if total else f"{done:,} {unit}"]
    if rate is not None and rate > 0:
        parts.append(f"{rate:,.1f} {unit}/s" if rate < 10 else f"{rate:,.0f} {unit}/s")
    parts.append(f"elapsed {format_duration(elapsed_s)}")
    if total and done < total:
        parts.append(f"ETA {format_duration((total - done) / rate)}" if rate else "ETA unknown")
    return f"{description}: {', '.join(parts)}"


class ProgressCounter:
    """``advance(n)``: n more items done; ``set_total(n)``: the exact total, once it is known."""

    def __init__(
        self,
        total: int | None,
        completed: int,
        on_change: Callable[[ProgressCounter], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.done, self.completed_at_start = total, completed, completed
        self._on_change, self._clock = on_change, clock
        self.started = clock()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.total is not None and self.done > self.total:
            self.total = self.done  # the source held more than it counted
        self._on_change(self)

    def set_total(self, total: int) -> None:
        self.total = max(total, self.done)
        self._on_change(self)

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self.started

    @property
    def rate(self) -> float | None:
        """Items per second done by this run."""
        elapsed = self.elapsed_s
        new = self.done - self.completed_at_start
        return new / elapsed if elapsed > 0 and new > 0 else None


class progress_bar:
    """``with progress_bar(total, "featurizing") as advance: ... advance(k)``.

    ``unit`` names what is counted (records, batches) in the log lines; ``stream`` (default
    stderr) and ``clock`` exist for tests.
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        enabled: bool = True,
        completed: int = 0,
        unit: str = "records",
        interval: float = LOG_INTERVAL_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total, self.description, self.enabled, self._completed = total, description, enabled, completed
        self.unit, self.interval, self.stream, self.clock = unit, interval, stream, clock
        self._counter: ProgressCounter | None = None

    @property
    def completed(self) -> int:
        """Items done so far (those done before the job started included)."""
        return self._counter.done if self._counter is not None else self._completed

    @property
    def total(self) -> int | None:
        return self._counter.total if self._counter is not None else self._total

    def __enter__(self) -> ProgressCounter:
        if not self.enabled:
            self._counter = ProgressCounter(self._total, self._completed, lambda c: None, self.clock)
            return self._counter
        stream = self.stream if self.stream is not None else sys.stderr
        self._stream = stream
        self._bar: Any = None
        isatty = getattr(stream, "isatty", None)
        if isatty is not None and isatty():
            return self._start_bar(stream)
        self._last_line = self.clock()
        self._last_text = ""
        self._counter = ProgressCounter(self._total, self._completed, self._log_if_due, self.clock)
        return self._counter

    def _start_bar(self, stream: TextIO) -> ProgressCounter:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "elapsed",
            TimeElapsedColumn(),
            "ETA",
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._bar.start()
        task = self._bar.add_task(self.description, total=self._total or None, completed=self._completed)

        def show(counter: ProgressCounter) -> None:
            self._bar.update(task, completed=counter.done, total=counter.total or None)

        self._counter = ProgressCounter(self._total, self._completed, show, self.clock)
        return self._counter

    def _log_if_due(self, counter: ProgressCounter) -> None:
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._write_line(counter)

    def _write_line(self, counter: ProgressCounter) -> None:
        line = progress_line(self.description, counter.done, counter.total, self.unit, counter.rate, counter.elapsed_s)
        if line != self._last_text:  # the closing line repeats nothing already said
            self._last_text = line
            self._stream.write(line + "\n")
            self._stream.flush()

    def __exit__(self, kind: type[BaseException] | None, *exc: Any) -> None:
        counter = self._counter
        if counter is not None and kind is None and counter.total:
            counter.set_total(counter.done)  # finished: the total is what was done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.stop()
        elif kind is None and counter is not None:  # a job that stopped says so itself, with what it saved
            self._write_line(counter)


__all__ = ["LOG_INTERVAL_S", "ProgressCounter", "format_duration", "plural", "progress_bar", "progress_line"]
