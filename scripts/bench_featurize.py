"""Featurization throughput: the original CGCNN algorithm against matscreen, side by side.

On the same N CIFs from the real MP set (``../shared/datasets/mp_mtcgcnn_2018``, crystals of the
test split when ``pretrained/split.csv`` exists), one process, one torch thread each, it times

    stage            baseline (original algorithm)                 matscreen
    CIF parsing      pymatgen Structure.from_str                   screening.io.cif fast path
    graph building   get_all_neighbors + per-site sort + numpy     get_neighbor_list + lexsort
                     Gaussian expansion to (N, 12, 41)             (Gaussians inside the model)
    forward          concat [x_i; x_j; g_ij] -> fc_full, as the    three-block fc_full, dense
                     original model computes it                    fixed-degree sum

with the same weights (the project's model), and checks both give the same embeddings. It also
times matscreen end to end with 2 worker processes (the machine has 2 cores), and with
``--full-mp`` featurizes all 36,738 crystals through ``featurize_source`` reporting rows/s and
peak memory (this process + workers).

    python scripts/bench_featurize.py --n 1000
    python scripts/bench_featurize.py --n 1000 --full-mp --compile
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
MP_CSV = REPO.parent / "shared" / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"


# --- the baseline: the original algorithm, written from its published equations -------------


def baseline_graph(structure, atom_table: np.ndarray, radius: float = 8.0, max_num_nbr: int = 12):
    """Per-site Python loop over get_all_neighbors, as the original data pipeline does."""
    atom_fea = np.vstack([atom_table[site.specie.Z] for site in structure])
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in structure.get_all_neighbors(radius)]
    nbr_idx, nbr_dist = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            nbr_idx.append([x[2] for x in nbr] + [0] * (max_num_nbr - len(nbr)))
            nbr_dist.append([x[1] for x in nbr] + [radius + 1.0] * (max_num_nbr - len(nbr)))
        else:
            nbr_idx.append([x[2] for x in nbr[:max_num_nbr]])
            nbr_dist.append([x[1] for x in nbr[:max_num_nbr]])
    centres = np.arange(0, radius + 0.2, 0.2)
    gauss = np.exp(-((np.array(nbr_dist)[..., None] - centres) ** 2) / 0.2**2)
    return (
        torch.tensor(atom_fea, dtype=torch.float32),
        torch.tensor(gauss, dtype=torch.float32),
        torch.tensor(np.array(nbr_idx), dtype=torch.long),
    )


def baseline_forward(model, graphs) -> torch.Tensor:
    """The original forward: collate with offsets, concatenate per edge, fc_full on (N, M, 169)."""
    atom_fea = torch.cat([g[0] for g in graphs])
    nbr_fea = torch.cat([g[1] for g in graphs])
    offsets = np.cumsum([0] + [len(g[0]) for g in graphs[:-1]])
    nbr_idx = torch.cat([g[2] + int(o) for g, o in zip(graphs, offsets)])
    sizes = [len(g[0]) for g in graphs]
    x = model.embedding(atom_fea)
    n, m = nbr_idx.shape
    for conv in model.convs:
        total = torch.cat([x.unsqueeze(1).expand(n, m, x.shape[1]), x[nbr_idx], nbr_fea], dim=2)
        z = conv.bn1(conv.fc_full(total).view(-1, 2 * x.shape[1])).view(n, m, -1)
        gate, core = z.chunk(2, dim=2)
        x = F.softplus(x + conv.bn2((torch.sigmoid(gate) * F.softplus(core)).sum(dim=1)))
    pooled = torch.stack([chunk.mean(0) for chunk in torch.split(x, sizes)])
    return F.softplus(model.conv_to_fc(F.softplus(pooled)))


# --- measurement ---------------------------------------------------------------------------


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="forward batch, the same for both")
    p.add_argument("--full-mp", action="store_true", help="also featurize all MP crystals and report peak memory")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile forward")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    from pymatgen.core import Structure

    from screening.featurize.featurizer import embed_graphs, featurize_records, load_featurizer_model
    from screening.graphs import structure_to_graph
    from screening.io.cif import structure_from_cif
    from screening.io.records import StructureRecord
    from screening.models.cgcnn import CrystalGraphConvNet

    frame = pd.read_csv(MP_CSV, usecols=["material_id", "cif", "nsites"])
    split_path = REPO / "pretrained" / "split.csv"
    if split_path.exists():
        split = pd.read_csv(split_path)
        frame = frame[frame.material_id.isin(split.material_id[split.split == "test"])]
    sample = frame.sample(args.n, random_state=args.seed)
    texts = sample.cif.tolist()
    # The default network alone: the baseline runs the same weights (a shipped model's property
    # branches, when it has any, are timed in their own row below).
    model = load_featurizer_model(branches=False)
    assert isinstance(model, CrystalGraphConvNet)
    shipped = load_featurizer_model()
    has_branches = not isinstance(shipped, CrystalGraphConvNet)
    table = model.atom_table.numpy()
    print(
        f"{args.n} MP CIFs (test split), median {int(sample.nsites.median())} atoms/cell, model h={model.config.h_fea_len}"
    )

    base_structs, t_base_parse = timed(lambda: [Structure.from_str(t, fmt="cif") for t in texts])
    our_structs, t_our_parse = timed(lambda: [structure_from_cif(t) for t in texts])
    base_graphs, t_base_graph = timed(lambda: [baseline_graph(s, table) for s in base_structs])
    our_graphs, t_our_graph = timed(lambda: [structure_to_graph(s) for s in our_structs])
    with torch.inference_mode():
        base_h, t_base_fwd = timed(
            lambda: torch.cat(
                [
                    baseline_forward(model, base_graphs[i : i + args.batch_size])
                    for i in range(0, args.n, args.batch_size)
                ]
            )
        )
    (_, our_h), t_our_fwd = timed(embed_graphs, model, our_graphs, args.batch_size)
    max_diff = float(np.abs(base_h.numpy() - our_h).max())
    if args.compile:
        from screening.featurize.featurizer import compiled

        fast = compiled(model)
        _, t_compile = timed(embed_graphs, fast, our_graphs[:64], args.batch_size)
        (_, comp_h), t_comp_fwd = timed(embed_graphs, fast, our_graphs, args.batch_size)
        max_diff = max(max_diff, float(np.abs(comp_h - our_h).max()))

    records = [StructureRecord(record_id=str(k), source="bench", text=t) for k, t in enumerate(texts)]
    _, t_e2e_w2 = timed(lambda: featurize_records(records, model, batch_size=args.batch_size, workers=2))
    if has_branches:
        _, t_shipped_w2 = timed(lambda: featurize_records(records, shipped, batch_size=args.batch_size, workers=2))

    rows = [
        ("CIF parsing", t_base_parse, t_our_parse),
        ("graph building", t_base_graph, t_our_graph),
        ("forward", t_base_fwd, t_our_fwd),
        ("graph + forward (from parsed)", t_base_graph + t_base_fwd, t_our_graph + t_our_fwd),
        (
            "end to end from CIF text, 1 process",
            t_base_parse + t_base_graph + t_base_fwd,
            t_our_parse + t_our_graph + t_our_fwd,
        ),
        ("end to end, matscreen 2 workers", t_base_parse + t_base_graph + t_base_fwd, t_e2e_w2),
    ]
    if has_branches:
        rows.append(
            (
                "end to end, 2 workers, as featurize runs (with branches)",
                t_base_parse + t_base_graph + t_base_fwd,
                t_shipped_w2,
            )
        )
    if args.compile:
        rows += [
            ("forward, torch.compile", t_base_fwd, t_comp_fwd),
            ("graph + forward, torch.compile", t_base_graph + t_base_fwd, t_our_graph + t_comp_fwd),
            (
                "end to end 1 process, torch.compile",
                t_base_parse + t_base_graph + t_base_fwd,
                t_our_parse + t_our_graph + t_comp_fwd,
            ),
        ]
    print(f"\n{'stage':40s} {'baseline /s':>12s} {'matscreen /s':>13s} {'speed-up':>9s}")
    for name, tb, to in rows:
        print(f"{name:40s} {args.n / tb:12.1f} {args.n / to:13.1f} {tb / to:8.1f}x")
    print(f"\nmax |embedding difference| baseline vs matscreen: {max_diff:.2e}")

    if args.compile:
        print(f"(torch.compile: one-off compilation {t_compile:.0f} s, not in the rates above)")
    if args.full_mp:
        from screening.featurize.featurizer import featurize_source

        out = REPO / "cache" / "bench_full_mp.parquet"
        t0 = time.perf_counter()
        summary = featurize_source(MP_CSV, out, shipped, workers=2, progress=False)  # what `featurize` runs
        dt = time.perf_counter() - t0
        print(
            f"\nfull MP set: {summary['rows']} rows, {summary['errors']} errors in {dt:.0f} s "
            f"({summary['rows'] / dt:.0f} structures/s, 2 workers); peak RSS (self + largest child) {peak_rss_mib():.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
