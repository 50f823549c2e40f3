"""Database screening: chunking, ranking, resumption after an interruption, and the output as a pool."""

from __future__ import annotations

import io
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from screening.atom_features import element_property_table
from screening.cli import app
from screening.errors import RecordError, StructureReadError
from screening.featurize.featurizer import featurize_records
from screening.io.records import StructureRecord
from screening.io.sources import iter_records
from screening.models.cgcnn import CGCNNConfig, init_model, load_model, save_model
from screening.progress import progress_bar
from screening.screen.run import (
    ChunkSizer,
    ScreenError,
    chunk_errors_path,
    chunk_path,
    progress_description,
    rank_chunks,
    screen_database,
    split_into_chunks,
    work_dir_for,
)

ELEMENTS = ["Na", "Cl", "Mg", "O", "Si", "Ga", "As", "K", "Br", "Ca", "S", "Li", "F", "Al", "N"]
N_GOOD = 60


def generated_structures(n: int, seed: int = 0) -> list[tuple[str, Structure, float]]:
    """``n`` small cubic binaries and ternaries (2–4 sites) with a made-up band_gap label (eV)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        n_sites = 2 + k % 3
        species = list(rng.choice(ELEMENTS, n_sites, replace=False))
        coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0.25]][:n_sites]
        coords = (np.array(coords) + rng.normal(0, 0.01, (n_sites, 3))).tolist()
        s = Structure(Lattice.cubic(3.6 + rng.random()), species, coords)
        out.append((f"gen-{k:03d}", s, float(np.round(rng.random() * 5, 3))))
    return out


def write_db(path: Path, n: int = N_GOOD) -> Path:
    """A CSV database with a ``cif`` column: ``n`` good rows plus one unreadable CIF at row 7."""
    rows = [{"material_id": i, "cif": s.to(fmt="cif"), "band_gap": g} for i, s, g in generated_structures(n)]
    rows.insert(7, {"material_id": "broken-1", "cif": "data_x\n_cell_length_a 3\n", "band_gap": 1.0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_model(init_model(CGCNNConfig(h_fea_len=16, atom_fea_len=16, n_conv=2), element_property_table(), seed=1), path)
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("db") / "db.csv")


@pytest.fixture(scope="module")
def reference(db: Path, small_model: Path) -> pd.DataFrame:
    """Predictions of the lead's in-memory featurizer for the same records (the ground truth)."""
    records = [r for r in iter_records(db) if isinstance(r, StructureRecord)]
    return featurize_records(records, load_model(small_model)).frame.set_index("id")


