"""Inputs a scientist has: POSCAR/CONTCAR/.vasp, ASE files, mixed folders, CGCNN folders with their
atom_init.json, and pymatgen / ASE objects handed straight to the library."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms  # the ase extra is part of the test extra
from ase.io import write as ase_write
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar

from screening.errors import MatscreenError, RecordError, StructureReadError
from screening.featurize.featurizer import featurize_records
from screening.io.records import StructureRecord, as_record, parse_record
from screening.io.sources import count_records, folder_atom_init, iter_records, source_kind


def mgo(a: float = 4.21) -> Structure:
    return Structure(Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl(a: float = 5.64) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def atoms(symbols: str = "KBr", a: float = 3.9) -> Atoms:
    return Atoms(symbols, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[a, a, a], pbc=True)


VASP4_NO_ELEMENTS = "unnamed\n1.0\n4.2 0 0\n0 4.2 0\n0 0 4.2\n1 1\ndirect\n0 0 0\n0.5 0.5 0.5\n"


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """A folder as a VASP user has it: POSCARs, a CONTCAR, .vasp, a CIF and a two-frame extxyz."""
    folder = tmp_path / "structures"
    folder.mkdir()
    Poscar(mgo()).write_file(folder / "POSCAR_mgo")
    Poscar(nacl()).write_file(folder / "CONTCAR")
    Poscar(mgo(4.3)).write_file(folder / "mgo_strained.vasp")
    nacl(5.7).to(filename=str(folder / "nacl.cif"))
    frames = [atoms("KBr", 3.9), atoms("LiF", 3.0)]
    frames[0].info["band_gap"] = 4.5
    frames[1].info["band_gap"] = 8.9
    ase_write(folder / "frames.extxyz", frames, format="extxyz")
    (folder / "notes.txt").write_text("not a structure: ignored\n")
    return folder


def test_folder_of_poscars_contcars_vasp_cif_and_extxyz(mixed_folder: Path) -> None:
    items = list(iter_records(mixed_folder))
    assert all(isinstance(i, StructureRecord) for i in items), items
    by_id = {r.record_id: r for r in items}
    assert sorted(by_id) == ["CONTCAR", "POSCAR_mgo", "frames_0", "frames_1", "mgo_strained", "nacl"]
    formulas = {rid: parse_record(r).composition.reduced_formula for rid, r in by_id.items()}
    assert formulas == {
        "CONTCAR": "NaCl",
        "POSCAR_mgo": "MgO",
        "frames_0": "KBr",
        "frames_1": "LiF",
        "mgo_strained": "MgO",
        "nacl": "NaCl",
    }
    assert by_id["POSCAR_mgo"].fmt == "poscar" and by_id["POSCAR_mgo"].structure is None  # parsed lazily
    assert parse_record(by_id["mgo_strained"]).lattice.a == pytest.approx(4.3)
    assert by_id["frames_1"].labels["band_gap"] == pytest.approx(8.9)  # atoms.info became labels
    assert count_records(mixed_folder) == 5  # the two-frame file counts once


@pytest.mark.parametrize("name", ["POSCAR", "CONTCAR", "POSCAR_mp-1", "relaxed.vasp", "x.poscar"])
def test_single_vasp_file_is_a_source(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Poscar(mgo()).write_file(path)
    assert source_kind(path) == "poscar_file"
    (record,) = list(iter_records(path, parse=True))
    assert isinstance(record, StructureRecord)
    assert record.record_id == name.removesuffix(".vasp").removesuffix(".poscar")
    assert record.structure.composition.reduced_formula == "MgO"


def test_vasp4_poscar_without_elements_is_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "POSCAR"
    path.write_text(VASP4_NO_ELEMENTS)
    (item,) = list(iter_records(path, parse=True))
    assert isinstance(item, StructureReadError)  # pymatgen alone would call the atoms H and He
    assert item.record_id == "POSCAR" and item.source == str(path) and "element line" in item.reason


def test_unreadable_poscar_in_a_folder_is_one_error_record(mixed_folder: Path) -> None:
    (mixed_folder / "POSCAR_bad").write_text("garbage\n1\n")
    items = list(iter_records(mixed_folder, parse=True))
    errors = [i for i in items if isinstance(i, RecordError)]
    assert [(e.record_id, e.source) for e in errors] == [("POSCAR_bad", str(mixed_folder / "POSCAR_bad"))]
    assert "not a readable POSCAR" in errors[0].reason
    assert len(items) - len(errors) == 6


def test_single_extxyz_file_and_a_molecule_in_it(tmp_path: Path) -> None:
    path = tmp_path / "mixed.extxyz"
    ase_write(path, [atoms("KBr"), Atoms("H2O", positions=[[0, 0, 0], [0, 0, 1], [0, 1, 0]])], format="extxyz")
    assert source_kind(path) == "ase_file"
    crystal, molecule = list(iter_records(path))
    assert isinstance(crystal, StructureRecord) and crystal.record_id == "mixed_0"
    assert isinstance(molecule, StructureReadError) and molecule.record_id == "mixed_1"
    assert molecule.source == str(path) and "periodic" in molecule.reason


def test_cgcnn_folder_atom_init_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    nacl().to(filename=str(folder / "a.cif"))
    (folder / "id_prop.csv").write_text("a,1.5\n")
    assert folder_atom_init(folder) is None
    (folder / "atom_init.json").write_text("{}")
    assert folder_atom_init(folder) == folder / "atom_init.json"
    assert folder_atom_init(folder / "a.cif") is None


def test_empty_folder_names_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(MatscreenError, match="POSCAR"):
        list(iter_records(tmp_path))


# --- objects in the library ------------------------------------------------------------------


def test_as_record_accepts_structures_atoms_and_refuses_other_things() -> None:
    assert as_record(mgo(), "7").structure.composition.reduced_formula == "MgO"
    converted = as_record(atoms("KBr"), "k")
    assert isinstance(converted, StructureRecord) and converted.structure.composition.reduced_formula == "KBr"
    refused = as_record("Si.cif", "3")
    assert isinstance(refused, StructureReadError) and refused.record_id == "3" and "str" in refused.reason


@pytest.fixture(scope="module")
def small_model():
    from screening.atom_features import element_property_table
    from screening.models.cgcnn import CGCNNConfig, init_model

    return init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=1)


def test_featurize_records_takes_structures_and_atoms(small_model) -> None:
    result = featurize_records([mgo(), atoms("KBr"), nacl()], small_model)
    assert list(result.frame["id"]) == ["0", "1", "2"]
    assert list(result.frame["formula"]) == ["MgO", "KBr", "NaCl"]
    assert result.frame.filter(like="emb_").shape == (3, 8) and not result.errors
    # the same crystal from pymatgen and from ASE embeds the same
    pair = featurize_records({"pmg": nacl(), "ase": atoms("NaCl", 5.64)}, small_model).frame.set_index("id")
    emb = pair.filter(like="emb_")
    np.testing.assert_allclose(emb.loc["pmg"].to_numpy(), emb.loc["ase"].to_numpy(), atol=1e-5)


def test_featurize_records_takes_iter_records_with_bad_files(mixed_folder: Path, small_model) -> None:
    """The README's library call: iter_records yields error records too, and they are reported."""
    (mixed_folder / "broken.cif").write_text("data_broken\nnot a crystal\n")
    (mixed_folder / "POSCAR_v4").write_text(VASP4_NO_ELEMENTS)
    result = featurize_records(iter_records(mixed_folder), small_model)
    assert len(result.frame) == 6
    assert sorted(e.record_id for e in result.errors) == ["POSCAR_v4", "broken"]
    assert {e.source for e in result.errors} == {str(mixed_folder / "POSCAR_v4"), str(mixed_folder / "broken.cif")}


