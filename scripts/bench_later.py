"""A campaign's later commands, timed as a user runs them, on a copy of an existing folder.

    python scripts/bench_later.py FOLDER [--code DIR] [--repeats 2] [--work DIR] [--out JSON]

Why: the later commands of a large campaign (issue 28: each later ``ask`` ≤ 2 s at 10^6
candidates) are what a lab waits for; ``bench_scale.py`` times them once after building a new
campaign (12 minutes at 10^6). This copies a campaign folder that ``bench_scale.py --keep`` left
(one with pending points), then runs, each in a new process: ``ask`` (the copied files have new
stamps: this re-checks them once, as after any copy), ``tell`` of every pending point (its
predicted gap + 0.3 eV), ``ask``, ``ask --new``, and the ``tell`` again (nothing new). ``--code``
runs another checkout's ``screening`` (e.g. main's, for a before/after pair on the same folder
and the same load): run the pairs alternately. Prints one JSON line per repeat: wall and CPU
seconds and peak memory (GiB) per command, and the picks (the same folder gives the same picks
to the same code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import CHILD  # noqa: E402  (runs `matscreen ARGS` and reports the peak memory)

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], code: Path, work: Path, log: Path) -> dict:
    """``matscreen ARGS`` in a new process with ``code`` on the path: wall, CPU, peak GiB."""
    env = {**os.environ, "PYTHONPATH": str(code), "XDG_CACHE_HOME": str(work) + "_xdg"}
    hwm = work.with_name(work.name + ".hwm")
    start = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"$ matscreen {' '.join(args)}\n".encode())
        fh.flush()
        # run from the checkout: `python -c` puts the working folder before PYTHONPATH
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(hwm), *args], env=env, stdout=fh, stderr=fh, cwd=str(code)
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if proc.returncode != 0:
        raise SystemExit(f"matscreen {' '.join(args[:2])} failed; see {log}")
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_gib": round(int(hwm.read_text()) / 2**20, 2),
    }


def results_for_pending(folder: Path) -> Path:
    """A results file for every pending point of the campaign in ``folder`` (from its ask files)."""
    with sqlite3.connect(folder / "campaign.sqlite") as conn:
        pending = {row[0] for row in conn.execute("SELECT key FROM pending")}
    asked = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(folder.glob("*.csv"))]
    frame = pd.concat(asked).drop_duplicates("id")
    frame = frame[frame["id"].isin(pending)].copy()
    frame["band_gap_eV"] = (pd.to_numeric(frame["pred_band_gap_eV"]) + 0.3).round(4).astype(str)
    out = folder.with_name(folder.name + "_results.csv")
    frame.to_csv(out, index=False)
    return out


def one_repeat(folder: Path, code: Path, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(folder, work)
    log = work.with_name(work.name + ".log")
    cli = ["campaign"]
    out: dict = {"recheck_ask": run([*cli, "ask", str(work), "-o", str(work / "recheck.csv")], code, work, log)}
    results = results_for_pending(work)
    out["tell"] = run([*cli, "tell", str(work), str(results)], code, work, log)
    out["ask"] = run([*cli, "ask", str(work), "-o", str(work / "next.csv")], code, work, log)
    out["ask_new"] = run([*cli, "ask", str(work), "--new", "-o", str(work / "new.csv")], code, work, log)
    out["tell_again"] = run([*cli, "tell", str(work), str(results)], code, work, log)
    out["picks"] = [pd.read_csv(work / n, dtype=str)["id"].tolist() for n in ("next.csv", "new.csv")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="campaign folder with pending points (bench_scale.py --keep)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose screening runs (this one)")
    ap.add_argument("--repeats", type=int, default=1, help="copies timed one after the other (1)")
    ap.add_argument("--work", type=Path, default=None, help="where the copy goes (a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines of the figures (appended)")
    args = ap.parse_args()
    base = (args.work or Path(tempfile.mkdtemp(prefix="bench_later_"))).resolve()
    for _ in range(args.repeats):
        res = one_repeat(args.folder.resolve(), args.code.resolve(), base / "campaign")
        res["code"] = str(args.code)
        line = json.dumps(res)
        print(line, flush=True)
        if args.out is not None:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
