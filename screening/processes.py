"""Worker processes that do not outlive the process that started them, and SIGTERM as Ctrl-C.

Why: a `kill -9` of `matscreen screen` or `featurize` used to leave its spawned workers running
(they sat on a closed pipe, holding memory and a CPU). On Linux a worker asks the kernel to send
it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere this is a no-op and the
workers end when they next touch the broken pipe. :func:`sigterm_as_interrupt` lets a long run
stop on SIGTERM as it stops on Ctrl-C: workers terminated, what is saved reported.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1


def usable_cpus(cap: int = 8) -> int:
    """CPUs this process may run on (its affinity mask where the platform has one, which is what
    a container or ``taskset`` grants), at most ``cap``: the default number of worker processes.
    The cap keeps a many-core machine from forking dozens of workers, each with its own model
    and pymatgen, for a job that is usually limited by reading its source."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, cap))


def die_with_parent() -> bool:
    """Call in a worker's initializer; True when the kernel will signal this worker on the
    parent's death (Linux), False where the platform has no such mechanism."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # The parent may have died between the spawn and the prctl call: then no signal will come.
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


# --------------------------------------------------------------------------- SIGTERM as Ctrl-C
# A batch scheduler or `kill` stops a job with SIGTERM, whose default ends the process on the spot:
# no clean-up, no word on what was saved. Raised as an exception, it takes Ctrl-C's path instead.


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous
    handler comes back afterwards. Outside the main thread (where Python cannot set a handler)
    it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------- process-tree watchdog
# Ray's local node (GCS, raylet, workers) is started by the driver but does not die with it: its
# processes are not our workers, so they cannot set a parent-death signal. A small watchdog
# process follows the driver's process tree and, once the driver is gone, kills what was in it.


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def descendants(root: int) -> set[int]:
    """Every process below ``root`` in the process tree, read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def watch_tree(driver: int, interval: float = 0.5) -> None:
    """Follow ``driver``'s process tree; once it is gone, SIGKILL what was in it at the last look.

    The tree is re-read each time (not accumulated), so a pid that exited and was reused by an
    unrelated process is never hit.
    """
    import time

    me = os.getpid()
    seen: set[int] = set()
    while is_alive(driver):
        seen = descendants(driver)
        time.sleep(interval)
    for pid in seen - {me}:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start_tree_watchdog() -> bool:
    """Start a watchdog that kills this process's descendants once this process dies (Linux).

    Returns False where there is no ``/proc`` to follow. The watchdog is detached (its own
    session), so a signal to this process's group does not stop it before it has cleaned up.
    """
    import subprocess

    if not os.path.isdir("/proc"):
        return False
    subprocess.Popen(
        [sys.executable, "-m", "screening.processes", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    return True


if __name__ == "__main__":  # the watchdog process: python -m screening.processes DRIVER_PID
    watch_tree(int(sys.argv[1]))