def _target(reference: pd.DataFrame) -> float:
    """A target equal to one crystal's prediction (the middle one), so a small tolerance has hits."""
    return float(np.sort(reference["pred_band_gap"].to_numpy())[len(reference) // 2])


# --- chunking --------------------------------------------------------------------------------


def _rec(k: int) -> StructureRecord:
    return StructureRecord(record_id=f"r{k}", source="s", text="x")


def test_chunks_are_ranges_of_stream_items_and_read_past_saved_ranges() -> None:
    err = lambda k: RecordError(f"e{k}", "bad", "s")  # noqa: E731
    items = [_rec(0), err(0), _rec(1), _rec(2), err(1), _rec(3), _rec(4), err(2)]
    stats: dict[str, int] = {}
    chunks = list(split_into_chunks(items, 3, stats=stats))
    assert [(c.index, c.start, c.end) for c in chunks] == [(0, 0, 3), (1, 3, 6), (2, 6, 8)]
    assert [[r.record_id for r in c.records] for c in chunks] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    assert [[e.record_id for e in c.errors] for c in chunks] == [["e0"], ["e1"], ["e2"]]
    assert stats == {"n_items": 8, "n_chunks": 3}

    # ranges saved by a run with other chunk sizes are read past; a new chunk never reaches into one
    resumed = list(split_into_chunks(items, 3, done=[(4, 5), (0, 2)], stats=stats))
    assert [(c.index, c.start, c.end) for c in resumed] == [(1, 2, 4), (3, 5, 8)]
    assert [r.record_id for r in resumed[0].records] == ["r1", "r2"] and resumed[1].errors[0].record_id == "e2"
    assert stats == {"n_items": 8, "n_chunks": 4}

    assert list(split_into_chunks([], 3, stats=stats)) == [] and stats["n_chunks"] == 0
    with pytest.raises(ScreenError):
        list(split_into_chunks(items, 0))


# --- screening -------------------------------------------------------------------------------


def test_screen_ranks_every_good_record_by_distance_to_target(
    tmp_path: Path, db: Path, small_model: Path, reference: pd.DataFrame
) -> None:
    target, tol = _target(reference), 0.002
    s = screen_database(
        db, target, tol, small_model, tmp_path / "ranked.parquet", chunk_size=8, workers=0, progress=False
    )
    out = pd.read_parquet(s.output)
    assert s.rows == len(out) == N_GOOD and s.errors == 1 and s.chunks_total == 8
    assert out["id"].is_unique and set(out["id"]) == set(reference.index)
    assert out["rank"].tolist() == list(range(1, N_GOOD + 1))
    assert np.all(np.diff(out["distance_to_target"]) >= 0)
    np.testing.assert_allclose(out["distance_to_target"], np.abs(out["pred_band_gap"] - target))
    np.testing.assert_allclose(
        out.set_index("id")["pred_band_gap"], reference.loc[out["id"], "pred_band_gap"], atol=1e-5
    )
    emb = [f"emb_{k}" for k in range(16)]
    np.testing.assert_allclose(out.set_index("id")[emb].to_numpy(), reference.loc[out["id"], emb].to_numpy(), atol=1e-5)
    assert out["within_tol"].sum() == s.within_tol == int((np.abs(reference["pred_band_gap"] - target) <= tol).sum())
    assert s.within_tol >= 1
    assert out.set_index("id")["band_gap"].to_dict() == pytest.approx(reference["band_gap"].to_dict())
    errors = pd.read_csv(s.errors_path)
    assert errors["id"].tolist() == ["broken-1"] and errors["error"].tolist() == [StructureReadError.__name__]
    assert str(db) in errors["source"].iloc[0]


def test_interrupted_run_resumes_from_the_last_finished_chunk(
    tmp_path: Path, db: Path, small_model: Path, reference: pd.DataFrame
) -> None:
    out = tmp_path / "ranked.parquet"
    target = _target(reference)
    first_run: list[int] = []
    ranges: list[tuple[int, int]] = []

    def stop_after_three(result) -> None:
        first_run.append(result.index)
        ranges.append((result.start, result.end))
        if len(first_run) == 3:
            raise KeyboardInterrupt("simulated interruption after chunk 3")

    with pytest.raises(KeyboardInterrupt, match=r"3 chunks \(24 records\) saved in"):
        screen_database(
            db, target, 0.05, small_model, out, chunk_size=8, workers=0, progress=False, on_chunk_done=stop_after_three
        )
    work = work_dir_for(out)
    manifest = json.loads((work / "manifest.json").read_text())
    assert sorted(manifest["chunks"]) == ["0-8", "16-24", "8-16"] and first_run == [0, 1, 2]
    assert ranges == [(0, 8), (8, 16), (16, 24)]
    assert not manifest["complete"] and not out.exists()
    stamps = {r: chunk_path(work, *r).stat().st_mtime_ns for r in ranges}

    second_run: list[int] = []
    s = screen_database(
        db,
        target,
        0.05,
        small_model,
        out,
        chunk_size=8,
        workers=0,
        progress=False,
        on_chunk_done=lambda r: second_run.append(r.index),
    )
    assert second_run == s.chunks_computed == [3, 4, 5, 6, 7]  # nothing redone
    assert s.chunks_reused == 3
    assert {r: chunk_path(work, *r).stat().st_mtime_ns for r in ranges} == stamps  # files untouched
    resumed = pd.read_parquet(out)
    assert resumed["id"].is_unique and len(resumed) == N_GOOD and s.errors == 1  # nothing duplicated

    straight = screen_database(
        db, target, 0.05, small_model, tmp_path / "straight.parquet", chunk_size=8, workers=0, progress=False
    )
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(straight.output))


def test_chunks_committed_but_not_recorded_are_adopted(tmp_path: Path, db: Path, small_model: Path) -> None:
    out = tmp_path / "ranked.parquet"
    screen_database(db, 1.0, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    manifest_path = work_dir_for(out) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["chunks"]["32-48"]  # the driver died after the worker committed chunk 2
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    s = screen_database(db, 1.0, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    assert s.chunks_computed == [] and s.rows == N_GOOD
    chunk_path(work_dir_for(out), 16, 32).unlink()  # a chunk deleted by hand is computed again
    s = screen_database(db, 1.0, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    assert s.chunks_computed == [1] and s.rows == N_GOOD and pd.read_parquet(out)["id"].is_unique


def test_a_resumed_run_may_cut_chunks_of_another_size(
    tmp_path: Path, db: Path, small_model: Path, reference: pd.DataFrame
) -> None:
    """Chunks are stream ranges, so a run with other sizes fills the gaps and skips what is saved."""
    out = tmp_path / "ranked.parquet"
    s = screen_database(db, 1.0, 0.05, small_model, out, chunk_size=8, workers=0, progress=False)
    assert s.chunks_total == 8
    work = work_dir_for(out)
    for gap in [(8, 16), (40, 48), (56, 61)]:  # lost, as if a run with --chunk-size 8 had stopped
        chunk_path(work, *gap).unlink()
        chunk_errors_path(work, *gap).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in work.glob("chunk-*.parquet")}
    computed: list[tuple[int, int]] = []
    s = screen_database(
        db,
        1.0,
        0.05,
        small_model,
        out,
        chunk_size=5,
        workers=0,
        progress=False,
        on_chunk_done=lambda r: computed.append((r.start, r.end)),
    )
    assert computed == [(8, 13), (13, 16), (40, 45), (45, 48), (56, 61)]
    assert s.chunks_reused == 5 and s.chunks_total == 10
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("chunk-*.parquet") if p.name in kept} == kept
    ranked = pd.read_parquet(out)
    assert ranked["id"].is_unique and set(ranked["id"]) == set(reference.index) and s.errors == 1
    straight = screen_database(db, 1.0, 0.05, small_model, tmp_path / "straight.parquet", workers=0, progress=False)
    assert straight.chunks_total == 1  # adaptive sizes: 61 records fit in the first chunk
    pd.testing.assert_frame_equal(ranked, pd.read_parquet(straight.output))


def test_new_target_only_reranks(tmp_path: Path, db: Path, small_model: Path, reference: pd.DataFrame) -> None:
    out = tmp_path / "ranked.parquet"
    screen_database(db, 0.0, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    target = float(reference["pred_band_gap"].max())
    s = screen_database(db, target, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    assert s.chunks_computed == [] and s.chunks_reused == 4
    ranked = pd.read_parquet(out)
    assert ranked["id"].iloc[0] == reference["pred_band_gap"].idxmax()


def test_a_work_folder_of_another_run_is_refused(tmp_path: Path, db: Path, small_model: Path) -> None:
    out = tmp_path / "ranked.parquet"
    screen_database(db, 1.0, 0.05, small_model, out, chunk_size=16, workers=0, progress=False)
    other_model = tmp_path / "other.safetensors"
    save_model(
        init_model(CGCNNConfig(h_fea_len=16, atom_fea_len=16, n_conv=2), element_property_table(), seed=7), other_model
    )
    with pytest.raises(ScreenError, match="another run.*model"):
        screen_database(db, 1.0, 0.05, other_model, out, chunk_size=16, workers=0, progress=False)
    changed = write_db(tmp_path / "db.csv", n=20)  # a database whose content changed since the chunks were made
    out2 = tmp_path / "second.parquet"
    screen_database(changed, 1.0, 0.05, small_model, out2, chunk_size=16, workers=0, progress=False)
    write_db(changed, n=21)
    with pytest.raises(ScreenError, match="another run.*database"):
        screen_database(changed, 1.0, 0.05, small_model, out2, chunk_size=16, workers=0, progress=False)
    old = tmp_path / "old.parquet"  # a work folder of fixed-size numbered chunks (an older matscreen)
    work_dir_for(old).mkdir()
    (work_dir_for(old) / "manifest.json").write_text(json.dumps({"format": "matscreen-screen-1", "chunks": {"0": {}}}))
    with pytest.raises(ScreenError, match="older layout.*delete it to start over"):
        screen_database(db, 1.0, 0.05, small_model, old, workers=0, progress=False)


def test_bad_options_are_refused(tmp_path: Path, db: Path, small_model: Path) -> None:
    with pytest.raises(ScreenError, match="engine"):
        screen_database(db, 1.0, 0.05, small_model, tmp_path / "r.parquet", engine="dask", progress=False)
    with pytest.raises(ScreenError, match="tolerance"):
        screen_database(db, 1.0, -1, small_model, tmp_path / "r.parquet", progress=False)
    with pytest.raises(ScreenError, match="not found"):
        screen_database(tmp_path / "missing.csv", 1.0, 0.05, small_model, tmp_path / "r.parquet", progress=False)


def test_ranked_output_is_a_search_pool(tmp_path: Path, db: Path, small_model: Path) -> None:
    from screening.objectives.bandgap.objective import load_pool

    s = screen_database(
        db, 2.5, 0.05, small_model, tmp_path / "ranked.parquet", chunk_size=16, workers=0, progress=False
    )
    pool = load_pool(s.output, n_components=3)
    assert len(pool.ids) == N_GOOD and pool.features.shape == (N_GOOD, 3)


@pytest.mark.slow
def test_local_worker_processes_give_the_same_ranking(tmp_path: Path, db: Path, small_model: Path) -> None:
    one = screen_database(db, 0.5, 0.05, small_model, tmp_path / "one.parquet", chunk_size=8, workers=0, progress=False)
    two = screen_database(db, 0.5, 0.05, small_model, tmp_path / "two.parquet", chunk_size=8, workers=2, progress=False)
    assert two.chunks_computed == list(range(8))
    pd.testing.assert_frame_equal(pd.read_parquet(one.output), pd.read_parquet(two.output))


@pytest.mark.parametrize("bucket_rows", [7, 1000])
def test_rank_merge_orders_rows_across_chunks_with_different_label_columns(tmp_path: Path, bucket_rows: int) -> None:
    rng = np.random.default_rng(3)
    parts, frames = [], []
    for k in range(5):
        n = int(rng.integers(1, 40))
        frame = pd.DataFrame({"id": [f"c{k}-{i}" for i in range(n)], "pred_band_gap": rng.normal(2, 1, n).round(1)})
        frame["emb_0"] = rng.normal(size=n).astype(np.float32)
        if k % 2:
            frame["band_gap"] = rng.random(n)
        if k in (1, 3):  # a label that is text in one chunk and numbers in another becomes text
            frame["note"] = [f"n{i}" for i in range(n)] if k == 1 else np.arange(n, dtype=float)
        frames.append(frame)
        parts.append(tmp_path / f"part{k}.parquet")
        frame.to_parquet(parts[-1], index=False)
    empty = tmp_path / "empty.parquet"
    frames[0].iloc[:0].to_parquet(empty, index=False)
    result = rank_chunks(
        parts + [empty],
        "pred_band_gap",
        2.0,
        0.15,
        tmp_path / "out.parquet",
        tmp_path / "runs",
        bucket_rows=bucket_rows,
    )
    out = pd.read_parquet(tmp_path / "out.parquet")
    everything = pd.concat(frames, ignore_index=True)
    everything["distance_to_target"] = (everything["pred_band_gap"] - 2.0).abs()
    expected = everything.sort_values(["distance_to_target", "id"], kind="stable").reset_index(drop=True)
    assert out["id"].tolist() == expected["id"].tolist()  # ties (rounded predictions) broken by id
    assert out["rank"].tolist() == list(range(1, len(expected) + 1))
    np.testing.assert_allclose(out["distance_to_target"], expected["distance_to_target"])
    np.testing.assert_allclose(out["emb_0"], expected["emb_0"])
    assert result == {
        "rows": len(expected),
        "within_tol": int((expected["distance_to_target"] <= 0.15).sum()),
        "filtered_out": 0,
    }
    np.testing.assert_array_equal(out["band_gap"].isna(), expected["band_gap"].isna())
    assert out["note"].dropna().map(type).eq(str).all() and out["note"].notna().sum() == len(frames[1]) + len(frames[3])
    assert not list((tmp_path / "runs").iterdir())


def test_a_downloaded_materials_project_folder_is_a_database(tmp_path: Path, small_model: Path) -> None:
    from screening.io.materials_project import MPClientFactory, fetch_materials_project

    docs = [
        SimpleNamespace(material_id=f"mp-{k}", formula_pretty=s.composition.reduced_formula, structure=s, band_gap=g)
        for k, (_, s, g) in enumerate(generated_structures(20, seed=5))
    ]

    class FakeMPRester:
        def __init__(self, api_key=None):
            self.materials = SimpleNamespace(summary=SimpleNamespace(search=self.search))

        def search(self, material_ids=None, fields=None, **criteria):
            return [d for d in docs if material_ids is None or d.material_id in material_ids]

    key = "k" * 32
    fetch_materials_project(
        MPClientFactory(key, FakeMPRester),
        tmp_path / "db",
        fields=list(("material_id", "formula_pretty", "structure", "band_gap")),
        batch_size=6,
        progress=False,
    )
    s = screen_database(
        tmp_path / "db", 2.0, 0.1, small_model, tmp_path / "ranked.parquet", chunk_size=5, workers=0, progress=False
    )
    out = pd.read_parquet(s.output)
    assert sorted(out["id"]) == sorted(d.material_id for d in docs) and s.errors == 0
    assert out.set_index("id").loc["mp-3", "band_gap"] == pytest.approx(docs[3].band_gap)


def test_cli_screen(tmp_path: Path, db: Path, small_model: Path) -> None:
    from screening.cli import app

    out = tmp_path / "ranked.parquet"
    res = CliRunner().invoke(
        app,
        [
            "screen",
            str(db),
            "--target",
            "2.534",
            "--tol",
            "0.05",
            "--model",
            str(small_model),
            "--workers",
            "0",
            "--chunk-size",
            "16",
            "--top",
            "3",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"{N_GOOD} ranked rows" in res.output and "1 error in" in res.output and "4 chunks computed" in res.output
    assert len(pd.read_parquet(out)) == N_GOOD
    res = CliRunner().invoke(
        app,
        [
            "screen",
            str(db),
            "--target",
            "2.5",
            "--engine",
            "spark",
            "--model",
            str(small_model),
            "-o",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert res.exit_code == 1 and "unknown engine" in res.output


class FirstRecords:
    """The first ``n`` records of a source, as a :class:`~screening.screen.RecordSource`."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n
        self.key = f"{path}|first {n}"

    def __iter__(self):
        return itertools.islice(iter_records(self.path), self.n)

    def count(self) -> int:
        return self.n


@pytest.mark.shared
def test_screen_real_materials_project_records(tmp_path: Path, mp_csv: Path, small_model: Path) -> None:
    s = screen_database(
        FirstRecords(mp_csv, 300),
        2.534,
        0.05,
        small_model,
        tmp_path / "mp.parquet",
        chunk_size=128,
        workers=0,
        progress=False,
    )
    out = pd.read_parquet(s.output)
    assert s.rows + s.errors == 300 and s.chunks_total == 3
    assert out["id"].str.startswith("mp-").all() and out["id"].is_unique
    assert {"band_gap", "formation_energy_per_atom", "distance_to_target", "rank"} <= set(out.columns)
    assert np.isfinite(out["pred_band_gap"]).all()


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicates(
    tmp_path: Path, db: Path, small_model: Path, reference: pd.DataFrame
) -> None:
    """SIGKILL the screening process mid-run (no clean-up of any kind), then resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ranked.parquet"
    script = tmp_path / "run.py"
    script.write_text(
        "import time\n"
        "from screening.screen.run import screen_database\n"
        f"screen_database({str(db)!r}, 1.0, 0.05, {str(small_model)!r}, {str(out)!r}, chunk_size=4, workers=0,\n"
        "                progress=False, on_chunk_done=lambda r: time.sleep(0.3))\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = work_dir_for(out) / "manifest.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if manifest.exists() and len(json.loads(manifest.read_text())["chunks"]) >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the screening subprocess made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {c["start"] // 4 for c in json.loads(manifest.read_text())["chunks"].values()}  # chunk numbers
    assert 3 <= len(done_before) < 16 and not out.exists()  # 61 records (the broken CIF fails later) = 16 chunks
    s = screen_database(db, 1.0, 0.05, small_model, out, chunk_size=4, workers=0, progress=False)
    assert not set(s.chunks_computed) & done_before
    assert set(s.chunks_computed) | done_before == set(range(16)) and s.chunks_total == 16
    ranked = pd.read_parquet(out)
    assert ranked["id"].is_unique and set(ranked["id"]) == set(reference.index)


@pytest.mark.shared
@pytest.mark.slow
def test_screen_the_full_materials_project_set(tmp_path: Path, mp_csv: Path) -> None:
    """All 36,738 MP crystals through the project's model on 2 worker processes (~2 min on 2 cores)."""
    s = screen_database(mp_csv, 2.534, 0.05, None, tmp_path / "mp.parquet", workers=2, progress=False)
    assert s.rows + s.errors == 36_738 and s.errors < 50
    ranked = pd.read_parquet(s.output, columns=["id", "pred_band_gap", "band_gap", "distance_to_target", "rank"])
    assert ranked["id"].is_unique and ranked["id"].str.startswith("mp-").all()
    assert ranked["rank"].tolist() == list(range(1, s.rows + 1))
    assert ranked["distance_to_target"].is_monotonic_increasing
    r = np.corrcoef(ranked["pred_band_gap"], ranked["band_gap"])[0, 1]
    assert r > 0.7, f"predicted vs DFT band gap correlation {r:.2f}"


def test_idle_workers_note_says_why_and_what_chunk_size_uses_them() -> None:
    from screening.screen.run import idle_workers_note

    note = idle_workers_note(n_chunks=1, n_records=61, workers=2, chunk_size=2048)
    assert note is not None and "only 1 of 2 workers" in note and "--chunk-size 31" in note
    assert idle_workers_note(n_chunks=2, n_records=61, workers=2, chunk_size=31) is None
    assert idle_workers_note(n_chunks=1, n_records=61, workers=1, chunk_size=2048) is None
    assert idle_workers_note(n_chunks=0, n_records=0, workers=4, chunk_size=2048) is None  # all reused


@pytest.mark.slow
def test_cli_screen_two_workers_one_chunk_prints_a_note(tmp_path: Path, db: Path, small_model: Path) -> None:
    from screening.cli import app

    args = ["screen", str(db), "--target", "2.5", "--model", str(small_model), "--workers", "2", "--top", "0"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "one.parquet")])
    assert res.exit_code == 0, res.output
    assert f"only 1 of 2 workers had work; --chunk-size {-(-(N_GOOD + 1) // 2)}" in res.output


# --- interruption, chunk sizes, progress -----------------------------------------------------

SLOW_CLI = """
import sys, time
import screening.screen.run as run

_screen = run.screen_database


def slow_screen(*args, **kwargs):
    kwargs["on_chunk_done"] = lambda result: time.sleep(2.0)  # the run is still going when the signal comes
    return _screen(*args, **kwargs)


run.screen_database = slow_screen
if __name__ == "__main__":
    from screening.cli import main

    sys.argv[0] = "matscreen"
    main()
"""

INTERRUPTED = re.compile(
    r"interrupted: (\d+) chunks? \(([\d,]+) of 61 records\) saved in (.+)/; re-run the same command to resume"
)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "workers", "code"), [(signal.SIGINT, 1, 130), (signal.SIGTERM, 0, 143)])
def test_a_signal_says_what_is_saved_and_the_same_command_resumes(
    tmp_path: Path, db: Path, small_model: Path, sig: int, workers: int, code: int, record_property
) -> None:
    """Ctrl-C (or SIGTERM) after the first saved chunk: one line naming the chunks saved, exit
    130 (143), no traceback; the same command then computes only the chunks that were not saved."""
    out = tmp_path / "ranked.parquet"
    args = ["screen", str(db), "--target", "2.5", "--model", str(small_model), "--chunk-size", "8"]
    args += ["--workers", str(workers), "--top", "0", "-o", str(out)]
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal: a test runner started in the background (`cmd &`) ignores SIGINT,
        # its children inherit that, and Python then installs no Ctrl-C handler (as it should: a
        # user's `nohup matscreen screen ... &` must not stop on Ctrl-C either)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    manifest = work_dir_for(out) / "manifest.json"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["chunks"]:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    sent = time.perf_counter()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    record_property("signal_to_exit_s", round(time.perf_counter() - sent, 2))  # reported, not asserted
    assert proc.returncode == code, err
    assert "Traceback" not in err
    found = INTERRUPTED.search(err.strip().splitlines()[-1])
    assert found is not None, err
    saved = json.loads(manifest.read_text())["chunks"]
    assert int(found.group(1)) == len(saved) >= 1 and not out.exists()
    assert int(found.group(2).replace(",", "")) == sum(c["end"] - c["start"] for c in saved.values())
    assert Path(found.group(3)) == work_dir_for(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in work_dir_for(out).glob("chunk-*")}

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{8 - len(saved)} chunks computed, {len(saved)} reused" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in work_dir_for(out).glob("chunk-*") if p.name in stamps} == stamps
    ranked = pd.read_parquet(out)
    assert ranked["id"].is_unique and len(ranked) == N_GOOD


class RepeatedRecords:
    """``n`` records cycling through a few generated crystals (each with its own id): a large,
    cheap database for the chunk-size tests."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cifs = [s.to(fmt="cif") for _, s, _ in generated_structures(12, seed=3)]
        self.key = f"repeated|{n}"

    def __iter__(self):
        for k in range(self.n):
            yield StructureRecord(record_id=f"rep-{k:05d}", source="memory", text=self.cifs[k % len(self.cifs)])

    def count(self) -> int:
        return self.n


def test_chunk_sizes_follow_the_measured_rate() -> None:
    """A 2,000-record stream at 20 records/s of worker time: a 64-record first chunk, then chunks
    of about 30 s of work (600 records), growing at most fourfold per chunk."""
    sizer = ChunkSizer(maximum=2048, target_s=30.0)
    sizes = []
    for chunk in split_into_chunks((_rec(k) for k in range(2000)), sizer):
        sizes.append(chunk.end - chunk.start)
        sizer.observe(chunk.n_items, chunk.n_items / 20.0)  # the measured rate: 20 records/s
    assert sizes == [64, 256, 600, 600, 480]

    fast = ChunkSizer(maximum=2048, target_s=30.0)
    grown = []
    for _ in range(5):
        grown.append(fast.next_size())
        fast.observe(grown[-1], grown[-1] / 1000.0)  # 1,000 records/s: capped at the maximum
    assert grown == [64, 256, 1024, 2048, 2048]
    fast.observe(1000, 100.0)  # the work got slower: chunks shrink at once
    assert fast.next_size() < 2048

    fixed = ChunkSizer.fixed(100)
    fixed.observe(100, 1000.0)
    assert [fixed.next_size() for _ in range(3)] == [100, 100, 100]


def test_a_large_database_is_cut_into_chunks_sized_by_the_rate(tmp_path: Path, small_model: Path) -> None:
    """2,000 records with a short target time per chunk: many chunks, the first of 64 records,
    each record ranked once."""
    source = RepeatedRecords(2000)
    out = tmp_path / "ranked.parquet"
    ranges: list[tuple[int, int]] = []
    s = screen_database(
        source,
        2.5,
        0.05,
        small_model,
        out,
        workers=0,
        progress=False,
        chunk_seconds=0.5,
        on_chunk_done=lambda r: ranges.append((r.start, r.end)),
    )
    assert s.chunks_total == len(ranges) > 1 and ranges[0] == (0, 64)
    assert all(b - a <= 2048 for a, b in ranges) and len({b - a for a, b in ranges}) > 1
    assert sorted(ranges) == ranges and ranges[-1][1] == 2000
    assert all(a == b for (_, a), (b, _) in zip(ranges, ranges[1:]))  # they tile the stream
    ranked = pd.read_parquet(out, columns=["id"])
    assert ranked["id"].is_unique and len(ranked) == 2000


def test_progress_in_a_log_prints_plain_lines_with_exact_counts_and_an_eta() -> None:
    stream = io.StringIO()  # not a TTY, as stderr is in a log
    now = [0.0]
    with progress_bar(2000, "screening (local, 1 worker)", stream=stream, clock=lambda: now[0]) as advance:
        now[0] = 5.0
        advance(500)  # within the interval: no line yet
        now[0] = 15.0
        advance(700)
        now[0] = 20.0
        advance(100)
        now[0] = 31.0
        advance(700)
        advance.set_total(2000)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "screening (local, 1 worker): 1,200 / 2,000 records (60%), 80 records/s, elapsed 15 s, ETA 10 s",
        "screening (local, 1 worker): 2,000 / 2,000 records (100%), 65 records/s, elapsed 31 s",
    ]  # the closing line is not repeated

    stream = io.StringIO()
    with progress_bar(130, "featurizing", stream=stream, interval=1e9) as advance:
        advance(133)  # the source held more than it counted: the total follows
    assert stream.getvalue().startswith("featurizing: 133 / 133 records (100%)")
    assert "133 / 130" not in stream.getvalue()


def test_progress_on_a_terminal_labels_its_time_columns() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with progress_bar(10, "screening", stream=stream) as advance:
        advance(4)
    shown = stream.getvalue()
    assert "4/4" in shown and "elapsed" in shown and "ETA" in shown  # a finished job ends at what it did


def test_progress_names_one_worker_in_the_singular(tmp_path: Path, db: Path, small_model: Path) -> None:
    assert progress_description("local", 1) == "screening (local, 1 worker)"
    assert progress_description("local", 2) == "screening (local, 2 workers)"
    assert progress_description("local", 0) == "screening (in this process)"
    assert progress_description("ray", 1) == "screening (ray, 1 worker)"
    args = ["screen", str(db), "--target", "2.5", "--model", str(small_model), "--workers", "0", "--top", "0"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ranked.parquet")])
    assert res.exit_code == 0, res.output
    assert "screening (in this process): 61 / 61 records (100%)" in res.stderr
    assert "records/s" in res.stderr and "1 workers" not in res.output
    assert "60 ranked rows" in res.stdout and "1 error in" in res.stdout and "1 chunk computed" in res.stdout
