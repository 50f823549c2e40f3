"""The checked pool a campaign reads in every command, kept in its folder: a pool snapshot.

Why: each ``campaign ask`` and ``tell`` read the pool file again, checked every row, projected
every embedding with the PCA and hashed the file: 35-50 % of a later ``ask`` at 10^6 candidates
(docs/benchmarks.md). What a command needs of the pool after the first check is small: the ids,
the descriptive columns (formula, predictions, known gaps), and the PCA coordinates; the 128-d
embeddings matter only when the search model is built (once per campaign). So the campaign keeps,
beside its store:

- ``pool_snapshot.parquet``: the checked pool frame without its embedding columns, plus the PCA
  coordinates as :data:`FEATURE_PREFIX` columns (float64, exact);
- ``known_snapshot.arrays``: the checked known data (ids, values, predictions, embeddings) as a
  memory-mapped array file (:mod:`screening.io.array_file`): a later command that only reads the
  saved model never touches the 33,064 x 128 embeddings' pages (as Parquet, decoding them was
  0.2 s of every command at 10^6 candidates).

Trust: the store records each snapshot file's SHA-256 and :func:`~screening.io.file_digest.file_stamp`
(:data:`META_KEY`); a file whose stamp changed is hashed again, and one whose digest differs (edited,
copied in, half written) is not read: the campaign reads the pool file again and writes a new
snapshot. The pool and known files themselves stay checked against the SHA-256 recorded at
``campaign new`` (by stamp, then by digest): a changed pool is refused as before. The embeddings
are read from the pool file (checked again) only when the model needs them
(:attr:`BandGapPool.load_embedding`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from screening.io.atomic import atomic_path
from screening.io.file_digest import check_sha256, file_sha256, file_stamp

if TYPE_CHECKING:
    import pyarrow as pa

POOL_SNAPSHOT_NAME = "pool_snapshot.parquet"
KNOWN_SNAPSHOT_NAME = "known_snapshot.arrays"
#: Files that snapshots of earlier formats kept (removed when a snapshot is written).
FORMER_NAMES = ("known_snapshot.parquet",)
#: The store's meta entry: ``{"format", "files": {name: {"sha256", "stamp"}}, "inputs": {"pool"|"known": stamp}}``.
META_KEY = "pool_snapshot"
#: 2: the known data as an array file; 1: as Parquet (a campaign's record of format 1 is not
#: read: its first command reads the pool file and writes a snapshot of this format).
FORMAT = 2
#: Columns of the pool snapshot that hold the PCA coordinates (the pool's own columns never start so).
FEATURE_PREFIX = "__pca_"
#: The pool snapshot's column of the rows in the order of their ids (an argsort), so that a later
#: command finds ids by binary search (:class:`~screening.bo.domain.DiscretePool`'s ``id_order``)
#: instead of hashing 10^6 of them (0.16 s).
ORDER_COLUMN = "__id_order"


class SnapshotUnusable(Exception):
    """A snapshot file is missing, changed or unreadable: the caller reads the pool file instead."""


def write_pool_snapshot(folder: Path, frame: pd.DataFrame, features: np.ndarray, emb_columns: list[str]) -> dict:
    """Write the checked pool ``frame`` without ``emb_columns``, with ``features`` (n, d) as
    :data:`FEATURE_PREFIX` columns and the ids' sort order as :data:`ORDER_COLUMN`; return its
    record (``{"sha256", "stamp"}``).

    Raises :class:`SnapshotUnusable` when the frame cannot round-trip through Parquet (a column
    of mixed types) or uses the reserved names: the campaign then reads the pool file each time."""
    light = frame.drop(columns=list(emb_columns))
    if any(str(c).startswith(FEATURE_PREFIX) or str(c) == ORDER_COLUMN for c in light.columns):
        raise SnapshotUnusable(f"the pool has a column named {FEATURE_PREFIX}* or {ORDER_COLUMN}")
    coords = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=_feature_names(features.shape[1]))
    ids = np.asarray(light["id"].astype(str).to_numpy(), dtype=object)
    order = pd.DataFrame({ORDER_COLUMN: np.argsort(ids, kind="stable").astype(np.int64)})
    return _write(folder / POOL_SNAPSHOT_NAME, pd.concat([light.reset_index(drop=True), coords, order], axis=1))


def read_pool_snapshot(folder: Path, record: dict | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``(frame, features, id_order)`` from the pool snapshot that ``record`` vouches for.

    Raises :class:`SnapshotUnusable` (with the reason) when it does not, or when it cannot be read.
    ``id_order`` is checked where it is used (:class:`~screening.bo.domain.DiscretePool`)."""
    table = _read(folder / POOL_SNAPSHOT_NAME, record)
    names = [c for c in table.column_names if str(c).startswith(FEATURE_PREFIX)]
    if not names or names != _feature_names(len(names)):
        raise SnapshotUnusable(f"{POOL_SNAPSHOT_NAME} has no PCA coordinates")
    if ORDER_COLUMN not in table.column_names:
        raise SnapshotUnusable(f"{POOL_SNAPSHOT_NAME} has no id order")
    try:  # split before pandas: the frame is not copied to drop the coordinates (0.2 s at 10^6 rows)
        # no deduplication of text: it hashes every string (ids are unique anyway): 0.47 → 0.07 s at 10^6
        frame = table.drop_columns([*names, ORDER_COLUMN]).to_pandas(deduplicate_objects=False)
        features = np.column_stack([table.column(n).to_numpy().astype(np.float64, copy=False) for n in names])
        order = table.column(ORDER_COLUMN).to_numpy().astype(np.int64, copy=False)
    except (TypeError, ValueError) as exc:  # pyarrow's conversion errors (e.g. a null coordinate)
        raise SnapshotUnusable(f"{POOL_SNAPSHOT_NAME} could not be read ({exc})") from exc
    return frame, features, order


