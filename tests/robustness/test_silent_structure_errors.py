"""Structures that used to be read silently wrong are refused per record, naming file, record and reason.

Issue 27 item 7: occupancy ``.`` dropped a site (NaCl embedded as Cl), a negative cell length or
angle was embedded, ``Uuo`` was read as U, a ``.`` coordinate as 0, and one text cell turned a
whole label column into strings. (``test_structure_validation.py`` holds the earlier probes.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from screening.errors import InvalidStructureError, RecordError
from screening.io.records import StructureRecord, parse_record
from screening.io.sources import iter_records
from screening.io.validate import cif_symbol_element, parsed_elements_problem

CIF = """data_probe
_cell_length_a {a}
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha {alpha}
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
 'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
 {label} {symbol} {x} 0 0 {occ}
 Cl1 Cl 0.5 0.5 0.5 1
"""
GOOD = dict(a=5.64, alpha=90, label="Na1", symbol="Na", x=0, occ=1)

# (what was read silently wrong, CIF fields, the check and the words its reason must hold)
SILENT = [
    ("occupancy . dropped the site", dict(occ="."), "occupancy: site 'Na1' has occupancy '.', a missing value"),
    ("occupancy ? read as 1", dict(occ="?"), "occupancy: site 'Na1' has occupancy '?', a missing value"),
    ("negative cell length", dict(a=-5.64), "lattice: _cell_length_a = '-5.64'"),
    ("negative cell angle", dict(alpha=-90), "lattice: _cell_angle_alpha = '-90'"),
    ("angle above 180", dict(alpha=200), "lattice: _cell_angle_alpha = '200'"),
    ("missing cell length", dict(a="?"), "lattice: _cell_length_a = '?', a missing value"),
    ("Uuo read as U", dict(label="Uuo1", symbol="Uuo"), "element: site 'Uuo1' has type symbol 'Uuo'"),
    ("Ob read as O", dict(symbol="Ob"), "element: site 'Na1' has type symbol 'Ob'"),
    ("type symbol ? dropped the site", dict(symbol="?"), "element: site 'Na1' has type symbol '?', a missing value"),
    ("coordinate . read as 0", dict(x="."), "coordinates: site 'Na1' has _atom_site_fract_x '.', a missing value"),
    ("coordinate ?", dict(x="?"), "coordinates: site 'Na1' has _atom_site_fract_x '?', a missing value"),
]


def _text(**fields) -> str:
    return CIF.format(**(GOOD | fields))


def test_the_reference_probe_reads_as_nacl() -> None:
    structure = parse_record(StructureRecord("probe", "probe.cif", text=_text()))
    assert structure.composition.reduced_formula == "NaCl" and structure.lattice.a == pytest.approx(5.64)


@pytest.mark.parametrize(("what", "fields", "reason"), SILENT, ids=[s[0] for s in SILENT])
def test_each_silently_wrong_cif_is_refused_naming_the_site(what: str, fields: dict, reason: str) -> None:
    with pytest.raises(InvalidStructureError) as info:
        parse_record(StructureRecord("probe", "probe.cif", text=_text(**fields)))
    assert info.value.record_id == "probe" and info.value.source == "probe.cif"
    assert reason in info.value.reason, (what, info.value.reason)


def test_a_label_only_cif_is_read_strictly_too() -> None:
    """Without _atom_site_type_symbol pymatgen reads the label: Uuo1 became U."""
    lines = [line for line in _text(label="Uuo1").splitlines() if line != "_atom_site_type_symbol"]
    text = "\n".join(line.replace(" Uuo1 Na ", " Uuo1 ").replace(" Cl1 Cl ", " Cl1 ") for line in lines) + "\n"
    with pytest.raises(InvalidStructureError, match="element: site 'Uuo1' has label 'Uuo1'"):
        parse_record(StructureRecord("probe", "probe.cif", text=text))
    ok = text.replace("Uuo1", "Na1")
    assert parse_record(StructureRecord("ok", "ok.cif", text=ok)).composition.reduced_formula == "NaCl"


def test_ordinary_symbols_still_pass() -> None:
    for symbol, element in (("Fe2+", "Fe"), ("O2-", "O"), ("na", "Na"), ("Cl1", "Cl"), ("D", "H"), ("Ow", "O")):
        assert cif_symbol_element(symbol) == element
    for symbol in ("Uuo", "X", "Xx", "Ob", "123", "?", ""):
        assert cif_symbol_element(symbol) is None, symbol
    charged = _text(symbol="Na+")
    assert parse_record(StructureRecord("c", "c.cif", text=charged)).composition.reduced_formula == "NaCl"


def test_a_site_the_parser_drops_is_caught_after_parsing() -> None:
    assert parsed_elements_problem({"Na", "Cl"}, {"Na", "Cl"}) is None
    assert "has no Na (a site was dropped" in parsed_elements_problem({"Na", "Cl"}, {"Cl"})
    assert "holds U, which no atom site" in parsed_elements_problem({"Cl"}, {"Cl", "U"})
    # two atoms on one spot: pymatgen keeps one of them without a word
    pair = Structure(Lattice.cubic(4.0), ["H", "O"], [[0, 0, 0], [0, 0, 0]], validate_proximity=False)
    with pytest.raises(InvalidStructureError, match="no H \\(a site was dropped while reading\\)"):
        parse_record(StructureRecord("pair", "pair.cif", text=pair.to(fmt="cif")))


def test_a_folder_reports_each_bad_file_and_reads_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.cif").write_text(_text())
    for k, (_, fields, _) in enumerate(SILENT):
        (tmp_path / f"bad{k:02d}.cif").write_text(_text(**fields))
    items = list(iter_records(tmp_path, parse=True))
    good = [i for i in items if not isinstance(i, RecordError)]
    errors = {e.record_id: e for e in items if isinstance(e, RecordError)}
    assert [r.record_id for r in good] == ["good"]
    assert good[0].structure.composition.reduced_formula == "NaCl"
    assert sorted(errors) == [f"bad{k:02d}" for k in range(len(SILENT))]
    for k, (what, _, reason) in enumerate(SILENT):
        error = errors[f"bad{k:02d}"]
        assert error.source == str(tmp_path / f"bad{k:02d}.cif") and reason in error.reason, what


def _nacl_cif() -> str:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")


def test_one_text_cell_in_a_label_column_is_that_records_error(tmp_path: Path) -> None:
    table = tmp_path / "crystals.csv"
    pd.DataFrame(
        {
            "material_id": ["m1", "m2", "m3", "m4"],
            "cif": [_nacl_cif()] * 4,
            "band_gap": ["1.5", "1.2 eV", "", "3.0"],
            "prototype": ["rocksalt", "rocksalt", "CsCl", "rocksalt"],
        }
    ).to_csv(table, index=False)
    items = list(iter_records(table))
    records = {r.record_id: r for r in items if not isinstance(r, RecordError)}
    (error,) = [e for e in items if isinstance(e, RecordError)]
    assert error.record_id == "m2" and error.source == str(table)
    assert error.reason.startswith("row 2, column 'band_gap': '1.2 eV' is not a number")
    assert sorted(records) == ["m1", "m3", "m4"]
    assert records["m1"].labels["band_gap"] == 1.5 and isinstance(records["m4"].labels["band_gap"], float)
    assert records["m1"].labels["prototype"] == "rocksalt"  # a text column stays text


def test_the_same_holds_across_the_chunks_of_a_large_table(tmp_path: Path) -> None:
    table = tmp_path / "big.csv"
    gaps = [str(0.1 * k) for k in range(10)]
    gaps[7] = "n.a."
    pd.DataFrame({"id": [f"c{k}" for k in range(10)], "cif": [_nacl_cif()] * 10, "band_gap": gaps}).to_csv(
        table, index=False
    )
    items = list(iter_records(table, chunksize=3))
    errors = [e for e in items if isinstance(e, RecordError)]
    assert [(e.record_id, e.reason.split(":")[0]) for e in errors] == [("c7", "row 8, column 'band_gap'")]
    labels = [r.labels["band_gap"] for r in items if not isinstance(r, RecordError)]
    assert len(labels) == 9 and all(isinstance(v, float) for v in labels)


def test_json_entries_with_a_text_label_among_numbers(tmp_path: Path) -> None:
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
    entries = [{"id": f"j{k}", "structure": nacl, "band_gap": gap} for k, gap in enumerate([1.0, 2.0, "high"])]
    path = tmp_path / "entries.json"
    path.write_text(json.dumps(entries))
    items = list(iter_records(path))
    assert [r.labels["band_gap"] for r in items[:2]] == [1.0, 2.0]
    assert isinstance(items[2], RecordError) and items[2].record_id == "j2"
    assert items[2].reason.startswith("entry 3, column 'band_gap': 'high' is not a number")


def test_featurize_writes_a_numeric_label_column_and_reports_the_text_cell(tmp_path: Path, small_model: str) -> None:
    from screening.featurize.featurizer import featurize_source

    table = tmp_path / "crystals.csv"
    pd.DataFrame(
        {"id": ["a", "b", "c"], "cif": [_nacl_cif(), _nacl_cif(), _text(occ=".")], "band_gap": ["1.5", "oops", "2"]}
    ).to_csv(table, index=False)
    summary = featurize_source(table, tmp_path / "emb.parquet", model=small_model, progress=False)
    frame = pd.read_parquet(tmp_path / "emb.parquet")
    errors = pd.read_csv(summary["errors_path"]).set_index("id")
    assert list(frame.id) == ["a"] and frame.band_gap.dtype == "float64" and frame.band_gap[0] == 1.5
    assert errors.loc["b", "reason"].startswith("row 2, column 'band_gap': 'oops'")
    assert errors.loc["c", "reason"].startswith("occupancy: site 'Na1' has occupancy '.'")
