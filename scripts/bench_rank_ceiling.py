"""Benchmark: can a search without known data get past the network's own ranking?

Setting b of ``bench_search.py`` (100 random priors from the pool, no known data) is where the
default search only ties the ranking by |pred_band_gap - t|. This script measures two ideas that
use nothing a user without known data lacks, as static or rule-based orders (no GP), so hundreds
of runs take minutes:

  calibrated  rank by P(|gap - t| <= h | pred), a kernel estimate (Nadaraya-Watson: Gaussian
              kernels of width ``bw_pred`` on the prediction and ``bw_gap`` on the gap) fitted on
              crystals the pool does not contain — the shape of the network's errors (bias,
              skew, regression to the mean) as a shipped model could carry it
  std window  rank by the Gaussian probability of the ±tol window with a per-crystal width
              sqrt((a pred_band_gap_std)^2 + c^2): the network's own uncertainty, which a user
              without known data has too
  siblings    the ranking, but every unobserved candidate within ``radius`` (standardised 128-d
              embedding) of a labelled crystal (prior or result) whose gap missed the target by
              more than 0.05 eV moves back by ``penalty`` eV of |pred - t|: near-duplicates of a
              miss are likely misses too

and one question about the measure itself (``--orders``): without known data the default search
is the ranking with its near-ties taken in a seeded random order (``Strategy.tie_break``), so its
look-ups vary from run to run while the ranking's do not. Is the ranking's own near-tie order
(the last digits of the network's output) worth anything, and what does the geometric mean of
ratios of mean look-ups give a randomised search that is exactly as informed as a fixed order?
``--orders N`` draws N fixed orders by |pred + e z - t| (z one standard normal per crystal, e the
default's tie-break in eV: ``DEFAULT_TIE_BREAK`` x the no-known-data model's predictive std on
that pool) and compares the ranking, an emulation of the default (a fresh draw at every
look-up) and, with ``--search-json``, the library's own runs of the default from
``bench_search.py``, against each of them. ``--scales`` runs the emulated default with the
tie-break at multiples of its size, against the ranking.

Pools: b (test crystals with a gap > 0; ``calibrated`` fitted on all validation crystals) and its
development twin vb (validation crystals with a gap > 0, split in two halves; each half's order
fitted on the other half). Look-ups per run as in ``bench_search.py`` (priors removed from the
pool, the first hit counts); ratios are the ranking's mean look-ups over the idea's, geometric
mean over targets with the bootstrap interval of ``bench_search.geo_ci``.

    python scripts/bench_rank_ceiling.py --seeds 10
    python scripts/bench_rank_ceiling.py --seeds 30 --scales 0.25,0.5,1,2 --only-orders
    python scripts/bench_rank_ceiling.py --seeds 30 --orders 50 --only-orders --search-json cache/bench_b30_tb01.json \
        --search-json cache/bench_vb30_default.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import (  # noqa: E402
    REPO,
    STRATEGIES,
    TARGETS,
    emb_cols,
    featurised_mp,
    geo_ci,
    make_pool,
    prior_rows,
    setting_frames,
    start_state,
    total_ci,
)

from screening.bo.neighbour_search import predictive  # noqa: E402
from screening.bo.strategy import DEFAULT_TIE_BREAK  # noqa: E402

MISS_MARGIN = 0.05  # eV: a labelled crystal this far from the target marks its siblings as likely misses


def static_lookups(score: np.ndarray, hit: np.ndarray, prior: list[int]) -> int:
    """Look-ups to the first hit when candidates are taken in ascending ``score``, priors left out."""
    order = np.argsort(score, kind="stable")
    order = order[~np.isin(order, prior)]
    return int(np.argmax(hit[order])) + 1


def hit_rate_score(
    fit_pred: np.ndarray, fit_gap: np.ndarray, pred: np.ndarray, target: float, bw_pred: float, bw_gap: float
) -> np.ndarray:
    """Minus the kernel estimate of P(gap near ``target`` | pred) for each ``pred`` (lower is better),
    with |pred - target| as a vanishing tie-break."""
    w_pred = np.exp(-0.5 * ((pred[:, None] - fit_pred[None, :]) / bw_pred) ** 2)
    w_gap = np.exp(-0.5 * ((fit_gap - target) / bw_gap) ** 2)
    rate = (w_pred @ w_gap) / (w_pred.sum(axis=1) + 1e-12)
    return -rate + 1e-9 * np.abs(pred - target)


def std_window_score(
    pred: np.ndarray, std: np.ndarray, target: float, tol: float, scale: float, floor: float
) -> np.ndarray:
    """Minus the log probability that the gap lies in [target - tol, target + tol] when it is
    Normal(pred, scale^2 std^2 + floor^2) (lower is better), with |pred - target| breaking the
    ties of candidates so far out that the probability underflows."""
    from scipy.stats import norm

    width = np.sqrt((scale * std) ** 2 + floor**2)
    inside = norm.cdf((target + tol - pred) / width) - norm.cdf((target - tol - pred) / width)
    return -np.log(inside + 1e-300) + 1e-9 * np.abs(pred - target)


def sibling_skip_lookups(
    z: np.ndarray,
    pred: np.ndarray,
    gaps: np.ndarray,
    target: float,
    tol: float,
    prior: list[int],
    radius: float,
    penalty: float,
) -> int:
    """Look-ups to the first hit for the ranking with misses' near-duplicates moved back."""
    hit = np.abs(gaps - target) <= tol + 1e-12
    score = np.abs(pred - target)
    free = np.ones(len(pred), bool)
    free[prior] = False

    def learn(i: int) -> None:
        if abs(gaps[i] - target) > MISS_MARGIN:
            near = free & (np.sqrt(((z - z[i]) ** 2).sum(axis=1)) < radius)
            score[near] += penalty

    for i in prior:
        learn(i)
    for k in range(1, len(pred) + 1):
        j = int(np.flatnonzero(free)[np.argmin(score[free])])
        free[j] = False
        if hit[j]:
            return k
        learn(j)
    return len(pred)


