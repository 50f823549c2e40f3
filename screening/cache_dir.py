"""Where matscreen keeps what it can recompute (embeddings, known-data fits): the user cache.

Its own module so that the campaign commands find it without importing the featurizer."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/matscreen`` (default ``~/.cache/matscreen``); everything in it is safe to delete."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "matscreen"
