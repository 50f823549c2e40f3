"""Embeddings for many structures: parsing in workers, batching, a content-keyed cache, progress.

The flow for one source is

    records ──(worker processes)──> parsed structure + crystal graph ──(batches)──> CGCNN
            ──> rows: id, formula, pred_<target>, emb_0 … emb_{d-1}, labels

CIF parsing, neighbour search and the batched forward pass all run in each worker process, on
blocks of records (the parent only checks the cache in and writes rows out): with the forward
in the parent, the parent's one core capped the whole run. A record that fails at any stage
becomes an error row (id, source, stage, reason) and the rest goes on. Results are cached in SQLite under a key of
(structure content, model weights, graph settings), so re-running a screen only pays for what is
new. :func:`featurize_source` streams chunks straight to Parquet so memory stays bounded for
databases of any size.
"""

from __future__ import annotations

import collections
import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from screening.errors import (
    GraphBuildError,
    InvalidStructureError,
    MatscreenError,
    RecordError,
    StructureReadError,
)
from screening.featurize.cache import EmbeddingCache, default_cache_dir, structure_fingerprint
from screening.featurize.embed import DEFAULT_BATCH_SIZE, check_finite_outputs, embed_graphs, prediction_columns
from screening.featurize.matminer import CGCNNFeaturizer
from screening.featurize.registry import (
    DEFAULT_MODEL,
    REPO_ROOT,
    featurizer_model,
    load_featurizer_model,
    model_fingerprint,
    pretrained_dir,
    resolve_model_path,
)
from screening.graphs import CrystalGraph, structure_to_graph
from screening.io.atomic import (
    atomic_path,
    check_output_apart,
    sweep_stale_temporaries,
    temporary_path,
    write_csv_atomic,
    write_text_atomic,
)
from screening.io.report_pair import parquet_stamp, stamp_path, stamp_text
from screening.io.tables import beside, csv_chunk_writer, is_csv
from screening.io.time_budget import DEFAULT_RECORD_SECONDS
from screening.models.cgcnn import check_elements
from screening.models.property_branch import FeaturizerNet
from screening.progress import progress_bar

# ---------------------------------------------------------------------------------------------
# Records -> graphs (runs in worker processes)
# ---------------------------------------------------------------------------------------------


