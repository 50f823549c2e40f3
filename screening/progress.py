"""The progress bar every long job shows (featurize, screen, fetch-mp).

A context manager that yields ``advance(n)``, so the computing code only counts and the bar
(rich) stays in this one shell-side place; disabled, it prints nothing.

The counts are exact: ``completed`` is what was advanced, and when it passes the announced
``total`` (an estimate: :func:`screening.io.sources.count_records` counts an ASE file of many
frames once) the total grows with it, so the bar never shows ``133/130``; a job that finishes
ends with ``total == completed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class progress_bar:
    """``with progress_bar(total, "featurizing") as advance: ... advance(k)``."""

    def __init__(self, total: int | None, description: str, enabled: bool = True, completed: int = 0) -> None:
        self.total, self.description, self.enabled, self.completed = total, description, enabled, completed

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return self._count
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total or None, completed=self.completed)
        return self._advance

    def _count(self, n: int) -> None:
        self.completed += n
        if self.total and self.completed > self.total:
            self.total = self.completed

    def _advance(self, n: int) -> None:
        grown = bool(self.total) and self.completed + n > (self.total or 0)
        self._count(n)
        if grown:
            self._bar.update(self._task, total=self.total)
        self._bar.update(self._task, completed=self.completed)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None and self.total:  # finished: the total is what was done
            self.total = self.completed
            if self.enabled:
                self._bar.update(self._task, total=self.total, completed=self.completed)
        if self.enabled:
            self._bar.stop()
