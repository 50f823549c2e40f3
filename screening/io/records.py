"""One input crystal as the pipeline carries it: an id, where it came from, and its structure.

Records from CIF text are lazy: they carry the text, not the parsed structure, so reading a large
source stays cheap and parsing can run where the rest of the work runs (worker processes pickle a
record as a few strings). :func:`parse_record` turns any record into a ``Structure`` or raises a
:class:`StructureReadError` that names the record, its source and the reason.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from screening.errors import RecordError, StructureReadError
from screening.io.cif import describe_disorder, structure_from_cif
from screening.io.validate import DEFAULT_LIMITS, StructureLimits, validate_structure


@dataclass
class StructureRecord:
    """One crystal from a source.

    ``record_id`` is the id the user knows it by (file stem, material id, row number);
    ``source`` the file it came from. Exactly one of ``structure`` (already parsed, e.g. from
    JSON) and ``text`` (CIF text, parsed on demand) is normally set. ``labels`` holds the known
    properties the source carried alongside (e.g. ``{"band_gap": 1.2}`` in eV), passed through to
    outputs untouched.
    """

    record_id: str
    source: str
    structure: Structure | None = None
    text: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    #: What ``text`` is: ``"cif"`` or ``"poscar"`` (VASP POSCAR/CONTCAR), so either parses lazily.
    fmt: str = "cif"


def parse_record(
    record: StructureRecord, require_ordered: bool = False, limits: StructureLimits | None = DEFAULT_LIMITS
) -> Structure:
    """The record's structure, parsing its CIF text if needed.

    Raises :class:`StructureReadError` (with record id, source and reason) when the record holds
    neither a structure nor text, the text is not a readable CIF, or the structure has no atoms.
    A structure with partial occupancies is returned as the disordered structure it is (graph
    building rejects it with its own reason); with ``require_ordered=True`` it is refused here
    instead, naming the partially occupied sites.

    Every structure then passes :func:`screening.io.validate.validate_structure` under ``limits``
    (finite cell and coordinates, sane angles, occupancies, elements, site and neighbour counts,
    minimum distance), raising :class:`InvalidStructureError` with the failed check's name;
    ``limits=None`` skips it (for callers that only inspect, never embed).
    """
    if record.structure is not None:
        structure = record.structure
    elif record.text is not None and record.fmt == "poscar":
        structure = structure_from_poscar(record.text, record_id=record.record_id, source=record.source)
    elif record.text is not None:
        structure = structure_from_cif(record.text, record_id=record.record_id, source=record.source)
    else:
        raise StructureReadError(record.record_id, "record holds neither a structure nor CIF text", record.source)
    if len(structure) == 0:
        raise StructureReadError(record.record_id, "structure has no atoms", record.source)
    if limits is not None:
        validate_structure(structure, record.record_id, record.source, limits)
    if require_ordered:
        disorder = describe_disorder(structure)
        if disorder is not None:
            raise StructureReadError(record.record_id, disorder, record.source)
    return structure


def structure_from_poscar(text: str, record_id: str = "?", source: str | None = None) -> Structure:
    """A VASP POSCAR/CONTCAR as a ``Structure``; a file pymatgen cannot read is this record's error.

    A VASP 4 file without the element line is refused rather than guessed: pymatgen would
    otherwise need a POTCAR beside it to know the species.
    """
    from pymatgen.io.vasp import Poscar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poscar = Poscar.from_str(text, read_velocities=False)
    except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds for malformed files
        raise StructureReadError(record_id, f"not a readable POSCAR ({type(exc).__name__}: {exc})", source) from exc
    lines = text.splitlines()
    if len(lines) > 5 and lines[5].split() and all(tok.isdigit() for tok in lines[5].split()):
        # VASP 4 (counts, no element line): pymatgen takes symbols from the comment or the
        # coordinate lines, and otherwise silently names the species H, He, Li, ...
        written = set(re.findall(r"[A-Z][a-z]?", " ".join([lines[0], *lines[6:]])))
        if not set(poscar.site_symbols) <= written:
            raise StructureReadError(
                record_id,
                "POSCAR has no element line (VASP 4 format) and names no elements; add the element line",
                source,
            )
    return poscar.structure


def is_ase_atoms(item: Any) -> bool:
    """True for an ``ase.Atoms`` (checked by type name, so ASE need not be installed to ask)."""
    return any(cls.__module__.startswith("ase.") and cls.__name__ == "Atoms" for cls in type(item).__mro__)


def record_from_atoms(
    atoms: Any, record_id: str, source: str, labels: dict[str, Any] | None = None
) -> StructureRecord | RecordError:
    """An ``ase.Atoms`` as a record, its scalar ``info`` entries as labels (explicit ``labels`` win).

    A molecule (no periodic cell) is this record's error: a crystal graph needs a lattice.
    """
    if not all(atoms.pbc) or abs(float(atoms.cell.volume)) < 1e-8:
        return StructureReadError(record_id, "the ase.Atoms has no periodic 3-D cell (pbc/cell unset)", source)
    if len(atoms) == 0:
        return StructureReadError(record_id, "structure has no atoms", source)
    try:
        from pymatgen.io.ase import AseAtomsAdaptor

        structure = AseAtomsAdaptor.get_structure(atoms)
    except Exception as exc:  # noqa: BLE001 - conversion failures belong to this record
        return StructureReadError(record_id, f"cannot convert ase.Atoms ({type(exc).__name__}: {exc})", source)
    info = {k: v for k, v in atoms.info.items() if isinstance(v, (bool, int, float, str))}
    return StructureRecord(record_id=record_id, source=source, structure=structure, labels=info | (labels or {}))


def as_record(item: Any, record_id: str, source: str = "<memory>") -> StructureRecord | RecordError:
    """Anything the library accepts as one input: a record, an error record, a pymatgen
    ``Structure`` or an ``ase.Atoms`` (ids come from the caller: list position or mapping key)."""
    if isinstance(item, (StructureRecord, RecordError)):
        return item
    if isinstance(item, Structure):
        if len(item) == 0:
            return StructureReadError(record_id, "structure has no atoms", source)
        return StructureRecord(record_id=record_id, source=source, structure=item)
    if is_ase_atoms(item):
        return record_from_atoms(item, record_id, source)
    return StructureReadError(
        record_id,
        f"cannot featurize a {type(item).__name__}: expected a pymatgen Structure, an ase.Atoms or a StructureRecord",
        source,
    )