def test_featurize_records_reports_a_non_structure_by_position(small_model) -> None:
    result = featurize_records([mgo(), 42], small_model)
    assert list(result.frame["id"]) == ["0"]
    assert [(e.record_id, "int" in e.reason) for e in result.errors] == [("1", True)]


# --- CGCNN data folders with an original checkpoint --------------------------------------------


@pytest.mark.shared
def test_cli_featurize_finds_atom_init_beside_id_prop(cgcnn_ref: Path, tmp_path: Path) -> None:
    """The original CGCNN reads atom_init.json from the data folder; so does `matscreen featurize`."""
    from typer.testing import CliRunner

    from screening.cli import app

    folder = tmp_path / "sample"
    folder.mkdir()
    source = cgcnn_ref / "data" / "sample-regression"
    for name in ("1000041.cif", "1000050.cif", "atom_init.json"):
        shutil.copy(source / name, folder / name)
    (folder / "id_prop.csv").write_text("1000041,1.0\n1000050,2.0\n")
    checkpoint = tmp_path / "ckpt" / "band-gap.pth.tar"  # no atom_init.json beside the checkpoint
    checkpoint.parent.mkdir()
    shutil.copy(cgcnn_ref / "pre-trained" / "band-gap.pth.tar", checkpoint)
    out = tmp_path / "emb.parquet"
    args = ["featurize", str(folder), "-o", str(out), "--model", str(checkpoint), "--no-cache", "--workers", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    import pandas as pd

    frame = pd.read_parquet(out)
    assert sorted(frame["id"]) == ["1000041", "1000050"] and frame.filter(like="emb_").shape[1] == 32
    assert sorted(frame["target"]) == [1.0, 2.0]
    (folder / "atom_init.json").unlink()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "atom_init.json" in res.output
