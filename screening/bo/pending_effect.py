"""The pending picks' effect on the neighbour model, saved for the next ``campaign ask --new``.

Why: a second suggestion while picks are pending conditions the model on each pending pick at
its predicted mean (:func:`~screening.bo.neighbour_search.select`): the candidates a pick comes
near are predicted again (0.4 s for the 115,000 that one pick reaches at 10^6 candidates), which
kept ``ask --new`` above the 2 s of issue 28. ``campaign tell``, which holds the extended model in
memory, makes the picks the next ``ask`` will make (the same call on the same data), computes
their effect (:func:`screening.bo.optimise_pool.save_pending_effect`) and saves it here; ``ask --new`` reads it where it is the effect of exactly its
pending picks on exactly its model, and computes it otherwise.

Trusted by content: the file names the digest of the model file it was computed from
(:attr:`~screening.bo.neighbour_search.Seal.state`), the believed rows and, bit for bit, their
believed means; the campaign keeps the file's own digest in its store, and its arrays must be
finite and inside the pool. A file that fails any of these is not read: a stale or tampered file
costs the time it was meant to save, never a different pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1


@dataclass(frozen=True)
class PendingEffect:
    """What believing pool ``rows`` at ``believed_mean`` does to the model whose state file has
    digest ``state_digest``: candidates ``changed`` get ``mean`` and ``std`` (units of the value,
    e.g. eV). ``basis``: the inputs the picks were made from (:func:`basis`), so an unchanged
    campaign is not computed again."""

    state_digest: str
    basis: str
    rows: np.ndarray
    believed_mean: np.ndarray
    changed: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def applies(self, rows: list[int], believed_mean: np.ndarray) -> bool:
        """Whether this is the effect of believing ``rows`` (in this order) at ``believed_mean``."""
        return list(self.rows) == list(rows) and bool(
            np.array_equal(self.believed_mean.view(np.uint64), np.asarray(believed_mean, np.float64).view(np.uint64))
        )


def basis(state_digest: str, pending: list[str], n: int, seed: int) -> str:
    """The inputs of the next ask's picks: the model, the pending points, the batch and the seed."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([FORMAT, state_digest, pending, n, seed]).encode()).hexdigest()


def save(path: str | Path, effect: PendingEffect) -> str:
    """Write ``effect`` to ``path`` (atomically); returns the digest the campaign keeps."""
    from screening.io.array_file import content_digest, write_arrays

    meta, arrays = _meta(effect), _arrays(effect)
    write_arrays(path, arrays, meta)
    return content_digest(meta, arrays)


def load(path: str | Path, digest: str | None, n_pool: int) -> PendingEffect | None:
    """The effect saved at ``path`` when its contents have ``digest`` and it fits a pool of
    ``n_pool`` candidates, else None (absent, stale, damaged or not what the campaign wrote)."""
    from screening.io.array_file import content_digest, open_arrays

    if digest is None or not Path(path).exists():
        return None
    try:
        meta, arrays = open_arrays(path)
        if content_digest(meta, arrays) != digest or meta.get("format") != FORMAT:
            return None
        effect = PendingEffect(
            str(meta["state_digest"]),
            str(meta["basis"]),
            *(np.asarray(arrays[k]) for k in ("rows", "believed_mean", "changed", "mean", "std")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return effect if _fits(effect, n_pool) else None


def _fits(effect: PendingEffect, n_pool: int) -> bool:
    """Finite values, non-negative stds, one value per row, every row inside the pool."""
    index = (effect.rows, effect.changed)
    values = (effect.believed_mean, effect.mean, effect.std)
    if any(a.dtype.kind != "i" for a in index) or any(a.dtype.kind != "f" for a in values):
        return False
    if len(effect.believed_mean) != len(effect.rows) or not len(effect.mean) == len(effect.std) == len(effect.changed):
        return False
    if any(a.size and (a.min() < 0 or a.max() >= n_pool) for a in index):
        return False
    return all(np.all(np.isfinite(a)) for a in values) and bool(np.all(effect.std >= 0))


def _meta(effect: PendingEffect) -> dict:
    return {"format": FORMAT, "state_digest": effect.state_digest, "basis": effect.basis}


def _arrays(effect: PendingEffect) -> dict[str, np.ndarray]:
    return {
        "rows": effect.rows,
        "believed_mean": effect.believed_mean,
        "changed": effect.changed,
        "mean": effect.mean,
        "std": effect.std,
    }
