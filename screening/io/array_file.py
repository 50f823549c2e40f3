"""A file of named arrays that opens without reading them: each array is memory-mapped.

Why: a command-line ``campaign ask`` reloads the fitted neighbour model in a new process. As an
``.npz`` (a zip archive) every byte of it was read, CRC-checked and copied on opening, although a
suggestion touches a small part of it: at 10^6 candidates that opening was most of the ask.
Here the arrays are laid out at aligned offsets behind a small JSON header and opened
copy-on-write (``mmap`` mode ``"c"``): pages are read when used, and writes to an array stay in
the process, never reaching the file.

Layout: :data:`MAGIC`, the header's length (8 bytes, little-endian), the UTF-8 JSON header
``{"meta": ..., "arrays": {name: {"dtype", "shape", "offset"}}}``, then each array's C-order
bytes at an offset (from the end of the padded header) that is a multiple of :data:`ALIGN`.
No pickle: object arrays are refused on writing, so a file from someone else runs no code.
Written atomically (:mod:`screening.io.atomic`): a crash leaves the previous file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.io.atomic import atomic_path

if TYPE_CHECKING:
    import hashlib

MAGIC = b"MSARRAY1"
LEAD = len(MAGIC) + 8  # the magic, then the header's length
ALIGN = 64


class ArrayFileError(ValueError):
    """The file is not a complete array file (foreign, truncated or damaged)."""


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    plain = {name: np.asarray(a, order="C") for name, a in arrays.items()}  # ascontiguousarray makes 0-d 1-d
    layout: dict[str, dict[str, Any]] = {}
    offsets: dict[str, int] = {}
    offset = 0
    for name, a in plain.items():
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r}: object arrays cannot be stored (no pickle)")
        layout[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offsets[name] = offset
        offset = _padded(offset + a.nbytes)
    header = json.dumps({"meta": dict(meta), "arrays": layout}).encode()
    start = _padded(LEAD + len(header))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(MAGIC + len(header).to_bytes(8, "little") + header)
        for name, a in plain.items():
            fh.seek(start + offsets[name])
            if a.nbytes:
                fh.write(a.data.cast("B"))
        fh.truncate(start + offset)  # the last array's padding, so every mapping lies in the file


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of the array file at ``path``, without mapping its arrays."""
    meta, _, _, _ = _read_header(Path(path))
    return meta


def open_arrays(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` from ``path``, the arrays memory-mapped copy-on-write.

    Raises :class:`ArrayFileError` when the file is not a complete array file, OSError when it
    cannot be read.
    """
    path = Path(path)
    meta, layout, start, size = _read_header(path)
    arrays = {}
    for name, spec in layout.items():
        try:
            dtype, shape, offset = np.dtype(spec["dtype"]), tuple(int(s) for s in spec["shape"]), int(spec["offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArrayFileError(f"{path}: array {name!r}: damaged entry ({exc})") from exc
        if dtype.hasobject:
            raise ArrayFileError(f"{path}: array {name!r}: object arrays are refused")
        if offset < 0 or offset % ALIGN or any(s < 0 for s in shape):
            raise ArrayFileError(f"{path}: array {name!r}: damaged entry (offset {offset}, shape {shape})")
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if start + offset + nbytes > size:
            raise ArrayFileError(f"{path}: array {name!r} runs past the end of the file (truncated)")
        if nbytes == 0:
            arrays[name] = np.zeros(shape, dtype)
        else:
            mapped = np.memmap(path, dtype=dtype, mode="c", offset=start + offset, shape=shape or (1,))
            arrays[name] = np.reshape(np.asarray(mapped), shape)  # a 0-d array maps as one element
    return meta, arrays


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """``(meta, layout, data start, file size)``; ArrayFileError when the header is not whole."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        lead = fh.read(LEAD)
        if len(lead) < LEAD or lead[: len(MAGIC)] != MAGIC:
            raise ArrayFileError(f"{path}: not an array file")
        n = int.from_bytes(lead[len(MAGIC) :], "little")
        if n > size:
            raise ArrayFileError(f"{path}: truncated header")
        try:
            header = json.loads(fh.read(n).decode())
            meta, layout = header["meta"], header["arrays"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ArrayFileError(f"{path}: damaged header ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(layout, dict):
        raise ArrayFileError(f"{path}: damaged header (not a mapping)")
    return meta, layout, _padded(LEAD + n), size


HASH_BLOCK = 1 << 24  # bytes per SHA-1 block of a large array (16 MiB)


def hash_array(h: hashlib._Hash, arr: np.ndarray | None) -> None:
    """Feed ``arr`` (dtype, shape, then its bytes, read in place) to hash ``h``.

    A large array is cut into :data:`HASH_BLOCK` blocks hashed on parallel threads (hashlib
    releases the GIL), and their digests are fed to ``h`` in order: the key still depends on
    every byte, and on 2 cores it costs about half the time of one pass."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    if arr is None:
        h.update(b"-")
        return
    a = np.asarray(arr, order="C")
    h.update(f"{a.dtype.str}{a.shape}|".encode())
    if not a.size:
        return
    data = memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    if data.nbytes <= HASH_BLOCK:
        h.update(data)
        return

    def digest(start: int) -> bytes:
        return hashlib.sha1(data[start : start + HASH_BLOCK], usedforsecurity=False).digest()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for d in pool.map(digest, range(0, data.nbytes, HASH_BLOCK)):
            h.update(d)


def content_digest(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """SHA-1 of a saved file's meta (as canonical JSON) and every array (name, dtype, shape, bytes).

    Why: a campaign keeps this digest in its own store (:class:`screening.bo.neighbour_search.Seal`), not beside the arrays,
    so an edited, swapped or foreign state file is noticed before a suggestion reads it."""
    import hashlib
    import json

    h = hashlib.sha1(usedforsecurity=False)
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        h.update(f"|{name}|".encode())
        hash_array(h, arrays[name])
    return h.hexdigest()
