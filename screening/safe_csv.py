"""CSV files for people: one line per row, no spreadsheet formulas, never half-written.

Ids and error messages come from users' files and can hold anything. Every CSV the project writes
for people (ask files, histories, error reports) goes through :func:`write_text_csv`, so that

- a text cell stays on one line: CR, LF, tab and other control characters are written as the
  escapes ``\\r``, ``\\n``, ``\\t``, ``\\xNN`` (line-based tools and naive readers do not split rows);
- a text cell starting with ``=``, ``+``, ``-`` or ``@`` is prefixed with ``'``, so a spreadsheet
  shows it instead of evaluating it (CSV formula injection); numbers — negative ones included, and
  text that is just a number — stay as they are;
- the file is written under a temporary name in the same folder and renamed, so a crash or a full
  disk leaves the previous file intact.

Kept outside ``screening.io`` (whose package imports the structure readers and pymatgen) so that
`campaign ask` stays fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
FORMULA_PREFIXES = ("=", "+", "-", "@")


def escape_control(text: str) -> str:
    """``text`` with control characters written as visible escapes, so a cell stays on one line."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def neutralise_cell(value: Any) -> Any:
    """A cell safe for a spreadsheet: text on one line, never read as a formula; numbers untouched."""
    if not isinstance(value, str):
        return value
    text = escape_control(value)
    if text.startswith(FORMULA_PREFIXES):
        try:
            float(text)
            return text  # a number written as text ("-1.5") is harmless
        except ValueError:
            return "'" + text
    return text


def restore_cell(text: str) -> str:
    """Undo :func:`neutralise_cell` on a cell read back (an id from an ask file that a lab filled
    in): ``'=A`` is the id ``=A``. Text that neutralising could not have written stays as it is."""
    if text.startswith("'") and text[1:].startswith(FORMULA_PREFIXES):
        return text[1:]
    return text


def write_text_csv(frame: pd.DataFrame, path: str | Path, float_format: str | None = "%.10g") -> Path:
    """``frame`` as CSV with its text cells and headers neutralised (see the module notes), written atomically."""
    path = Path(path)
    safe = frame.copy()
    safe.columns = [neutralise_cell(str(c)) for c in safe.columns]
    for col in safe.columns:
        if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col].dtype):
            safe[col] = safe[col].map(neutralise_cell)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # the prefix screening.io.atomic sweeps
    try:
        safe.to_csv(tmp, index=False, float_format=float_format)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
