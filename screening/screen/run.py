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

The parts live in their own modules: record sources and chunking in
:mod:`screening.screen.sources`, the chunk task, its commit and the local pool in
:mod:`screening.screen.executors`, Ray in :mod:`screening.screen.ray_executor`, the external sort in
:mod:`screening.screen.ranking`; this module holds the run itself (its manifest and
:func:`screen_database`).

Work folder layout (beside the output, ``<output stem>.chunks/``)::

    manifest.json               run identity (database, model fingerprint, chunk size), done chunks
    chunk-000000.parquet        rows of chunk 0
    chunk-000000.errors.parquet its failed records (id, source, error, reason)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screening.io.atomic import sweep_stale_temporaries, sweep_temporary_files, temporary_path, write_json_atomic
from screening.io.report_pair import parquet_stamp
from screening.io.tables import is_csv
from screening.progress import progress_bar
from screening.screen.executors import (
    ChunkJob,
    ChunkResult,
    chunk_errors_path,
    chunk_path,
    commit_chunk,
    featurize_chunk,
    run_chunks_locally,
)
from screening.screen.ranking import rank_chunks, write_errors_csv
from screening.screen.sources import RecordSource, ScreenError, open_database, split_into_chunks

FORMAT = "matscreen-screen-1"
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
    re-ranks without featurizing again). Without a limit a shipped model runs without its
    companion networks (``featurize --single-model``), about twice as fast; with one, the
    formation energy is the shipped ensemble's, as ``featurize`` writes it.
    """
    from screening.featurize.registry import featurizer_model, model_fingerprint

    if engine not in ENGINES:
        raise ScreenError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if tol < 0:
        raise ScreenError(f"tolerance must be non-negative (eV), got {tol}")
    if chunk_size < 1:
        raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
    if is_csv(output):  # the ranking is merged on disk as Parquet; a CSV name would hide that
        raise ScreenError(f"{output}: screen writes a ranked Parquet table; name the output .parquet")
    start = time.perf_counter()
    source = open_database(db)
    # A shipped model's companion networks (the default's formation energy) cost about as much as
    # the rest of featurizing; screening needs their column only to filter on it.
    net = featurizer_model(model, companions=max_formation_energy is not None)
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
    # The error report is written first under a temporary name; the ranked output records its hash
    # and is renamed right after it, so a kill between the two is detectable (screening.io.report_pair).
    errors_path = output.with_name(f"{output.stem}.errors.csv")
    sweep_stale_temporaries(errors_path)
    errors_tmp = temporary_path(errors_path)
    try:
        n_errors = write_errors_csv([chunk_errors_path(work_dir, k) for k in indices], errors_tmp)
        ranked = rank_chunks(
            [chunk_path(work_dir, k) for k in indices],
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
