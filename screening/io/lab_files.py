"""Files exchanged with an external oracle (a lab, a DFT code): the asked batch and the results.

``ask`` files are CSV with one row per suggested point: ``id`` (plus descriptive columns such as
``formula``) for a pool, or one column per input (the box's names, else ``x0``, ``x1`` …) for a
box. ``results`` files are CSV with the same identifying columns plus the measured value (for a
pool: ``band_gap_eV``, the ask file's own empty column, or ``band_gap``, ``y`` …; for a box: ``y``)
and an optional ``error`` column whose non-empty text marks a failed evaluation: a band-gap ask
file filled in by the lab is a results file.

A malformed results file raises :class:`ResultsFileError` naming the file, the row and the
reason; nothing is told in that case.

Ask files are written with :func:`screening.safe_csv.write_text_csv` (one line per row, no
spreadsheet formulas, atomic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from screening.errors import RecordError
from screening.io.tables import parse_number
from screening.safe_csv import escape_control, neutralise_cell, restore_cell, write_text_csv  # noqa: F401  (part of this API)


class BoxShape(Protocol):
    """What a box file needs of a box domain (:class:`screening.bo.domain.Box`): its input names
    (None: ``x0``, ``x1`` ...) and how many inputs. A protocol, so that the file readers import
    nothing of the acquisition framework (which pulls in scipy)."""

    @property
    def names(self) -> Sequence[str] | None: ...

    @property
    def dim(self) -> int: ...


class ResultsFileError(RecordError):
    """A results file cannot be read, or one of its rows is malformed."""


@dataclass
class Results:
    points: list[Any]
    ys: list[Any]
    errors: list[str | None]


def box_columns(box: BoxShape) -> list[str]:
    return list(box.names) if box.names else [f"x{i}" for i in range(box.dim)]


def write_box_batch(path: str | Path, box: BoxShape, points: Sequence[np.ndarray]) -> Path:
    """The asked box points as CSV, one column per input."""
    frame = pd.DataFrame(np.atleast_2d(np.asarray(points, dtype=np.float64)), columns=box_columns(box))
    return write_text_csv(frame, path)


def read_csv_as_text(path: Path, error: type[RecordError] = RecordError) -> pd.DataFrame:
    """A lab's results CSV with every cell as text (nothing guessed), or ``error`` naming the file.

    Shared by every objective that reads results back from a lab or a DFT code.
    """
    if not path.is_file():
        raise error("<file>", "results file not found", str(path))
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises many parser error types
        raise error("<file>", f"not a readable CSV ({exc})", str(path)) from exc


def _read_csv(path: Path) -> pd.DataFrame:
    frame = read_csv_as_text(path, ResultsFileError)
    if frame.empty:
        raise ResultsFileError("<file>", "no result rows", str(path))
    return frame


def _value(text: str, row_id: str, column: str, path: Path, line: int | None = None) -> float:
    where = f"line {line}: " if line is not None else ""
    if not text:
        raise ResultsFileError(
            row_id,
            f"{where}{column} is empty (a failed measurement says why in an error column; leave out rows not measured yet)",
            str(path),
        )
    try:
        v = parse_number(text)
    except ValueError:
        raise ResultsFileError(row_id, f"{where}{column} {text!r} is not a number", str(path)) from None
    if not np.isfinite(v):
        raise ResultsFileError(
            row_id, f"{where}{column} is {text!r}: NaN or infinite values are not results", str(path)
        )
    return v


# The value column of a pool results file: the first of these a file has, compared without case;
# band_gap_eV as the ask files write units, and common spellings.
POOL_VALUE_COLUMNS = ("band_gap", "band_gap_ev", "bandgap", "bandgap_ev", "gap", "gap_ev", "y")


def read_pool_results(
    path: str | Path,
    value_columns: Sequence[str] = POOL_VALUE_COLUMNS,
    check: Callable[[float], Any] | None = None,
) -> Results:
    """Read ``id`` + value (+ ``error``) rows for a pool campaign.

    ``check(value)`` (an objective's ``check_y``) raises ``ValueError`` for a physically impossible
    value; the file is then refused naming the line, the id and the reason, before anything is told.
    """
    path = Path(path)
    frame = _read_csv(path)
    if "id" not in frame.columns:
        raise ResultsFileError("<header>", f"needs an 'id' column, has {list(frame.columns)}", str(path))
    wanted = {c.lower() for c in value_columns}
    present = [c for c in frame.columns if str(c).strip().lower() in wanted]
    if not present:
        raise ResultsFileError(
            "<header>",
            f"needs a value column (one of {', '.join(value_columns)}; any case), has {list(frame.columns)}",
            str(path),
        )
    if len(present) > 1:
        raise ResultsFileError("<header>", f"has {' and '.join(present)}: give the values in one column", str(path))
    col = present[0]
    out = Results([], [], [])
    for n, row in enumerate(frame.to_dict("records"), start=2):
        rid = restore_cell(row["id"].strip()) or f"line {n}"
        if not row["id"].strip():
            raise ResultsFileError(rid, "empty id", str(path))
        err = (row.get("error") or "").strip() or None
        out.points.append(rid)
        out.errors.append(err)
        if err is not None:
            if row[col].strip():  # told as failed, its value would be dropped without a word
                raise ResultsFileError(
                    rid,
                    f"line {n}: both a {col} ({row[col].strip()!r}) and an error ({err!r}); a failed measurement "
                    f"leaves {col} empty, a good one leaves error empty",
                    str(path),
                )
            out.ys.append(None)
            continue
        value = _value(row[col].strip(), rid, col, path, n)
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise ResultsFileError(rid, f"line {n}: {col} {row[col].strip()!r}: {exc}", str(path)) from None
        out.ys.append(value)
    return out


def read_box_results(path: str | Path, box: BoxShape) -> Results:
    """Read input columns + ``y`` (+ ``error``) rows for a box campaign."""
    path = Path(path)
    frame = _read_csv(path)
    cols = box_columns(box)
    missing = [c for c in cols + ["y"] if c not in frame.columns]
    if missing:
        raise ResultsFileError("<header>", f"missing columns {missing}", str(path))
    out = Results([], [], [])
    for n, row in enumerate(frame.to_dict("records"), start=2):
        rid = f"line {n}"
        x = np.array([_value(row[c].strip(), rid, c, path) for c in cols])
        err = (row.get("error") or "").strip() or None
        out.points.append(x)
        out.errors.append(err)
        out.ys.append(None if err is not None and not row["y"].strip() else _value(row["y"].strip(), rid, "y", path))
    return out
