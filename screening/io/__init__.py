"""Reading sources into structure records, with one error record per bad input.

``iter_records(source)`` streams :class:`StructureRecord` (or :class:`RecordError`) from a folder
of CIFs, a single CIF, a CSV/Parquet table with a ``cif`` column or a JSON of structures;
``parse_record`` turns a record into a pymatgen ``Structure``; ``structure_from_cif`` is the CIF
reader behind it (a fast path for plain P1 CIFs, pymatgen's parser for everything else).
"""

from importlib import import_module
from typing import Any

# Lazy re-exports (PEP 562): importing a light submodule (``screening.io.atomic``, ``lab_files``)
# must not load pymatgen, which these readers need; `campaign status` and `ask` stay fast.
_EXPORTS = {
    "describe_disorder": "screening.io.cif",
    "parse_cif_with_pymatgen": "screening.io.cif",
    "parse_p1_cif": "screening.io.cif",
    "structure_from_cif": "screening.io.cif",
    "StructureRecord": "screening.io.records",
    "parse_record": "screening.io.records",
    "count_records": "screening.io.sources",
    "id_column": "screening.io.sources",
    "iter_records": "screening.io.sources",
    "source_kind": "screening.io.sources",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'screening.io' has no attribute {name!r}")


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
