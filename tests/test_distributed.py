"""Ray shards on this machine: a worker killed mid-shard is retried and every record lands exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray  # part of the test extra: a missing Ray must fail here, not skip
from pymatgen.core import Lattice, Structure

from screening.atom_features import element_property_table
from screening.models.cgcnn import CGCNNConfig, init_model, save_model
from screening.screen.ray_executor import (
    DistributedError,
    init_ray,
    run_on_ray,
    sweep_temporary_files,
    write_parquet_atomic,
)
from screening.screen.run import screen_database


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs) for the module: ``ray.init`` costs ~10 s."""
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def crash_once(marker: Path, shard: int):
    """A fault: the worker process running ``shard`` dies (``os._exit``) the first time only."""

    def fault(index: int) -> None:
        if index == shard and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    return fault


def test_atomic_write_leaves_all_or_nothing(tmp_path: Path) -> None:
    class Exploding:
        def to_parquet(self, path, index=False):
            Path(path).write_bytes(b"half a file")
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_parquet_atomic(Exploding(), tmp_path / "part.parquet")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".tmp-part.parquet.123.abc").write_bytes(b"left by a dead worker")
    assert sweep_temporary_files(tmp_path) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_killed_worker_is_retried_and_each_record_appears_once(ray_session, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    out.mkdir()
    fault = crash_once(tmp_path / "crashed", shard=2)
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    class DiesMidWrite:
        """A frame whose Parquet write is cut short by the fault (the worker dies mid-shard)."""

        def __init__(self, frame, index):
            self.frame, self.index = frame, index

        def to_parquet(self, path, index=False):
            Path(path).write_bytes(b"PAR1 half a file")
            fault(self.index)
            self.frame.to_parquet(path, index=index)

    def shard_task(fault, shard):
        index, records = shard
        (attempts / f"{index}-{os.getpid()}-{os.urandom(4).hex()}").touch()
        frame = pd.DataFrame({"record": records, "value": [r * r for r in records]})
        write_parquet_atomic(DiesMidWrite(frame, index), out / f"shard-{index}.parquet")
        return index, os.getpid()

    shards = [(k, list(range(10 * k, 10 * k + 10))) for k in range(6)]
    results = list(run_on_ray(shard_task, iter(shards), fault, workers=2, max_retries=2, max_in_flight=3))
    assert sorted(i for i, _ in results) == list(range(6))
    assert (tmp_path / "crashed").exists()
    tries = [p.name.split("-")[0] for p in attempts.iterdir()]
    assert tries.count("2") == 2 and all(tries.count(str(k)) == 1 for k in (0, 1, 3, 4, 5))
    crashed_pid = int((tmp_path / "crashed").read_text())
    assert dict(results)[2] != crashed_pid  # the retry ran in a fresh worker process
    frames = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("shard-*.parquet"))])
    assert sorted(frames["record"]) == list(range(60))  # each exactly once
    assert (frames["value"] == frames["record"] ** 2).all()
    assert sweep_temporary_files(out) == 1  # only the dead attempt's temporary file was left behind


@pytest.mark.slow
def test_a_failing_shard_is_reported_not_retried(ray_session, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()

    def bad(shard):
        (calls / f"{shard}-{os.urandom(4).hex()}").touch()
        if shard == 1:
            raise ValueError("this record is cursed")
        return shard

    with pytest.raises(DistributedError, match="shard 1 failed.*cursed"):
        list(run_on_ray(bad, iter(range(3)), workers=2, max_retries=3, max_in_flight=1, name=str))
    assert sum(p.name.startswith("1-") for p in calls.iterdir()) == 1


def _db(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(4)
    rows = []
    for k in range(n):
        a, b = rng.choice(["Na", "Cl", "Mg", "O", "Si", "K", "Br", "Ga"], 2, replace=False)
        s = Structure(Lattice.cubic(3.7 + rng.random()), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5 + 0.02 * rng.random()]])
        rows.append({"id": f"s{k:02d}", "cif": s.to(fmt="cif"), "band_gap": float(rng.random() * 4)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_screen_on_ray_with_a_killed_worker_matches_the_local_run(ray_session, tmp_path: Path) -> None:
    model = tmp_path / "small.safetensors"
    save_model(init_model(CGCNNConfig(h_fea_len=16, atom_fea_len=16, n_conv=2), element_property_table()), model)
    db = _db(tmp_path / "db.csv")
    local = screen_database(db, 1.0, 0.05, model, tmp_path / "local.parquet", chunk_size=6, workers=0, progress=False)
    marker = tmp_path / "crashed"
    on_ray = screen_database(
        db,
        1.0,
        0.05,
        model,
        tmp_path / "ray.parquet",
        chunk_size=6,
        engine="ray",
        workers=2,
        max_retries=2,
        progress=False,
        before_commit=crash_once(marker, shard=3),
    )
    assert marker.exists()  # chunk 3's worker really died once
    assert on_ray.chunks_computed == list(range(7)) and on_ray.rows == 40
    ranked = pd.read_parquet(on_ray.output)
    assert ranked["id"].is_unique
    pd.testing.assert_frame_equal(ranked, pd.read_parquet(local.output))
    assert not list((tmp_path / "ray.chunks").glob(".tmp-*"))
