"""Worker processes do not outlive a killed parent (Linux: PR_SET_PDEATHSIG via die_with_parent)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from screening.processes import is_alive

PARENT = """
import multiprocessing, sys, time
from screening.processes import die_with_parent

def worker(use_signal):
    if use_signal:
        die_with_parent()
    time.sleep(60)  # a worker busy on a long chunk

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=worker, args=(sys.argv[1] == "1",))
    p.start()
    print(p.pid, flush=True)
    time.sleep(60)
"""


def worker_alive_after_parent_killed(tmp_path: Path, use_signal: bool) -> bool:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "1" if use_signal else "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        time.sleep(3.0)  # the worker has imported and set its signal
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 3
        while time.time() < deadline and is_alive(child):
            time.sleep(0.1)
        survived = is_alive(child)
        if survived:
            subprocess.run(["kill", "-9", str(child)], check=False)
        return survived
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_worker_dies_with_its_killed_parent(tmp_path) -> None:
    assert not worker_alive_after_parent_killed(tmp_path, use_signal=True)
    # and the check can fail: the same worker without the signal outlives its parent
    assert worker_alive_after_parent_killed(tmp_path, use_signal=False)
