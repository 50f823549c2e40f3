"""Worker processes that do not outlive the process that started them.

Why: a `kill -9` of `matscreen screen` or `featurize` used to leave its spawned workers running
(they sat on a closed pipe, holding memory and a CPU). On Linux a worker asks the kernel to send
it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere this is a no-op and the
workers end when they next touch the broken pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


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
