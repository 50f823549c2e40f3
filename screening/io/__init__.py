"""Reading sources into structure records, with one error record per bad input.

``iter_records(source)`` streams :class:`StructureRecord` (or :class:`RecordError`) from a folder
of CIFs, a single CIF, a CSV/Parquet table with a ``cif`` column or a JSON of structures;
``parse_record`` turns a record into a pymatgen ``Structure``; ``structure_from_cif`` is the CIF
reader behind it (a fast path for plain P1 CIFs, pymatgen's parser for everything else).
"""

from screening.io.cif import describe_disorder, parse_cif_with_pymatgen, parse_p1_cif, structure_from_cif
from screening.io.records import StructureRecord, parse_record
from screening.io.sources import count_records, id_column, iter_records, source_kind

__all__ = [
    "StructureRecord",
    "count_records",
    "describe_disorder",
    "id_column",
    "iter_records",
    "parse_cif_with_pymatgen",
    "parse_p1_cif",
    "parse_record",
    "source_kind",
    "structure_from_cif",
]
