"""Ray execution of featurization shards, with at-least-once tasks and exactly-once outputs.

A *shard* is an independent piece of work (here: one chunk of a database). Ray schedules the
shards on a cluster (``ray.init(address=...)``) or on this machine, and re-runs a shard whose
worker process died (``max_retries``). Re-running is safe because a shard's output is committed
with :func:`write_parquet_atomic`: a temporary file with a unique name, renamed onto the final
name in one step. A worker that dies mid-shard leaves at most a stray temporary file (swept by
:func:`sweep_temporary_files`), never a half-written part, and a shard committed twice writes
the same content to the same name, so every record is in the committed outputs exactly once.

Who commits is the caller's choice: a shard may write its own output (workers then need the
output folder on a shared file system), or return it so the driver commits it —
:mod:`screening.screen.run` does the latter, so its Ray workers need no shared storage.

The scheduler is Ray's; this module only keeps a bounded number of shards in flight (so the
driver never holds the whole database) and hands results back as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from screening.errors import MatscreenError
from screening.io.atomic import TMP_PREFIX, dictionary_columns, sweep_temporary_files, write_parquet_atomic


class DistributedError(MatscreenError):
    """Ray is missing, the cluster cannot be reached, or a shard failed after all its retries."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DistributedError(
            "the ray engine needs Ray: pip install 'matscreen[ray]' (or pip install 'ray>=2.9')"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a Ray cluster at ``address`` or start one on this machine (``num_cpus`` workers).

    Does nothing when Ray is already initialised in this process (tests share one session).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = int(num_cpus)
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise DistributedError(f"cannot start or reach {where}: {type(exc).__name__}: {exc}") from exc
    if not address:
        # A local Ray node is this process's tree: a `kill -9` of `screen` must not leave it running.
        from screening.processes import start_tree_watchdog

        start_tree_watchdog()


def run_on_ray(
    fn: Callable[..., Any],
    shards: Iterable[Any],
    *args: Any,
    address: str | None = None,
    workers: int = 2,
    max_retries: int = 3,
    max_in_flight: int | None = None,
    name: Callable[[Any], str] = lambda shard: str(getattr(shard, "index", "?")),
) -> Iterator[Any]:
    """Run ``fn(*args, shard)`` as one Ray task per shard; yield results as they finish.

    ``max_retries`` is how often Ray re-runs a task whose worker process died; ``fn`` must
    commit its output idempotently (see :func:`write_parquet_atomic`). At most
    ``max_in_flight`` (default ``2 * workers``) shards are submitted at a time, so only that
    many shards' inputs are held. An exception raised *by* ``fn`` is not retried (it would fail
    again) and stops the run with :class:`DistributedError`; finished shards stay committed.
    """
    ray = _import_ray()
    init_ray(address, num_cpus=workers)
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(fn)
    shared_args = [ray.put(a) for a in args]
    limit = max_in_flight or max(2 * workers, 1)
    pending: dict[Any, str] = {}
    shards = iter(shards)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                shard = next(shards, None)
                if shard is None:
                    exhausted = True
                    break
                pending[remote.remote(*shared_args, shard)] = name(shard)
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                shard_name = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise DistributedError(f"shard {shard_name} failed: {exc.cause!r}") from None
                except ray.exceptions.RayError as exc:
                    raise DistributedError(
                        f"shard {shard_name} failed after {max_retries} retries: {type(exc).__name__}: {exc}"
                    ) from None
                yield result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


__all__ = [
    "TMP_PREFIX",
    "DistributedError",
    "dictionary_columns",
    "init_ray",
    "run_on_ray",
    "sweep_temporary_files",
    "write_parquet_atomic",
]
