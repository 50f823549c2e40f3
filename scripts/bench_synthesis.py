"""Benchmark: how fast BO, BO + spectrum network and random LHS reach the paper's best losses.

On the embedded virtual lab (noisy replicate droplets, 21 per condition), seeded campaigns of

* ``bo``      – constrained LHS round, then GP-EI + local penalisation rounds of ``batch``;
* ``bo+dnn``  – the same, plus ``batch`` spectrum-network proposals per round from ``dnn_from``
                (the paper's parallel DNN runs, every one of its conditions counted);
* ``random``  – a fresh constrained LHS of ``batch`` every round (no model), run longer;

record the best condition loss (median over droplets) after each round. Reported: rounds and
experiments (conditions) until the best loss is at or below the paper's best condition after 8
BO rounds of 15 (0.167) and the paper's DNN best (0.135), as medians with 95 % bootstrap
intervals, and the share of campaigns that got there. Also timed: one 15-point BO suggestion
at 15 and 120 observations.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_synthesis.py --campaigns 20 [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from screening.bo.suggest import suggest_box
from screening.objectives.synthesis.objective import (
    PAPER_BEST_BO_LOSS,
    PAPER_BEST_DNN_LOSS,
    SynthesisObjective,
    synthesis_box,
)
from screening.objectives.synthesis.rounds import SynthesisCampaign, default_strategy
from screening.objectives.synthesis.virtual_lab import VirtualLab

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = {"0.167 (paper BO, 8 rounds)": PAPER_BEST_BO_LOSS, "0.135 (paper DNN)": PAPER_BEST_DNN_LOSS}
PAPER = {"0.167 (paper BO, 8 rounds)": (8, 120), "0.135 (paper DNN)": (8, 164)}


def run_framework(method: str, seed: int, args) -> dict:
    """One BO or BO + network campaign through the framework (SQLite store in a temp dir)."""
    obj = SynthesisObjective(
        lab=VirtualLab(n_replicates=args.replicates, seed=10_000 + seed), domain=synthesis_box(args.box)
    )
    with tempfile.TemporaryDirectory() as d:
        sc = SynthesisCampaign(d, obj, method=method, batch=args.batch, seed=seed, dnn_from=args.dnn_from)
        logs = []
        for _ in range(args.rounds):
            logs.append(sc.run_round())
            if logs[-1].best_loss_so_far <= args.stop_at:
                break  # every threshold reached: later rounds cannot change the figures
        sc.close()
    best = [r.best_loss_so_far for r in logs]
    n = [r.n_conditions_so_far for r in logs]
    return {
        "best": best + [best[-1]] * (args.rounds - len(best)),
        "n": n + [n[-1]] * (args.rounds - len(n)),
        "rounds_run": len(logs),
    }


def run_random(seed: int, args) -> dict:
    """Random LHS rounds (the baseline needs no model, so it runs without a campaign store)."""
    obj = SynthesisObjective(
        lab=VirtualLab(n_replicates=args.replicates, seed=10_000 + seed), domain=synthesis_box(args.box)
    )
    best, out, n = np.inf, {"best": [], "n": [], "losses": []}, 0
    for r in range(1, args.random_rounds + 1):
        X = obj.domain.latin_hypercube(args.batch, seed=seed * 1000 + r)
        for ev in obj.evaluate(X):
            if ev.ok:
                out["losses"].append(obj.loss(ev.y))
                best = min(best, out["losses"][-1])
        n += len(X)
        out["best"].append(best)
        out["n"].append(n)
    return out


def first_reach(run: dict, threshold: float) -> tuple[float, float]:
    """(rounds, experiments) at the end of the first round whose best is ≤ threshold; inf if never."""
    for i, b in enumerate(run["best"]):
        if b <= threshold:
            return i + 1, run["n"][i]
    return np.inf, np.inf


def median_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 4000) -> tuple[float, float, float]:
    """Median and 95 % bootstrap interval (inf = not reached within the campaign)."""
    v = np.asarray(values, dtype=float)
    boots = np.median(rng.choice(v, size=(n_boot, v.size), replace=True), axis=1)
    return float(np.median(v)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def fmt(m: tuple[float, float, float]) -> str:
    f = lambda x: "not reached" if not np.isfinite(x) else f"{x:g}"  # noqa: E731
    return f"{f(m[0])} [{f(m[1])}, {f(m[2])}]"


def time_suggestion(args) -> dict:
    """Seconds for one 15-point LP batch (what ``Campaign.ask`` runs for a round) at 15 and 120 observations."""
    obj = SynthesisObjective(lab=VirtualLab(n_replicates=args.replicates, seed=1), domain=synthesis_box("full"))
    box = obj.domain
    out = {}
    for n_obs in (15, 120):
        X = box.latin_hypercube(n_obs, seed=2)
        y = np.array([obj.loss(e.y) for e in obj.evaluate(X)])
        times = []
        for rep in range(3):
            t = time.perf_counter()
            suggest_box(default_strategy(15), box, X, np.full(n_obs, np.nan), y, q=15, seed=rep)
            times.append(time.perf_counter() - t)
        out[n_obs] = float(np.median(times))
    return out


def table(results: dict, args) -> str:
    rng = np.random.default_rng(0)
    lines = [
        "| method | campaigns | threshold | reached | rounds to reach, median [95% CI] | experiments to reach, median [95% CI] | paper (rounds / experiments) |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for label, thr in THRESHOLDS.items():
        for method, runs in results.items():
            reach = np.array([first_reach(r, thr) for r in runs])
            rounds, exps = median_ci(reach[:, 0], rng), median_ci(reach[:, 1], rng)
            share = np.isfinite(reach[:, 0]).mean()
            cap = args.random_rounds if method == "random" else args.rounds
            summary[(label, method)] = (rounds, exps, share)
            pr = PAPER[label]
            lines.append(
                f"| {method} (≤ {cap} rounds) | {len(runs)} | {label} | {share:.0%} | {fmt(rounds)} | {fmt(exps)} | {pr[0]} / {pr[1]} |"
            )
    ratios = []
    expected_random = {}
    if "random" in results:
        pooled = np.concatenate([r["losses"] for r in results["random"]])
        for label, thr in THRESHOLDS.items():
            p = float(np.mean(pooled <= thr))
            # rounds until a batch holds a hit are geometric with success 1 - (1 - p)^batch
            expected_random[label] = (p, args.batch / (1 - (1 - p) ** args.batch) if p > 0 else np.inf)
    for label in THRESHOLDS:
        rnd = summary.get((label, "random"))
        for method in ("bo", "bo+dnn"):
            s = summary.get((label, method))
            if s is None or rnd is None:
                continue
            ratio = rnd[1][0] / s[1][0] if np.isfinite(s[1][0]) and np.isfinite(rnd[1][0]) else float("nan")
            p, e_rand = expected_random.get(label, (float("nan"), float("nan")))
            ratio_e = e_rand / s[1][0] if np.isfinite(s[1][0]) else float("nan")
            ratios.append(
                f"| {method} | {label} | {s[0][0]:g} (paper 8, goal ≤ 4) | "
                f"{f'{ratio:.1f}×' if np.isfinite(ratio) else 'n/a'} | {p:.4f} | {e_rand:.0f} | "
                f"{f'{ratio_e:.1f}×' if np.isfinite(ratio_e) else 'n/a'} (goal ≥ 3×) |"
            )
    head = [
        "",
        "| method | threshold | median rounds to reach | experiments vs random LHS (ratio of medians) "
        "| random: P(condition ≤ threshold) | random: expected experiments | experiments vs expected random |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + head + ratios)


def curves_plot(results: dict, path: Path, rounds: int) -> None:
    from screening.objectives.synthesis.plots import plot_best_loss_per_round

    curves = {m: np.array([r["best"][:rounds] for r in runs]) for m, runs in results.items()}
    plot_best_loss_per_round(
        curves,
        path,
        references={"paper BO, 8 rounds": PAPER_BEST_BO_LOSS, "paper DNN": PAPER_BEST_DNN_LOSS},
        title="Virtual lab: best condition loss per round (median, IQR)",
    )


def write_docs(text: str) -> None:
    """Replace only the "## Nanoparticle synthesis" section of docs/benchmarks.md."""
    path = REPO / "docs" / "benchmarks.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    head = "## Nanoparticle synthesis"
    if head in old:
        start = old.index(head)
        nxt = old.find("\n## ", start + len(head))
        old = old[:start].rstrip("\n") + ("\n\n" + old[nxt + 1 :] if nxt != -1 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text.strip() + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaigns", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--random-rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=15)
    ap.add_argument("--replicates", type=int, default=21)
    ap.add_argument("--dnn-from", type=int, default=3)
    ap.add_argument("--box", default="full", help="full (the paper's widest box) or paper (Run-1 box + expansion)")
    ap.add_argument("--methods", default="bo,bo+dnn,random")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "matscreen-bench-synthesis")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "synthesis_best_loss.png")
    ap.add_argument("--timing-only", action="store_true", help="only time one 15-point suggestion")
    ap.add_argument("--docs-every", type=int, default=5, help="with --write-docs, update the docs every N seeds")
    ap.add_argument(
        "--stop-at",
        type=float,
        default=min(PAPER_BEST_BO_LOSS, PAPER_BEST_DNN_LOSS),
        help="end a BO campaign once its best loss is at or below this (default: the lowest threshold)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.timing_only:
        t = time_suggestion(args)
        print(f"one 15-point suggestion: {t[15]:.2f} s with 15 observations, {t[120]:.2f} s with 120")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    started = time.time()
    timing = time_suggestion(args)
    for seed in range(args.campaigns):  # seeds interleaved, so a cut-short run still compares all methods
        for method in methods:
            t = time.time()
            run = run_random(seed, args) if method == "random" else run_framework(method, seed, args)
            results[method].append(run)
            print(
                f"{method:7s} seed {seed:2d}: best per round {np.round(run['best'][: args.rounds], 3).tolist()}"
                f"  ({time.time() - t:.0f} s, total {time.time() - started:.0f} s)",
                flush=True,
            )
        (args.out / "runs.json").write_text(json.dumps(results))
        if args.write_docs and (seed + 1) % args.docs_every == 0 and seed + 1 < args.campaigns:
            write_docs(report(results, args, timing, started, partial=True))
    doc = report(results, args, timing, started)
    print(doc)
    (args.out / "benchmark.md").write_text(doc)
    if args.write_docs:
        write_docs(doc)


def report(results: dict, args, timing: dict, started: float, partial: bool = False) -> str:
    text = table(results, args)
    curves_plot(results, args.plot, args.rounds)
    n_done = min(len(v) for v in results.values())
    cmd = (
        f"OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_synthesis.py --campaigns {args.campaigns} --rounds {args.rounds} "
        f"--random-rounds {args.random_rounds} --batch {args.batch} --replicates {args.replicates} --dnn-from {args.dnn_from} "
        f"--box {args.box} --write-docs"
    )
    status = (
        f"**Partial: {n_done} of {args.campaigns} seeds done so far (the run is still going).**\n\n" if partial else ""
    )
    return f"""## Nanoparticle synthesis

