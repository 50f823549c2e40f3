"""A `kill -9` of a driver that started a local Ray node leaves no Ray processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from screening.processes import descendants, is_alive

DRIVER = """
import time
import ray
from screening.screen.ray_executor import init_ray

init_ray(num_cpus=1)

@ray.remote
def busy():
    time.sleep(120)

ref = busy.remote()
time.sleep(3)  # the worker is running the task
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_ray_processes_go_when_the_driver_is_killed(tmp_path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the watchdog has looked at the tree at least once
        tree = descendants(proc.pid)
        ray_procs = {
            p for p in tree if "ray" in (Path("/proc") / str(p) / "cmdline").read_bytes().decode(errors="replace")
        }
        assert len(ray_procs) >= 2, "no Ray processes were started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 15
        while time.time() < deadline and any(is_alive(p) for p in ray_procs):
            time.sleep(0.2)
        left = [p for p in ray_procs if is_alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        assert not left, f"{len(left)} Ray processes outlived the killed driver"
    finally:
        if proc.poll() is None:
            proc.kill()