def fresh_tie_break_lookups(
    pred: np.ndarray,
    hit: np.ndarray,
    target: float,
    prior: list[int],
    eps: float,
    rng: np.random.Generator,
    budget: int,
) -> int:
    """Look-ups to the first hit taking the smallest |pred + eps z - t| with z drawn afresh at each
    look-up: the default search without known data, where the model's mean is the prediction."""
    free = np.ones(len(pred), bool)
    free[prior] = False
    for k in range(1, budget + 1):
        score = np.abs(pred + eps * rng.standard_normal(len(pred)) - target)
        score[~free] = np.inf
        j = int(np.argmin(score))
        free[j] = False
        if hit[j]:
            return k
    return budget + 1


def geo_ratio(per_target: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Geometric mean over targets of mean(baseline) / mean(strategy), as ``geo_ci``'s point."""
    return float(np.exp(np.mean([np.log(np.mean(b) / np.mean(s)) for b, s in per_target])))


def spread(values: list[float]) -> str:
    v = np.sort(values)
    return f"{np.median(v):.3f} [{v[0]:.3f}, {v[-1]:.3f}]"


def tie_break_ev(pool_frame: pd.DataFrame, tol: float) -> float:
    """The default's tie-break in eV on this pool: ``DEFAULT_TIE_BREAK`` x the predictive std of the
    model a search builds from 100 priors without known data (prior set 0 at 2.534 eV, as
    ``bench_search`` reports its calibration)."""
    pool = make_pool(pool_frame, None)
    gaps = pool_frame["band_gap"].to_numpy(np.float64)
    prior = prior_rows(gaps, 2.534, tol, 100, 0)
    _, std = predictive(start_state(STRATEGIES["nn-window"], pool, tol, prior, gaps[prior]))
    return DEFAULT_TIE_BREAK * float(np.median(std))


def library_runs(paths: list[Path], setting: str, budget: int) -> dict[float, dict[str, np.ndarray]]:
    """Look-ups per target of the ranking ("rank") and the default strategy ("default") in the
    first of ``bench_search.py``'s JSON files that ran ``setting``."""
    for path in paths:
        res = json.loads(path.read_text())["settings"].get(setting)
        if res is None:
            continue
        name = next(n for n in next(iter(res["targets"].values()))["runs"] if n != "rank")
        return {
            float(t): {
                key: np.array([budget + 1 if e is None else e for e in entry["runs"][run]], float)
                for key, run in (("rank", "rank"), ("default", name))
            }
            for t, entry in res["targets"].items()
        }
    return {}


def pool_targets(
    pool_frame: pd.DataFrame, args: argparse.Namespace
) -> Iterator[tuple[int, float, np.ndarray, list[list[int]], np.ndarray]]:
    """(target index, target, hit mask, prior sets, the ranking's look-ups) for each target the
    pool has a hit for, with the prior sets and budget cap of ``bench_search.py``."""
    gaps, pred = pool_frame["band_gap"].to_numpy(), pool_frame["pred_band_gap"].to_numpy()
    for ti, target in enumerate(TARGETS):
        hit = np.abs(gaps - target) <= args.tol + 1e-12
        if not hit.any():
            continue
        priors = [prior_rows(gaps, target, args.tol, 100, s) for s in range(args.seeds)]
        rank = np.array([static_lookups(np.abs(pred - target), hit, p) for p in priors], float)
        yield ti, target, hit, priors, np.minimum(rank, args.budget + 1)


def tie_break_pools(frame: pd.DataFrame, tol: float) -> Iterator[tuple[str, pd.DataFrame, np.ndarray, float]]:
    """(name, pool, predictions, the default's tie-break in eV) for b and its development twin vb."""
    for name in ("b", "vb"):
        pool_frame = setting_frames(frame, name)[0]
        yield name, pool_frame, pool_frame["pred_band_gap"].to_numpy(), tie_break_ev(pool_frame, tol)


def exchangeable_orders(frame: pd.DataFrame, args: argparse.Namespace) -> None:
    """The ranking, the emulated default and the library's default against fixed random near-tie orders."""
    print(
        f"\n{args.orders} fixed orders by |pred + e z - t| per pool, {args.seeds} prior sets per target: "
        "median [range] over the orders of the geometric-mean ratio (× the order: its look-ups over the other's)"
    )
    print(
        "| pool | e (eV) | ranking × the orders | orders the ranking beats | emulated default × ranking | "
        "emulated default × the orders | library default × ranking | library default × the orders |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, pool_frame, pred, eps in tie_break_pools(frame, args.tol):
        library = library_runs(args.search_json, name, args.budget)
        rank_vs_order: list[list] = [[] for _ in range(args.orders)]
        emul_vs_order: list[list] = [[] for _ in range(args.orders)]
        lib_vs_order: list[list] = [[] for _ in range(args.orders)]
        emul_vs_rank, lib_vs_rank = [], []
        for ti, target, hit, priors, rank in pool_targets(pool_frame, args):
            emul = np.array(
                [
                    fresh_tie_break_lookups(pred, hit, target, p, eps, np.random.default_rng([s, ti, 7]), args.budget)
                    for s, p in enumerate(priors)
                ],
                float,
            )
            emul_vs_rank.append((rank, emul))
            lib = None
            if target in library:
                if not np.array_equal(library[target]["rank"], rank):  # same pool and prior sets, or no comparison
                    raise SystemExit(f"{name} t={target}: the JSON's ranking runs differ from this pool's")
                lib = library[target]["default"]
                lib_vs_rank.append((rank, lib))
            for j in range(args.orders):
                z = np.random.default_rng([j, ti, 123]).standard_normal(len(pred))
                order = np.array([static_lookups(np.abs(pred + eps * z - target), hit, p) for p in priors], float)
                order = np.minimum(order, args.budget + 1)
                rank_vs_order[j].append((order, rank))
                emul_vs_order[j].append((order, emul))
                if lib is not None:
                    lib_vs_order[j].append((order, lib))
        beats = np.mean([geo_ratio(r) > 1 for r in rank_vs_order])
        lib_cells = ["—", "—"]
        if lib_vs_rank:
            lib_cells = [f"{geo_ratio(lib_vs_rank):.3f}", spread([geo_ratio(r) for r in lib_vs_order])]
        print(
            f"| {name} | {eps:.4f} | {spread([geo_ratio(r) for r in rank_vs_order])} | {beats:.0%} | "
            f"{geo_ratio(emul_vs_rank):.3f} | {spread([geo_ratio(r) for r in emul_vs_order])} | "
            f"{lib_cells[0]} | {lib_cells[1]} |",
            flush=True,
        )


def tie_break_sizes(frame: pd.DataFrame, args: argparse.Namespace) -> None:
    """The emulated default against the ranking at tie-breaks of ``args.scales`` times the default's."""
    print(
        f"\nthe emulated default at other tie-break sizes, {args.seeds} prior sets per target: × ranking by the "
        "geometric mean and by look-ups summed over targets [95 % CI]"
    )
    print("| pool | tie-break (× the default's) | e (eV) | × ranking | × ranking, summed |\n|---|---|---|---|---|")
    for name, pool_frame, pred, default_eps in tie_break_pools(frame, args.tol):
        for scale in args.scales:
            eps = scale * default_eps
            per_target = []
            for ti, target, hit, priors, rank in pool_targets(pool_frame, args):
                rng = [np.random.default_rng([s, ti, 7]) for s in range(args.seeds)]
                emul = [fresh_tie_break_lookups(pred, hit, target, p, eps, r, args.budget) for p, r in zip(priors, rng)]
                per_target.append((np.asarray(rank, float), np.asarray(emul, float)))
            g, glo, ghi = geo_ci(per_target)
            t, tlo, thi = total_ci(per_target)
            print(
                f"| {name} | {scale:g} | {eps:.4f} | {g:.3f} [{glo:.3f}, {ghi:.3f}] | {t:.3f} [{tlo:.3f}, {thi:.3f}] |",
                flush=True,
            )


def ratio_line(name: str, runs: dict[float, tuple[np.ndarray, np.ndarray]]) -> str:
    point, lo, hi = geo_ci(list(runs.values()))
    at_or_below = sum(np.mean(s) <= np.mean(r) for r, s in runs.values())
    return f"| {name} | {point:.3f}× [{lo:.3f}, {hi:.3f}] | {at_or_below}/{len(runs)} |"


def pool_parts(frame: pd.DataFrame) -> dict[str, list[tuple[pd.DataFrame, pd.DataFrame]]]:
    """(pool, calibration crystals) pairs per pool name."""
    test = frame[(frame["split"] == "test") & (frame["band_gap"] > 0)].reset_index(drop=True)
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    dev = val[val["band_gap"] > 0].reset_index(drop=True)
    half = np.random.default_rng(0).random(len(dev)) < 0.5
    a, b = dev[half].reset_index(drop=True), dev[~half].reset_index(drop=True)
    return {"b": [(test, val)], "vb": [(a, b), (b, a)]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--cache-dir", type=Path, default=REPO / "cache")
    ap.add_argument("--budget", type=int, default=400, help="look-ups before a run counts as unfinished")
    ap.add_argument("--orders", type=int, default=0, help="fixed random near-tie orders to compare against (0: skip)")
    ap.add_argument(
        "--search-json",
        type=Path,
        action="append",
        default=[],
        help="bench_search.py results with the default on b / vb",
    )
    ap.add_argument(
        "--scales", type=lambda v: [float(x) for x in v.split(",")], default=[], help="tie-break sizes, × the default's"
    )
    ap.add_argument("--only-orders", action="store_true", help="skip the calibrated and siblings ideas")
    args = ap.parse_args(argv)
    frame = featurised_mp(None, args.cache_dir)
    if args.orders:
        exchangeable_orders(frame, args)
    if args.scales:
        tie_break_sizes(frame, args)
    if args.only_orders:
        return
    cols = emb_cols(frame)
    mu, sd = frame[cols].to_numpy().mean(axis=0), frame[cols].to_numpy().std(axis=0) + 1e-9
    kernels = [(0.02, 0.1), (0.1, 0.02), (0.1, 0.1), (0.2, 0.05), (0.2, 0.1)]
    siblings = [(0.25, 1.0), (0.5, 1.0), (0.5, 0.1), (1.0, 1.0)]
    std_widths = [(0.5, 0.15), (1.0, 0.05), (1.0, 0.15), (1.0, 0.3), (2.0, 0.15)]
    val = frame[(frame["split"] == "val") & (frame["band_gap"] > 0)]
    rho = (val["band_gap"] - val["pred_band_gap"]).abs().rank().corr(val["pred_band_gap_std"].rank())
    print(f"validation crystals with a gap > 0: Spearman(|pred - gap|, pred_band_gap_std) = {rho:.3f}")
    for name, parts in pool_parts(frame).items():
        runs: dict[str, dict] = {}
        for part, (pool, fit) in enumerate(parts):
            gaps, pred = pool["band_gap"].to_numpy(), pool["pred_band_gap"].to_numpy()
            z = (pool[cols].to_numpy() - mu) / sd
            for target in TARGETS:
                hit = np.abs(gaps - target) <= args.tol + 1e-12
                if not hit.any():
                    continue
                priors = [prior_rows(gaps, target, args.tol, 100, s) for s in range(args.seeds)]
                rank = np.array([static_lookups(np.abs(pred - target), hit, p) for p in priors], float)
                key = (part, target)
                for bw in kernels:
                    score = hit_rate_score(
                        fit["pred_band_gap"].to_numpy(), fit["band_gap"].to_numpy(), pred, target, *bw
                    )
                    ideas = np.array([static_lookups(score, hit, p) for p in priors], float)
                    runs.setdefault(f"calibrated, widths {bw[0]} / {bw[1]} eV", {})[key] = (rank, ideas)
                std = pool["pred_band_gap_std"].to_numpy()
                for scale, floor in std_widths:
                    score = std_window_score(pred, std, target, args.tol, scale, floor)
                    ideas = np.array([static_lookups(score, hit, p) for p in priors], float)
                    runs.setdefault(f"std window, a {scale}, c {floor} eV", {})[key] = (rank, ideas)
                for rad, pen in siblings:
                    ideas = np.array(
                        [sibling_skip_lookups(z, pred, gaps, target, args.tol, p, rad, pen) for p in priors], float
                    )
                    runs.setdefault(f"siblings, radius {rad}, penalty {pen} eV", {})[key] = (rank, ideas)
            print(f"[{name}] part {part} done", file=sys.stderr, flush=True)
        print(
            f"\npool {name} ({args.seeds} prior sets per target): the idea × the ranking [95 % CI], "
            "targets (halves × targets for vb) where its mean look-ups are at or below the ranking's"
        )
        print("| idea | × ranking | at or below the ranking |\n|---|---|---|")
        for idea, per_target in runs.items():
            print(ratio_line(idea, per_target), flush=True)


if __name__ == "__main__":
    main()
