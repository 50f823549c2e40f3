"""Atomic outputs: a writer that fails (or is killed) half-way leaves the previous file whole."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from screening.io import atomic  # noqa: E402
from screening.io.atomic import (  # noqa: E402
    TMP_PREFIX,
    atomic_path,
    save_figure_atomic,
    sweep_temporary_files,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{k}" for k in range(n)], "x": np.arange(n, dtype=float)})


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_each_writer_replaces_the_file_whole(tmp_path: Path) -> None:
    write_parquet_atomic(_frame(3), tmp_path / "a.parquet")
    write_csv_atomic(_frame(2), tmp_path / "a.csv.gz")
    write_json_atomic({"k": 1}, tmp_path / "a.json", indent=1)
    write_text_atomic("hello\n", tmp_path / "a.txt")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure_atomic(fig, tmp_path / "a.png", dpi=50)
    plt.close(fig)
    assert len(pd.read_parquet(tmp_path / "a.parquet")) == 3
    assert len(pd.read_csv(tmp_path / "a.csv.gz")) == 2  # gzip inferred from the real name
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 1}
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in _only(tmp_path) if n.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("kind", ["parquet", "csv", "json", "text", "figure"])
def test_a_writer_failing_mid_way_keeps_the_previous_file_and_no_temporary(tmp_path: Path, monkeypatch, kind) -> None:
    path = (
        tmp_path / {"parquet": "o.parquet", "csv": "o.csv", "json": "o.json", "text": "o.txt", "figure": "o.png"}[kind]
    )
    writers = {
        "parquet": lambda: write_parquet_atomic(_frame(20), path),
        "csv": lambda: write_csv_atomic(_frame(20), path),
        "json": lambda: write_json_atomic({"rows": 20}, path),
        "text": lambda: write_text_atomic("twenty\n", path),
        "figure": lambda: save_figure_atomic(plt.figure(), path),
    }
    writers[kind]()
    before = path.read_bytes()

    real_replace = atomic.os.replace

    def half_written_then_dies(src, dst):  # the bytes are on disk, the rename never happens
        Path(src).write_bytes(Path(src).read_bytes()[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", half_written_then_dies)
    with pytest.raises(OSError, match="No space"):
        writers[kind]()
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert path.read_bytes() == before
    assert _only(tmp_path) == [path.name]
    plt.close("all")


def test_an_exception_inside_atomic_path_removes_the_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "o.txt"
    out.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "previous" and _only(tmp_path) == ["o.txt"]


def test_sweep_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    (tmp_path / f"{TMP_PREFIX}123-abc-out.parquet").write_bytes(b"left by kill -9")
    (tmp_path / "out.parquet").write_bytes(b"keep")
    assert sweep_temporary_files(tmp_path) == 1
    assert _only(tmp_path) == ["out.parquet"]


def test_featurize_killed_mid_write_keeps_the_previous_output(tmp_path: Path, monkeypatch, small_model) -> None:
    """The issue's worst case: a re-run onto a valid output that dies mid-write."""
    from screening.featurize.featurizer import featurize_source

    folder = _cif_folder(tmp_path, 4)
    out = tmp_path / "out" / "emb.parquet"
    featurize_source(folder, out, model=small_model, progress=False)
    before = out.read_bytes()
    assert pq.ParquetFile(out).metadata.num_rows == 4

    class DyingWriter(pq.ParquetWriter):
        def write_table(self, table, *args, **kwargs):
            super().write_table(table, *args, **kwargs)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "ParquetWriter", DyingWriter)
    with pytest.raises(OSError):
        featurize_source(folder, out, model=small_model, progress=False)
    assert out.read_bytes() == before
    assert not [n for n in _only(out.parent) if n.startswith(TMP_PREFIX)]


def test_a_failed_pca_save_keeps_the_previous_pca_file(tmp_path: Path, monkeypatch) -> None:
    from screening.reduce import PCAReducer

    reducer = PCAReducer(n_components=2).fit(np.random.default_rng(0).normal(size=(20, 4)))
    path = tmp_path / "run.pca.json"
    reducer.save(path)
    before = path.read_bytes()

    def dies(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(atomic.os, "replace", dies)
    with pytest.raises(OSError):
        reducer.save(path)
    assert path.read_bytes() == before and _only(tmp_path) == ["run.pca.json"]


def _cif_folder(tmp_path: Path, n: int) -> Path:
    from pymatgen.core import Lattice, Structure

    folder = tmp_path / "cifs"
    folder.mkdir()
    for k in range(n):
        Structure(Lattice.cubic(5.0 + 0.1 * k), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
            filename=str(folder / f"s{k}.cif")
        )
    return folder


def test_featurize_sweeps_what_a_killed_run_left_beside_its_output_but_not_a_running_ones(
    tmp_path: Path, small_model
) -> None:
    import os
    import subprocess

    from screening.featurize.featurizer import featurize_source

    folder = _cif_folder(tmp_path, 2)
    out = tmp_path / "out" / "emb.parquet"
    out.parent.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs: a writer killed with -9
    stale = out.parent / f"{TMP_PREFIX}{dead.pid}-0123456789ab-emb.parquet"
    live = out.parent / f"{TMP_PREFIX}{os.getpid()}-0123456789ab-emb.parquet"  # this process runs
    other = out.parent / f"{TMP_PREFIX}{dead.pid}-0123456789ab-other.parquet"  # another output's
    for f in (stale, live, other):
        f.write_bytes(b"")
    featurize_source(folder, out, model=small_model, progress=False)
    assert not stale.exists() and live.exists() and other.exists()
