"""Screening a whole database: stream it in chunks, embed and predict, rank by distance to a target.

The database is read as one stream of records and cut into numbered chunks of ``chunk_size``
records (an unreadable record travels with the chunk it was read in). Each chunk is one shard
of work: a worker parses, builds graphs and runs the CGCNN, touching no files, and hands the
rows back; the driver commits ``chunk-<k>.errors.parquet`` and then ``chunk-<k>.parquet`` (rows:
id, formula, pred_<target>, emb_0 … emb_{d-1}, labels), each by an atomic rename, and then
records the chunk in the run's manifest (also written to a temporary file and renamed). So
the work folder only ever holds whole chunks, and a run that stops — an exception, Ctrl-C, a
killed process — resumes from what is committed: done chunks are skipped without parsing,
nothing is computed twice and no record appears twice.

Chunks run on a local process pool (``engine="local"``, ``workers`` processes; each does the
whole chunk, forward pass included, so throughput scales with workers) or as Ray tasks
(``engine="ray"``, see :mod:`screening.screen.ray_executor`; workers need no shared file system, the
model travels with the task). Only the chunks in flight are in memory.

The chunk files do not depend on the target, so a re-run with another ``target`` only re-ranks.
Ranking is an external sort in bounded memory (see :func:`rank_chunks`) into ``ranked.parquet``
(sorted, with ``distance_to_target`` in eV, ``rank`` from 1 and ``within_tol``), which is a valid
pool for ``matscreen search --pool``.

Work folder layout (beside the output, ``<output stem>.chunks/``)::

    manifest.json               run identity (database, model fingerprint, chunk size), done chunks
    chunk-000000.parquet        rows of chunk 0
    chunk-000000.errors.parquet its failed records (id, source, error, reason)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from screening.errors import MatscreenError, RecordError
from screening.io.atomic import (
    atomic_path,
    dictionary_columns,
    sweep_temporary_files,
    temporary_path,
    write_json_atomic,
    write_parquet_atomic,
)
from screening.progress import progress_bar

FORMATION_ENERGY_COLUMN = "pred_formation_energy_per_atom"

FORMAT = "matscreen-screen-1"
MANIFEST = "manifest.json"
ENGINES = ("local", "ray")


class ScreenError(MatscreenError):
    """A screening run cannot start or continue (bad options, a work folder of another run)."""


# ---------------------------------------------------------------------------------------------
# Databases as record streams
# ---------------------------------------------------------------------------------------------


class RecordSource(Protocol):
    """A database as a re-readable stream: same records in the same order on every read.

    ``key`` identifies the content (a changed database must change it) so a resumed run can
    tell it is reading what it read before; ``count()`` (may be ``None``) sizes progress bars.
    """

    key: str

    def __iter__(self) -> Iterator[Any]: ...

    def count(self) -> int | None: ...


class PathSource:
    """A database on disk: a folder from ``matscreen fetch-mp`` or any source ``iter_records`` reads."""

    def __init__(self, path: str | Path) -> None:
        from screening.io.materials_project import is_mp_database
        from screening.io.sources import source_kind

        self.path = Path(path)
        if not self.path.exists():
            raise ScreenError(f"database not found: {self.path}")
        self.is_mp_db = is_mp_database(self.path)
        if not self.is_mp_db:
            source_kind(self.path)  # raises a clear MatscreenError for unknown kinds
        self.key = f"{self.path.resolve()}|{_content_stamp(self.path)}"

    def __iter__(self) -> Iterator[Any]:
        if self.is_mp_db:
            from screening.io.materials_project import iter_database_records

            return iter_database_records(self.path)
        from screening.io.sources import iter_records

        return iter_records(self.path)

    def count(self) -> int | None:
        try:
            if self.is_mp_db:
                from screening.io.materials_project import count_database_records

                return count_database_records(self.path)
            from screening.io.sources import count_records

            return count_records(self.path)
        except Exception:  # noqa: BLE001 - a progress bar without a total is fine
            return None


def _content_stamp(path: Path) -> str:
    """Size and modification time of a file, or of every file in a folder (hashed)."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.blake2b(digest_size=12)
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        try:  # a symlink loop raises here; such entries become error records, not a crash
            if not entry.is_file():
                continue
            st = entry.stat()
        except OSError:
            continue
        # surrogateescape: a file name that is not UTF-8 must not stop the run (issue 12)
        h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def open_database(db: str | Path | RecordSource) -> RecordSource:
    """A path becomes a :class:`PathSource`; anything with ``key`` and ``__iter__`` is used as is."""
    if isinstance(db, (str, Path)):
        return PathSource(db)
    if not hasattr(db, "key") or not hasattr(db, "__iter__"):
        raise ScreenError(f"not a database: {db!r} (give a path or an object with .key and __iter__)")
    return db


