"""Which files a folder source reads and the record id each one gives.

Apart from :mod:`screening.io.sources` (which imports pymatgen to read them) so that a light
module can ask the same question: :func:`screening.io.atomic.check_output_apart` refuses an
output that would replace a file a folder source reads.
"""

from __future__ import annotations

from pathlib import Path

ID_PROP_FILE = "id_prop.csv"
POSCAR_NAMES = ("POSCAR", "CONTCAR")
POSCAR_SUFFIXES = (".vasp", ".poscar")
ASE_SUFFIXES = (".extxyz", ".xyz", ".traj", ".xsf", ".cell", ".gen")


def structure_file_kind(path: Path) -> str | None:
    """``cif_file``, ``poscar_file`` or ``ase_file`` for a single structure file, else None."""
    suffix = path.suffix.lower()
    if suffix == ".cif":
        return "cif_file"
    if suffix in POSCAR_SUFFIXES or path.name.startswith(POSCAR_NAMES):
        return "poscar_file"
    if suffix in ASE_SUFFIXES:
        return "ase_file"
    return None


def structure_file_id(path: Path) -> str:
    """The record id of a structure file: its stem, but ``POSCAR_mp-1`` keeps its whole name."""
    if path.suffix.lower() in POSCAR_SUFFIXES or path.name.startswith(POSCAR_NAMES):
        return path.name[: -len(path.suffix)] if path.suffix.lower() in POSCAR_SUFFIXES else path.name
    return path.stem