def write_known_snapshot(folder: Path, known: Any) -> dict:
    """Write the checked known data (a :class:`~screening.bo.known_fit.KnownData`) as an array
    file; its record. The ids are stored as one fixed-width text array (no pickle)."""
    from screening.io.array_file import write_arrays

    n = len(known)
    ids = [str(i) for i in known.ids]
    text = np.array(ids, dtype=np.str_).reshape(n)
    if text.tolist() != ids:  # a fixed-width text array drops trailing NUL characters
        raise SnapshotUnusable("a known-data id does not survive a text array")
    arrays = {
        "ids": text,
        "values": np.asarray(known.values, dtype=np.float64),
        "pred": known.prior_mean if known.prior_mean is not None else np.full(n, np.nan),
        "std": known.prior_std if known.prior_std is not None else np.full(n, np.nan),
        "embedding": np.asarray(known.embedding, dtype=np.float64),
    }
    path = folder / KNOWN_SNAPSHOT_NAME
    try:
        write_arrays(path, arrays, {"what": "known data"})
    except TypeError as exc:
        raise SnapshotUnusable(f"the known data cannot be kept as arrays ({exc})") from exc
    record: dict[str, Any] = {"sha256": file_sha256(path), "stamp": file_stamp(path)}
    record["has_pred"], record["has_std"] = known.prior_mean is not None, known.prior_std is not None
    record["same_quantity"] = bool(known.same_quantity)
    return record


def read_known_snapshot(folder: Path, record: dict | None) -> Any:
    """The :class:`~screening.bo.known_fit.KnownData` that ``record`` vouches for (or
    :class:`SnapshotUnusable`); its arrays memory-mapped, read only where used."""
    from screening.bo.known_fit import KnownData, KnownDataError
    from screening.io.array_file import open_arrays

    path = folder / KNOWN_SNAPSHOT_NAME
    _check(path, record)
    assert record is not None  # _check refused None
    try:
        _, data = open_arrays(path)
        ids, emb = data["ids"], data["embedding"]
        if ids.dtype.kind != "U" or emb.ndim != 2:
            raise SnapshotUnusable(f"{KNOWN_SNAPSHOT_NAME} lacks its arrays")
        return KnownData(
            ids.tolist(),
            emb,
            data["values"],
            data["pred"] if record.get("has_pred") else None,
            data["std"] if record.get("has_std") else None,
            same_quantity=bool(record.get("same_quantity", True)),
        )
    except (OSError, ValueError, KeyError, KnownDataError) as exc:
        raise SnapshotUnusable(f"{KNOWN_SNAPSHOT_NAME} could not be read ({exc})") from exc


def _feature_names(d: int) -> list[str]:
    return [f"{FEATURE_PREFIX}{i}" for i in range(d)]


def _write(path: Path, data: pd.DataFrame) -> dict:
    """Write ``data`` as Parquet atomically; ``{"sha256", "stamp"}`` of the file written."""
    try:
        with atomic_path(path) as tmp:
            data.to_parquet(tmp, index=False)
            sha = file_sha256(tmp)
    except (ValueError, TypeError, ImportError) as exc:  # pyarrow's type errors are ValueErrors / TypeErrors
        raise SnapshotUnusable(f"the table cannot be kept as Parquet ({exc})") from exc
    return {"sha256": sha, "stamp": file_stamp(path)}


def _check(path: Path, record: dict | None) -> None:
    """Raise :class:`SnapshotUnusable` unless ``record`` vouches for the bytes of ``path`` (by its
    stamp, else by its SHA-256); the record takes the file's stamp when its digest held."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise SnapshotUnusable(f"{path.name} was not recorded by this campaign")
    if not path.is_file():
        raise SnapshotUnusable(f"{path.name} is missing")
    ok, stamp = check_sha256(path, record["sha256"], record.get("stamp"))
    if not ok:
        raise SnapshotUnusable(f"{path.name} is not what this campaign wrote")
    record["stamp"] = stamp  # the caller saves the record again when the stamp moved


def _read(path: Path, record: dict | None) -> pa.Table:
    """The Parquet file at ``path`` as an Arrow table, when ``record`` vouches for its bytes."""
    import pyarrow.parquet as pq

    _check(path, record)
    try:
        return pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SnapshotUnusable(f"{path.name} could not be read ({exc})") from exc
