"""The progress bar every long job shows (featurize, screen, fetch-mp).

A context manager that yields ``advance(n)``, so the computing code only counts and the bar
(rich) stays in this one shell-side place; disabled, it costs nothing and prints nothing.
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
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total or None, completed=self.completed)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.stop()
