"""Issue 27 item 2: every CSV the project writes keeps hostile ids exact, on one line, never a formula.

Each writer (featurize outputs and error reports, screen's merged report, ask/history files,
report tables, Parquet-to-CSV tables) gets the same hostile ids; each must come back exactly
through the project's own reader, ``=x`` and ``'=x`` stay two ids, a raw CR or LF never splits a
row, and no cell reaches a spreadsheet as a formula.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from screening.safe_csv import decode_cell, decode_frame, encode_cell

HOSTILE = [
    "=cmd|' /C calc'!A0",
    "'=cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?x=1","click")',
    "@SUM(1+1)",
    "+1+1",
    "-2+3",
    "=x",
    "'=x",
    "''=x",
    "'plain",
    "mp\r1",
    "mp\n2",
    "mp\r\n3",
    "\t=tab",
    "esc\x1b[31m",
    "back\\slash",
    "back\\rliteral",
    "C:\\new\\x.cif",
    "bad\\xff",
    "-1.5",
    "ok-1",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _raw_cells(path: Path) -> list[list[str]]:
    """The file as a line-based tool sees it: one physical line per row, split by the csv module."""
    text = path.read_text(encoding="utf-8")
    return [next(csv.reader([line])) for line in text.split("\n") if line]


def _assert_safe_file(path: Path, n_rows: int) -> None:
    rows = _raw_cells(path)
    assert len(rows) == n_rows + 1, f"{path.name}: {len(rows)} lines for {n_rows} rows"  # a CR/LF split a row
    for row in rows:
        for cell in row:
            number = cell.lstrip("+-").replace(".", "", 1).isdigit()
            assert number or not cell.startswith(FORMULA_START), f"{path.name}: formula cell {cell!r}"
            assert not any(c in cell for c in "\r\n\x1b")


def _read_text_csv(path: Path) -> pd.DataFrame:
    return decode_frame(pd.read_csv(path, dtype=str, keep_default_na=False))


# --- the writers, each with the reader the project uses for its files -------------------------------


def _text_csv(frame: pd.DataFrame, path: Path) -> pd.DataFrame:  # ask files, history.csv
    from screening.safe_csv import write_text_csv

    write_text_csv(frame, path)
    return _read_text_csv(path)


def _csv_atomic(frame: pd.DataFrame, path: Path) -> pd.DataFrame:  # featurize's errors, synthesis reports
    from screening.io.atomic import write_csv_atomic

    write_csv_atomic(frame, path, index=False)
    return _read_text_csv(path)


def _table(frame: pd.DataFrame, path: Path) -> pd.DataFrame:  # reduce's and featurize's CSV tables
    from screening.io.tables import read_table, write_table_atomic

    write_table_atomic(frame, path)
    return read_table(path, "table")


def _errors_merge(frame: pd.DataFrame, path: Path) -> pd.DataFrame:  # screen's merged error report
    from screening.io.report_pair import read_error_report
    from screening.screen.ranking import write_errors_csv

    parts = []
    for k, half in enumerate((frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2 :])):
        part = path.with_name(f"chunk-{k}.errors.parquet")
        half.to_parquet(part)
        parts.append(part)
    assert write_errors_csv(parts, path) == len(frame)
    return read_error_report(path)


WRITERS: dict[str, Callable[[pd.DataFrame, Path], pd.DataFrame]] = {
    "write_text_csv": _text_csv,
    "write_csv_atomic": _csv_atomic,
    "write_table_atomic": _table,
    "write_errors_csv": _errors_merge,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_round_trips_hostile_ids_exactly(writer: str, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": HOSTILE,
            "source": [f"dir/{i}.cif" for i in HOSTILE],
            "error": ["StructureReadError"] * len(HOSTILE),
            "reason": [f"cannot read {i}" for i in HOSTILE],
        }
    )
    if writer == "write_table_atomic":
        frame["gap"] = [-1.25 + k for k in range(len(HOSTILE))]  # a numeric column, negatives included
    path = tmp_path / "out.csv"
    back = WRITERS[writer](frame, path)
    _assert_safe_file(path, len(HOSTILE))
    assert list(back["id"]) == HOSTILE  # exact, in order: "=x" and "'=x" are two ids
    assert list(back["source"]) == list(frame["source"])
    assert list(back["reason"]) == list(frame["reason"])
    if writer == "write_table_atomic":
        assert back["gap"].dtype.kind == "f" and list(back["gap"]) == list(frame["gap"])


def test_negative_numbers_and_numeric_text_stay_numbers(tmp_path: Path) -> None:
    from screening.safe_csv import write_text_csv

    path = write_text_csv(pd.DataFrame({"id": ["-1.5", "+2", "=1"], "y": [-3.25, 0.0, -1e-9]}), tmp_path / "n.csv")
    rows = _raw_cells(path)
    assert [r[0] for r in rows[1:]] == ["-1.5", "+2", "'=1"]
    back = pd.read_csv(path)
    assert back["y"].dtype.kind == "f" and list(back["y"]) == [-3.25, 0.0, -1e-9]


@given(st.text(alphabet=st.sampled_from(list("\\'=+-@rntx01f7a \r\n\t\x00\x1b\x7f")), max_size=8))
def test_the_cell_encoding_is_a_bijection(text: str) -> None:
    encoded = encode_cell(text)
    assert decode_cell(encoded) == text
    assert not any(c in encoded for c in "\r\n\t\x00\x1b\x7f")
    assert encoded.startswith("'") or not encoded.startswith(("=", "+", "@")) or encoded[1:].isdigit()


def test_distinct_ids_stay_distinct_after_encoding() -> None:
    assert len({encode_cell(i) for i in HOSTILE}) == len(HOSTILE)
    assert encode_cell("=x") != encode_cell("'=x") and encode_cell("\r") != encode_cell("\\r")
    assert decode_cell("'x") == "'x"  # never written by the encoder: a typed apostrophe stays


def _nacl() -> dict:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_featurize_csv_output_and_error_report_keep_hostile_ids(suffix: str, tmp_path: Path, small_model) -> None:
    """`featurize -o x.csv`: good records with hostile ids in the output, bad ones in the report."""
    from screening.featurize.featurizer import featurize_source
    from screening.io.report_pair import read_error_report
    from screening.io.tables import read_table

    good = HOSTILE[:10]
    bad = HOSTILE[10:]
    entries = [{"id": i, "structure": _nacl()} for i in good]
    entries += [{"id": i, "structure": "data_x\nnot a cif at all\n"} for i in bad]
    source = tmp_path / "hostile.json"
    source.write_text(json.dumps(entries))
    out = tmp_path / f"emb{suffix}"
    summary = featurize_source(source, out, model=small_model, progress=False)
    assert summary["rows"] == len(good) and summary["errors"] == len(bad)

    table = read_table(out, "embeddings")
    assert list(table["id"]) == good
    if suffix == ".csv":
        _assert_safe_file(out, len(good))
    report = Path(summary["errors_path"])
    _assert_safe_file(report, len(bad))
    assert list(read_error_report(report, out)["id"]) == bad
