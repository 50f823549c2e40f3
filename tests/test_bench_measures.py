"""The search benchmark's measures (scripts/bench_search.py, scripts/bench_rank_ceiling.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_the_geometric_mean_charges_run_to_run_spread_that_the_summed_look_ups_do_not():
    bench = _script("bench_search")
    # The ranking takes 1 and 9 look-ups at two targets; a search as informed, whose runs land
    # on either order, needs 5 on average at both: the same look-ups in all, 0.6x by the geometric mean.
    per_target = [(np.array([1.0]), np.array([1.0, 9.0])), (np.array([9.0]), np.array([9.0, 1.0]))]
    geo, geo_lo, geo_hi = bench.geo_ci(per_target)
    total, lo, hi = bench.total_ci(per_target)
    assert np.isclose(geo, 0.6)
    assert np.isclose(total, 1.0)
    assert geo_lo <= geo <= geo_hi and lo <= total <= hi
    # a strategy twice as fast everywhere is 2x on both
    assert np.isclose(bench.total_ci([(np.array([4.0]), np.array([2.0])), (np.array([8.0]), np.array([4.0]))])[0], 2.0)


def test_the_emulated_default_without_tie_breaks_is_the_ranking():
    ceiling = _script("bench_rank_ceiling")
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 4, 300)
    gaps = pred + rng.normal(0, 0.3, 300)
    target, prior = 2.0, [int(i) for i in rng.choice(300, 20, replace=False)]
    hit = np.abs(gaps - target) <= 0.05
    ranking = ceiling.static_lookups(np.abs(pred - target), hit, prior)
    emulated = ceiling.fresh_tie_break_lookups(pred, hit, target, prior, 0.0, np.random.default_rng(1), 400)
    assert emulated == ranking
    # runs with tie-breaks differ by seed, and repeat with the same seed
    runs = [
        ceiling.fresh_tie_break_lookups(pred, hit, target, prior, 0.2, np.random.default_rng(s), 400) for s in range(8)
    ]
    again = [
        ceiling.fresh_tie_break_lookups(pred, hit, target, prior, 0.2, np.random.default_rng(s), 400) for s in range(8)
    ]
    assert runs == again and len(set(runs)) > 1
