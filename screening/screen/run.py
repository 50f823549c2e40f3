"""Screening a whole database: stream it in chunks, embed and predict, rank by distance to a target.

The database is read as one stream of items (records, and the records that could not be read)
and cut into chunks of consecutive items; a chunk is identified by its range of stream positions
``[start, end)``. Chunks are sized to about 30 s of one worker's work at the measured rate
(:class:`~screening.screen.chunk_sizing.ChunkSizer`: 64 records first, then grown or shrunk, at
most 2048), or all ``chunk_size`` records when that is given. Each chunk is one shard of work: a
worker parses, builds graphs and runs the CGCNN, touching no files, and hands the rows back; the
driver commits ``chunk-<start>-<end>.errors.parquet`` and then ``chunk-<start>-<end>.parquet``
(rows: id, formula, pred_<target>, emb_0 … emb_{d-1}, labels), each by an atomic rename, and then
records the chunk in the run's manifest (also written to a temporary file and renamed). So the
work folder only ever holds whole chunks, and a run that stops — an exception, Ctrl-C, SIGTERM,
a killed process — resumes from what is committed: saved ranges are read past without parsing,
the rest is cut into new chunks (whose sizes need not match the old ones), nothing is computed
twice and no record appears twice. Ctrl-C or SIGTERM terminates the workers at once and raises
:class:`ScreenInterrupted`, which says how much is saved.

Chunks run on a local process pool (``engine="local"``, ``workers`` processes; each does the
whole chunk, forward pass included, so throughput scales with workers) or as Ray tasks
(``engine="ray"``, see :mod:`screening.screen.ray_executor`; workers need no shared file system, the
model travels with the task). Only the chunks in flight are in memory.

The chunk files do not depend on the target, so a re-run with another ``target`` only re-ranks.
Ranking is an external sort in bounded memory (see :func:`rank_chunks`) into ``ranked.parquet``
(sorted, with ``distance_to_target`` in eV, ``rank`` from 1 and ``within_tol``), which is a valid
pool for ``matscreen search --pool``.

The parts live in their own modules: record sources and chunking in
:mod:`screening.screen.sources`, chunk sizes in :mod:`screening.screen.chunk_sizing`, the chunk
task, its commit and the local pool in :mod:`screening.screen.executors`, Ray in
:mod:`screening.screen.ray_executor`, the external sort in :mod:`screening.screen.ranking`; this
module holds the run itself (its manifest and :func:`screen_database`).

Work folder layout (beside the output, ``<output stem>.chunks/``)::

    manifest.json                                   run identity (database, model fingerprint), saved chunks
    chunk-000000000-000000064.parquet               rows of stream items 0 … 63
    chunk-000000000-000000064.errors.parquet        their failed records (id, source, error, reason)
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screening.io.atomic import sweep_stale_temporaries, sweep_temporary_files, temporary_path, write_json_atomic
from screening.io.report_pair import parquet_stamp
from screening.io.tables import is_csv
from screening.processes import Terminated, sigterm_as_interrupt
from screening.progress import plural, progress_bar
from screening.screen.chunk_sizing import DEFAULT_CHUNK_SECONDS, DEFAULT_MAX_CHUNK, ChunkSizer
from screening.screen.executors import (
    ChunkJob,
    ChunkResult,
    chunk_errors_path,
    chunk_path,
    chunk_range,
    commit_chunk,
    featurize_chunk,
    run_chunks_locally,
)
from screening.screen.ranking import rank_chunks, write_errors_csv
from screening.screen.sources import RecordSource, ScreenError, open_database, split_into_chunks

FORMAT = "matscreen-screen-2"  # 1: fixed-size chunks numbered 0, 1, …
MANIFEST = "manifest.json"
ENGINES = ("local", "ray")


# ---------------------------------------------------------------------------------------------
# The run's manifest
# ---------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, payload: Any) -> None:
    write_json_atomic(payload, path, indent=1)


def work_dir_for(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps its chunks: ``<output stem>.chunks/`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.chunks")


def _saved_ranges(manifest: dict[str, Any]) -> list[tuple[int, int]]:
    """The ``[start, end)`` stream ranges of the chunks a manifest records, in stream order."""
    return sorted((int(c["start"]), int(c["end"])) for c in manifest["chunks"].values())


def _record_chunk(manifest: dict[str, Any], start: int, end: int, rows: int, errors: int) -> None:
    manifest["chunks"][f"{start}-{end}"] = {"start": start, "end": end, "rows": rows, "errors": errors}


def _open_run(work_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Load the manifest of a run in ``work_dir`` (or start one); refuse a folder of another run.

    Chunks whose files were committed but not yet recorded (the driver stopped in between)
    are adopted, so they are not computed again; a file that overlaps a recorded chunk is not.
    """
    import pyarrow.parquet as pq

    path = work_dir / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ScreenError(f"cannot read {path}: {exc}; delete {work_dir} to start over") from exc
        if manifest.get("format") != FORMAT:
            raise ScreenError(
                f"{work_dir} holds chunks in an older layout ({manifest.get('format')}); delete it to start over"
            )
        if manifest.get("run") != run:
            old = manifest.get("run", {})
            diff = [k for k in run if old.get(k) != run[k]]
            raise ScreenError(
                f"{work_dir} holds chunks of another run (different {', '.join(diff) or 'format'}); "
                f"delete it or write to another output"
            )
    else:
        manifest = {"format": FORMAT, "run": run, "chunks": {}, "n_items": None, "complete": False}
    for key, chunk in list(manifest["chunks"].items()):  # files deleted by hand: compute those chunks again
        start, end = int(chunk["start"]), int(chunk["end"])
        if not (chunk_path(work_dir, start, end).exists() and chunk_errors_path(work_dir, start, end).exists()):
            del manifest["chunks"][key]
            manifest["complete"] = False
    for part in sorted(work_dir.glob("chunk-*.parquet")):
        found = chunk_range(part)
        if found is None or f"{found[0]}-{found[1]}" in manifest["chunks"]:
            continue
        start, end = found
        if not chunk_errors_path(work_dir, start, end).exists():
            continue
        if any(start < b and a < end for a, b in _saved_ranges(manifest)):
            continue
        rows = pq.ParquetFile(part).metadata.num_rows
        errs = pq.ParquetFile(chunk_errors_path(work_dir, start, end)).metadata.num_rows
        _record_chunk(manifest, start, end, rows, errs)
    _write_json_atomic(path, manifest)
    return manifest


