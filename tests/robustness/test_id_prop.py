"""A CGCNN ``id_prop.csv`` says what went wrong on the way in (issue 26 item 4).

Before: ids ``NaCl`` beside files ``POSCAR_NaCl`` dropped the ``target`` column at exit 0 and
reported "NaCl.cif is missing" in a POSCAR folder; a header line became an error row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar
from typer.testing import CliRunner

from screening.errors import MatscreenError, RecordError
from screening.io.records import StructureRecord
from screening.io.sources import count_records, iter_records

ROCKSALT = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def rocksalt(cation: str, anion: str, a: float) -> Structure:
    """A rock-salt conventional cell (8 atoms)."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def poscar_folder(tmp_path: Path, id_prop: str) -> Path:
    folder = tmp_path / "poscars"
    folder.mkdir()
    Poscar(rocksalt("Na", "Cl", 5.64)).write_file(folder / "POSCAR_NaCl")
    Poscar(rocksalt("K", "Cl", 6.29)).write_file(folder / "POSCAR_KCl")
    (folder / "id_prop.csv").write_text(id_prop)
    return folder


def split(items: list) -> tuple[dict[str, StructureRecord], list[RecordError]]:
    return (
        {r.record_id: r for r in items if isinstance(r, StructureRecord)},
        [e for e in items if isinstance(e, RecordError)],
    )


def test_ids_that_match_no_file_at_all_are_refused_saying_how_ids_are_formed(tmp_path: Path) -> None:
    folder = poscar_folder(tmp_path, "NaCl,5.0\nKCl,4.2\n")
    with pytest.raises(MatscreenError) as info:
        list(iter_records(folder))
    message = str(info.value)
    assert "id_prop.csv: none of its 2 ids names a structure file" in message
    assert "'NaCl'" in message and "the folder has 'POSCAR_NaCl'" in message
    assert "POSCAR / CONTCAR files keep their whole name (POSCAR_NaCl -> POSCAR_NaCl)" in message
    assert ".cif is missing" not in message


def test_featurize_exits_non_zero_on_a_wholesale_mismatch(tmp_path: Path, small_model: str) -> None:
    from screening.cli import app

    folder = poscar_folder(tmp_path, "NaCl,5.0\nKCl,4.2\n")
    out = tmp_path / "emb.parquet"
    res = CliRunner().invoke(app, ["featurize", str(folder), "-o", str(out), "--model", small_model, "--no-cache"])
    assert res.exit_code == 1, res.output
    assert "none of its 2 ids" in res.output and not out.exists()


def test_a_partial_mismatch_names_the_row_and_the_closest_file(tmp_path: Path) -> None:
    folder = poscar_folder(tmp_path, "POSCAR_NaCl,5.0\nKCl,4.2\n")
    items = list(iter_records(folder))
    records, errors = split(items)
    assert records["POSCAR_NaCl"].labels == {"target": 5.0}
    assert records["POSCAR_KCl"].labels == {}  # not listed under its id: read without a label
    (error,) = errors
    assert error.record_id == "KCl" and error.source == str(folder / "id_prop.csv")
    assert error.reason.startswith("id_prop.csv row 2 lists it, but no structure file has this id")
    assert "did you mean 'POSCAR_KCl'?" in error.reason and "NAME.cif -> NAME" in error.reason
    assert count_records(folder) == len(items)


@pytest.mark.parametrize(
    ("header", "label"),
    [("id,target", "target"), ("material_id,band_gap", "band_gap"), ("id,formula", "target")],
)
def test_a_header_line_is_recognised_not_an_error_row(tmp_path: Path, header: str, label: str) -> None:
    folder = poscar_folder(tmp_path, f"{header}\nPOSCAR_NaCl,5.0\nPOSCAR_KCl,4.2\n")
    items = list(iter_records(folder))
    records, errors = split(items)
    assert errors == []
    assert {rid: r.labels for rid, r in records.items()} == {
        "POSCAR_NaCl": {label: 5.0},
        "POSCAR_KCl": {label: 4.2},
    }
    assert count_records(folder) == len(items) == 2


def test_a_first_row_naming_a_file_is_data_even_with_text_targets(tmp_path: Path) -> None:
    folder = poscar_folder(tmp_path, "POSCAR_NaCl,insulator\nPOSCAR_KCl,insulator\n")
    records, errors = split(list(iter_records(folder)))
    assert errors == [] and records["POSCAR_NaCl"].labels == {"target": "insulator"}


def test_cif_ids_may_be_given_as_file_names(tmp_path: Path) -> None:
    rocksalt("Na", "Cl", 5.64).to(filename=str(tmp_path / "nacl.cif"))
    rocksalt("Mg", "O", 4.21).to(filename=str(tmp_path / "mgo.cif"))
    (tmp_path / "id_prop.csv").write_text("nacl.cif,5.0\nmgo,7.8\n")
    items = list(iter_records(tmp_path))
    records, errors = split(items)
    assert errors == [] and {rid: r.labels for rid, r in records.items()} == {
        "nacl": {"target": 5.0},
        "mgo": {"target": 7.8},
    }
    assert count_records(tmp_path) == 2


def test_featurize_of_a_header_folder_writes_the_named_label(tmp_path: Path, small_model: str) -> None:
    from screening.featurize.featurizer import featurize_source

    folder = poscar_folder(tmp_path, "material_id,band_gap\nPOSCAR_NaCl,5.0\nPOSCAR_KCl,4.2\n")
    summary = featurize_source(folder, tmp_path / "emb.parquet", model=small_model, progress=False)
    frame = pd.read_parquet(tmp_path / "emb.parquet").set_index("id")
    assert frame.loc["POSCAR_NaCl", "band_gap"] == 5.0 and frame.loc["POSCAR_KCl", "band_gap"] == 4.2
    assert not pd.read_csv(summary["errors_path"]).shape[0]
