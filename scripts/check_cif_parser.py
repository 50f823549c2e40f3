"""Check the fast CIF reader against pymatgen on every CIF of the MP reference set, and time both.

For each CIF it parses the text twice, with ``screening.io.cif.structure_from_cif`` (fast path
for plain P1 CIFs, pymatgen otherwise) and with ``Structure.from_str(text, fmt="cif")``, and
compares species (in order), lattice matrices (Å, atol 1e-8) and fractional coordinates
(atol 1e-8, compared modulo 1). It prints how many CIFs took the fast path, how many of those
matched, how many fell back to pymatgen, and both parsers' speed in structures per second,
side by side. One process, as the figures are per-core speeds.

    OMP_NUM_THREADS=1 python scripts/check_cif_parser.py            # all 36,738 CIFs, a few minutes
    OMP_NUM_THREADS=1 python scripts/check_cif_parser.py --limit 500
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from screening.io.cif import parse_cif_with_pymatgen, parse_p1_cif

DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"
).resolve()
ATOL = 1e-8


def structures_differ(ours: Structure, ref: Structure) -> str | None:
    """Why two structures differ (species, lattice, coordinates), or None when they agree."""
    if [site.species for site in ours] != [site.species for site in ref]:
        return "species"
    if not np.allclose(ours.lattice.matrix, ref.lattice.matrix, atol=ATOL, rtol=0):
        return "lattice"
    delta = ours.frac_coords - ref.frac_coords
    delta -= np.round(delta)
    if not np.all(np.abs(delta) <= ATOL):
        return "frac_coords"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="CSV(.gz) with a `cif` column")
    parser.add_argument("--limit", type=int, default=None, help="only the first N CIFs")
    args = parser.parse_args()

    frame = pd.read_csv(args.source, nrows=args.limit, usecols=lambda c: c in ("material_id", "cif"))
    ids = frame["material_id"].astype(str).tolist() if "material_id" in frame else [str(i) for i in range(len(frame))]
    cifs = frame["cif"].tolist()
    warnings.simplefilter("ignore")  # pymatgen's routine CIF warnings; the same for both timings

    n_fast = n_fast_matched = n_fallback = n_fallback_matched = 0
    mismatches: list[tuple[str, str]] = []
    t_fast_path = t_fallback = t_pymatgen = 0.0
    t_fast_taken = t_pymatgen_fast_subset = 0.0  # the same CIFs, the ones the fast path took
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("comparing CIF parsers", total=len(cifs))
        for record_id, text in zip(ids, cifs):
            t0 = time.perf_counter()
            ours = parse_p1_cif(text)
            t1 = time.perf_counter()
            t_fast_path += t1 - t0  # includes the time spent deciding to decline
            took_fast = ours is not None
            if not took_fast:
                ours = parse_cif_with_pymatgen(text)
                t_fallback += time.perf_counter() - t1
            t2 = time.perf_counter()
            ref = Structure.from_str(text, fmt="cif")
            t_pymatgen += time.perf_counter() - t2
            if took_fast:
                t_fast_taken += t1 - t0
                t_pymatgen_fast_subset += time.perf_counter() - t2
            why = structures_differ(ours, ref)
            if took_fast:
                n_fast += 1
                n_fast_matched += why is None
            else:
                n_fallback += 1
                n_fallback_matched += why is None
            if why is not None:
                mismatches.append((record_id, why))
            progress.advance(task)

    total = len(cifs)
    t_ours = t_fast_path + t_fallback
    print(f"source: {args.source} ({total} CIFs, 1 process)")
    print(
        f"fast path taken:      {n_fast:6d}  matched pymatgen: {n_fast_matched}  mismatched: {n_fast - n_fast_matched}"
    )
    print(f"fell back to pymatgen: {n_fallback:5d}  matched pymatgen: {n_fallback_matched}")
    print(f"mismatched overall:   {len(mismatches):6d}")
    for record_id, why in mismatches[:20]:
        print(f"  mismatch {record_id}: {why}")
    print()
    print(f"{'parser':40s} {'structures/s':>13s} {'vs pymatgen':>12s}")
    rate_pmg = total / t_pymatgen
    print(f"{'pymatgen Structure.from_str':40s} {rate_pmg:13.0f} {1.0:11.2f}x")
    rate_ours = total / t_ours
    print(f"{'structure_from_cif (fast + fallback)':40s} {rate_ours:13.0f} {rate_ours / rate_pmg:11.2f}x")
    if n_fast:
        rate_fast = n_fast / t_fast_taken
        rate_pmg_same = n_fast / t_pymatgen_fast_subset
        print(f"{'  on the fast-path CIFs: pymatgen':40s} {rate_pmg_same:13.0f} {1.0:11.2f}x")
        print(f"{'  on the fast-path CIFs: fast path':40s} {rate_fast:13.0f} {rate_fast / rate_pmg_same:11.2f}x")
    raise SystemExit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