@dataclass
class PreparedRecord:
    """A record after parsing and graph building (or the error that stopped it)."""

    record_id: str
    source: str
    labels: dict[str, Any]
    formula: str | None = None
    key: str | None = None
    graph: CrystalGraph | None = None
    error: RecordError | None = None
    predictions: np.ndarray | None = None  # set by embed_block, which then drops the graph
    embedding: np.ndarray | None = None
    from_cache: bool = False

    @property
    def built_graph(self) -> CrystalGraph:
        """The graph of a record that prepared without error (``prepare_record`` sets it exactly then)."""
        assert self.graph is not None, f"{self.record_id}: no graph ({self.error})"
        return self.graph

    @property
    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and embedding of a record that ``embed_block`` embedded (set exactly then)."""
        assert self.predictions is not None and self.embedding is not None, f"{self.record_id}: not embedded"
        return self.predictions, self.embedding

    @property
    def cache_key(self) -> str:
        """The embedding-cache key of a record that prepared without error (set with its graph)."""
        assert self.key is not None, f"{self.record_id}: no cache key ({self.error})"
        return self.key


def prepare_record(
    record: Any, radius: float, max_num_nbr: int, seconds: float | None = DEFAULT_RECORD_SECONDS
) -> PreparedRecord:
    """Parse one record and build its graph; every failure becomes ``PreparedRecord.error``.

    ``seconds`` is the record's wall-clock budget (:mod:`screening.io.time_budget`): a record that
    exceeds it is reported (``time_budget: ...``) instead of holding up the batch.
    """
    from dataclasses import replace

    from screening.io.records import parse_record
    from screening.io.time_budget import RecordTimeout, time_budget
    from screening.io.validate import DEFAULT_LIMITS

    prepared = PreparedRecord(record.record_id, record.source, dict(record.labels or {}))
    try:
        with warnings.catch_warnings(), time_budget(seconds):
            warnings.simplefilter("ignore")
            # validated against the model's own graph radius (the neighbour budget depends on it);
            # the minimum distance is checked on the graph's own neighbour list
            structure = parse_record(record, limits=replace(DEFAULT_LIMITS, radius=radius, min_distance=0.0))
            prepared.formula = structure.composition.reduced_formula if len(structure) else None
            prepared.graph = structure_to_graph(
                structure, radius, max_num_nbr, record.record_id, min_distance=min(DEFAULT_LIMITS.min_distance, radius)
            )
            prepared.key = structure_fingerprint(structure)
    except RecordError as exc:
        exc.source = exc.source or record.source
        prepared.error = exc
    except RecordTimeout as exc:
        prepared.error = InvalidStructureError(record.record_id, f"time_budget: {exc}", record.source)
    except Exception as exc:  # noqa: BLE001 - any parser/library failure is this record's error
        prepared.error = StructureReadError(record.record_id, f"{type(exc).__name__}: {exc}", record.source)
    return prepared


def embed_block(
    records: Sequence[Any],
    model: FeaturizerNet,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache: EmbeddingCache | None = None,
) -> list[PreparedRecord]:
    """Parse, build graphs and embed one block of records: the unit of work of a worker.

    Every record comes back with its predictions and embedding, from ``cache`` where it holds
    them (``from_cache``), or with its error; graphs are dropped, so only rows travel back.
    """
    cfg = model.config
    prepared = [prepare_record(r, cfg.radius, cfg.max_num_nbr) for r in records]
    good: list[PreparedRecord] = []
    for p in prepared:
        if p.error is None:
            try:
                check_elements(model, p.built_graph.atomic_numbers, p.record_id)
            except GraphBuildError as exc:
                exc.source = p.source
                p.error = exc
        if p.error is None:
            good.append(p)
    cached = cache.get_many([p.cache_key for p in good]) if cache else {}
    todo = [p for p in good if p.key not in cached]
    preds, embs = embed_graphs(model, [p.built_graph for p in todo], batch_size)
    check_finite_outputs(model, preds, embs, [p.record_id for p in todo])
    for p, pred, emb in zip(todo, preds, embs):
        p.predictions, p.embedding = pred, emb
    for p in good:
        if p.key in cached:
            p.predictions, p.embedding = cached[p.cache_key]
            p.from_cache = True
    for p in prepared:
        p.graph = None
    return prepared


# What each worker process holds: the model, the batch size, and its own read-only cache handle.
_WORKER: dict[str, Any] = {}


def _worker_init(model: FeaturizerNet, batch_size: int, cache_dir: str | None, model_key: str, compile: bool) -> None:
    from screening.processes import die_with_parent

    die_with_parent()  # a killed `featurize` leaves no orphaned workers
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    _WORKER.update(
        model=compiled(model) if compile else model,
        batch_size=batch_size,
        cache=EmbeddingCache(cache_dir, model_key) if cache_dir else None,
    )


def _embed_block_in_worker(records: Sequence[Any]) -> list[PreparedRecord]:
    return embed_block(records, _WORKER["model"], _WORKER["batch_size"], _WORKER["cache"])


# ---------------------------------------------------------------------------------------------
# The featurizer
# ---------------------------------------------------------------------------------------------


@dataclass
class FeaturizeResult:
    frame: pd.DataFrame
    errors: list[RecordError] = field(default_factory=list)

    def error_frame(self) -> pd.DataFrame:
        return errors_to_frame(self.errors)


def errors_to_frame(errors: Sequence[RecordError]) -> pd.DataFrame:
    """The error report: one row per failed record, naming file, record and reason."""
    return pd.DataFrame(
        {
            "id": [e.record_id for e in errors],
            "source": [e.source for e in errors],
            "error": [type(e).__name__ for e in errors],
            "reason": [e.reason for e in errors],
        }
    )


class Featurizer:
    """Records in, embedding rows out, with worker processes, cache and error collection.

    ``workers=0`` does everything in this process (small jobs, tests); ``workers>0`` gives each
    worker process blocks of ``block_size`` records to parse, build graphs for and embed.
    ``compile=True`` runs the forward through ``torch.compile`` (fused C++ kernels), after a
    one-off compilation of tens of seconds per process, so worth it for large jobs only.
    """

    def __init__(
        self,
        model: FeaturizerNet,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int = 0,
        cache_dir: str | Path | None = None,
        chunk_size: int = 2048,
        compile: bool = False,
        block_size: int = 64,
    ) -> None:
        self.model = model
        self.compile = compile
        self.batch_size = batch_size
        self.workers = workers
        self.chunk_size = chunk_size
        self.block_size = max(1, block_size)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.model_key = model_fingerprint(model)
        self.cache = EmbeddingCache(cache_dir, self.model_key) if cache_dir else None
        self.target = f"pred_{model.config.target_name}"
        self.prediction_columns = prediction_columns(model)
        self.cache_hits = 0

    def _embedded(self, records: Iterable[Any]) -> Iterator[PreparedRecord]:
        """Every record, embedded or with its error, in the order given."""
        stream = iter(records)
        blocks = iter(lambda: list(itertools.islice(stream, self.block_size)), [])
        if self.workers <= 0:
            model = compiled(self.model) if self.compile else self.model
            for block in blocks:
                yield from embed_block(block, model, self.batch_size, self.cache)
            return
        init = (self.model, self.batch_size, self.cache_dir, self.model_key, self.compile)
        # A bounded number of blocks in flight: workers never idle waiting for the parent, and
        # parsed rows never pile up faster than they are written. A process pool that reports a
        # dead worker (killed for memory, crashed) instead of waiting for its block for ever.
        in_flight = max(4, 4 * self.workers)
        executor = ProcessPoolExecutor(
            self.workers, mp_context=_pool_context(), initializer=_worker_init, initargs=init
        )
        try:
            pending: collections.deque = collections.deque()
            for block in itertools.islice(blocks, in_flight):
                pending.append((block, executor.submit(_embed_block_in_worker, block)))
            while pending:
                block, future = pending.popleft()
                try:
                    done = future.result()
                except BrokenProcessPool:
                    unfinished = [r for b in [block, *(b for b, _ in pending)] for r in b]
                    raise MatscreenError(_worker_died_message(unfinished)) from None
                block = next(blocks, [])
                if block:
                    pending.append((block, executor.submit(_embed_block_in_worker, block)))
                yield from done
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def iter_chunks(
        self, records: Iterable[Any], on_progress: Callable[[int], None] | None = None
    ) -> Iterator[tuple[pd.DataFrame, list[RecordError]]]:
        """Featurize ``records`` in chunks of ``chunk_size``; yields (rows, errors) per chunk."""
        buffer: list[PreparedRecord] = []
        for embedded in self._embedded(records):
            buffer.append(embedded)
            if len(buffer) >= self.chunk_size:
                yield self._finish_chunk(buffer)
                if on_progress:
                    on_progress(len(buffer))
                buffer = []
        if buffer:
            yield self._finish_chunk(buffer)
            if on_progress:
                on_progress(len(buffer))

    def featurize(self, records: Iterable[Any], on_progress: Callable[[int], None] | None = None) -> FeaturizeResult:
        frames, errors = [], []
        for frame, errs in self.iter_chunks(records, on_progress):
            frames.append(frame)
            errors.extend(errs)
        frame = pd.concat(frames, ignore_index=True) if frames else self._empty_frame()
        return FeaturizeResult(frame, errors)

    def _empty_frame(self) -> pd.DataFrame:
        cols = ["id", "formula", *self.prediction_columns] + [f"emb_{k}" for k in range(self.model.config.h_fea_len)]
        return pd.DataFrame(columns=cols)

    def _finish_chunk(self, chunk: list[PreparedRecord]) -> tuple[pd.DataFrame, list[RecordError]]:
        errors = [p.error for p in chunk if p.error is not None]
        good = [p for p in chunk if p.error is None]
        fresh = [p for p in good if not p.from_cache]
        if self.cache and fresh:
            self.cache.put_many((p.cache_key, *p.outputs) for p in fresh)
        self.cache_hits += len(good) - len(fresh)
        h = self.model.config.h_fea_len
        emb = np.stack([p.outputs[1] for p in good]).astype(np.float32) if good else np.zeros((0, h), np.float32)
        frame = pd.DataFrame({"id": [p.record_id for p in good], "formula": [p.formula for p in good]})
        n_pred = len(self.prediction_columns)
        pred = np.stack([p.outputs[0] for p in good]) if good else np.zeros((0, n_pred), np.float64)
        for k, name in enumerate(self.prediction_columns):
            frame[name] = pred[:, k]
        frame = pd.concat([frame, pd.DataFrame(emb, columns=[f"emb_{k}" for k in range(h)])], axis=1)
        labels = pd.DataFrame([p.labels for p in good])
        for col in labels.columns:
            if col not in frame.columns:
                frame[col] = labels[col].to_numpy()
        return frame, errors


def _worker_died_message(unfinished: Sequence[Any]) -> str:
    """Why the run stopped when a worker process vanished, naming the records not yet embedded
    (one of them was in the dead worker's hands; the pool does not say which)."""
    ids = [str(getattr(r, "record_id", "?")) for r in unfinished]
    held = f"records {ids[0]!r} … {ids[-1]!r} ({len(ids)})" if len(ids) > 1 else f"record {ids[0]!r}"
    return (
        f"a featurize worker process died (killed for memory, or crashed) while {held} were being "
        "embedded; nothing was written. Rerun with fewer --workers, or --workers 0 to find the record"
    )


def compiled(model: FeaturizerNet) -> FeaturizerNet:
    """The model's forward compiled for variable batch sizes (``torch.compile``, dynamic shapes)."""
    model.eval()
    return torch.compile(model, dynamic=True)


def _pool_context():
    """``fork`` on Linux: workers start in milliseconds instead of re-importing torch and pymatgen
    (seconds each), and share the parent's model pages. Each worker sets torch to one thread
    before its first forward pass, so it never enters the OpenMP thread pool that the parent may
    have started before the fork (the one part of torch that fork breaks). ``spawn`` elsewhere:
    macOS's system libraries are not safe to use in a forked child, and Windows has no fork; the
    model then travels to each worker pickled (2 MB)."""
    import sys

    return get_context("fork" if sys.platform.startswith("linux") else "spawn")


def featurize_records(
    records: Iterable[Any],
    model: FeaturizerNet | str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
    compile: bool = False,
) -> FeaturizeResult:
    """Featurize records in memory (see :class:`Featurizer`).

    ``records`` may hold what :func:`~screening.io.sources.iter_records` yields (records and error
    records), pymatgen ``Structure`` or ``ase.Atoms`` objects (ids are list positions), or be a
    mapping ``id -> structure``; error records and unusable items land in ``result.errors``.
    """
    from screening.io.records import as_record

    model = featurizer_model(model)
    featurizer = Featurizer(model, batch_size=batch_size, workers=workers, cache_dir=cache_dir, compile=compile)
    pairs = records.items() if isinstance(records, Mapping) else enumerate(records)
    items = [as_record(item, str(key)) for key, item in pairs]
    good = [item for item in items if not isinstance(item, RecordError)]
    upstream = [item for item in items if isinstance(item, RecordError)]
    if not progress:
        result = featurizer.featurize(good)
    else:
        with progress_bar(len(good), "featurizing") as advance:
            result = featurizer.featurize(good, advance)
    result.errors = upstream + result.errors
    return result


class _ChunkTable:
    """``write(chunk)`` appends to the table being written; ``metadata`` set before the writer
    closes goes into a Parquet file's footer (:mod:`screening.io.report_pair`)."""

    def __init__(self, write: Callable[[pd.DataFrame], None]) -> None:
        self.write = write
        self.metadata: dict[bytes, bytes] = {}

    def __call__(self, frame: pd.DataFrame) -> None:
        self.write(frame)


@contextmanager
def _chunk_table_writer(tmp: Path, output: Path) -> Iterator[_ChunkTable]:
    """A :class:`_ChunkTable` appending to ``tmp`` in the format ``output``'s name says; every chunk
    takes the first chunk's columns and types, so a later chunk cannot change the table's shape."""
    if is_csv(output):
        with csv_chunk_writer(tmp, output.name.lower().endswith(".gz")) as csv_writer:
            yield _ChunkTable(csv_writer.write)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: Any = None
    schema: Any = None

    def write(frame: pd.DataFrame) -> None:
        nonlocal writer, schema
        if writer is None:
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            writer = pq.ParquetWriter(tmp, schema)
        frame = frame.reindex(columns=schema.names)
        try:
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise MatscreenError(_type_change_message(frame, schema, output)) from exc
        writer.write_table(table)

    chunk_table = _ChunkTable(write)
    try:
        yield chunk_table
        if writer is not None and chunk_table.metadata:
            writer.add_key_value_metadata(chunk_table.metadata)
    finally:
        if writer is not None:
            writer.close()


def _type_change_message(frame: pd.DataFrame, schema: Any, output: Path) -> str:
    """Why a chunk does not fit the table's column types, naming the column (a label column of text
    that was empty, read as numbers, for the first chunk)."""
    import pyarrow as pa

    for name in schema.names:
        try:
            pa.array(frame[name], type=schema.field(name).type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return (
                f"{output}: column {name!r} changes type part-way through the source (its first values were "
                f"{schema.field(name).type}, later ones are not); a Parquet column has one type: write CSV "
                "(-o NAME.csv) or give the column one type"
            )
    return f"{output}: a later part of the source does not fit the table's column types"


def featurize_source(
    source: str | Path,
    output: str | Path,
    model: FeaturizerNet | str | Path | None = None,
    errors_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """Featurize a CIF folder / CSV / JSON source to a table, streaming chunk by chunk.

    Writes ``output`` (Parquet, or CSV when its name ends .csv / .csv.gz: screening.io.tables) and
    an error report CSV (``<output stem>.errors.csv`` unless ``errors_path`` is given), and returns
    counts. Memory holds one chunk at a time.
    """
    from screening.io.sources import count_records, iter_records

    output = Path(output)
    errors_path = Path(errors_path) if errors_path else beside(output, ".errors.csv")
    check_output_apart(output, source)
    check_output_apart(errors_path, source)
    for written in (output, errors_path, stamp_path(output)):
        sweep_stale_temporaries(written)  # what a killed earlier run of this command left beside it
    model = featurizer_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    featurizer = Featurizer(model, batch_size=batch_size, workers=workers, cache_dir=cache_dir, compile=compile)
    errors: list[RecordError] = []

    n_rows = 0
    total = count_records(source) if progress else 0
    # Output and error report are written to temporary names; the report is renamed first, then
    # the output, which records the report's hash, so a kill between the two renames leaves a
    # detectable mismatch (screening.io.report_pair) and a killed or failing re-run leaves the
    # previous output whole (screening.io.atomic).
    errors_tmp = temporary_path(errors_path)
    stamp_tmp = temporary_path(stamp_path(output))
    try:
        with atomic_path(output) as tmp_output:
            with _chunk_table_writer(tmp_output, output) as table:
                with progress_bar(total, f"featurizing {Path(source).name}", enabled=progress) as advance:

                    def records() -> Iterator[Any]:
                        for item in iter_records(source):
                            if isinstance(item, RecordError):
                                errors.append(item)
                                advance(1)  # a record that failed to read still counts as done
                            else:
                                yield item

                    for frame, errs in featurizer.iter_chunks(records(), advance):
                        errors.extend(errs)
                        if not frame.empty:
                            table.write(frame)
                            n_rows += len(frame)
                if n_rows == 0:  # nothing featurized: still leave a valid (empty) table with the columns
                    table.write(featurizer._empty_frame())
                write_csv_atomic(errors_to_frame(errors), errors_tmp, index=False)
                table.metadata = parquet_stamp(output, errors_path, errors_tmp)
            if is_csv(output):
                write_text_atomic(stamp_text(output, errors_path, errors_tmp), stamp_tmp)
            os.replace(errors_tmp, errors_path)  # the report first; atomic_path renames the output next
        if is_csv(output):
            os.replace(stamp_tmp, stamp_path(output))
    finally:
        for leftover in (errors_tmp, stamp_tmp):
            leftover.unlink(missing_ok=True)
    return {
        "rows": n_rows,
        "errors": len(errors),
        "cache_hits": featurizer.cache_hits,
        "output": str(output),
        "errors_path": str(errors_path),
    }


# Re-exported names (the model registry, the cache, the forward pass and the matminer adapter live
# in their own modules; scripts, notebooks and users import every name from here).
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODEL",
    "REPO_ROOT",
    "CGCNNFeaturizer",
    "EmbeddingCache",
    "FeaturizeResult",
    "Featurizer",
    "PreparedRecord",
    "check_finite_outputs",
    "default_cache_dir",
    "embed_graphs",
    "prediction_columns",
    "errors_to_frame",
    "featurize_records",
    "featurize_source",
    "load_featurizer_model",
    "model_fingerprint",
    "prepare_record",
    "pretrained_dir",
    "resolve_model_path",
    "structure_fingerprint",
]
