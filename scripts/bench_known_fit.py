"""Time a first suggestion with the Materials Project's train + val crystals as known data,
with the known-data fit made from scratch (a cold user cache) and read back (a warm one).

    python scripts/bench_known_fit.py [--sizes 10000] [--cli] [--out cache/known_fit.json]

Pools are real test embeddings resampled with small noise (bench_search.resampled_pool); each
size is run cold then warm in one process, so the two figures are side by side on one machine.
``--cli`` also times the commands a user runs, end to end in new processes: ``campaign new``
then ``campaign ask`` with a fresh user cache, then the same in a second campaign folder (the
cache now warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import featurised_mp, latency_known, resampled_pool  # noqa: E402

from screening.bo import known_fit as kf  # noqa: E402
from screening.bo import neighbour_search as ns  # noqa: E402
from screening.bo.strategy import Strategy  # noqa: E402


def first_suggestion(pool, settings: ns.NeighbourSettings, cache: kf.KnownFitCache | None) -> float:
    """Seconds from nothing to the window scores of every candidate (what a first ask needs)."""
    t = time.perf_counter()
    state = ns.update_state(
        None,
        settings,
        pool.embedding,
        pool.prior_mean,
        pool.known,
        [],
        np.zeros(0),
        0,
        prior_std=pool.prior_std,
        known_cache=cache,
    )
    ns.prepared_match(state, 2.534)
    ns.window_scores(state, 2.534, 0.01)
    return time.perf_counter() - t


def cli_times(test, known_frame, n: int, workdir: Path) -> dict:
    """Seconds of `campaign new` and of the first `campaign ask`, cold then warm cache."""
    from bench_search import emb_cols

    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(test), n)
    cols = emb_cols(test)
    pool = test.iloc[pick][["pred_band_gap", "pred_band_gap_std"]].reset_index(drop=True)
    emb = test[cols].to_numpy(np.float32)[pick] + rng.normal(0, 0.02, (n, len(cols))).astype(np.float32)
    pool = pool.assign(id=[f"c{i}" for i in range(n)], **{c: emb[:, j] for j, c in enumerate(cols)})
    pool.to_parquet(workdir / "pool.parquet")
    known_frame[["id", "band_gap", "pred_band_gap", "pred_band_gap_std", *cols]].to_parquet(workdir / "known.parquet")
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(workdir / "xdg"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    out: dict = {}
    for run in ("cold", "warm"):
        folder = workdir / f"campaign_{run}"
        cmd = [sys.executable, "-m", "screening.cli", "campaign"]
        new = [
            *cmd,
            "new",
            str(folder),
            "--pool",
            str(workdir / "pool.parquet"),
            "--known",
            str(workdir / "known.parquet"),
        ]
        for name, args in (("new", [*new, "--target", "2.534", "--tol", "0.01"]), ("ask", [*cmd, "ask", str(folder)])):
            t = time.perf_counter()
            subprocess.run(args, env=env, check=True, capture_output=True)
            out[f"{run}_{name}_s"] = round(time.perf_counter() - t, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--out", default="cache/known_fit.json")
    ap.add_argument("--cli", action="store_true", help="also time campaign new + ask in new processes")
    args = ap.parse_args()
    frame = featurised_mp(None, Path("cache"))
    known = latency_known(frame)
    test = frame[frame["split"] == "test"]
    s = Strategy()
    settings = ns.NeighbourSettings(s.n_neighbours, s.neighbour_components, label_match_tolerance=0.01)
    rows = []
    for n in [int(v) for v in args.sizes.split(",")]:
        pool, _ = resampled_pool(test, known, n, np.random.default_rng(0))
        with tempfile.TemporaryDirectory() as d:
            cold = first_suggestion(pool, settings, kf.KnownFitCache(Path(d)))
            warm = first_suggestion(pool, settings, kf.KnownFitCache(Path(d)))
        rows.append({"candidates": n, "known": len(known), "cold_s": round(cold, 2), "warm_s": round(warm, 2)})
        if args.cli:
            with tempfile.TemporaryDirectory() as d:
                rows[-1].update(cli_times(test, frame[frame["split"].isin(["train", "val"])], n, Path(d)))
            r = rows[-1]
            print(
                f"{'':>9}  command line: new {r['cold_new_s']:.1f} s + first ask {r['cold_ask_s']:.1f} s (cold cache);"
                f" new {r['warm_new_s']:.1f} s + first ask {r['warm_ask_s']:.1f} s (warm)"
            )
        print(
            f"{n:>9,} candidates, {len(known):,} known: cold {cold:6.1f} s   warm {warm:6.1f} s   ({cold / warm:.1f}x)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
