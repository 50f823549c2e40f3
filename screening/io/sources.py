"""Reading a SOURCE (folder, single CIF, table, JSON) into a stream of structure records.

Kinds of source, detected from the path:

* a folder of ``*.cif`` files: the record id is the file stem. If the folder holds a CGCNN-style
  ``id_prop.csv`` (column 0 the id, further columns the targets), its values become labels named
  ``target`` (one column) or ``target_0``, ``target_1``, ... . A header line (a first row with no
  number among its targets, e.g. ``id,target`` or ``material_id,band_gap``) is recognised and
  names the label columns (``band_gap``). Its ids are the record ids below (``POSCAR_NaCl``, not
  ``NaCl``; a full file name such as ``NaCl.cif`` is accepted too): ids it lists that match no
  file become error records naming the row and the closest file id, and an ``id_prop.csv`` none
  of whose ids matches a file is refused whole; files it does not list are still read.
* a single ``.cif`` file: one record, id = file stem.
* VASP files: ``POSCAR``/``CONTCAR`` (also ``POSCAR_x``, ``CONTCAR.x``), ``*.vasp``, ``*.poscar``:
  one record, id = file name without ``.vasp``/``.poscar``. Parsed lazily like CIF text.
* any file ASE reads (``.extxyz``, ``.xyz``, ``.traj``, ``.xsf``, ``.cell``, ``.gen``; needs the
  ``ase`` extra): one record per frame, id = file stem (``stem_0``, ``stem_1``, ... for several
  frames), scalar ``atoms.info`` entries as labels.
* a folder holding any of these files (CIF, VASP, ASE kinds mixed; subfolders are not entered).
  A CGCNN ``atom_init.json`` beside ``id_prop.csv`` is found by :func:`folder_atom_init`.
* a table, ``.csv`` / ``.csv.gz`` / ``.parquet``, with a ``cif`` column of CIF text: the id comes
  from the first of ``material_id, id, cif_id, name, idx`` present, else the row number; the
  other scalar columns become labels (``formula`` excepted: outputs recompute it from the
  structure). Read in chunks, so a large table never sits in memory whole.
* JSON, ``.json`` / ``.json.gz``: a list of pymatgen ``Structure`` dicts (ids are list
  positions), a dict ``id -> Structure dict``, or a list of entries
  ``{"id": ..., "structure": {...} or CIF text, <label>: ...}``.

The iterator never raises for a bad record: it yields a :class:`RecordError` naming the id,
reason and file, and goes on. Only a source that cannot be read at all (missing path, unknown
kind, table without a ``cif`` column, invalid JSON) raises :class:`MatscreenError`.

CIF text is parsed lazily (see :mod:`screening.io.records`) unless ``parse=True``.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from screening.errors import MatscreenError, RecordError, StructureReadError
from screening.io.file_kinds import ASE_SUFFIXES, ID_PROP_FILE, structure_file_id, structure_file_kind
from screening.io.records import StructureRecord, parse_record, record_from_atoms
from screening.io.tables import csv_missing_values, parse_number

ID_COLUMNS = ("material_id", "id", "cif_id", "name", "idx")
CIF_COLUMN = "cif"
STRUCTURE_FIELD = "structure"
NOT_LABELS = frozenset({CIF_COLUMN, STRUCTURE_FIELD, "formula"})
DEFAULT_CHUNKSIZE = 2048

ATOM_INIT_FILE = "atom_init.json"

SUPPORTED = (
    "a folder of structure files, a .cif / POSCAR / CONTCAR / .vasp file, an ASE-readable file "
    f"({' '.join(ASE_SUFFIXES)}), .csv/.csv.gz/.parquet with a 'cif' column, or .json/.json.gz"
)


def _suffix(path: Path) -> str:
    """Lower-case suffix, with ``.gz`` kept together with what it compresses (``.csv.gz``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def folder_atom_init(source: str | Path) -> Path | None:
    """The ``atom_init.json`` of a CGCNN data folder (where the original CGCNN reads it), if any."""
    path = Path(source)
    candidate = path / ATOM_INIT_FILE if path.is_dir() else None
    return candidate if candidate is not None and candidate.is_file() else None


def source_kind(source: str | Path) -> str:
    """Which kind of source ``source`` is: ``cif_dir`` (any folder of structure files),
    ``cif_file``, ``poscar_file``, ``ase_file``, ``csv``, ``parquet`` or ``json``.

    Raises :class:`MatscreenError` naming the path when it does not exist or is of no known kind.
    """
    path = Path(source)
    if not path.exists():
        raise MatscreenError(f"source not found: {path}")
    if path.is_dir():
        return "cif_dir"
    file_kind = structure_file_kind(path)
    if file_kind is not None:
        return file_kind
    suffix = _suffix(path)
    kinds = {
        ".cif": "cif_file",
        ".csv": "csv",
        ".csv.gz": "csv",
        ".parquet": "parquet",
        ".json": "json",
        ".json.gz": "json",
    }
    if suffix not in kinds:
        raise MatscreenError(f"unknown source kind for {path} (suffix {suffix or 'none'!r}); expected {SUPPORTED}")
    return kinds[suffix]


def iter_records(
    source: str | Path, parse: bool = False, chunksize: int = DEFAULT_CHUNKSIZE
) -> Iterator[StructureRecord | RecordError]:
    """Yield every record of ``source`` in file order, bad ones as :class:`RecordError`.

    With ``parse=True`` CIF text is parsed here, so unreadable CIFs and empty structures come out
    as errors of the stream; by default records keep their text for :func:`parse_record` to
    parse later (e.g. in worker processes). A record id seen twice in one source is an error
    record the second time. ``chunksize`` is the number of table rows read at a time.
    """
    path = Path(source)
    kind = source_kind(path)
    readers = {
        "cif_dir": lambda: _iter_cif_dir(path),
        "cif_file": lambda: _cif_block_records(path, path.stem, str(path)),
        "poscar_file": lambda: iter([_cif_file_record(path, structure_file_id(path), str(path), fmt="poscar")]),
        "ase_file": lambda: _iter_ase_file(path, path.stem, required=True),
        "csv": lambda: _iter_table(path, chunksize),
        "parquet": lambda: _iter_table(path, chunksize),
        "json": lambda: _iter_json(path),
    }
    seen: set[str] = set()
    for item in readers[kind]():
        if isinstance(item, StructureRecord):
            if item.record_id in seen:
                item = RecordError(item.record_id, "duplicate record id (an earlier record has it)", item.source)
            else:
                seen.add(item.record_id)
                if parse:
                    item = _parsed(item)
        yield item


def count_records(source: str | Path) -> int:
    """How many items :func:`iter_records` yields for ``source`` (records and errors), cheaply.

    Meant for progress bars: it reads file names, the id column or Parquet metadata, and counts
    the ``data_`` lines of CIF files (one regex pass over the text, no parsing), so a multi-block
    CIF counts as its blocks. An ASE file of several frames counts once.
    """
    path = Path(source)
    kind = source_kind(path)
    if kind == "cif_dir":  # an ASE file with several frames counts once here (the bar's total then grows)
        files = _structure_files(path)
        listed = [row[0] for _, row in id_prop_rows(path, files)[1]] if (path / ID_PROP_FILE).is_file() else []
        by_name = {p.name: record_id for record_id, p in files.items()}
        matched = {i if i in files else by_name.get(i, i) for i in listed} & set(files)
        n = len(listed) - len(matched)  # rows that become one error each (no such file, a repeated row)
        n += sum(_items_in_file(p) for p in files.values())  # a CIF file: one item per data block
        return n + len(_unread_subfolders(path))
    if kind == "cif_file":
        return _items_in_file(path)
    if kind in ("poscar_file", "ase_file"):
        return 1
    if kind == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if kind == "csv":
        first = _table_columns(path)[0]
        return sum(len(chunk) for chunk in pd.read_csv(path, usecols=[first], chunksize=1 << 16))
    return len(_load_json_entries(path))


_DATA_LINE = re.compile(r"^[ \t]*data_", flags=re.MULTILINE)  # screening.io.cif's block header


def _items_in_file(path: Path) -> int:
    """How many items a structure file yields: one per ``data_`` block of a readable CIF (the
    same boundaries as :func:`screening.io.cif.split_data_blocks`), else one (a record or an error)."""
    if path.suffix.lower() != ".cif" or _entry_problem(path) is not None:
        return 1
    try:
        return max(1, len(_DATA_LINE.findall(path.read_text(encoding="utf-8", errors="replace"))))
    except OSError:
        return 1


# --- folders of CIFs -------------------------------------------------------------------------


def _structure_files(folder: Path) -> dict[str, Path]:
    """Record id -> file for every structure file of a folder, in name order."""
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        # non-regular entries (folders named x.cif, FIFOs, symlink loops) are kept so that they
        # become error records (see _entry_problem) instead of vanishing
        if structure_file_kind(p) is not None:
            files.setdefault(structure_file_id(p), p)
    return files


def _unread_subfolders(folder: Path) -> dict[Path, int]:
    """Subfolder -> how many structure files lie anywhere below it: a folder is read one level
    deep, and these files would otherwise be left out without a word."""
    found: dict[Path, int] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        n = sum(1 for p in sub.rglob("*") if structure_file_kind(p) is not None and p.is_file())
        if n:
            found[sub] = n
    return found


def _file_records(
    path: Path, record_id: str, labels: dict[str, Any] | None = None
) -> Iterator[StructureRecord | RecordError]:
    kind = structure_file_kind(path)
    problem = _entry_problem(path)
    if problem is not None:
        yield RecordError(printable_name(record_id), problem, printable_name(str(path)))
    elif kind == "ase_file":
        yield from _iter_ase_file(path, record_id, labels)
    elif kind == "cif_file":
        yield from _cif_block_records(path, record_id, str(path), labels)
    else:
        yield _cif_file_record(path, record_id, str(path), labels, fmt="poscar" if kind == "poscar_file" else "cif")


def _iter_ase_file(
    path: Path, record_id: str, labels: dict[str, Any] | None = None, required: bool = False
) -> Iterator[StructureRecord | RecordError]:
    """Every frame ASE reads from ``path``. Without ASE installed a lone file is an unreadable
    source (``required``); inside a folder it is one error record and the rest goes on."""
    try:
        import ase.io
    except ImportError:
        message = f"reading {path.suffix} files needs ASE: pip install 'matscreen[ase]'"
        if required:
            raise MatscreenError(f"{path}: {message}") from None
        yield RecordError(record_id, message, str(path))
        return
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for unreadable files
        yield StructureReadError(record_id, f"ASE cannot read it ({type(exc).__name__}: {exc})", str(path))
        return
    if not frames:
        yield StructureReadError(record_id, "ASE read no structure from it", str(path))
    for k, atoms in enumerate(frames):
        frame_id = record_id if len(frames) == 1 else f"{record_id}_{k}"
        yield record_from_atoms(atoms, frame_id, str(path), labels)


def _read_id_prop(folder: Path) -> list[list[str]]:
    """Rows of a CGCNN ``id_prop.csv`` (no header), blank lines dropped."""
    id_prop = folder / ID_PROP_FILE
    try:
        with id_prop.open(newline="", encoding="utf-8") as handle:
            return [[cell.strip() for cell in row] for row in csv.reader(handle) if row and row[0].strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MatscreenError(f"cannot read {id_prop}: {exc}") from exc


def _target_labels(values: list[str], names: list[str] | None = None) -> dict[str, Any]:
    """CGCNN target columns as labels: ``target`` for one, ``target_0..`` for several, or the
    names of the file's header line."""
    parsed = [_number_or_text(v) for v in values]
    if names is not None:
        return dict(zip(names, parsed))
    if len(parsed) == 1:
        return {"target": parsed[0]}
    return {f"target_{k}": v for k, v in enumerate(parsed)}


# Columns every featurised table has: a header may not name a label after them.
_OUTPUT_COLUMNS = frozenset({"id", "formula"})


def id_prop_header(rows: list[list[str]], file_ids: Iterable[str]) -> list[str] | None:
    """The label names of an ``id_prop.csv`` header line (``id,target``, ``material_id,band_gap``),
    or None when its first row is data.

    The first row is a header when none of its targets is a number and its first cell names no
    structure file. Its target names become the label columns (``band_gap``); a name that is
    blank, repeated, or one of the output's own columns (``id``, ``formula``, ``emb_*``,
    ``pred_*``) falls back to ``target`` / ``target_<k>``.
    """
    if not rows or len(rows[0]) < 2 or rows[0][0] in set(file_ids):
        return None
    first = rows[0]
    if any(_is_number(v) for v in first[1:]):
        return None
    names = first[1:]
    reserved = [n for n in names if not n or n in _OUTPUT_COLUMNS or n.startswith(("emb_", "pred_"))]
    if not reserved and len(set(names)) == len(names):
        return names
    return ["target"] if len(names) == 1 else [f"target_{k}" for k in range(len(names))]


def id_prop_rows(folder: Path, file_ids: Iterable[str]) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header label names or None, [(row number in the file, cells)]) of a folder's ``id_prop.csv``,
    the header line and blank lines left out (:func:`id_prop_header`)."""
    rows = _read_id_prop(folder)
    header = id_prop_header(rows, file_ids)
    numbered = list(enumerate(rows, start=1))
    return header, numbered[1:] if header is not None else numbered


ID_RULES = (
    "record ids come from file names: NAME.cif -> NAME; POSCAR / CONTCAR files keep their whole name "
    "(POSCAR_NaCl -> POSCAR_NaCl); NAME.vasp / NAME.poscar -> NAME; ASE files -> the file stem"
)


def _closest_file_ids(listed: str, file_ids: Iterable[str], limit: int = 1) -> list[str]:
    """File ids that contain ``listed`` (``POSCAR_NaCl`` for ``NaCl``), else close spellings."""
    import difflib

    ids = list(file_ids)
    containing = [f for f in ids if listed and listed.lower() in f.lower()]
    return (containing or difflib.get_close_matches(listed, ids, n=limit))[:limit]


def _is_number(value: str) -> bool:
    return isinstance(_number_or_text(value), float)


def _numeric_columns(rows: list[list[str]]) -> set[int]:
    """Target columns (0-based, after the id) holding at least one number: a text value there is
    a typo, not a class name, and would make the written column neither numbers nor text."""
    return {k for row in rows for k, v in enumerate(row[1:]) if _is_number(v)}


def _number_or_text(value: str) -> Any:
    try:
        return parse_number(value)
    except ValueError:
        return value


def _cif_file_record(
    path: Path, record_id: str, source: str, labels: dict[str, Any] | None = None, fmt: str = "cif"
) -> StructureRecord | RecordError:
    """A lazy record for one CIF (or POSCAR) file; an error record if the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return RecordError(record_id, f"cannot read {fmt.upper()} file: {exc.strerror or exc}", source)
    return StructureRecord(record_id=record_id, source=source, text=text, labels=labels or {}, fmt=fmt)


def printable_name(name: str) -> str:
    """``name`` with bytes that are not UTF-8 shown as ``\\xff`` escapes.

    Why: a file name that is not valid UTF-8 arrives as a string with surrogate escapes, which
    Parquet, CSV and JSON writers refuse; after 11 minutes of work the final write crashed. The
    escaped form can be written anywhere and still tells the user which file it was.
    """
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _entry_problem(path: Path) -> str | None:
    """Why a folder entry that looks like a structure file cannot be read as one, or None."""
    import stat

    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (shown escaped); rename the file to read it"
    try:
        mode = path.stat().st_mode  # follows symlinks: a loop or a dangling link raises
    except OSError as exc:
        return f"not readable as a file: {exc.strerror or exc} (a symlink loop or a dangling link?)"
    if stat.S_ISREG(mode):
        return None
    kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
    return f"{kind}, not a structure file; skipped"


def _cif_block_records(
    path: Path, record_id: str, source: str, labels: dict[str, Any] | None = None
) -> Iterator[StructureRecord | RecordError]:
    """One record per ``data_`` block of a CIF file: ``record_id`` for a single block,
    ``record_id#block`` (or ``#<position>`` for an unnamed block) for several. The file is split
    once, in linear time (see :func:`screening.io.cif.split_data_blocks`)."""
    from screening.io.cif import split_data_blocks

    record = _cif_file_record(path, record_id, source, labels)
    if not isinstance(record, StructureRecord) or record.text is None:
        yield record
        return
    blocks = split_data_blocks(record.text)
    if len(blocks) <= 1:
        yield record
        return
    for position, (name, text) in enumerate(blocks):
        block_id = f"{record_id}#{name or position}"
        yield StructureRecord(record_id=block_id, source=source, text=text, labels=dict(labels or {}))


def check_id_prop_matches(folder: Path, listed: list[str], files: Mapping[str, Path]) -> None:
    """Refuse an ``id_prop.csv`` none of whose ids names a structure file of the folder.

    Why: ids ``NaCl`` beside files ``POSCAR_NaCl`` read every structure without its label, so
    the label column vanished from the output at exit 0 with one error row per id. A partial
    mismatch stays per-record errors (see :func:`_iter_cif_dir`)."""
    names = {p.name for p in files.values()}
    if not listed or not files or any(i in files or i in names for i in listed):
        return
    example = listed[0]
    near = _closest_file_ids(example, files)
    raise MatscreenError(
        f"{folder / ID_PROP_FILE}: none of its {len(listed)} ids names a structure file of the folder "
        f"(e.g. {example!r}" + (f"; the folder has {near[0]!r}" if near else "") + f"); {ID_RULES}. "
        f"Write the ids as the files name them."
    )


def _iter_cif_dir(folder: Path) -> Iterator[StructureRecord | RecordError]:
    files = _structure_files(folder)
    has_id_prop = (folder / ID_PROP_FILE).is_file()
    if not files and not has_id_prop:
        nested = sum(_unread_subfolders(folder).values())
        raise MatscreenError(
            f"no structure files (.cif, POSCAR, .vasp, ASE kinds) in folder {folder}; expected {SUPPORTED}"
            + (f" ({nested} lie in its subfolders, which are not read: name a subfolder instead)" if nested else "")
        )
    first_line: dict[str, int] = {}  # id -> its row in id_prop.csv
    if has_id_prop:
        id_prop_source = str(folder / ID_PROP_FILE)
        names, numbered = id_prop_rows(folder, files)
        by_file_name = {p.name: (record_id, p) for record_id, p in files.items()}
        check_id_prop_matches(folder, [row[0] for _, row in numbered], files)
        numeric = _numeric_columns([row for _, row in numbered])
        for line, row in numbered:
            record_id = row[0]
            if record_id not in files and record_id in by_file_name:  # listed by file name: a.cif for a
                record_id = by_file_name[record_id][0]
            if record_id in first_line:
                yield RecordError(
                    record_id,
                    f"{ID_PROP_FILE} row {line} lists it again (first at row {first_line[record_id]}); "
                    "the first row's targets are used",
                    id_prop_source,
                )
                continue
            first_line[record_id] = line
            cif_path = files.get(record_id)
            if cif_path is None:
                near = _closest_file_ids(record_id, files)
                yield RecordError(
                    record_id,
                    f"{ID_PROP_FILE} row {line} lists it, but no structure file has this id"
                    + (f" (did you mean {near[0]!r}?)" if near else "")
                    + f"; {ID_RULES}",
                    id_prop_source,
                )
                continue
            text = [v for k, v in enumerate(row[1:]) if k in numeric and not _is_number(v)]
            if text:
                yield RecordError(
                    record_id,
                    f"{ID_PROP_FILE} row {line} gives the target {text[0]!r}, not a number like the rest of its "
                    "column; correct it and run again (the other crystals are featurised)",
                    id_prop_source,
                )
                continue
            yield from _file_records(cif_path, record_id, _target_labels(row[1:], names))
    for record_id, cif_path in files.items():
        if record_id not in first_line:
            yield from _file_records(cif_path, record_id)
    for sub, n in _unread_subfolders(folder).items():
        yield RecordError(
            f"{sub.name}/",
            f"{n} structure file(s) in this subfolder were not read: a folder is read one level deep; "
            "featurize the subfolder on its own, or move the files up",
            printable_name(str(sub)),
        )


# --- tables ----------------------------------------------------------------------------------


def _table_columns(path: Path) -> list[str]:
    try:
        if _suffix(path) == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # pandas / pyarrow raise many types for unreadable files
        raise MatscreenError(f"cannot read table {path}: {exc}") from exc


def id_column(columns: Iterable[str]) -> str | None:
    """The column that names records: the first of ``material_id, id, cif_id, name, idx``."""
    present = set(columns)
    return next((name for name in ID_COLUMNS if name in present), None)


def _table_chunks(path: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    if _suffix(path) == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunksize):
            yield batch.to_pandas()
    else:
        columns = _table_columns(path)
        id_col = id_column(columns)
        yield from pd.read_csv(
            path,
            chunksize=chunksize,
            dtype={id_col: str} if id_col else None,
            **csv_missing_values(columns, {id_col} if id_col else set()),
        )


def _label_value(value: Any) -> tuple[bool, Any]:
    """(is a scalar label, plain Python value) for one table or JSON cell."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    return False, None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label_kind(value: Any) -> str:
    """``missing``, ``number`` (a number, or text that reads as one), ``text`` or ``other``."""
    if _is_missing(value):
        return "missing"
    if isinstance(value, bool):
        return "other"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        if not value.strip():
            return "missing"
        return "number" if _is_number(value.strip()) else "text"
    return "other"


class LabelColumnTypes:
    """Keeps each label column of a source numbers or text, never both.

    Why: one text cell (``1.2 eV``, ``n.a.``) among the numbers of a table column made pandas read
    the whole column as text, and every label of it went to the output as a string. A column is
    numeric when most of its filled cells so far are numbers; its text cells are then errors of
    their records (naming the row, column and value), and its numbers written as text are read as
    numbers. A column mostly of text stays as it is. Counts run over the chunks of a source.
    """

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.texts: dict[str, int] = {}

    def check(self, column: str, values: list[Any]) -> tuple[list[Any], dict[int, Any]]:
        """(values, {position: bad value}) for one chunk of ``column``: numbers given as text
        become floats and the text cells of a numeric column are returned as bad."""
        kinds = [_label_kind(v) for v in values]
        self.numbers[column] = self.numbers.get(column, 0) + kinds.count("number")
        self.texts[column] = self.texts.get(column, 0) + kinds.count("text")
        if not self.texts[column] or self.numbers[column] <= self.texts[column]:
            return values, {}
        fixed = [parse_number(v.strip()) if k == "number" and isinstance(v, str) else v for v, k in zip(values, kinds)]
        return fixed, {i: v for i, (v, k) in enumerate(zip(values, kinds)) if k == "text"}


def _mixed_label_error(record_id: str, where: str, column: str, value: Any, source: str) -> RecordError:
    return RecordError(
        record_id,
        f"{where}, column {column!r}: {value!r} is not a number like the rest of its column; "
        "correct or blank the cell (the other records are read)",
        source,
    )


def _iter_table(path: Path, chunksize: int) -> Iterator[StructureRecord | RecordError]:
    columns = _table_columns(path)
    if CIF_COLUMN not in columns:
        raise MatscreenError(f"table {path} has no '{CIF_COLUMN}' column (columns: {', '.join(columns)})")
    id_col = id_column(columns)
    label_cols = [c for c in columns if c not in NOT_LABELS and c != id_col]
    source = str(path)
    row_number = 0
    types = LabelColumnTypes()
    try:
        for chunk in _table_chunks(path, chunksize):
            cifs = chunk[CIF_COLUMN].tolist()
            ids = chunk[id_col].tolist() if id_col else list(range(row_number, row_number + len(chunk)))
            label_lists: dict[str, list[Any]] = {}
            bad_cells: dict[int, tuple[str, Any]] = {}
            for c in label_cols:
                label_lists[c], bad = types.check(c, chunk[c].tolist())
                for k, value in bad.items():
                    bad_cells.setdefault(k, (c, value))
            for k, (raw_id, text) in enumerate(zip(ids, cifs)):
                record_id = f"row{row_number + k}" if _is_missing(raw_id) else str(raw_id)
                if not isinstance(text, str) or not text.strip():
                    yield RecordError(record_id, f"empty '{CIF_COLUMN}' cell (row {row_number + k})", source)
                    continue
                if k in bad_cells:
                    yield _mixed_label_error(record_id, f"row {row_number + k + 1}", *bad_cells[k], source)
                    continue
                labels = {}
                for c in label_cols:
                    ok, value = _label_value(label_lists[c][k])
                    if ok:
                        labels[c] = value
                yield StructureRecord(record_id=record_id, source=source, text=text, labels=labels)
            row_number += len(chunk)
    except MatscreenError:
        raise
    except Exception as exc:  # a corrupt chunk ends the table; say where
        raise MatscreenError(f"cannot read table {path} after row {row_number}: {exc}") from exc


# --- JSON ------------------------------------------------------------------------------------


def _load_json_entries(path: Path) -> list[tuple[str, Any]]:
    """(id, entry) pairs from any of the supported JSON layouts."""
    opener = gzip.open if _suffix(path) == ".json.gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as exc:
        raise MatscreenError(f"cannot read JSON source {path}: {exc}") from exc
    if isinstance(data, Mapping):
        if _looks_like_structure(data):
            return [("0", data)]
        return [(str(key), value) for key, value in data.items()]
    if isinstance(data, list):
        return [(_entry_id(entry, position), entry) for position, entry in enumerate(data)]
    raise MatscreenError(
        f"JSON source {path} holds a {type(data).__name__}; expected a list or an object of structures"
    )


def _looks_like_structure(entry: Any) -> bool:
    return isinstance(entry, Mapping) and "lattice" in entry and "sites" in entry


def _entry_id(entry: Any, position: int) -> str:
    if isinstance(entry, Mapping) and not _looks_like_structure(entry):
        key = id_column(entry.keys())
        if key is not None and not _is_missing(entry[key]):
            return str(entry[key])
    return str(position)


def _json_record(record_id: str, entry: Any, source: str) -> StructureRecord | RecordError:
    labels: dict[str, Any] = {}
    if _looks_like_structure(entry):
        payload = entry
    elif isinstance(entry, Mapping) and STRUCTURE_FIELD in entry:
        payload = entry[STRUCTURE_FIELD]
        id_key = id_column(entry.keys())
        for key, value in entry.items():
            if key in NOT_LABELS or key == id_key:
                continue
            ok, plain = _label_value(value)
            if ok:
                labels[key] = plain
    else:
        return RecordError(
            record_id, f"entry is neither a Structure dict nor an object with a '{STRUCTURE_FIELD}' field", source
        )
    if isinstance(payload, str):  # CIF text inside JSON
        return StructureRecord(record_id=record_id, source=source, text=payload, labels=labels)
    if not _looks_like_structure(payload):
        return RecordError(record_id, f"'{STRUCTURE_FIELD}' is not a Structure dict or CIF text", source)
    if not payload["sites"]:
        return RecordError(record_id, "structure has no atoms", source)
    try:
        structure = Structure.from_dict(payload)
    except Exception as exc:  # from_dict raises KeyError/ValueError/TypeError on malformed dicts
        return RecordError(record_id, f"invalid Structure dict ({type(exc).__name__}: {exc})", source)
    if len(structure) == 0:
        return RecordError(record_id, "structure has no atoms", source)
    return StructureRecord(record_id=record_id, source=source, structure=structure, labels=labels)


def _iter_json(path: Path) -> Iterator[StructureRecord | RecordError]:
    source = str(path)
    items = [_json_record(record_id, entry, source) for record_id, entry in _load_json_entries(path)]
    records = [(k, item) for k, item in enumerate(items) if isinstance(item, StructureRecord)]
    types = LabelColumnTypes()
    for column in sorted({c for _, r in records for c in r.labels}):
        values, bad = types.check(column, [r.labels.get(column) for _, r in records])
        for (_, record), value in zip(records, values):
            if column in record.labels:
                record.labels[column] = value
        for i, value in bad.items():
            k, record = records[i]
            if isinstance(items[k], StructureRecord):  # the first bad cell of an entry is named
                items[k] = _mixed_label_error(record.record_id, f"entry {k + 1}", column, value, source)
    yield from items


def _parsed(record: StructureRecord) -> StructureRecord | RecordError:
    """The record with its structure parsed, or the error that parsing raised."""
    try:
        structure = parse_record(record)
    except RecordError as exc:
        return exc
    return StructureRecord(record_id=record.record_id, source=record.source, structure=structure, labels=record.labels)
