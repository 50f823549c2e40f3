"""The one CSV writer of the project: one line per row, no spreadsheet formulas, read back exactly.

Ids, file names and error messages come from users' files and can hold anything. Every CSV the
project writes (featurize outputs, error reports, ask files, histories, synthesis reports and
condition files) goes through :func:`encode_cell` (via :func:`write_text_csv`,
:func:`write_csv_chunk` or :func:`screening.io.atomic.write_csv_atomic`), and every reader of
such a file undoes it with :func:`decode_cell` / :func:`decode_frame`. The encoding of a text
cell (numbers are never touched):

1. control characters become visible escapes: CR, LF, tab as ``\\r``, ``\\n``, ``\\t``, the
   others as ``\\xNN`` (two lower-case hex digits), so a row stays one line for every tool;
2. a backslash is doubled where it would otherwise read as one of those escapes (before another
   backslash, a control character, or ``r``/``n``/``t``/``xNN``-of-a-control-code); any other
   backslash (``C:\\data``, ``bad\\xff``) is written as it is;
3. a cell that then starts with ``=``, ``+``, ``-``, ``@`` (a spreadsheet formula) or with ``'``
   gets one ``'`` in front, unless it is a plain number (``-1.5`` stays ``-1.5``).

Decoding drops that one leading ``'`` and reads the escapes back. The mapping is a bijection:
``=x`` is written ``'=x``, ``'=x`` is written ``''=x``, and each reads back as itself.

Kept outside ``screening.io`` (whose readers import pymatgen) so that `campaign ask` stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\r": "r", "\n": "n", "\t": "t"}
# text after the backslash -> character (``\x0a`` is read too, though LF is written ``\n``)
_ESCAPES = {**{v: k for k, v in _NAMED.items()}, **{f"x{c:02x}": chr(c) for c in [*range(0x20), 0x7F]}}
# a backslash the decoder would read as the start of an escape: before another backslash, a
# control character, or text that spells an escape
_AMBIGUOUS = re.compile(r"\\(?=[\\\x00-\x1f\x7frnt]|x(?:[01][0-9a-f]|7f))")
_DECODE = re.compile(r"\\(\\|[rnt]|x(?:[01][0-9a-f]|7f))")
FORMULA_PREFIXES = ("=", "+", "-", "@")
QUOTE = "'"
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def escape_control(text: str) -> str:
    """``text`` on one line: control characters as escapes, backslashes doubled where ambiguous."""
    text = _AMBIGUOUS.sub(r"\\\\", text)
    return _CONTROL.sub(lambda m: "\\" + _NAMED.get(m.group(), f"x{ord(m.group()):02x}"), text)


def unescape_control(text: str) -> str:
    """The inverse of :func:`escape_control`."""
    if "\\" not in text:
        return text
    return _DECODE.sub(lambda m: "\\" if m.group(1) == "\\" else _ESCAPES[m.group(1)], text)


def encode_cell(value: Any) -> Any:
    """A cell safe for a spreadsheet and a line-based tool (see the module notes); non-text as given."""
    if not isinstance(value, str):
        return value
    text = escape_control(value)
    if text.startswith(QUOTE) or (text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text)):
        return QUOTE + text
    return text


def decode_cell(value: Any) -> Any:
    """The value :func:`encode_cell` was given (``'=A`` is ``=A``, ``''=A`` is ``'=A``); non-text as given.

    A leading ``'`` is dropped only before what the encoder protects (a formula prefix or another
    ``'``): ``'x``, which the encoder never writes, stays ``'x`` when a person types it."""
    if not isinstance(value, str):
        return value
    if value.startswith(QUOTE) and value[1:].startswith((QUOTE, *FORMULA_PREFIXES)):
        value = value[1:]
    return unescape_control(value)


# The names the ask-file code has always used.
neutralise_cell = encode_cell
restore_cell = decode_cell


def _is_text(series: pd.Series) -> bool:
    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def encode_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with its headers, text cells and text index encoded."""
    safe = frame.copy()
    safe.columns = [encode_cell(str(c)) for c in safe.columns]
    for k in range(safe.shape[1]):
        col = safe.iloc[:, k]
        if _is_text(col):
            safe.isetitem(k, col.map(encode_cell).to_numpy())
    if _is_text(safe.index.to_series()):
        safe.index = safe.index.map(encode_cell)
    return safe


def decode_frame(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """``frame`` (read from a file the project wrote) with headers and text cells decoded, in place.

    ``columns`` limits the cells decoded (default: every text column)."""
    frame.columns = [decode_cell(c) if isinstance(c, str) else c for c in frame.columns]
    for k in range(frame.shape[1]):
        name = frame.columns[k]
        if (columns is None or name in columns) and _is_text(frame.iloc[:, k]):
            frame.isetitem(k, frame.iloc[:, k].map(decode_cell).to_numpy())
    return frame


def write_csv_chunk(frame: pd.DataFrame, handle: IO[str] | str | Path, header: bool = True, **to_csv: Any) -> None:
    """``frame.to_csv(handle, ...)`` with every text cell encoded: for writers that append chunks."""
    to_csv.setdefault("index", False)
    encode_frame(frame).to_csv(handle, header=header, **to_csv)


def write_text_csv(frame: pd.DataFrame, path: str | Path, float_format: str | None = "%.10g", **to_csv: Any) -> Path:
    """``frame`` as CSV with its text cells and headers encoded (see the module notes), written
    atomically (:mod:`screening.io.atomic`)."""
    from screening.io.atomic import atomic_path

    path = Path(path)
    safe = encode_frame(frame)
    to_csv.setdefault("index", False)
    with atomic_path(path) as tmp:
        safe.to_csv(tmp, float_format=float_format, **to_csv)
    return path


__all__ = [
    "FORMULA_PREFIXES",
    "decode_cell",
    "decode_frame",
    "encode_cell",
    "encode_frame",
    "escape_control",
    "neutralise_cell",
    "restore_cell",
    "unescape_control",
    "write_csv_chunk",
    "write_text_csv",
]
