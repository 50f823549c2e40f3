"""Benchmark: database screening throughput (structures/s) and peak memory, local vs Ray.

The database is the real Materials Project set (../shared/datasets/mp_mtcgcnn_2018), restricted
to the crystals the project's CGCNN did not train on (split == "test" in pretrained/split.csv),
replicated to the requested size with randomly perturbed copies: copy c > 0 of a crystal moves
every atom by Gaussian noise (sigma = --sigma Å along each cell axis) in its CIF text, so each copy
is parsed, graphed and embedded from scratch. Copies are generated lazily while the screen
reads them; 10^5 structures are never held in memory.

Each configuration (engine:workers, e.g. local:1 local:2 ray:2) runs ``screen_database`` in a fresh
subprocess; this process samples the memory of that subprocess and all its children (worker
processes, Ray's raylet and workers) every 0.2 s and reports the peak of the summed RSS (and of
PSS, which counts shared pages once). Throughput is reported overall (start-up and ranking
included) and steady (records after the first finished chunk / time between the first and the
last chunk). The projected wall time for 10^6 structures is start-up + 10^6 / steady rate +
final merge's time scaled linearly.

    nice -n 10 python scripts/bench_screen.py --sizes 1000             # development
    nice -n 10 python scripts/bench_screen.py --sizes 10000 100000 --markdown bench_screen.md --json bench_screen.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MATSCREEN_SHARED", REPO.parent / "shared"))
MP_CSV = SHARED / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"
SPLIT = REPO / "pretrained" / "split.csv"

# One atom-site row of a pymatgen P1 CIF: symbol, label, multiplicity, x, y, z, occupancy.
ATOM_ROW = re.compile(r"^(\s*\S+\s+\S+\s+\d+\s+)(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)(\s+\S+\s*)$", re.M)
ABC = re.compile(r"_cell_length_([abc])\s+([0-9.]+)")


def perturb_cif(text: str, rng, sigma_angstrom: float) -> str:
    """The CIF with every fractional coordinate moved by N(0, sigma/a) (wrapped into [0, 1))."""
    lengths = {m.group(1): float(m.group(2)) for m in ABC.finditer(text)}
    scale = [sigma_angstrom / lengths.get(axis, 5.0) for axis in "abc"]

    def move(match: re.Match) -> str:
        xyz = [(float(match.group(k + 2)) + rng.normal(0.0, scale[k])) % 1.0 for k in range(3)]
        return f"{match.group(1)}{xyz[0]:.8f}  {xyz[1]:.8f}  {xyz[2]:.8f}{match.group(5)}"

    return ATOM_ROW.sub(move, text)


class PerturbedCopies:
    """``size`` records: the base crystals in turn, copy 0 as is, later copies perturbed (lazy).

    Implements :class:`screening.screen.RecordSource` (``key``, ``__iter__``, ``count``); the same
    seed gives the same stream, so an interrupted benchmark run could resume.
    """

    def __init__(self, bases: list, size: int, sigma: float = 0.02, seed: int = 0) -> None:
        self.bases, self.size, self.sigma, self.seed = bases, size, sigma, seed
        self.key = f"perturbed-mp-test|{len(bases)}|{size}|{sigma}|{seed}"

    def __iter__(self):
        import numpy as np

        from screening.io.records import StructureRecord

        n = len(self.bases)
        for i in range(self.size):
            base = self.bases[i % n]
            copy = i // n
            text = base.text if copy == 0 else perturb_cif(base.text, np.random.default_rng((self.seed, i)), self.sigma)
            yield StructureRecord(f"{base.record_id}-c{copy}", base.source, text=text, labels=base.labels)

    def count(self) -> int:
        return self.size


def load_test_bases(mp_csv: Path, split: Path) -> list:
    """The MP records whose material_id is in the test split (CIF text kept, not parsed)."""
    import pandas as pd

    from screening.io.records import StructureRecord
    from screening.io.sources import iter_records

    test_ids = set(pd.read_csv(split).query("split == 'test'")["material_id"])
    return [r for r in iter_records(mp_csv) if isinstance(r, StructureRecord) and r.record_id in test_ids]


def bench_model(model: str | None, workdir: Path) -> tuple[str, str]:
    """(weights path, description): the project's model, or an untrained one of the same shape."""
    from screening.featurize.featurizer import resolve_model_path

    try:
        path = resolve_model_path(model)
        if path.exists():
            return str(path), f"{path.name}"
    except Exception:  # noqa: BLE001 - fall back to an untrained model of the same architecture
        if model is not None:
            raise
    from screening.atom_features import element_property_table
    from screening.models.cgcnn import CGCNNConfig, init_model, save_model

    path = workdir / "untrained_128.safetensors"
    save_model(init_model(CGCNNConfig(h_fea_len=128, atom_fea_len=64, n_conv=4), element_property_table()), path)
    return str(path), "untrained CGCNN of the project's shape (h=128, atom 64, 4 convs): same cost per crystal"


