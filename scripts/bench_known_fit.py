"""Time a first suggestion with the Materials Project's train + val crystals as known data,
with the known-data fit made from scratch (a cold user cache) and read back (a warm one).

    python scripts/bench_known_fit.py [--sizes 10000] [--out cache/known_fit.json]

Pools are real test embeddings resampled with small noise (bench_search.resampled_pool); each
size is run cold then warm in one process, so the two figures are side by side on one machine.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--out", default="cache/known_fit.json")
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
        print(
            f"{n:>9,} candidates, {len(known):,} known: cold {cold:6.1f} s   warm {warm:6.1f} s   ({cold / warm:.1f}x)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