{status}
Virtual lab (`screening/objectives/virtual_lab.py`, calibration in `docs/virtual_lab.md`), box `{args.box}`
(Q_AgNO3 4–45 %, Q_PVA 10–40 %, Q_TSC 0.5–30 %, Q_seed 0.5–20 %, Q_tot 200–1000 µL/min, shares ≤ 90 %),
{args.replicates} droplets per condition, loss = median droplet loss. {n_done} seeded campaigns per method;
BO and BO + network run {args.rounds} rounds of {args.batch} (the network adds {args.batch} conditions per round from
round {args.dnn_from}, all counted as experiments); random LHS runs {args.random_rounds} rounds of {args.batch}.
"Experiments" are conditions run, counted at the end of the round that first reaches the threshold
(a campaign that never reaches it counts as not reached; the median is then "not reached" if more than half did not).
The paper's figures are from its real campaign (`../shared/reference/agbonn/derived/runs_summary.csv`).

{text}

One 15-point BO suggestion (GP fit + LP batch with SLSQP refinement, unit-box coordinates), 1 thread, shared 2-core box:
{timing[15]:.2f} s with 15 observations, {timing[120]:.2f} s with 120 (goal < 10 s).

![best loss per round](synthesis_best_loss.png)

Command (total {time.time() - started:.0f} s on a 2-core box shared with a training job): `{cmd}`
"""


if __name__ == "__main__":
    main()