# ---------------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Records ``index * size`` … ``(index + 1) * size - 1`` of the stream and the bad ones read among them."""

    index: int
    records: list[Any]
    errors: list[RecordError] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len(self.records) + len(self.errors)


def split_into_chunks(
    items: Iterable[Any], chunk_size: int, skip: Iterable[int] = (), stats: dict[str, int] | None = None
) -> Iterator[Chunk]:
    """Cut a record stream into numbered chunks; chunks in ``skip`` are read past, not kept.

    Chunk k holds good records k·size … (k+1)·size − 1; an error item belongs to the chunk of
    the next good record (errors after the last record form a final chunk of their own), so the
    numbering depends only on the stream and is the same on every read. When the stream ends,
    ``stats["n_chunks"]`` is set to the number of chunks the stream has.
    """
    if chunk_size < 1:
        raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
    skip = set(skip)
    index, n_in_chunk, errors_in_chunk = 0, 0, 0
    records: list[Any] = []
    errors: list[RecordError] = []
    for item in items:
        if isinstance(item, RecordError):
            errors_in_chunk += 1
            if index not in skip:
                errors.append(item)
            continue
        n_in_chunk += 1
        if index not in skip:
            records.append(item)
        if n_in_chunk == chunk_size:
            if index not in skip:
                yield Chunk(index, records, errors)
            index, n_in_chunk, errors_in_chunk, records, errors = index + 1, 0, 0, [], []
    has_tail = n_in_chunk > 0 or errors_in_chunk > 0
    if stats is not None:
        stats["n_chunks"] = index + (1 if has_tail else 0)
    if has_tail and index not in skip:
        yield Chunk(index, records, errors)


# ---------------------------------------------------------------------------------------------
# One chunk: featurize and commit (runs in a worker process or a Ray task)
# ---------------------------------------------------------------------------------------------


def chunk_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / f"chunk-{index:06d}.parquet"


def chunk_errors_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / f"chunk-{index:06d}.errors.parquet"


@dataclass(frozen=True)
class ChunkJob:
    """What every chunk task needs besides its records (picklable; the model is ~0.5 MB).

    ``before_commit(index)`` runs in the worker after the chunk is embedded, before its result
    leaves the worker; it exists to inject faults in tests (a worker that dies mid-chunk).
    """

    model: Any  # CrystalGraphConvNet
    batch_size: int = 256
    before_commit: Callable[[int], None] | None = None


@dataclass
class ChunkOutput:
    """One embedded chunk, on its way from a worker to the driver that commits it."""

    index: int
    frame: Any  # DataFrame: id, formula, pred_<target>, emb_*, labels
    errors: Any  # DataFrame: id, source, error, reason
    seconds: float
    pid: int


@dataclass
class ChunkResult:
    """A committed chunk, as the driver reports it."""

    index: int
    rows: int
    errors: int
    seconds: float
    pid: int

    @property
    def n_items(self) -> int:
        return self.rows + self.errors


