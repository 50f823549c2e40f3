"""Benchmark: evaluations to the first hit of a target band gap, and suggestion latency.

Pools are real Materials Project crystals (../shared/datasets/mp_mtcgcnn_2018) that the
project's CGCNN did *not* train on (split == "test" in pretrained/split.csv), featurised by that
model (cached under cache/). Settings follow the seed: a pool of the crystals with DFT gaps in
2.3-2.8 eV ("window") and a wider pool of all non-metals ("nonmetal"); 100 prior crystals drawn at
random among the non-hits; target 2.534 +- 0.01 eV and further targets.

Strategies (all share each run's prior data, so comparisons are paired):
- random: uniform draws without replacement (simulated; its exact mean is (N+1)/(K+1));
- cgcnn-rank: evaluate in order of |CGCNN predicted gap - target|;
- seed-gp-loss: the seed's method — GP on |gap - target| over PCA-3 of the embeddings, EI;
- value-window: GP on the gap itself, probability of landing in the tolerance window;
- value-window-prior: the same with the CGCNN prediction as the GP's prior mean;
- value-folded-ei: GP on the gap, expected improvement of the folded distance.

Outputs a Markdown table (stdout and --markdown) and raw per-run numbers (--json).

    nice -n 10 python scripts/bench_search.py --runs 50 --markdown docs/bench_search_table.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from screening.bo.baselines import expected_draws_to_first_hit  # noqa: E402
from screening.bo.campaign import Campaign, StopRules  # noqa: E402
from screening.bo.domain import DiscretePool  # noqa: E402
from screening.bo.strategy import Strategy, Target, suggest_pool  # noqa: E402
from screening.objectives.bandgap import BandGapPoolObjective, pool_from_frame  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MATSCREEN_SHARED", REPO.parent / "shared"))
MP_CSV = SHARED / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"

# name -> (strategy, PCA components (None = --pca-components), CGCNN prediction as an extra GP input)
BO_STRATEGIES = {
    "seed-gp-loss": (Strategy(model="loss", acquisition="ei"), None, False),
    "value-window": (Strategy(model="value", acquisition="window"), None, False),
    "value-window-prior": (Strategy(model="value", acquisition="window", use_prior=True), None, False),
    "value-window-fixedprior": (Strategy(model="value", acquisition="window", use_prior=True, fixed_prior_slope=True), None, False),
    "value-window-predfeat": (Strategy(model="value", acquisition="window"), None, True),
    "value-folded-ei": (Strategy(model="value", acquisition="folded-ei"), None, False),
    "value-window-prior-pca8": (Strategy(model="value", acquisition="window", use_prior=True), 8, False),
    "value-thompson-prior": (Strategy(model="value", acquisition="thompson", use_prior=True), None, False),
    "value-thompson-predfeat": (Strategy(model="value", acquisition="thompson"), None, True),
    "loss-ei-prior": (Strategy(model="loss", acquisition="ei", use_prior=True), None, False),
    "loss-ei-predfeat": (Strategy(model="loss", acquisition="ei"), None, True),
    "loss-ei-pca8": (Strategy(model="loss", acquisition="ei"), 8, False),
    "loss-thompson": (Strategy(model="loss", acquisition="thompson"), None, False),
    "loss-ucb": (Strategy(model="loss", acquisition="ucb", beta=4.0), None, False),
}
DEFAULT_STRATEGIES = ["random", "cgcnn-rank", "seed-gp-loss", "value-window", "value-window-prior", "value-folded-ei"]
DEFAULT_TARGETS = {"window": [2.534, 2.35, 2.45, 2.5, 2.6, 2.7], "nonmetal": [2.534, 1.0, 1.5, 2.0, 3.0, 4.0]}


# ----------------------------------------------------------------------------- pool


def featurised_test_pool(model: str | None, cache_dir: Path) -> pd.DataFrame:
    """id, formula, pred_band_gap, emb_*, band_gap for every split == test crystal (cached)."""
    from screening.featurize import featurize_records, load_featurizer_model, model_fingerprint
    from screening.io.records import StructureRecord

    import hashlib

    net = load_featurizer_model(model)
    split = pd.read_csv(REPO / "pretrained" / "split.csv")
    test_ids = set(split.loc[split["split"] == "test", "material_id"])
    split_hash = hashlib.sha256("\n".join(sorted(test_ids)).encode()).hexdigest()[:8]
    fp = model_fingerprint(net)[:12]
    out = cache_dir / f"bench_search_test_pool_{fp}_{split_hash}.parquet"
    if out.is_file():
        return pd.read_parquet(out)
    data = pd.read_csv(MP_CSV, usecols=["material_id", "band_gap", "cif"])
    data = data[data["material_id"].isin(test_ids)]
    records = [StructureRecord(record_id=r.material_id, source=str(MP_CSV), text=r.cif, labels={"band_gap": float(r.band_gap)})
               for r in data.itertuples()]
    result = featurize_records(records, net, batch_size=256, progress=True)
    if result.errors:
        print(f"{len(result.errors)} crystals failed to featurise, e.g. {result.errors[0]}", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    result.frame.to_parquet(out, index=False)
    print(f"featurised {len(result.frame)} test crystals with model {fp} -> {out}", file=sys.stderr)
    return result.frame


def subset(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    gap = frame["band_gap"].astype(float)
    if name == "window":
        return frame[(gap >= 2.3) & (gap <= 2.8)].reset_index(drop=True)
    if name == "nonmetal":
        return frame[gap > 0].reset_index(drop=True)
    raise SystemExit(f"unknown pool {name!r}")


# ----------------------------------------------------------------------------- one run


def prior_ids(objective: BandGapPoolObjective, n_prior: int, run: int) -> list[str]:
    hits = [c for c, g in zip(objective.domain.ids, objective.band_gaps) if objective.is_hit(g)]
    return objective.domain.random_ids(n_prior, np.random.default_rng(run), excluded=hits)


def evaluations_to_hit(strategy: str, objective: BandGapPoolObjective, prior: list[str], run: int, budget: int,
                       workdir: Path) -> int | None:
    """Search evaluations up to and including the first hit; None if ``budget`` ran out."""
    dom = objective.domain
    rest = np.array([i for i, c in enumerate(dom.ids) if c not in set(prior)])
    hit = np.abs(objective.band_gaps - objective.target) <= objective.tolerance + 1e-12
    if strategy == "random":
        order = np.random.default_rng(10_000 + run).permutation(rest)
    elif strategy == "cgcnn-rank":
        order = rest[np.argsort(np.abs(dom.prior_mean[rest] - objective.target), kind="stable")]
    else:
        path = workdir / f"{strategy}-{run}.sqlite"
        c = Campaign.create(path, objective, BO_STRATEGIES[strategy][0], seed=run, stop=StopRules(budget=budget))
        c.tell_evaluations(objective.evaluate(prior), source="prior")
        h = c.run()
        c.close()
        path.unlink()
        return h.first_hit()
    first = np.flatnonzero(hit[order])
    return int(first[0]) + 1 if first.size and first[0] < budget else None


# ----------------------------------------------------------------------------- statistics


def bootstrap_ci(values: np.ndarray, stat, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [stat(values[rng.integers(0, values.size, values.size)]) for _ in range(n_boot)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def summarise(evals: list[int | None], budget: int) -> dict:
    """Median/mean with 95% bootstrap intervals; unfinished runs count as budget + 1 (a floor)."""
    v = np.array([e if e is not None else budget + 1 for e in evals], dtype=float)
    return {"runs": len(evals), "unfinished": int(sum(e is None for e in evals)),
            "median": float(np.median(v)), "median_ci": bootstrap_ci(v, np.median),
            "mean": float(v.mean()), "mean_ci": bootstrap_ci(v, np.mean)}


# ----------------------------------------------------------------------------- latency


def latency(sizes: list[int], n_obs: list[int], repeats: int = 3, agreement_max_pairs: int = 100_000_000) -> list[dict]:
    """Seconds per single suggestion on synthetic 3-d pools (PCA-3 sized), value-window strategy.

    ``steady``: hyper-parameters reused (most steps of a campaign); ``refit``: including the
    marginal-likelihood fit (the steps where the refit schedule fires).
    """
    rows = []
    rng = np.random.default_rng(0)
    for N in sizes:
        F = rng.random((N, 3))
        gap = 2.0 + np.sin(4 * F[:, 0]) + F[:, 1] + 0.3 * np.cos(7 * F[:, 2])
        pool = DiscretePool([str(i) for i in range(N)], F)
        t = time.perf_counter()
        pool.partition(Strategy().leaf_size)
        t_partition = time.perf_counter() - t
        for n in n_obs:
            told = [str(i) for i in range(n)]
            y = gap[:n]
            strategy = Strategy(refit_all_below=min(100, n - 1))
            t = time.perf_counter()
            cache: dict = {}
            suggest_pool(strategy, pool, told, y, np.abs(y - 2.534), seed=0, target=Target(2.534, 0.01), hyper_cache=cache)
            t_refit = time.perf_counter() - t
            times = []
            for r in range(repeats):
                t = time.perf_counter()
                suggest_pool(strategy, pool, told, y, np.abs(y - 2.534), seed=r, target=Target(2.534, 0.01), hyper_cache=cache)
                times.append(time.perf_counter() - t)
            agree = None
            screened = N * n > strategy.screen_above_pairs
            if screened and N * n <= agreement_max_pairs:
                # Does leaf screening pick what exhaustive scoring picks? Five targets, same data.
                exhaustive = Strategy(refit_all_below=min(100, n - 1), screen_above_pairs=10**15)
                hits = 0
                for tg in (2.2, 2.4, 2.534, 2.7, 3.0):
                    a = suggest_pool(strategy, pool, told, y, np.abs(y - tg), seed=0, target=Target(tg, 0.01), hyper_cache=cache)
                    b = suggest_pool(exhaustive, pool, told, y, np.abs(y - tg), seed=0, target=Target(tg, 0.01), hyper_cache=cache)
                    hits += a == b
                agree = f"{hits}/5"
            rows.append({"candidates": N, "observations": n, "steady_s": float(np.median(times)), "refit_s": t_refit,
                         "partition_once_s": t_partition, "screened": screened, "agreement": agree})
            print(f"latency N={N} n={n}: steady {np.median(times):.3f} s, with refit {t_refit:.3f} s, agreement {agree}", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="seeded runs per (pool, target, strategy)")
    ap.add_argument("--runs-other-targets", type=int, default=None, help="runs for targets other than 2.534 (default: --runs)")
    ap.add_argument("--pools", default="window,nonmetal")
    ap.add_argument("--targets", default=None, help="comma list; default per pool")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                    help=f"comma list of random, cgcnn-rank, {', '.join(BO_STRATEGIES)}")
    ap.add_argument("--tol", type=float, default=0.01, help="eV")
    ap.add_argument("--n-prior", type=int, default=100)
    ap.add_argument("--budget", type=int, default=150, help="max search evaluations per run")
    ap.add_argument("--pca-components", type=int, default=3)
    ap.add_argument("--model", default=None, help="featuriser model (default: the project's pretrained one)")
    ap.add_argument("--pool-parquet", type=Path, default=None, help="use this featurised pool instead of building the MP test pool")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "cache")
    ap.add_argument("--latency", default="10000,100000,1000000", help="candidate counts for the latency table ('' to skip)")
    ap.add_argument("--latency-obs", default="100,1000")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    if not args.pools:
        frame = pd.DataFrame()
    elif args.pool_parquet:
        frame = pd.read_parquet(args.pool_parquet)
    else:
        frame = featurised_test_pool(args.model, args.cache_dir)
    strategies = args.strategies.split(",")
    results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "pools": {}}
    lines = ["| pool | target (eV) | N after prior | hits | strategy | runs | median [95% CI] | mean [95% CI] | enhancement vs random (mean) |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for pool_name in [p for p in args.pools.split(",") if p]:
            sub = subset(frame, pool_name)
            pools = {None: pool_from_frame(sub, n_components=args.pca_components, source=pool_name)}
            for name in strategies:
                dims = BO_STRATEGIES.get(name, (None, None, False))[1]
                if dims is not None and dims not in pools:
                    pools[dims] = pool_from_frame(sub, n_components=dims, source=pool_name)
            variants = {v[1:] for v in BO_STRATEGIES.values()} | {(None, False)}
            targets = [float(t) for t in args.targets.split(",")] if args.targets else DEFAULT_TARGETS[pool_name]
            for target in targets:
                objectives = {(d, pf): BandGapPoolObjective.from_pool(pools[d], target, args.tol, use_prior=True, pred_as_feature=pf)
                              for d, pf in variants if d in pools}
                objective = objectives[(None, False)]
                k = objective.n_hits()
                if k == 0:
                    print(f"{pool_name} {target}: no hit in the pool, skipped", file=sys.stderr)
                    continue
                n_after = len(sub) - args.n_prior
                if n_after < k or len(sub) - k < args.n_prior:
                    print(f"{pool_name} {target}: pool too small for {args.n_prior} prior non-hits, skipped", file=sys.stderr)
                    continue
                exact = expected_draws_to_first_hit(n_after, k)
                runs = args.runs if abs(target - 2.534) < 1e-9 or args.runs_other_targets is None else args.runs_other_targets
                entry = {"n_pool": len(sub), "hits": k, "random_exact_mean": exact, "strategies": {}}
                for name in strategies:
                    t0 = time.perf_counter()
                    evals = []
                    obj = objectives[BO_STRATEGIES.get(name, (None, None, False))[1:]]
                    for run in range(runs):
                        prior = prior_ids(objective, args.n_prior, run)  # same prior for every strategy
                        evals.append(evaluations_to_hit(name, obj, prior, run, args.budget, Path(tmp)))
                    s = summarise(evals, args.budget)
                    s["evals"] = evals
                    s["seconds"] = time.perf_counter() - t0
                    entry["strategies"][name] = s
                    ratio = exact / s["mean"]
                    cens = f" ({s['unfinished']} unfinished)" if s["unfinished"] else ""
                    lines.append(f"| {pool_name} | {target} | {n_after} | {k} | {name} | {runs}{cens} | "
                                 f"{s['median']:.1f} [{s['median_ci'][0]:.1f}, {s['median_ci'][1]:.1f}] | "
                                 f"{s['mean']:.1f} [{s['mean_ci'][0]:.1f}, {s['mean_ci'][1]:.1f}] | {ratio:.2f}x |")
                    print(lines[-1], f"({s['seconds']:.0f} s)", file=sys.stderr, flush=True)
                lines.append(f"| {pool_name} | {target} | {n_after} | {k} | random (exact mean) | - | - | {exact:.1f} | 1.00x |")
                results["pools"].setdefault(pool_name, {})[str(target)] = entry
    table = "\n".join(lines)
    lat_table = ""
    if args.latency:
        rows = latency([int(x) for x in args.latency.split(",")], [int(x) for x in args.latency_obs.split(",")])
        results["latency"] = rows
        lat_table = "\n".join(["| candidates | observations | steady step (s) | step with hyper-parameter refit (s) | leaf screening | same pick as exhaustive |",
                               "|---|---|---|---|---|---|"] +
                              [f"| {r['candidates']:,} | {r['observations']:,} | {r['steady_s']:.3f} | {r['refit_s']:.3f} | "
                               f"{'yes' if r['screened'] else 'no (exact)'} | {r['agreement'] or '-'} |" for r in rows])
    print(table)
    if lat_table:
        print()
        print(lat_table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(table + ("\n\n" + lat_table if lat_table else "") + "\n")


if __name__ == "__main__":
    main()
