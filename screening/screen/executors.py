"""Running chunks: embed one chunk anywhere, commit it in the driver, and the local process pool.

A chunk task (:func:`featurize_chunk`) touches no files, so it runs unchanged in a local worker
process (:func:`run_chunks_locally`) or as a Ray task (:mod:`screening.screen.ray_executor`); the
driver commits each result with :func:`commit_chunk` by atomic renames. Worker processes receive
:func:`featurize_chunk` and :class:`ChunkJob` by reference, so both must stay importable from here;
a local worker receives its job once, when it starts, and then only chunks. Chunk files are named by
the stream range they hold (:func:`chunk_path`), which is what a resumed run goes by.
"""

from __future__ import annotations

import os
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from screening.io.atomic import write_parquet_atomic
from screening.screen.sources import Chunk

CHUNK_NAME = re.compile(r"chunk-(\d+)-(\d+)\.parquet")


def chunk_path(work_dir: str | Path, start: int, end: int) -> Path:
    """The rows of the chunk of stream items ``start`` … ``end - 1``: ``chunk-<start>-<end>.parquet``."""
    return Path(work_dir) / f"chunk-{start:09d}-{end:09d}.parquet"


def chunk_errors_path(work_dir: str | Path, start: int, end: int) -> Path:
    return Path(work_dir) / f"chunk-{start:09d}-{end:09d}.errors.parquet"


def chunk_range(path: str | Path) -> tuple[int, int] | None:
    """``(start, end)`` of a chunk's rows file, or None for any other name."""
    match = CHUNK_NAME.fullmatch(Path(path).name)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
    seconds: float  # of one worker's time
    pid: int
    start: int = 0  # the stream items the chunk holds: start … end - 1
    end: int = 0


@dataclass
class ChunkResult:
    """A committed chunk, as the driver reports it."""

    index: int
    rows: int
    errors: int
    seconds: float
    pid: int
    start: int = 0
    end: int = 0

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
        chunk.index,
        result.frame.reset_index(drop=True),
        errors,
        time.perf_counter() - start,
        os.getpid(),
        chunk.start,
        chunk.end,
    )


def commit_chunk(work_dir: str | Path, output: ChunkOutput) -> ChunkResult:
    """Write a chunk's errors, then its rows (the commit point), each by an atomic rename.

    Committing the same chunk twice writes the same files again, so a retried chunk never
    duplicates anything.
    """
    write_parquet_atomic(output.errors, chunk_errors_path(work_dir, output.start, output.end))
    write_parquet_atomic(output.frame, chunk_path(work_dir, output.start, output.end))
    return ChunkResult(
        output.index, len(output.frame), len(output.errors), output.seconds, output.pid, output.start, output.end
    )


_WORKER_JOB: ChunkJob | None = None  # a local worker's job, received once when the worker starts


def _init_local_worker(job: ChunkJob) -> None:
    import torch

    from screening.processes import die_with_parent

    global _WORKER_JOB
    die_with_parent()  # a killed `screen` leaves no orphaned workers
    # Ctrl-C reaches the whole process group; the driver decides, and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    _WORKER_JOB = job


def _featurize_in_worker(chunk: Chunk) -> ChunkOutput:
    if _WORKER_JOB is None:
        raise RuntimeError("a local screening worker started without its job")
    return featurize_chunk(_WORKER_JOB, chunk)


def run_chunks_locally(job: ChunkJob, chunks: Iterable[Chunk], workers: int = 1) -> Iterator[ChunkOutput]:
    """Run chunks in ``workers`` spawned processes (0: in this process); yield results as they finish.

    At most ``2 * workers`` chunks are submitted at a time, so memory holds only those, and each
    chunk is cut from the stream only when it is submitted (so a sizer sees the latest rates).
    When the caller stops early (Ctrl-C, an error, ``close()``) the workers are terminated at once:
    their chunks in flight are lost, never half-committed, since only the driver writes.
    """
    if workers <= 0:
        for chunk in chunks:
            yield featurize_chunk(job, chunk)
        return
    # The job (the model's tensors) goes to each worker once, when it starts, not with every chunk.
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_local_worker, initargs=(job,)
    )
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
                pending.add(pool.submit(_featurize_in_worker, nxt))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BaseException:  # KeyboardInterrupt, GeneratorExit (the caller stopped), a failed chunk
        terminate_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every worker of ``pool`` now, instead of waiting for the chunks they are on."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=1.0)


__all__ = [
    "ChunkJob",
    "ChunkOutput",
    "ChunkResult",
    "chunk_errors_path",
    "chunk_path",
    "chunk_range",
    "commit_chunk",
    "featurize_chunk",
    "run_chunks_locally",
    "terminate_workers",
]