# --- one configuration (runs in a subprocess) ------------------------------------------------


def run_one(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from screening.screen.run import screen_database

    t_setup = time.perf_counter()
    bases = load_test_bases(Path(args.mp_csv), Path(args.split))
    source = PerturbedCopies(bases, args.size, args.sigma, args.seed)
    setup_s = time.perf_counter() - t_setup
    import psutil

    setup_rss = psutil.Process().memory_info().rss
    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    summary = screen_database(
        source,
        2.534,
        0.05,
        args.model_path,
        Path(args.out) / "ranked.parquet",
        chunk_size=args.chunk_size,
        engine=args.engine,
        workers=args.workers,
        progress=False,
        on_chunk_done=lambda r: stamps.append((time.perf_counter() - t0, r.n_items)),
    )
    wall = time.perf_counter() - t0
    first_t, first_n = stamps[0]
    last_t = stamps[-1][0]
    after_first = sum(n for _, n in stamps[1:])
    steady = after_first / (last_t - first_t) if last_t > first_t else float("nan")
    print(
        "RESULT "
        + json.dumps(
            {
                "size": args.size,
                "engine": args.engine,
                "workers": args.workers,
                "rows": summary.rows,
                "errors": summary.errors,
                "chunks": summary.chunks_total,
                "wall_s": wall,
                "first_chunk_s": first_t,
                "last_chunk_s": last_t,
                "rank_s": summary.rank_s,
                "tail_s": wall - last_t,
                "overall_rate": args.size / wall,
                "steady_rate": steady,
                "setup_s": setup_s,
                "driver_setup_rss_mb": setup_rss / 2**20,
                "bases": len(bases),
            }
        ),
        flush=True,
    )


def run_merge_only(args: argparse.Namespace) -> None:
    """Time and size the final merge alone: synthetic chunk files (random 128-d embeddings,
    gaps and labels) of ``--size`` rows in chunks of ``--chunk-size``, merged by ``rank_chunks``."""
    import numpy as np
    import pandas as pd
    import psutil

    from screening.screen.ray_executor import write_parquet_atomic
    from screening.screen.run import rank_chunks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    parts = []
    for k, start in enumerate(range(0, args.size, args.chunk_size)):
        parts.append(out / f"chunk-{k:06d}.parquet")
        if parts[-1].exists():  # --merge-dir: reuse chunks made by an earlier run
            continue
        n = min(args.chunk_size, args.size - start)
        frame = pd.DataFrame(
            {"id": [f"x-{start + i}" for i in range(n)], "formula": "NaCl", "pred_band_gap": rng.gamma(1.5, 1.2, n)}
        )
        frame = pd.concat(
            [
                frame,
                pd.DataFrame(rng.normal(size=(n, 128)).astype(np.float32), columns=[f"emb_{j}" for j in range(128)]),
            ],
            axis=1,
        )
        frame["band_gap"] = rng.gamma(1.5, 1.2, n)
        write_parquet_atomic(frame, parts[-1])
    before = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    result = rank_chunks(parts, "pred_band_gap", 2.534, 0.05, out / "ranked.parquet", out / "runs")
    wall = time.perf_counter() - t0
    print(
        "RESULT "
        + json.dumps(
            {
                "size": args.size,
                "chunks": len(parts),
                "merge_s": wall,
                "rows": result["rows"],
                "rss_before_merge_mb": before,
            }
        ),
        flush=True,
    )


# --- the driver ------------------------------------------------------------------------------


def tree_memory(pid: int, per_process: dict[str, float] | None = None) -> tuple[float, float]:
    """(summed RSS, summed PSS) in MiB of process ``pid`` and all its descendants.

    ``per_process`` (if given) keeps the peak RSS of each process, keyed by pid and name.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            if per_process is not None:
                name = f"{p.pid}:{p.name()}"
                per_process[name] = max(per_process.get(name, 0.0), info.rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss / 2**20, pss / 2**20


def measure(cmd: list[str], interval: float = 0.2) -> tuple[dict, float, float]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0, 0.0]
    per_process: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = tree_memory(proc.pid, per_process)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    done.set()
    sampler.join()
    result = next((json.loads(line[7:]) for line in output.splitlines() if line.startswith("RESULT ")), None)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"benchmark run failed ({proc.returncode}):\n{output[-3000:]}")
    result["peak_rss_by_process_mb"] = dict(sorted(per_process.items(), key=lambda kv: -kv[1])[:8])
    return result, peak[0], peak[1]


def projected_1e6(r: dict) -> float:
    """Seconds for 10^6 structures: start-up (to the first chunk) + 10^6 / steady rate + the
    final merge scaled linearly + the rest of the tail (pool shutdown), which does not grow."""
    fixed_tail = max(r["tail_s"] - r["rank_s"], 0.0)
    return r["first_chunk_s"] + 1e6 / r["steady_rate"] + r["rank_s"] * 1e6 / r["size"] + fixed_tail


def markdown(results: list[dict], model_note: str) -> str:
    lines = [
        f"Model: {model_note}. Chunk size {results[0]['chunk_size']}; database: {results[0]['bases']} MP test-split "
        f"crystals replicated with perturbed copies.",
        "",
        "| structures | engine | workers | wall (s) | overall (structures/s) | steady (structures/s) | speed-up vs local-1 "
        "| peak RSS, tree (MiB) | peak PSS, tree (MiB) | driver after set-up (MiB) | errors | projected 10^6 (h) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["size"]: r["steady_rate"] for r in results if r["engine"] == "local" and r["workers"] == 1}
    for r in results:
        ref = base.get(r["size"])
        speed = f"{r['steady_rate'] / ref:.2f}×" if ref else "–"
        lines.append(
            f"| {r['size']:,} | {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['overall_rate']:.1f} | "
            f"{r['steady_rate']:.1f} | {speed} | {r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | "
            f"{r['driver_setup_rss_mb']:.0f} | {r['errors']} | "
            f"{projected_1e6(r) / 3600:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000])
    p.add_argument("--configs", nargs="+", default=["local:1", "local:2", "ray:2"], help="engine:workers")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument(
        "--model", default=None, help="model name/path (default: the project's, else an untrained one of its shape)"
    )
    p.add_argument("--sigma", type=float, default=0.02, help="perturbation per axis (Å)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mp-csv", default=str(MP_CSV))
    p.add_argument("--split", default=str(SPLIT))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    # internal: one configuration in this process
    p.add_argument(
        "--merge-only",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="instead: time the final merge alone for N synthetic rows (no featurization)",
    )
    p.add_argument("--merge-dir", default=None, help="with --merge-only: keep the synthetic chunks here and reuse them")
    p.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-merge", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_one:
        run_one(args)
        return
    if args.run_merge:
        run_merge_only(args)
        return
    if args.merge_only:
        scratch = Path(args.merge_dir) if args.merge_dir else Path(tempfile.mkdtemp(prefix="bench_merge_"))
        try:
            for size in args.merge_only:
                cmd = [
                    sys.executable,
                    __file__,
                    "--run-merge",
                    "--size",
                    str(size),
                    "--chunk-size",
                    str(args.chunk_size),
                    "--seed",
                    str(args.seed),
                    "--out",
                    str(scratch / str(size)),
                ]
                result, rss, pss = measure(cmd)
                print(
                    f"merge of {size:>9,} rows in {result['chunks']} chunks: {result['merge_s']:6.1f} s "
                    f"({size / result['merge_s']:,.0f} rows/s); process peak RSS {rss:.0f} MiB "
                    f"(before the merge {result['rss_before_merge_mb']:.0f} MiB)",
                    flush=True,
                )
                if not args.merge_dir:
                    shutil.rmtree(scratch / str(size), ignore_errors=True)
        finally:
            if not args.merge_dir:
                shutil.rmtree(scratch, ignore_errors=True)
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench_screen_"))
    model_path, model_note = bench_model(args.model, scratch)
    results = []
    try:
        for size in args.sizes:
            for config in args.configs:
                engine, workers = config.split(":")
                out = scratch / f"{size}-{engine}-{workers}"
                cmd = [
                    sys.executable,
                    __file__,
                    "--run-one",
                    "--size",
                    str(size),
                    "--engine",
                    engine,
                    "--workers",
                    workers,
                    "--model-path",
                    model_path,
                    "--out",
                    str(out),
                    "--chunk-size",
                    str(args.chunk_size),
                    "--sigma",
                    str(args.sigma),
                    "--seed",
                    str(args.seed),
                    "--mp-csv",
                    args.mp_csv,
                    "--split",
                    args.split,
                ]
                result, rss, pss = measure(cmd)
                result.update(peak_rss_mb=rss, peak_pss_mb=pss, chunk_size=args.chunk_size)
                results.append(result)
                print(
                    f"{size:>8,} {engine:>5}:{workers}  wall {result['wall_s']:7.1f} s  overall {result['overall_rate']:7.1f}/s  "
                    f"steady {result['steady_rate']:7.1f}/s  peak RSS {rss:7.0f} MiB  PSS {pss:7.0f} MiB  "
                    f"errors {result['errors']}  10^6 in {projected_1e6(result) / 3600:.2f} h",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = markdown(results, model_note)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
