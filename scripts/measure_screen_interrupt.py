"""Measure how long `matscreen screen` takes to stop on Ctrl-C (or SIGTERM), and that it resumes.

Builds a CSV database of small generated crystals, runs the real command in a subprocess (the
shipped model unless --model, adaptive chunk sizes unless --chunk-size), sends the signal as soon
as the first chunk is saved, and prints the seconds from the signal to the process's exit, its
exit code and its last stderr line; then runs the same command again and prints its summary
(how many chunks it reused). The figure quoted in docs/screening.md comes from this script.

    python scripts/measure_screen_interrupt.py --rows 2000 --workers 1
    python scripts/measure_screen_interrupt.py --rows 2000 --workers 2 --signal TERM
    python scripts/measure_screen_interrupt.py --rows 2000 --workers 2 --engine ray
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure

ELEMENTS = ["Na", "Cl", "Mg", "O", "Si", "Ga", "As", "K", "Br", "Ca", "S", "Li", "F", "Al", "N"]


def write_database(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` small cubic binaries and ternaries (2-4 sites) as a CSV with a ``cif`` column."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        n_sites = 2 + k % 3
        species = list(rng.choice(ELEMENTS, n_sites, replace=False))
        coords = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0.25]][:n_sites])
        coords = coords + rng.normal(0, 0.01, (n_sites, 3))
        s = Structure(Lattice.cubic(3.6 + rng.random()), species, coords.tolist())
        rows.append({"material_id": f"gen-{k:05d}", "cif": s.to(fmt="cif")})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model", default=None, help="model name or weights file (default: the shipped one)")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--signal", choices=["INT", "TERM"], default="INT")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = write_database(Path(tmp) / "db.csv", args.rows)
        out = Path(tmp) / "ranked.parquet"
        cmd = [sys.executable, "-m", "screening.cli", "screen", str(db), "--target", "2.5", "-o", str(out)]
        cmd += ["--workers", str(args.workers), "--engine", args.engine, "--top", "0"]
        if args.model:
            cmd += ["--model", args.model]
        if args.chunk_size:
            cmd += ["--chunk-size", str(args.chunk_size)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        manifest = Path(tmp) / "ranked.chunks" / "manifest.json"
        while proc.poll() is None:
            if manifest.exists() and json.loads(manifest.read_text())["chunks"]:
                break
            time.sleep(0.02)
        sent = time.perf_counter()
        proc.send_signal(getattr(signal, f"SIG{args.signal}"))
        _, err = proc.communicate()
        stopped = time.perf_counter() - sent
        print(f"SIG{args.signal} after the first chunk: exit {proc.returncode} after {stopped:.2f} s")
        print(f"  last stderr line: {err.strip().splitlines()[-1] if err.strip() else '(none)'}")
        again = subprocess.run(cmd, capture_output=True, text=True, env=env)
        print(f"the same command again: exit {again.returncode}")
        print(f"  {again.stdout.strip().splitlines()[0] if again.stdout.strip() else again.stderr.strip()}")


if __name__ == "__main__":
    main()
