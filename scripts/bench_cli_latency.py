"""Benchmark: wall time of `matscreen campaign status` and `campaign ask` as a user runs them.

Each command runs in a fresh subprocess (Python start-up and imports included, as a lab user
would see it) on a campaign over a generated pool of ``--rows`` crystals (64-d embeddings,
``pred_band_gap``, no ``band_gap``: a lab measures it). Timed, ``--repeats`` times each:

* ``status``: the readable table (reads the store only);
* ``status --json``;
* ``ask (new)``: a new suggestion, with ``--prior`` results told first so the surrogate is fitted;
* ``ask (pending)``: rerunning an ask whose suggestion is still pending (returns it again);
* ``python -c pass`` and ``import screening.cli``: the floor every command pays.

    OMP_NUM_THREADS=1 python scripts/bench_cli_latency.py --rows 2000 --repeats 5

Prints one line per command (median, min and max seconds) and, with ``--json``, the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_pool(path: Path, n: int, d: int = 64, seed: int = 0) -> pd.DataFrame:
    """A featurised-pool-shaped table: embeddings a noisy linear image of 3 latent coordinates."""
    rng = np.random.default_rng(seed)
    Z = rng.random((n, 3))
    E = Z @ rng.standard_normal((3, d)) + 0.01 * rng.standard_normal((n, d))
    gap = 2.0 + np.sin(4 * Z[:, 0]) + Z[:, 1]
    frame = pd.DataFrame({"id": [f"mp-{i}" for i in range(n)], "formula": [f"Na{i}Cl" for i in range(n)]})
    emb = pd.DataFrame(E.astype("float32"), columns=[f"emb_{k}" for k in range(d)])
    frame = pd.concat([frame, emb], axis=1)
    frame["pred_band_gap"] = gap + 0.1 * rng.standard_normal(n)
    frame.to_parquet(path)
    frame["band_gap"] = gap  # the "lab" answers, kept out of the pool file
    return frame


def matscreen(*args: str, check: bool = True) -> tuple[float, str]:
    """Run ``matscreen ARGS`` in a subprocess; (wall seconds, stdout)."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "screening.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if check and res.returncode != 0:
        raise SystemExit(f"matscreen {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return wall, res.stdout


def timed(cmd: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prior", type=int, default=20, help="lab results told before timing ask")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = make_pool(root / "pool.parquet", args.rows)
        lab = root / "lab"
        matscreen("campaign", "new", str(lab), "--pool", str(root / "pool.parquet"), "--target", "2.534")
        rng = np.random.default_rng(1)
        rows = frame.iloc[rng.choice(len(frame), size=args.prior, replace=False)]
        rows[["id", "band_gap"]].to_csv(root / "prior.csv", index=False)
        matscreen("campaign", "tell", str(lab), str(root / "prior.csv"))

        figures["python -c pass"] = timed([sys.executable, "-c", "pass"], args.repeats)
        figures["import screening.cli"] = timed([sys.executable, "-c", "import screening.cli"], args.repeats)
        figures["campaign status"] = [matscreen("campaign", "status", str(lab))[0] for _ in range(args.repeats)]
        figures["campaign status --json"] = [
            matscreen("campaign", "status", str(lab), "--json")[0] for _ in range(args.repeats)
        ]
        new, pending = [], []
        for k in range(args.repeats):
            wall, out = matscreen("campaign", "ask", str(lab), "-o", str(root / f"ask{k}.csv"))
            new.append(wall)
            pending.append(matscreen("campaign", "ask", str(lab), "-o", str(root / f"again{k}.csv"))[0])
            asked = pd.read_csv(root / f"ask{k}.csv")
            gaps = dict(zip(frame["id"], frame["band_gap"]))
            pd.DataFrame({"id": asked["id"], "band_gap": [gaps[i] for i in asked["id"]]}).to_csv(
                root / f"res{k}.csv", index=False
            )
            matscreen("campaign", "tell", str(lab), str(root / f"res{k}.csv"))
        figures["campaign ask (new)"] = new
        figures["campaign ask (pending)"] = pending

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"pool {args.rows} rows, {args.prior} prior results, {args.repeats} runs each, OMP_NUM_THREADS={threads}")
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, vals in figures.items():
        print(f"{name:<26} {statistics.median(vals):9.2f} {min(vals):7.2f} {max(vals):7.2f}")
    if args.json:
        print(
            json.dumps({k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in figures.items()})
        )


if __name__ == "__main__":
    main()