def featurize_chunk(job: ChunkJob, chunk: Chunk) -> ChunkOutput:
    """Embed one chunk (parse, graphs, forward pass); touches no files, so any machine can run it."""
    import torch

    from screening.featurize.featurizer import Featurizer, errors_to_frame

    start = time.perf_counter()
    torch.set_num_threads(1)
    featurizer = Featurizer(job.model, batch_size=job.batch_size, workers=0, chunk_size=max(len(chunk.records), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = featurizer.featurize(chunk.records)
    errors = errors_to_frame(list(chunk.errors) + list(result.errors)).astype(str)
    if job.before_commit is not None:
        job.before_commit(chunk.index)
    return ChunkOutput(
        chunk.index, result.frame.reset_index(drop=True), errors, time.perf_counter() - start, os.getpid()
    )


def commit_chunk(work_dir: str | Path, output: ChunkOutput) -> ChunkResult:
    """Write a chunk's errors, then its rows (the commit point), each by an atomic rename.

    Committing the same chunk twice writes the same files again, so a retried chunk never
    duplicates anything.
    """
    write_parquet_atomic(output.errors, chunk_errors_path(work_dir, output.index))
    write_parquet_atomic(output.frame, chunk_path(work_dir, output.index))
    return ChunkResult(output.index, len(output.frame), len(output.errors), output.seconds, output.pid)


def _init_local_worker() -> None:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def run_chunks_locally(job: ChunkJob, chunks: Iterable[Chunk], workers: int = 1) -> Iterator[ChunkOutput]:
    """Run chunks in ``workers`` spawned processes (0: in this process); yield results as they finish.

    At most ``2 * workers`` chunks are submitted at a time, so memory holds only those.
    """
    if workers <= 0:
        for chunk in chunks:
            yield featurize_chunk(job, chunk)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_local_worker)
    pending: set[Any] = set()
    todo = iter(chunks)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < 2 * workers:
                nxt = next(todo, None)
                if nxt is None:
                    exhausted = True
                    break
                pending.add(pool.submit(featurize_chunk, job, nxt))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# The run's manifest
# ---------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, payload: Any) -> None:
    write_json_atomic(payload, path, indent=1)


def work_dir_for(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps its chunks: ``<output stem>.chunks/`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.chunks")


def _open_run(work_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Load the manifest of a run in ``work_dir`` (or start one); refuse a folder of another run.

    Chunks whose files were committed but not yet recorded (the driver stopped in between)
    are adopted, so they are not computed again.
    """
    import pyarrow.parquet as pq

    path = work_dir / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ScreenError(f"cannot read {path}: {exc}; delete {work_dir} to start over") from exc
        if manifest.get("format") != FORMAT or manifest.get("run") != run:
            old = manifest.get("run", {})
            diff = [k for k in run if old.get(k) != run[k]]
            raise ScreenError(
                f"{work_dir} holds chunks of another run (different {', '.join(diff) or 'format'}); "
                f"delete it or write to another output"
            )
    else:
        manifest = {"format": FORMAT, "run": run, "chunks": {}, "n_chunks": None, "complete": False}
    for key in list(manifest["chunks"]):  # files deleted by hand: compute those chunks again
        if not (chunk_path(work_dir, int(key)).exists() and chunk_errors_path(work_dir, int(key)).exists()):
            del manifest["chunks"][key]
            manifest["complete"] = False
    for part in sorted(work_dir.glob("chunk-*.parquet")):
        name = part.name
        if name.endswith(".errors.parquet"):
            continue
        index = int(name[len("chunk-") : -len(".parquet")])
        if str(index) in manifest["chunks"] or not chunk_errors_path(work_dir, index).exists():
            continue
        rows = pq.ParquetFile(part).metadata.num_rows
        errs = pq.ParquetFile(chunk_errors_path(work_dir, index)).metadata.num_rows
        manifest["chunks"][str(index)] = {"rows": rows, "errors": errs}
    _write_json_atomic(path, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Ranking: an external sort of the chunk files by distance to the target
# ---------------------------------------------------------------------------------------------


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
        pq.write_table(empty, tmp_out)
        os.replace(tmp_out, output)
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
    out_schema = bucket_schema.append(pa.field("within_tol", pa.bool_()))
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
    os.replace(tmp_out, output)
    return {"rows": n, "within_tol": hits, "filtered_out": filtered_out}


def _write_errors_csv(error_parts: list[Path], path: Path) -> int:
    import pandas as pd

    n = 0
    header = True
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        for part in error_parts:
            frame = pd.read_parquet(part)
            if frame.empty and not header:
                continue
            frame = frame.reindex(columns=["id", "source", "error", "reason"])
            frame.to_csv(handle, index=False, header=header)
            header = False
            n += len(frame)
        if header:
            handle.write("id,source,error,reason\n")
    return n


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class ScreenSummary:
    """What a (re-)run of :func:`screen_database` did."""

    output: str
    errors_path: str
    work_dir: str
    rows: int
    errors: int
    within_tol: int
    chunks_total: int
    chunks_computed: list[int]
    chunks_reused: int
    wall_s: float
    engine: str
    workers: int
    rank_s: float = 0.0  # of wall_s: the final merge and error report
    filtered_out: int = 0  # rows left out of the ranking by max_formation_energy
    note: str | None = None  # why fewer workers were busy than asked for (see idle_workers_note)

    @property
    def records_per_s(self) -> float:
        done = self.rows + self.errors + self.filtered_out
        return done / self.wall_s if self.wall_s > 0 else float("nan")


def idle_workers_note(n_chunks: int, n_records: int, workers: int, chunk_size: int) -> str | None:
    """A one-line note when ``workers`` exceeds the chunks there were to compute.

    A chunk is the unit of work and of resumption, so the run does not re-cut it to occupy idle
    workers (a re-run with other ``workers`` must find the same chunks); the note says why, and
    which ``--chunk-size`` would have kept every worker busy.
    """
    if workers <= 1 or n_chunks <= 0 or n_chunks >= workers:
        return None
    per_worker = max(1, -(-n_records // workers))
    return (
        f"note: {n_records} records made {n_chunks} chunk{'s' if n_chunks > 1 else ''} of at most {chunk_size}, so "
        f"only {n_chunks} of {workers} workers had work; --chunk-size {per_worker} would use all {workers} "
        "(a new chunk size starts a new run)"
    )


def screen_database(
    db: str | Path | RecordSource,
    target: float,
    tol: float = 0.05,
    model: Any = None,
    output: str | Path = "ranked.parquet",
    chunk_size: int = 2048,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
    batch_size: int = 256,
    max_retries: int = 3,
    progress: bool = True,
    on_chunk_done: Callable[[ChunkResult], None] | None = None,
    before_commit: Callable[[int], None] | None = None,
    max_formation_energy: float | None = None,
) -> ScreenSummary:
    """Screen database ``db`` for crystals whose predicted property is near ``target`` (eV).

    ``model`` is a model name, a weights path or a loaded CGCNN (default: the project's
    band-gap model). Results go to ``output`` (ranked Parquet) and ``<stem>.errors.csv``; the
    chunks live in ``<stem>.chunks/`` and make a re-run resume (see the module docstring).
    ``on_chunk_done`` is called in this process after each chunk is committed (progress,
    or a test that stops the run); ``before_commit`` is the worker-side fault-injection hook
    of :class:`ChunkJob`. ``max_formation_energy`` (eV/atom) ranks only the crystals whose
    predicted formation energy is at most that (the chunks keep every row, so another limit
    re-ranks without featurizing again).
    """
    from screening.featurize.featurizer import load_featurizer_model, model_fingerprint
    from screening.models.cgcnn import CrystalGraphConvNet

    if engine not in ENGINES:
        raise ScreenError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if tol < 0:
        raise ScreenError(f"tolerance must be non-negative (eV), got {tol}")
    if chunk_size < 1:
        raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
    start = time.perf_counter()
    source = open_database(db)
    net = model if isinstance(model, CrystalGraphConvNet) else load_featurizer_model(model)
    pred_col = f"pred_{net.config.target_name}"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work_dir = work_dir_for(output)
    work_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "database": source.key,
        "model": model_fingerprint(net),
        "chunk_size": int(chunk_size),
        "pred_column": pred_col,
    }
    manifest = _open_run(work_dir, run)
    sweep_temporary_files(work_dir)
    done = {int(k) for k in manifest["chunks"]}
    reused = len(done)
    computed: list[int] = []
    computed_items = 0

    if not manifest["complete"]:
        job = ChunkJob(net, batch_size, before_commit)
        stats: dict[str, int] = {}
        chunks = split_into_chunks(source, chunk_size, skip=done, stats=stats)
        if engine == "local":
            results = run_chunks_locally(job, chunks, workers)
        else:
            from screening.screen.ray_executor import run_on_ray

            results = run_on_ray(
                featurize_chunk, chunks, job, address=address, workers=max(workers, 1), max_retries=max_retries
            )
        total = source.count() if progress else None
        already = sum(int(v["rows"]) + int(v["errors"]) for v in manifest["chunks"].values())
        with progress_bar(total, f"screening ({engine}, {workers} workers)", progress, already) as advance:
            try:
                for chunk_output in results:
                    result = commit_chunk(work_dir, chunk_output)
                    del chunk_output
                    manifest["chunks"][str(result.index)] = {"rows": result.rows, "errors": result.errors}
                    _write_json_atomic(work_dir / MANIFEST, manifest)
                    done.add(result.index)
                    computed.append(result.index)
                    computed_items += result.n_items
                    advance(result.n_items)
                    if on_chunk_done is not None:
                        on_chunk_done(result)
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()
        n_chunks = stats.get("n_chunks")
        if n_chunks is None or not set(range(n_chunks)) <= done:
            raise ScreenError(
                f"the database stream ended early: {len(done)} chunks done of {n_chunks}; re-run to resume"
            )
        manifest["n_chunks"] = n_chunks
        manifest["complete"] = True
        _write_json_atomic(work_dir / MANIFEST, manifest)

    indices = sorted(int(k) for k in manifest["chunks"])
    rank_start = time.perf_counter()
    ranked = rank_chunks(
        [chunk_path(work_dir, k) for k in indices],
        pred_col,
        target,
        tol,
        output,
        work_dir / "merge",
        max_formation_energy=max_formation_energy,
    )
    errors_path = output.with_name(f"{output.stem}.errors.csv")
    n_errors = _write_errors_csv([chunk_errors_path(work_dir, k) for k in indices], errors_path)
    return ScreenSummary(
        output=str(output),
        errors_path=str(errors_path),
        work_dir=str(work_dir),
        rows=ranked["rows"],
        errors=n_errors,
        within_tol=ranked["within_tol"],
        chunks_total=int(manifest["n_chunks"]),
        chunks_computed=sorted(computed),
        chunks_reused=reused,
        wall_s=time.perf_counter() - start,
        engine=engine,
        workers=workers,
        rank_s=time.perf_counter() - rank_start,
        filtered_out=ranked["filtered_out"],
        note=idle_workers_note(len(computed), computed_items, workers, chunk_size),
    )


__all__ = [
    "Chunk",
    "ChunkJob",
    "ChunkOutput",
    "ChunkResult",
    "commit_chunk",
    "PathSource",
    "RecordSource",
    "ScreenError",
    "ScreenSummary",
    "featurize_chunk",
    "idle_workers_note",
    "open_database",
    "rank_chunks",
    "run_chunks_locally",
    "screen_database",
    "split_into_chunks",
    "work_dir_for",
]
