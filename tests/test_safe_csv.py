"""CSV files for people: hostile ids stay on one line and never become spreadsheet formulas."""

from __future__ import annotations

import csv

import pandas as pd

from screening.safe_csv import escape_control, neutralise_cell, write_text_csv


def test_hostile_text_cells_stay_on_one_line_and_are_not_formulas(tmp_path) -> None:
    ids = ['=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "mp\r\n1", "tab\tid", "ok", "-1.5"]
    frame = pd.DataFrame({"id": ids, "gap": [-1.25, 0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "n": range(8)})
    path = write_text_csv(frame, tmp_path / "out.csv")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(ids)  # nothing split a row
    rows = list(csv.reader(lines))
    cells = [r[0] for r in rows[1:]]
    assert cells[:4] == ["'" + ids[0], "'" + ids[1], "'-2+3", "'@SUM(A1)"]
    assert cells[4:] == ["mp\\r\\n1", "tab\\tid", "ok", "-1.5"]  # "-1.5" is a number written as text
    back = pd.read_csv(path)
    assert back["gap"].tolist()[0] == -1.25 and back["gap"].dtype.kind == "f"  # negative numbers stay numbers
    assert not any(c.startswith(("=", "+", "@")) for c in cells)


def test_cell_helpers() -> None:
    assert escape_control("a\x00b\x7f") == "a\\x00b\\x7f"
    assert neutralise_cell(-3.0) == -3.0 and neutralise_cell("-3") == "-3" and neutralise_cell("=1") == "'=1"


def test_a_failed_write_keeps_the_previous_file(tmp_path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("id\nold\n")

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):  # type: ignore[override]
            raise OSError("disk full")

    frame = pd.DataFrame({"id": ["new"]})
    original = pd.DataFrame.to_csv
    try:
        pd.DataFrame.to_csv = Boom.to_csv  # type: ignore[method-assign]
        try:
            write_text_csv(frame, path)
        except OSError:
            pass
    finally:
        pd.DataFrame.to_csv = original  # type: ignore[method-assign]
    assert path.read_text() == "id\nold\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
