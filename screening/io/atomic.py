"""Atomic output files: a reader sees the previous file or the new one, never half of one.

Why: a run killed mid-write (``kill -9``, a full disk, an exception in the writer) used to leave
a truncated Parquet where a valid 20,000-row file had been. Every writer here writes to a
temporary name in the destination's folder (so the final step is a rename on one file system),
flushes it to disk (``fsync``), renames it onto the destination with ``os.replace`` (atomic on
POSIX and Windows) and fsyncs the folder so the rename itself survives a power cut. When the
writer raises, the temporary file is removed and the previous output is untouched; a process
killed outright leaves at most a stray temporary file starting with :data:`TMP_PREFIX`, which
:func:`sweep_temporary_files` removes.

The temporary name ends with the destination's name (``.tmp-<pid>-<random>-out.csv.gz``), so
writers that infer a format or a compression from the suffix (pandas, matplotlib) behave as they
would on the real name.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def check_output_apart(output: str | Path, *inputs: str | Path) -> None:
    """Refuse an output path that would replace one of the command's inputs or is a folder.

    Why: an atomic write replaces whatever is at ``output``; ``featurize data.csv -o data.csv`` (or
    ``-o`` naming a CIF of the input folder) turned the user's structures into a table without
    them, with no way back. Checked before any work, so a long run does not end in the error."""
    from screening.errors import MatscreenError
    from screening.io.file_kinds import ID_PROP_FILE, structure_file_kind

    out = Path(output)
    if out.is_dir():
        raise MatscreenError(f"{out} is a folder; -o names the file to write (e.g. {out / 'embeddings.parquet'})")
    target = out.resolve()
    read_there = structure_file_kind(out) is not None or out.name == ID_PROP_FILE  # what a folder source reads
    for given in inputs:
        source = Path(given).resolve()
        if target == source or (source.is_dir() and target.parent == source and out.exists() and read_there):
            raise MatscreenError(
                f"{out} would replace {'that input' if target == source else 'a file of the input folder ' + str(given)}; "
                "write the output somewhere else"
            )


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: unique per call, so a retried writer never collides
    with an attempt that died, and starting with :data:`TMP_PREFIX` so sweeps find it."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not every platform can open a folder, which is then skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(out) as tmp: write(tmp)``: ``out`` becomes the written file only if the
    block finishes; on any exception (KeyboardInterrupt included) the temporary file is removed
    and ``out`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` onto ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def dictionary_columns(schema: Any) -> list[str]:
    """The text columns: the only ones worth Parquet's dictionary encoding here.

    Dictionary-encoding high-cardinality floats (embeddings) is the writer's default and costs
    ~9x the write time for a larger file, so it is switched off for them.
    """
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def write_parquet_atomic(frame: Any, path: str | Path) -> Path:
    """Write a DataFrame (or Arrow table, or anything with ``to_parquet``) to ``path`` atomically."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(tmp: Path) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False) if isinstance(frame, pd.DataFrame) else frame
        if isinstance(table, pa.Table):
            pq.write_table(table, tmp, use_dictionary=dictionary_columns(table.schema))
        else:  # anything else that knows how to write itself
            table.to_parquet(tmp, index=False)

    return write_atomic(path, write)


def write_csv_atomic(frame: Any, path: str | Path, **to_csv: Any) -> Path:
    """``frame.to_csv(path, **to_csv)`` atomically (``index=False`` unless told otherwise), its
    text cells encoded by the project's one CSV writer (:mod:`screening.safe_csv`: no formulas,
    one line per row, read back exactly with ``decode_frame``)."""
    from screening.safe_csv import write_csv_chunk

    return write_atomic(path, lambda tmp: write_csv_chunk(frame, tmp, **to_csv))


def write_text_atomic(text: str, path: str | Path, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_json_atomic(payload: Any, path: str | Path, **dumps: Any) -> Path:
    """``json.dumps(payload, **dumps)`` to ``path`` atomically; the text is built before the file
    is opened, so an unserialisable payload never touches the disk."""
    return write_text_atomic(json.dumps(payload, **dumps), path)


def save_figure_atomic(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """``fig.savefig(path, **savefig)`` atomically; the format comes from the real name's suffix."""
    path = Path(path)
    if "format" not in savefig and path.suffix:
        savefig["format"] = path.suffix[1:].lower()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, **savefig))


def sweep_temporary_files(folder: str | Path) -> int:
    """Delete temporary files that killed writers left behind in ``folder``; returns how many."""
    return _unlink_all(Path(folder).glob(f"{TMP_PREFIX}*"))


def _unlink_all(paths: Iterable[Path]) -> int:
    """Delete each of ``paths`` that can be deleted (another process may have taken it first)."""
    n = 0
    for stray in paths:
        try:
            stray.unlink()
            n += 1
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
    return n


def sweep_stale_temporaries(path: str | Path) -> int:
    """Delete the temporary files that killed writers of ``path`` left beside it (names from
    :func:`temporary_path`: prefix, writer pid, token, file name) whose writer is no longer
    running; returns how many. A writer still running keeps its file, so two runs writing the
    same output never delete each other's work."""
    path = Path(path)
    return _unlink_all(
        stray for stray in path.parent.glob(f"{TMP_PREFIX}*-{path.name}") if not _writer_running(stray.name)
    )


def _writer_running(name: str) -> bool:
    """Whether the writer named in a temporary file's name still runs (unknown names: yes, keep it)."""
    pid_text = name[len(TMP_PREFIX) :].split("-", 1)[0]
    return not pid_text.isdigit() or _running(int(pid_text))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


__all__ = [
    "TMP_PREFIX",
    "atomic_path",
    "dictionary_columns",
    "save_figure_atomic",
    "sweep_stale_temporaries",
    "sweep_temporary_files",
    "temporary_path",
    "write_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]
