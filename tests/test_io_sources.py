"""Sources: every kind streams records, bad records become error records and the rest go on."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from screening.errors import MatscreenError, RecordError, StructureReadError
from screening.io.records import StructureRecord, parse_record
from screening.io.sources import count_records, id_column, iter_records, source_kind

GOOD_IDS = ["nacl", "si", "cscl"]
FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def small_structures() -> dict[str, Structure]:
    return {
        "nacl": Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, FCC + [[x + 0.5, y, z] for x, y, z in FCC]),
        "si": Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        "cscl": Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


def split(items):
    records = [i for i in items if isinstance(i, StructureRecord)]
    errors = [i for i in items if isinstance(i, RecordError)]
    assert len(records) + len(errors) == len(items)
    return records, errors


@pytest.fixture()
def cif_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, structure in small_structures().items():
        structure.to(filename=str(folder / f"{name}.cif"))
    (folder / "broken.cif").write_text("data_broken\nthis is not a crystal\n")
    (folder / "extra.cif").write_text(small_structures()["si"].to(fmt="cif"))
    (folder / "id_prop.csv").write_text("nacl,5.0\nsi,1.1\ncscl,4.2\nbroken,0.0\nmissing,3.0\n")
    return folder


def test_cif_folder_with_id_prop(cif_dir: Path):
    items = list(iter_records(cif_dir))
    records, errors = split(items)
    assert [r.record_id for r in records] == GOOD_IDS + ["broken", "extra"]
    assert {r.record_id: r.labels for r in records}["si"] == {"target": 1.1}
    assert {r.record_id: r.labels for r in records}["extra"] == {}  # not listed, still read
    assert [(e.record_id, e.source) for e in errors] == [("missing", str(cif_dir / "id_prop.csv"))]
    assert "row 5 lists it, but no structure file has this id" in errors[0].reason
    assert count_records(cif_dir) == len(items)
    assert records[0].structure is None and records[0].text  # lazy by default
    with pytest.raises(StructureReadError):
        parse_record({r.record_id: r for r in records}["broken"])


def test_cif_folder_parsed_eagerly_reports_bad_cif(cif_dir: Path):
    records, errors = split(list(iter_records(cif_dir, parse=True)))
    assert {e.record_id for e in errors} == {"broken", "missing"}
    bad = next(e for e in errors if e.record_id == "broken")
    assert isinstance(bad, StructureReadError) and bad.source == str(cif_dir / "broken.cif")
    assert all(r.structure is not None for r in records)
    assert {r.record_id: len(r.structure) for r in records}["nacl"] == 8


def test_id_prop_with_several_targets(tmp_path: Path):
    small_structures()["si"].to(filename=str(tmp_path / "a.cif"))
    (tmp_path / "id_prop.csv").write_text("a,1.5,-0.2,x\n")
    (record,) = list(iter_records(tmp_path))
    assert record.labels == {"target_0": 1.5, "target_1": -0.2, "target_2": "x"}


def test_cif_folder_without_id_prop(tmp_path: Path):
    for name, structure in small_structures().items():
        structure.to(filename=str(tmp_path / f"{name}.cif"))
    records, errors = split(list(iter_records(tmp_path)))
    assert sorted(r.record_id for r in records) == sorted(GOOD_IDS) and not errors
    assert all(r.labels == {} for r in records)


@pytest.mark.shared
def test_cgcnn_sample_folder(cgcnn_ref: Path):
    folder = cgcnn_ref / "data" / "sample-regression"
    records, errors = split(list(iter_records(folder, parse=True)))
    assert not errors and len(records) == 10 == count_records(folder)
    assert records[0].record_id == "1000041" and records[0].labels == {"target": 1.0}
    assert records[0].structure.composition.reduced_formula == "NaCl"


def test_single_cif_file(tmp_path: Path):
    path = tmp_path / "rock.cif"
    small_structures()["nacl"].to(filename=str(path))
    (record,) = list(iter_records(path, parse=True))
    assert record.record_id == "rock" and record.source == str(path) and len(record.structure) == 8
    assert source_kind(path) == "cif_file" and count_records(path) == 1


def mp_like_frame() -> pd.DataFrame:
    cifs = [s.to(fmt="cif") for s in small_structures().values()]
    return pd.DataFrame(
        {
            "idx": [0, 1, 2, 3],
            "material_id": ["mp-1", "mp-2", "mp-3", "mp-4"],
            "formula": ["NaCl", "Si", "CsCl", "?"],
            "nsites": [8, 2, 2, 0],
            "band_gap": [5.0, 1.1, 4.2, 0.0],
            "cif": cifs + ["garbage"],
        }
    )


@pytest.mark.parametrize("name", ["table.csv", "table.csv.gz", "table.parquet"])
def test_table_sources(tmp_path: Path, name: str):
    path = tmp_path / name
    frame = mp_like_frame()
    frame.to_parquet(path, index=False) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    items = list(iter_records(path, chunksize=3))  # several chunks
    records, errors = split(items)
    assert not errors and [r.record_id for r in records] == ["mp-1", "mp-2", "mp-3", "mp-4"]
    assert records[1].labels == {"idx": 1, "nsites": 2, "band_gap": 1.1}  # no formula, no cif, no id
    assert count_records(path) == 4
    parsed_records, parsed_errors = split(list(iter_records(path, parse=True, chunksize=3)))
    assert [e.record_id for e in parsed_errors] == ["mp-4"] and isinstance(parsed_errors[0], StructureReadError)
    assert parsed_errors[0].source == str(path)
    assert len(parsed_records[0].structure) == 8


def test_table_without_id_column_uses_row_numbers_across_chunks(tmp_path: Path):
    path = tmp_path / "noid.csv"
    mp_like_frame().drop(columns=["idx", "material_id"]).to_csv(path, index=False)
    records, _ = split(list(iter_records(path, chunksize=2)))
    assert [r.record_id for r in records] == ["0", "1", "2", "3"]


def test_id_column_priority():
    assert id_column(["name", "id", "cif"]) == "id"
    assert id_column(["idx", "material_id"]) == "material_id"
    assert id_column(["cif_id", "name"]) == "cif_id"
    assert id_column(["cif", "band_gap"]) is None


def test_table_empty_cif_cell_and_duplicate_id_are_error_records(tmp_path: Path):
    frame = mp_like_frame()
    frame.loc[1, "cif"] = None
    frame.loc[3, "material_id"] = "mp-1"
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    records, errors = split(list(iter_records(path)))
    assert [r.record_id for r in records] == ["mp-1", "mp-3"]
    assert [(e.record_id, "empty" in e.reason or "duplicate" in e.reason) for e in errors] == [
        ("mp-2", True),
        ("mp-1", True),
    ]


def test_table_without_cif_column_raises_naming_file(tmp_path: Path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"material_id": ["mp-1"], "band_gap": [1.0]}).to_csv(path, index=False)
    with pytest.raises(MatscreenError, match="labels.csv has no 'cif' column"):
        list(iter_records(path))


def structure_dicts() -> dict[str, dict]:
    return {name: s.as_dict() for name, s in small_structures().items()}


def test_json_list_of_structures(tmp_path: Path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(list(structure_dicts().values())))
    records, errors = split(list(iter_records(path)))
    assert not errors and [r.record_id for r in records] == ["0", "1", "2"]
    assert records[0].structure == small_structures()["nacl"]
    assert count_records(path) == 3


def test_json_mapping_of_id_to_structure_gz(tmp_path: Path):
    path = tmp_path / "map.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump(structure_dicts(), handle)
    records, _ = split(list(iter_records(path)))
    assert [r.record_id for r in records] == GOOD_IDS
    assert len(records[2].structure) == 2


def test_json_entries_with_ids_labels_and_bad_records(tmp_path: Path):
    dicts = structure_dicts()
    empty = Structure(Lattice.cubic(3.0), [], []).as_dict()
    entries = [
        {"material_id": "mp-1", "structure": dicts["nacl"], "band_gap": 5.0, "formula": "NaCl", "tags": ["x"]},
        {"material_id": "mp-2", "structure": small_structures()["si"].to(fmt="cif"), "band_gap": 1.1},
        {"material_id": "mp-3", "structure": empty},
        {
            "material_id": "mp-4",
            "structure": {"lattice": "nonsense", "sites": [{"species": [{"element": "Fe", "occu": 1}]}]},
        },
        {"material_id": "mp-5", "band_gap": 2.0},
    ]
    path = tmp_path / "entries.json"
    path.write_text(json.dumps(entries))
    records, errors = split(list(iter_records(path, parse=True)))
    assert [r.record_id for r in records] == ["mp-1", "mp-2"]
    assert records[0].labels == {"band_gap": 5.0}  # list-valued and formula fields are not labels
    assert records[1].structure.composition.reduced_formula == "Si"  # CIF text inside JSON
    reasons = {e.record_id: e.reason for e in errors}
    assert reasons["mp-3"] == "structure has no atoms"
    assert "invalid Structure dict" in reasons["mp-4"]
    assert "neither a Structure dict" in reasons["mp-5"]


def test_invalid_json_raises_naming_file(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(MatscreenError, match="bad.json"):
        list(iter_records(path))


def test_missing_and_unknown_sources_raise_naming_path(tmp_path: Path):
    with pytest.raises(MatscreenError, match="source not found: .*nowhere"):
        list(iter_records(tmp_path / "nowhere"))
    odd = tmp_path / "structures.dat"  # .xyz is an ASE kind now (tests/test_io_inputs.py)
    odd.write_text("1\n\nH 0 0 0\n")
    with pytest.raises(MatscreenError, match="unknown source kind .*structures.dat"):
        count_records(odd)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(MatscreenError, match="no structure files"):
        list(iter_records(empty_dir))


@pytest.mark.shared
def test_mp_table_streams_with_labels(mp_csv: Path):
    first = list(itertools.islice(iter_records(mp_csv, parse=True, chunksize=64), 100))
    records, errors = split(first)
    assert not errors and records[0].record_id == "mp-1"
    assert records[1].labels["band_gap"] == pytest.approx(1.593)  # mp-1000, BaTe
    assert "formula" not in records[0].labels and "cif" not in records[0].labels
    assert records[1].structure.composition.reduced_formula == "BaTe"


def test_a_text_target_among_numbers_is_an_error_for_that_crystal_only(tmp_path: Path):
    structures = small_structures()
    for name in ("a", "b", "c"):
        structures["si"].to(filename=str(tmp_path / f"{name}.cif"))
    (tmp_path / "id_prop.csv").write_text("a,1.5,x\nb,abc,y\nc,2.0,z\n")
    items = list(iter_records(tmp_path))
    records = [r for r in items if not isinstance(r, RecordError)]
    (error,) = [e for e in items if isinstance(e, RecordError)]
    assert [r.record_id for r in records] == ["a", "c"]
    assert records[1].labels == {"target_0": 2.0, "target_1": "z"}  # an all-text column stays text
    assert error.record_id == "b" and error.source == str(tmp_path / "id_prop.csv")
    assert "row 2 gives the target 'abc', not a number" in error.reason


def test_structure_files_in_subfolders_are_reported_not_skipped(tmp_path: Path):
    si = small_structures()["si"]
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "empty").mkdir()
    si.to(filename=str(tmp_path / "top.cif"))
    si.to(filename=str(tmp_path / "a" / "x.cif"))
    si.to(filename=str(tmp_path / "a" / "deeper" / "y.cif"))
    si.to(filename=str(tmp_path / "b" / "x.cif"))
    items = list(iter_records(tmp_path))
    assert [r.record_id for r in items if not isinstance(r, RecordError)] == ["top"]
    errors = {e.record_id: e.reason for e in items if isinstance(e, RecordError)}
    assert set(errors) == {"a/", "b/"}
    assert errors["a/"].startswith("2 structure file(s) in this subfolder were not read")
    assert count_records(tmp_path) == len(items)
    (tmp_path / "top.cif").unlink()
    (tmp_path / "nested_only").mkdir()
    with pytest.raises(MatscreenError, match="3 lie in its subfolders"):
        list(iter_records(tmp_path))


def test_an_id_listed_twice_in_id_prop_is_reported_at_its_row(tmp_path: Path):
    small_structures()["si"].to(filename=str(tmp_path / "a.cif"))
    (tmp_path / "id_prop.csv").write_text("a,1.5\na,3.0\n")
    items = list(iter_records(tmp_path))
    (record,) = [r for r in items if not isinstance(r, RecordError)]
    (error,) = [e for e in items if isinstance(e, RecordError)]
    assert record.labels == {"target": 1.5}
    assert error.source == str(tmp_path / "id_prop.csv") and "row 2 lists it again (first at row 1)" in error.reason
