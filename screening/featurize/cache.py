"""The embedding cache: one SQLite file per model, keyed by structure content.

A re-run of ``featurize`` or ``screen`` pays only for structures it has not embedded before with
the same weights and graph settings; the key is (:func:`structure_fingerprint`,
:func:`~screening.featurize.registry.model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from screening.cache_dir import default_cache_dir  # noqa: F401  (where the embedding cache lives by default)


def structure_fingerprint(structure) -> str:
    """Hash of lattice, species and fractional coordinates (rounded to 1e-6): the content key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.round(structure.lattice.matrix, 6).tobytes())
    h.update(np.asarray([site.specie.Z for site in structure], dtype=np.int64).tobytes())
    h.update(np.round(np.mod(structure.frac_coords, 1.0), 6).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """SQLite table (content key -> predictions, embedding) for one model fingerprint.

    Predictions are stored as a float64 vector (every output of a multi-task model and its
    uncertainty), so one cache row serves every column ``featurize`` writes. The table is
    ``emb_v2``: files written by older versions (``emb``, a single prediction) are left alone.
    """

    def __init__(self, directory: str | Path, model_key: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / f"cgcnn-{model_key}.sqlite"
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb_v2 (key TEXT PRIMARY KEY, predictions BLOB, embedding BLOB)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for start in range(0, len(keys), 900):
            chunk = list(keys[start : start + 900])
            q = f"SELECT key, predictions, embedding FROM emb_v2 WHERE key IN ({','.join('?' * len(chunk))})"
            for key, preds, blob in self._db.execute(q, chunk):
                found[key] = (np.frombuffer(preds, dtype=np.float64), np.frombuffer(blob, dtype=np.float32))
        return found

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb_v2 VALUES (?, ?, ?)",
                (
                    (k, np.asarray(p, dtype=np.float64).tobytes(), np.asarray(e, dtype=np.float32).tobytes())
                    for k, p, e in items
                ),
            )

    def close(self) -> None:
        self._db.close()


__all__ = ["EmbeddingCache", "default_cache_dir", "structure_fingerprint"]