def _tiles(ranges: list[tuple[int, int]], n_items: int) -> bool:
    """Whether sorted ``[start, end)`` ranges cover ``0 … n_items - 1`` exactly once."""
    at = 0
    for start, end in ranges:
        if start != at:
            return False
        at = end
    return at == n_items


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class ScreenInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a screening run; the chunks it committed stay for the next.

    A KeyboardInterrupt, so code that stops on Ctrl-C still does; ``str()`` is the line to show,
    ``exit_code`` the conventional status (128 + the signal: 130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(
        self,
        chunks_saved: int,
        records_saved: int,
        records_total: int | None,
        work_dir: str | Path,
        signum: int = signal.SIGINT,
    ) -> None:
        self.chunks_saved, self.records_saved, self.records_total = chunks_saved, records_saved, records_total
        self.work_dir, self.signum = Path(work_dir), int(signum)
        super().__init__(str(self))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        of = f" of {self.records_total:,}" if self.records_total is not None else ""
        return (
            f"interrupted: {plural(self.chunks_saved, 'chunk')} ({self.records_saved:,}{of} records) saved in "
            f"{self.work_dir}/; re-run the same command to resume"
        )


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

    A chunk is the unit of work, so a database cut into fewer chunks than there are workers
    leaves some idle; the note says why, and which ``--chunk-size`` would have kept every worker
    busy (``chunk_size`` is the largest chunk the run cut).
    """
    if workers <= 1 or n_chunks <= 0 or n_chunks >= workers:
        return None
    per_worker = max(1, -(-n_records // workers))
    return (
        f"note: {n_records} records made {plural(n_chunks, 'chunk')} of at most {chunk_size}, so "
        f"only {n_chunks} of {workers} workers had work; --chunk-size {per_worker} would use all {workers}"
    )


def progress_description(engine: str, workers: int) -> str:
    """``screening (local, 1 worker)``, ``screening (in this process)``, ``screening (ray, 4 workers)``."""
    if engine == "local" and workers <= 0:
        return "screening (in this process)"
    return f"screening ({engine}, {plural(max(workers, 1), 'worker')})"


def screen_database(
    db: str | Path | RecordSource,
    target: float,
    tol: float = 0.05,
    model: Any = None,
    output: str | Path = "ranked.parquet",
    chunk_size: int | None = None,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
    batch_size: int = 256,
    max_retries: int = 3,
    progress: bool = True,
    on_chunk_done: Callable[[ChunkResult], None] | None = None,
    before_commit: Callable[[int], None] | None = None,
    max_formation_energy: float | None = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
) -> ScreenSummary:
    """Screen database ``db`` for crystals whose predicted property is near ``target`` (eV).

    ``model`` is a model name, a weights path or a loaded CGCNN (default: the project's
    band-gap model). Results go to ``output`` (ranked Parquet) and ``<stem>.errors.csv``; the
    chunks live in ``<stem>.chunks/`` and make a re-run resume (see the module docstring).
    Chunks hold about ``chunk_seconds`` of one worker's work at the measured rate (at most
    2048 records), or exactly ``chunk_size`` records when that is given; a resumed run may use
    other sizes. ``on_chunk_done`` is called in this process after each chunk is committed
    (progress, or a test that stops the run); ``before_commit`` is the worker-side
    fault-injection hook of :class:`ChunkJob`. ``max_formation_energy`` (eV/atom) ranks only the
    crystals whose predicted formation energy is at most that (the chunks keep every row, so
    another limit re-ranks without featurizing again). Without a limit a shipped model runs
    without its property branches (``featurize --single-model``); with one, the formation
    energy is the shipped branch's, as ``featurize`` writes it.

    Ctrl-C (KeyboardInterrupt) or SIGTERM (handled as Ctrl-C while the run holds the main
    thread) terminates the workers at once and raises :class:`ScreenInterrupted`.
    """
    from screening.featurize.registry import featurizer_model, model_fingerprint

    if engine not in ENGINES:
        raise ScreenError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if tol < 0:
        raise ScreenError(f"tolerance must be non-negative (eV), got {tol}")
    if chunk_size is not None and chunk_size < 1:
        raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
    if chunk_seconds <= 0:
        raise ScreenError(f"seconds per chunk must be positive, got {chunk_seconds}")
    if is_csv(output):  # the ranking is merged on disk as Parquet; a CSV name would hide that
        raise ScreenError(f"{output}: screen writes a ranked Parquet table; name the output .parquet")
    start = time.perf_counter()
    source = open_database(db)
    # A shipped model's property branches (the default's formation energy) add to every forward
    # pass; screening needs their column only to filter on it.
    net = featurizer_model(model, branches=max_formation_energy is not None)
    pred_col = f"pred_{net.config.target_name}"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work_dir = work_dir_for(output)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Chunk sizes are not part of the run: chunks are stream ranges, so any size resumes any run.
    run = {"database": source.key, "model": model_fingerprint(net), "pred_column": pred_col}
    manifest = _open_run(work_dir, run)
    sweep_temporary_files(work_dir)
    reused = len(manifest["chunks"])
    sizer = ChunkSizer.fixed(chunk_size) if chunk_size is not None else ChunkSizer(target_s=chunk_seconds)
    stats: dict[str, int] = {}
    total = source.count() if progress and not manifest["complete"] else None
    computed: list[ChunkResult] = []
    if not manifest["complete"] and engine == "ray":
        from screening.screen.ray_executor import init_ray

        init_ray(address, num_cpus=max(workers, 1))  # before taking SIGTERM over: Ray sets its own handler
    try:
        with sigterm_as_interrupt():
            if not manifest["complete"]:
                _compute_chunks(
                    source,
                    work_dir,
                    manifest,
                    ChunkJob(net, batch_size, before_commit),
                    sizer,
                    stats,
                    computed,
                    engine=engine,
                    workers=workers,
                    address=address,
                    max_retries=max_retries,
                    progress=progress,
                    total=total,
                    on_chunk_done=on_chunk_done,
                )
            ranges = _saved_ranges(manifest)
            rank_start = time.perf_counter()
            # The error report is written first under a temporary name; the ranked output records its
            # hash and is renamed right after it, so a kill between the two is detectable
            # (screening.io.report_pair).
            errors_path = output.with_name(f"{output.stem}.errors.csv")
            sweep_stale_temporaries(errors_path)
            errors_tmp = temporary_path(errors_path)
            try:
                n_errors = write_errors_csv([chunk_errors_path(work_dir, a, b) for a, b in ranges], errors_tmp)
                ranked = rank_chunks(
                    [chunk_path(work_dir, a, b) for a, b in ranges],
                    pred_col,
                    target,
                    tol,
                    output,
                    work_dir / "merge",
                    max_formation_energy=max_formation_energy,
                    metadata=parquet_stamp(output, errors_path, errors_tmp),
                    before_publish=lambda: os.replace(errors_tmp, errors_path),
                )
            finally:
                errors_tmp.unlink(missing_ok=True)
    except KeyboardInterrupt as stop:
        saved = _saved_ranges(manifest)
        raise ScreenInterrupted(
            len(saved),
            sum(b - a for a, b in saved),
            stats.get("n_items", manifest.get("n_items") or total),
            work_dir,
            signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT,
        ) from None
    computed_items = sum(r.n_items for r in computed)
    return ScreenSummary(
        output=str(output),
        errors_path=str(errors_path),
        work_dir=str(work_dir),
        rows=ranked["rows"],
        errors=n_errors,
        within_tol=ranked["within_tol"],
        chunks_total=len(ranges),
        chunks_computed=sorted(r.index for r in computed),
        chunks_reused=reused,
        wall_s=time.perf_counter() - start,
        engine=engine,
        workers=workers,
        rank_s=time.perf_counter() - rank_start,
        filtered_out=ranked["filtered_out"],
        note=idle_workers_note(
            len(computed), computed_items, workers, max((r.end - r.start for r in computed), default=DEFAULT_MAX_CHUNK)
        ),
    )


def _compute_chunks(
    source: RecordSource,
    work_dir: Path,
    manifest: dict[str, Any],
    job: ChunkJob,
    sizer: ChunkSizer,
    stats: dict[str, int],
    computed: list[ChunkResult],
    *,
    engine: str,
    workers: int,
    address: str | None,
    max_retries: int,
    progress: bool,
    total: int | None,
    on_chunk_done: Callable[[ChunkResult], None] | None,
) -> None:
    """Compute, commit and record every chunk the manifest lacks; mark the run complete.

    ``computed`` and ``manifest`` are updated as chunks are committed, so a caller that sees an
    interruption knows what was saved.
    """
    chunks = split_into_chunks(source, sizer, done=_saved_ranges(manifest), stats=stats)
    if engine == "local":
        results = run_chunks_locally(job, chunks, workers)
    else:
        from screening.screen.ray_executor import run_on_ray

        results = run_on_ray(
            featurize_chunk, chunks, job, address=address, workers=max(workers, 1), max_retries=max_retries
        )
    already = sum(b - a for a, b in _saved_ranges(manifest))
    with progress_bar(total, progress_description(engine, workers), progress, already) as advance:
        try:
            for chunk_output in results:
                result = commit_chunk(work_dir, chunk_output)
                del chunk_output
                _record_chunk(manifest, result.start, result.end, result.rows, result.errors)
                _write_json_atomic(work_dir / MANIFEST, manifest)
                computed.append(result)
                sizer.observe(result.n_items, result.seconds)
                advance(result.n_items)
                if "n_items" in stats:  # the stream has ended: the exact total is known
                    advance.set_total(stats["n_items"])
                if on_chunk_done is not None:
                    on_chunk_done(result)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
    n_items = stats.get("n_items")
    if n_items is None or not _tiles(_saved_ranges(manifest), n_items):
        raise ScreenError(
            f"the database stream ended early: {len(manifest['chunks'])} chunks saved, "
            f"{n_items if n_items is not None else 'unknown'} records read; re-run to resume"
        )
    manifest["n_items"] = n_items
    manifest["complete"] = True
    _write_json_atomic(work_dir / MANIFEST, manifest)


# ---------------------------------------------------------------------------------------------
# Re-exports: sources, executors and ranking moved to their own modules, but scripts and tests
# import these names from here (``from screening.screen.run import rank_chunks``).
# ---------------------------------------------------------------------------------------------

from screening.screen.executors import ChunkOutput  # noqa: E402
from screening.screen.ranking import FORMATION_ENERGY_COLUMN  # noqa: E402
from screening.screen.sources import Chunk, PathSource  # noqa: E402

__all__ = [
    "FORMATION_ENERGY_COLUMN",
    "Chunk",
    "ChunkJob",
    "ChunkOutput",
    "ChunkResult",
    "ChunkSizer",
    "chunk_errors_path",
    "chunk_path",
    "commit_chunk",
    "PathSource",
    "RecordSource",
    "ScreenError",
    "ScreenInterrupted",
    "ScreenSummary",
    "featurize_chunk",
    "idle_workers_note",
    "open_database",
    "progress_description",
    "rank_chunks",
    "run_chunks_locally",
    "screen_database",
    "split_into_chunks",
    "work_dir_for",
]
