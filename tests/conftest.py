"""Shared fixtures: the reference data in ../shared and small generated structures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The user cache (embeddings, known-data fits) of a test run is its own, never the user's.
if "MATSCREEN_TEST_KEEP_CACHE" not in os.environ:
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="matscreen-test-cache-")

import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MATSCREEN_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference folder beside the checkout. Missing means a broken set-up: fail, never skip."""
    if not (SHARED / "reference").is_dir():
        pytest.fail(f"reference data not found at {SHARED} (set MATSCREEN_SHARED or check out ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def cgcnn_ref(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "cgcnn"


@pytest.fixture(scope="session")
def mp_csv(shared_dir: Path) -> Path:
    return shared_dir / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"
