"""One input crystal as the pipeline carries it: an id, where it came from, and its structure.

Records from CIF text are lazy: they carry the text, not the parsed structure, so reading a large
source stays cheap and parsing can run where the rest of the work runs (worker processes pickle a
record as a few strings). :func:`parse_record` turns any record into a ``Structure`` or raises a
:class:`StructureReadError` that names the record, its source and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from screening.errors import StructureReadError
from screening.io.cif import describe_disorder, structure_from_cif


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


def parse_record(record: StructureRecord, require_ordered: bool = False) -> Structure:
    """The record's structure, parsing its CIF text if needed.

    Raises :class:`StructureReadError` (with record id, source and reason) when the record holds
    neither a structure nor text, the text is not a readable CIF, or the structure has no atoms.
    A structure with partial occupancies is returned as the disordered structure it is (graph
    building rejects it with its own reason); with ``require_ordered=True`` it is refused here
    instead, naming the partially occupied sites.
    """
    if record.structure is not None:
        structure = record.structure
    elif record.text is not None:
        structure = structure_from_cif(record.text, record_id=record.record_id, source=record.source)
    else:
        raise StructureReadError(record.record_id, "record holds neither a structure nor CIF text", record.source)
    if len(structure) == 0:
        raise StructureReadError(record.record_id, "structure has no atoms", record.source)
    if require_ordered:
        disorder = describe_disorder(structure)
        if disorder is not None:
            raise StructureReadError(record.record_id, disorder, record.source)
    return structure
