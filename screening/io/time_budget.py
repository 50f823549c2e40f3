"""A wall-clock budget for one record's parsing and graph building.

Why: the structure checks (:mod:`screening.io.validate`) bound the work a record can cause from
its numbers, but a parser can still spend minutes on a pathological file. Each record gets a
budget; a record that exceeds it becomes an error in the report (``time_budget: ...``) and the
batch goes on. The budget uses ``SIGALRM``, so it applies in the main thread of a process — the
featurize and screen workers, and in-process runs from the command line; elsewhere (a thread, or
a platform without ``setitimer``) the record runs unbounded rather than failing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_RECORD_SECONDS = 120.0


class RecordTimeout(Exception):
    """Raised inside a record's work when its budget is spent."""


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Raise :class:`RecordTimeout` in the block after ``seconds`` of wall time (None: no budget)."""
    if seconds is None or seconds <= 0 or not _can_alarm():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise RecordTimeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
