"""Featurised tables on disk: Parquet, or CSV when the file's name ends in ``.csv`` / ``.csv.gz``.

`featurize` and `reduce` write them; `search`, `campaign new`, `reduce` and ``--known`` read them.
One rule, decided by the name, for every command: before it, ``featurize -o pool.csv`` wrote
Parquet bytes under a CSV name, which ``--known pool.csv`` then failed to parse while `reduce`
and the pool loader each had a rule of their own.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd

from screening.errors import MatscreenError
from screening.io.atomic import atomic_path
from screening.io.report_pair import warn_if_unpaired
from screening.safe_csv import decode_frame, write_csv_chunk

CSV_SUFFIXES = (".csv", ".csv.gz")


def parse_number(text: str) -> float:
    """A number written in a table cell, as ``float`` reads it but without Python's digit
    separators: ``float("2_5")`` is 25.0, which a lab's typo for 2.5 must not become."""
    if "_" in text:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)


def is_csv(path: str | Path) -> bool:
    """Whether ``path`` names a CSV table (``.csv`` or gzip-compressed ``.csv.gz``)."""
    return Path(path).name.lower().endswith(CSV_SUFFIXES)


def table_format(path: str | Path) -> str:
    return "CSV" if is_csv(path) else "Parquet"


def beside(path: str | Path, suffix: str) -> Path:
    """A companion file of table ``path`` (its errors report, its PCA): the table's name with its
    format suffix, ``.csv.gz`` whole, replaced by ``suffix`` (``pool.csv.gz`` -> ``pool.errors.csv``)."""
    path = Path(path)
    if path.name.lower().endswith(".csv.gz"):
        return path.with_name(path.name[: -len(".csv.gz")] + suffix)
    return path.with_suffix(suffix)


def row_label(path: str | Path, row: int) -> str:
    """How a user finds data row ``row`` (0-based) of ``path``: a CSV's line in an editor (the
    header is line 1), a Parquet file's 1-based row."""
    return f"line {row + 2}" if is_csv(path) else f"row {row + 1}"


# pandas' default missing-value markers. An id column keeps them as text: a crystal may be
# named NA or null (a CIF file NA.cif), and only an empty id cell is missing.
MISSING_MARKERS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip


def csv_missing_values(columns: list[str], id_columns: set[str]) -> dict[str, Any]:
    """``read_csv`` keywords: the usual missing markers in every column but ``id_columns``, where
    only an empty cell is missing."""
    return {
        "keep_default_na": False,
        "na_values": {c: ([""] if c in id_columns else MISSING_MARKERS) for c in columns},
    }


def read_table(path: str | Path, what: str, error: type[MatscreenError] = MatscreenError) -> pd.DataFrame:
    """The table at ``path``; in a CSV, ids stay text (``001`` is not ``1``) and numbers are read
    back to the bit that pandas wrote (``round_trip``; the default parser may differ in the last
    digit, which would make a CSV pool search differently from its Parquet twin). ``error`` is raised,
    naming the file, ``what`` it was read as and the format tried, when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        if is_csv(path):
            columns = list(pd.read_csv(path, nrows=0).columns)
            frame = pd.read_csv(
                path, dtype={"id": str}, float_precision="round_trip", **csv_missing_values(columns, {"id"})
            )
            frame = decode_frame(frame)  # the project wrote it encoded (screening.safe_csv)
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas / pyarrow raise many types for unreadable files
        hint = "" if is_csv(path) else " (a CSV table must be named .csv or .csv.gz)"
        raise error(f"{path}: cannot read {what} as {table_format(path)}{hint} ({exc})") from exc
    warn_if_unpaired(path)  # an error report beside it from another run (screening.io.report_pair)
    return frame


class CsvChunkWriter:
    """Append DataFrame chunks to one CSV (gzip-compressed for ``.csv.gz``), the header once;
    text cells encoded (:mod:`screening.safe_csv`), so :func:`read_table` reads them back exactly."""

    def __init__(self, handle: IO[str]):
        self._handle = handle
        self.columns: list[str] | None = None

    def write(self, frame: pd.DataFrame) -> None:
        first = self.columns is None
        if first:
            self.columns = list(frame.columns)
        write_csv_chunk(frame.reindex(columns=self.columns), self._handle, header=first)


@contextmanager
def csv_chunk_writer(path: Path, compress: bool) -> Iterator[CsvChunkWriter]:
    opener: Any = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        yield CsvChunkWriter(handle)


def write_table_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` in the format its name says, all or nothing (screening.io.atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if is_csv(path):
            with csv_chunk_writer(tmp, path.name.lower().endswith(".gz")) as writer:
                writer.write(frame)
        else:
            frame.to_parquet(tmp, index=False)
    return path
