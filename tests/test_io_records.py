"""Structure records: lazy CIF text, parsed on demand, errors that name the record."""

from __future__ import annotations

import pickle

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from screening.errors import GraphBuildError, StructureReadError
from screening.graphs import structure_to_graph
from screening.io.records import StructureRecord, parse_record


def rocksalt() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_text_record_is_parsed_on_demand_and_pickles_small():
    record = StructureRecord("nacl", "in.csv", text=rocksalt().to(fmt="cif"), labels={"band_gap": 5.0})
    clone = pickle.loads(pickle.dumps(record))  # what a worker process receives
    assert clone == record and clone.structure is None
    structure = parse_record(clone)
    assert structure.composition.reduced_formula == "NaCl"
    assert clone.labels == {"band_gap": 5.0}


def test_structure_record_returns_its_structure():
    structure = rocksalt()
    assert parse_record(StructureRecord("nacl", "in.json", structure=structure)) is structure


def test_record_without_structure_or_text_is_an_error():
    with pytest.raises(StructureReadError, match="neither a structure nor CIF text") as info:
        parse_record(StructureRecord("ghost", "in.json"))
    assert info.value.record_id == "ghost" and info.value.source == "in.json"


def test_unreadable_text_names_record_and_source():
    with pytest.raises(StructureReadError) as info:
        parse_record(StructureRecord("mp-x", "table.csv.gz", text="not a cif"))
    assert info.value.record_id == "mp-x"
    assert "table.csv.gz" in str(info.value) and "mp-x" in str(info.value)


def test_structure_without_atoms_is_an_error():
    empty = Structure(Lattice.cubic(3.0), [], [])
    with pytest.raises(StructureReadError, match="no atoms"):
        parse_record(StructureRecord("empty", "in.json", structure=empty))


def test_partial_occupancy_is_kept_then_rejected_by_graph_building():
    text = str(CifWriter(Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])))
    record = StructureRecord("feco", "dir", text=text)
    structure = parse_record(record)
    assert not structure.is_ordered
    with pytest.raises(GraphBuildError, match="partial occupancy"):
        structure_to_graph(structure, record_id=record.record_id)
    with pytest.raises(StructureReadError, match="partial occupancy at 1 site"):
        parse_record(record, require_ordered=True)
