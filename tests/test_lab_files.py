"""Results files a lab writes: the value column by its usual names, and refusals that name the line."""

from __future__ import annotations

import pytest

from screening.io.lab_files import ResultsFileError, read_pool_results


@pytest.mark.parametrize("column", ["band_gap", "band_gap_eV", "BandGap", "gap_eV", "y"])
def test_the_value_column_is_found_by_its_usual_names(tmp_path, column) -> None:
    path = tmp_path / "r.csv"
    path.write_text(f"id,{column}\nmp-1,2.5\nmp-2,3.0\n")
    res = read_pool_results(path)
    assert res.points == ["mp-1", "mp-2"] and res.ys == [2.5, 3.0]


def test_a_file_with_two_value_columns_or_none_is_refused_naming_them(tmp_path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,band_gap,band_gap_eV\nmp-1,2.5,2.5\n")
    with pytest.raises(ResultsFileError, match="band_gap and band_gap_eV"):
        read_pool_results(path)
    path.write_text("id,value\nmp-1,2.5\n")
    with pytest.raises(ResultsFileError, match=r"has \['id', 'value'\]"):
        read_pool_results(path)


def test_a_blank_value_names_its_line(tmp_path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,band_gap_eV\nmp-1,2.5\nmp-2,\n")
    with pytest.raises(ResultsFileError, match=r"line 3: band_gap_eV is empty") as info:
        read_pool_results(path)
    assert "mp-2" in str(info.value)
