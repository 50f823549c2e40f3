"""Ranking a finished run: an external sort of the chunk files by distance to the target, and the
merged error report.

Reads only committed chunk files, never the database or the model, so a re-run with another
target or formation-energy limit re-ranks without featurizing again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from screening.columns import PRED_FORMATION_ENERGY
from screening.io.atomic import atomic_path, dictionary_columns, temporary_path
from screening.screen.sources import ScreenError

FORMATION_ENERGY_COLUMN = PRED_FORMATION_ENERGY


def _distance(table, pred_col: str, target: float):
    """|pred − target| in eV as float64; missing or NaN predictions rank last (+inf)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pred = table[pred_col].cast(pa.float64())
    dist = pc.abs(pc.subtract(pred, pa.scalar(float(target))))
    dist = pc.if_else(pc.is_nan(dist), float("inf"), dist)
    return pc.fill_null(dist, float("inf"))


def _conform(table, schema):
    """``table`` with ``schema``'s columns in its order (missing ones null), cast to its types."""
    import pyarrow as pa

    if table.schema.equals(schema, check_metadata=False):
        return table
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _unified_schema(schemas):
    """One schema for all chunks: types promoted where they differ (null -> double, int -> double);
    a label column that is text in one chunk and numbers in another becomes text."""
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    names: dict[str, list] = {}
    for schema in schemas:
        for f in schema:
            names.setdefault(f.name, []).append(f.type)
    fields = []
    for name, types in names.items():
        try:
            merged = pa.unify_schemas([pa.schema([(name, t)]) for t in types], promote_options="permissive")
            fields.append(merged.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def rank_chunks(
    parts: list[Path],
    pred_col: str,
    target: float,
    tol: float,
    output: str | Path,
    scratch_dir: str | Path,
    bucket_rows: int = 65536,
    max_formation_energy: float | None = None,
    metadata: dict[bytes, bytes] | None = None,
    before_publish: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Merge chunk files into ``output`` sorted by ``|pred − target|`` (ties by id), in bounded memory.

    A distribution sort in three passes over the data:

    1. read only ``id`` and the prediction of every chunk and sort these keys globally, which
       gives every row its rank;
    2. read each chunk once and append its rows to the bucket of their rank
       (ranks ``b·bucket_rows`` … ``(b+1)·bucket_rows − 1`` go to bucket b; buckets are Arrow
       IPC streams in ``scratch_dir``: no encoding, no per-piece metadata kept in memory);
    3. read the buckets in order, sort each by rank and append it to ``output``.

    Memory: the keys (~40 bytes per row), one chunk, and one bucket of ``bucket_rows`` rows
    (~40 MB for 128-d embeddings at the default); time grows linearly with the rows.

    ``max_formation_energy`` (eV/atom) leaves out the rows whose ``pred_formation_energy_per_atom``
    is above it (or missing): the ranking is then among crystals predicted stable enough, and
    ``filtered_out`` in the result counts the rest.

    ``metadata`` goes into the output's Parquet footer; ``before_publish()`` runs just before the
    output is renamed into place (``screen`` publishes its error report there first:
    :mod:`screening.io.report_pair`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    scratch_dir = Path(scratch_dir)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    output = Path(output)
    tmp_out = temporary_path(output)

    # pass 1: the sort keys
    keys, schemas, nonempty, masks = [], [], [], []
    filtered_out = 0
    for part in parts:
        pf = pq.ParquetFile(part)
        if pf.metadata.num_rows == 0:
            continue
        mask = None
        if max_formation_energy is not None:
            if FORMATION_ENERGY_COLUMN not in pf.schema_arrow.names:
                raise ScreenError(
                    f"--max-formation-energy needs a {FORMATION_ENERGY_COLUMN} column: screen with a model that "
                    "predicts formation energy (the default model does)"
                )
            ef = pf.read(columns=[FORMATION_ENERGY_COLUMN])[FORMATION_ENERGY_COLUMN].cast(pa.float64())
            mask = pc.fill_null(pc.less_equal(ef, float(max_formation_energy)), False)
            filtered_out += len(ef) - int(pc.sum(mask).as_py() or 0)
        table = pf.read(columns=["id", pred_col])
        if mask is not None:
            table = table.filter(mask)
        keys.append(pa.table({"d": _distance(table, pred_col, target), "id": table["id"].cast(pa.string())}))
        schemas.append(pf.schema_arrow.remove_metadata())
        nonempty.append(part)
        masks.append(mask)
    if not nonempty:
        empty = pa.table(
            {
                "id": pa.array([], pa.string()),
                "distance_to_target": pa.array([], pa.float64()),
                "rank": pa.array([], pa.int64()),
                "within_tol": pa.array([], pa.bool_()),
            }
        )
        pq.write_table(empty.replace_schema_metadata(metadata), tmp_out)
        _publish(tmp_out, output, before_publish)
        return {"rows": 0, "within_tol": 0, "filtered_out": filtered_out}
    offsets = np.cumsum([0] + [len(k) for k in keys])
    all_keys = pa.concat_tables(keys)
    del keys
    order = pc.sort_indices(all_keys, sort_keys=[("d", "ascending"), ("id", "ascending")]).to_numpy()
    distance = all_keys["d"].to_numpy()
    del all_keys
    n = len(order)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    del order

    # pass 2: rows to the buckets of their ranks
    schema = _unified_schema(schemas)
    bucket_schema = schema.append(pa.field("distance_to_target", pa.float64())).append(pa.field("rank", pa.int64()))
    n_buckets = -(-n // bucket_rows)
    bucket_paths = [scratch_dir / f"bucket-{b:05d}.arrow" for b in range(n_buckets)]
    writers: dict[int, tuple[Any, Any]] = {}  # bucket -> (file, Arrow IPC stream writer)
    try:
        for p, part in enumerate(nonempty):
            lo, hi = offsets[p], offsets[p + 1]
            part_rank = rank[lo:hi]
            by_rank = np.argsort(part_rank, kind="stable")
            table = _conform(pq.read_table(part), schema)
            if masks[p] is not None:
                table = table.filter(masks[p])
            table = table.take(pa.array(by_rank))
            sorted_rank = part_rank[by_rank]
            table = table.append_column("distance_to_target", pa.array(distance[lo:hi][by_rank]))
            table = table.append_column("rank", pa.array(sorted_rank + 1))
            bucket_of = sorted_rank // bucket_rows
            edges = np.searchsorted(bucket_of, np.arange(n_buckets + 1))
            for b in range(n_buckets):
                if edges[b + 1] > edges[b]:
                    if b not in writers:
                        sink = pa.OSFile(str(bucket_paths[b]), "wb")
                        writers[b] = (sink, pa.ipc.new_stream(sink, bucket_schema))
                    writers[b][1].write_table(table.slice(edges[b], edges[b + 1] - edges[b]))
            del table
    finally:
        for sink, writer in writers.values():
            writer.close()
            sink.close()
    del rank, distance

    # pass 3: each bucket sorted by rank, in bucket order
    out_schema = bucket_schema.append(pa.field("within_tol", pa.bool_())).with_metadata(metadata or {})
    hits = 0
    with pq.ParquetWriter(tmp_out, out_schema, use_dictionary=dictionary_columns(out_schema)) as writer:
        for path in bucket_paths:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
                table = table.take(pc.sort_indices(table, sort_keys=[("rank", "ascending")]))
            within = pc.less_equal(table["distance_to_target"], float(tol))
            hits += int(pc.sum(within).as_py() or 0)
            writer.write_table(table.append_column("within_tol", within), row_group_size=16384)
            del table
            path.unlink()
    _publish(tmp_out, output, before_publish)
    return {"rows": n, "within_tol": hits, "filtered_out": filtered_out}


def _publish(tmp: Path, output: Path, before_publish: Callable[[], None] | None) -> None:
    try:
        if before_publish is not None:
            before_publish()
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def write_errors_csv(error_parts: list[Path], path: Path) -> int:
    """Merge the chunks' error files into one CSV report and return how many records failed.

    Streamed one chunk at a time so memory stays bounded; the header is written even when nothing
    failed, so the report always exists and parses.
    """
    import pandas as pd

    from screening.safe_csv import write_csv_chunk

    n = 0
    header = True
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        for part in error_parts:
            frame = pd.read_parquet(part)
            if frame.empty and not header:
                continue
            frame = frame.reindex(columns=["id", "source", "error", "reason"])
            write_csv_chunk(frame, handle, header=header)
            header = False
            n += len(frame)
        if header:
            handle.write("id,source,error,reason\n")
    return n


__all__ = ["FORMATION_ENERGY_COLUMN", "rank_chunks", "write_errors_csv"]
