"""The pool snapshot a campaign keeps (pool_snapshot.py) and the cheap checks of later commands.

Later commands read the checked pool and known data from the campaign folder instead of the
pool file, check files by stamp before digest, and remember the search model's key; the picks
must be those of a campaign that reads everything again, and every changed input is still
noticed."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_objectives_bandgap import synthetic_pool_frame  # noqa: E402

from screening.bo import neighbour_search as ns  # noqa: E402
from screening.bo.campaign import StopRules  # noqa: E402
from screening.bo.domain import DiscretePool, DomainError  # noqa: E402
from screening.bo.strategy import Strategy  # noqa: E402
from screening.errors import MatscreenError  # noqa: E402
from screening.io.array_file import open_arrays, write_arrays  # noqa: E402
from screening.io.file_digest import check_sha256, file_sha256, file_stamp  # noqa: E402
from screening.objectives.bandgap import pool_snapshot as ps  # noqa: E402
from screening.objectives.bandgap.campaign_dir import create_pool_campaign, open_campaign_dir  # noqa: E402

# min_labelled below the 100 known crystals: local structure, so no measured-scale model (which reads
# the embeddings in every command), as in a campaign with the Materials Project as known data
STRATEGY = Strategy(
    surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6, neighbour_min_labelled=30
)


@pytest.fixture()
def tables(tmp_path, monkeypatch) -> tuple[Path, Path, pd.DataFrame]:
    monkeypatch.setenv("MATSCREEN_NO_CACHE", "1")  # no user cache: each campaign builds its own model
    return write_tables(tmp_path)


def write_tables(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """A pool of 300 synthetic crystals and 100 known ones, as Parquet files in ``tmp_path``."""
    frame = synthetic_pool_frame(400, seed=5)
    pool, known = tmp_path / "pool.parquet", tmp_path / "known.parquet"
    frame.iloc[:300].to_parquet(pool)
    frame.iloc[300:].to_parquet(known)
    return pool, known, frame


def _new(folder: Path, tables) -> None:
    pool, known, frame = tables
    cd = create_pool_campaign(folder, pool, 2.5, 0.01, STRATEGY, stop=StopRules(), known_path=known)
    ids = frame["id"].astype(str).tolist()
    cd.campaign.tell([ids[3], ids[50]], [2.4, 2.7], source="prior")
    cd.campaign.close()


def _ask_tell_ask(folder: Path) -> tuple[list, list, list[str]]:
    """Ask 2, tell them, ask 2 more, then 1 more while those are pending: each a new open."""
    cd = open_campaign_dir(folder)
    first = cd.campaign.ask(2)
    notes = cd.campaign.notices()
    cd.campaign.tell(first, [2.45, 2.6])
    cd.campaign.close()
    cd = open_campaign_dir(folder)
    second = cd.campaign.ask(2)
    mean = cd.campaign.predictive(second)["mean"]
    notes += cd.campaign.notices()
    cd.campaign.close()
    cd = open_campaign_dir(folder)
    third = cd.campaign.ask(1, fresh=True)
    notes += cd.campaign.notices()
    cd.campaign.close()
    return [first, second, third], list(mean), notes


def _forget_snapshot(folder: Path) -> None:
    """The campaign as one made before snapshots: no files, no record, no key memo."""
    for name in (ps.POOL_SNAPSHOT_NAME, ps.KNOWN_SNAPSHOT_NAME):
        (folder / name).unlink()
    with sqlite3.connect(folder / "campaign.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key IN (?, ?)", (ps.META_KEY, "neighbour_key_memo"))


def test_campaign_new_keeps_a_snapshot_and_later_commands_never_read_the_embeddings(tmp_path, tables) -> None:
    _new(tmp_path / "c", tables)
    assert (tmp_path / "c" / ps.POOL_SNAPSHOT_NAME).is_file() and (tmp_path / "c" / ps.KNOWN_SNAPSHOT_NAME).is_file()
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1)  # builds the model: reads the embeddings from the pool file
    cd.campaign.close()
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1, fresh=True)
    pool = cd.campaign.domain
    assert isinstance(pool, DiscretePool) and pool._embedding is None  # reloaded model, remembered key
    assert pool._index._sorted is not None  # ids found by the snapshot's sort order, not hashed
    assert cd.campaign.notices() == []
    cd.campaign.close()


def test_the_picks_equal_those_of_a_campaign_that_reads_the_pool_file_each_time(tmp_path, tables) -> None:
    _new(tmp_path / "snap", tables)
    with_snapshot, mean, notes = _ask_tell_ask(tmp_path / "snap")
    assert notes == []
    _new(tmp_path / "plain", tables)
    _forget_snapshot(tmp_path / "plain")
    without, mean_without, _ = _ask_tell_ask(tmp_path / "plain")
    assert with_snapshot == without
    np.testing.assert_array_equal(mean, mean_without)
    # the campaign made before snapshots got one at its first command, silently
    assert (tmp_path / "plain" / ps.POOL_SNAPSHOT_NAME).is_file()


def test_a_changed_pool_file_is_refused_even_with_its_size_and_time_kept(tmp_path, tables) -> None:
    pool, _, frame = tables
    _new(tmp_path / "c", tables)
    before = os.stat(pool)
    changed = frame.iloc[:300].copy()
    changed.loc[7, "pred_band_gap"] += 0.5
    changed.to_parquet(pool)
    assert os.stat(pool).st_size == before.st_size  # one value: the same size
    os.utime(pool, ns=(before.st_atime_ns, before.st_mtime_ns))  # and its old time
    with pytest.raises(MatscreenError, match="pool file .* changed since the campaign was created"):
        open_campaign_dir(tmp_path / "c")


def test_a_changed_known_data_file_is_refused(tmp_path, tables) -> None:
    _, known, frame = tables
    _new(tmp_path / "c", tables)
    frame.iloc[300:390].to_parquet(known)
    with pytest.raises(MatscreenError, match="known-data file .* changed since the campaign was created"):
        open_campaign_dir(tmp_path / "c")


def test_a_touched_pool_file_with_the_same_bytes_is_hashed_once_and_accepted(tmp_path, tables, monkeypatch) -> None:
    pool, _, _ = tables
    _new(tmp_path / "c", tables)
    os.utime(pool, ns=(1, 10**18))  # new stamp, same bytes
    from screening.io import file_digest

    monkeypatch.setattr(file_digest, "SETTLE_NS", -(10**19))  # the touch counts as long settled

    hashed: list[str] = []
    real = file_digest.file_sha256
    monkeypatch.setattr(file_digest, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    open_campaign_dir(tmp_path / "c").campaign.close()
    assert hashed.count("pool.parquet") == 1
    open_campaign_dir(tmp_path / "c").campaign.close()  # the new stamp was recorded
    assert hashed.count("pool.parquet") == 1


@pytest.mark.parametrize("damage", ["edited", "deleted", "known-edited"])
def test_a_damaged_snapshot_is_not_read_and_is_written_again(tmp_path, tables, damage) -> None:
    _new(tmp_path / "c", tables)
    _new(tmp_path / "fresh", tables)
    expected, _, _ = _ask_tell_ask(tmp_path / "fresh")
    folder = tmp_path / "c"
    name = ps.KNOWN_SNAPSHOT_NAME if damage == "known-edited" else ps.POOL_SNAPSHOT_NAME
    if damage == "deleted":
        (folder / name).unlink()
    elif damage == "known-edited":  # a well-formed array file with other values
        meta, arrays = open_arrays(folder / name)
        write_arrays(folder / name, {**arrays, "values": arrays["values"] + 1.0}, meta)
    else:
        data = pd.read_parquet(folder / name)
        data["pred_band_gap"] = data["pred_band_gap"] + 1.0  # a search on these numbers would pick other crystals
        data.to_parquet(folder / name, index=False)
    cd = open_campaign_dir(folder)
    notes = cd.campaign.notices()
    cd.campaign.close()
    why = "is missing" if damage == "deleted" else "is not what this campaign wrote"
    assert len(notes) == 1 and name in notes[0] and why in notes[0], notes
    picks, _, notes = _ask_tell_ask(folder)
    assert notes == []  # written again: the next commands read it
    assert picks == expected


def test_check_sha256_reads_the_file_only_when_its_stamp_moved(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    digest, stamp = file_sha256(path), file_stamp(path)
    assert check_sha256(path, "0" * 64, stamp) == (True, stamp)  # an equal stamp is trusted
    assert check_sha256(path, "0" * 64, None)[0] is False  # no stamp: hashed
    path.write_bytes(b"abd" * 1000)  # same size, new bytes
    ok, now = check_sha256(path, digest, stamp)
    assert not ok and now != stamp


def test_an_unchanged_saved_model_is_not_hashed_again_and_a_changed_one_is(tmp_path, tables, monkeypatch) -> None:
    _new(tmp_path / "c", tables)
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1)
    cd.campaign.close()
    digests: list[int] = []
    real = ns.content_digest
    monkeypatch.setattr(ns, "content_digest", lambda *a: digests.append(1) or real(*a))
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1, fresh=True)
    assert digests == [] and cd.campaign.notices() == []
    cd.campaign.close()
    state = tmp_path / "c" / "neighbour_state.arrays"
    os.utime(state, ns=(1, 10**18))  # a new stamp: hashed (and still what the campaign wrote)
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1, fresh=True)
    assert len(digests) >= 1 and cd.campaign.notices() == []
    cd.campaign.close()
    digests.clear()  # the seal took the file's new stamp: the next command reads it unhashed
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1, fresh=True)
    assert digests == [] and cd.campaign.notices() == []
    cd.campaign.close()


def test_the_remembered_key_is_the_key_of_the_arrays_and_other_inputs_miss(tmp_path, tables) -> None:
    _new(tmp_path / "c", tables)
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(1)
    pool = cd.campaign.domain
    assert isinstance(pool, DiscretePool)
    memo = cd.campaign.store.get_meta("neighbour_key_memo")
    settings = ns.NeighbourSettings(8, 6, min_labelled=30, label_match_tolerance=0.01)
    assert memo["key"] == ns.state_key(settings, pool.embedding, pool.prior_mean, pool.prior_std, pool.known)
    memo_object = cd.campaign._hyper_cache["neighbour_key_memo"]
    assert memo_object.read(memo["inputs"]) == memo["key"]
    assert memo_object.read("other inputs") is None
    cd.campaign.close()


def test_a_lazy_embedding_is_read_once_on_first_use_and_checked() -> None:
    calls: list[int] = []
    ids, feats = ["a", "b"], np.zeros((2, 2))

    def load() -> np.ndarray:
        calls.append(1)
        return np.ones((2, 4))

    pool = DiscretePool(ids, feats, embedding_loader=load, embedding_dim=4)
    assert pool.embedding_dim == 4 and calls == []
    assert pool.embedding is not None and pool.embedding.shape == (2, 4)
    assert pool.embedding is not None and calls == [1]
    bad = DiscretePool(ids, feats, embedding_loader=lambda: np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(DomainError, match="non-finite embedding"):
        _ = bad.embedding


def test_a_pool_file_changed_moments_ago_is_hashed_until_it_has_settled(tmp_path, tables, monkeypatch) -> None:
    """A write in the same clock tick as a stamp would not move it: a young file's stamp is not kept."""
    pool, _, _ = tables
    from screening.io import file_digest

    monkeypatch.setattr(file_digest, "SETTLE_NS", 10**15)  # every file is young
    _new(tmp_path / "c", tables)
    hashed: list[str] = []
    real = file_digest.file_sha256
    monkeypatch.setattr(file_digest, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    for _ in range(2):
        open_campaign_dir(tmp_path / "c").campaign.close()
    assert hashed.count(pool.name) == 2
    monkeypatch.setattr(file_digest, "SETTLE_NS", 0)  # settled now: hashed once more, then trusted
    for _ in range(2):
        open_campaign_dir(tmp_path / "c").campaign.close()
    assert hashed.count(pool.name) == 3


def test_the_known_snapshot_is_the_known_data_and_a_former_parquet_one_is_replaced(tmp_path, tables) -> None:
    from screening.bo.known_fit import KnownData

    _new(tmp_path / "c", tables)
    folder = tmp_path / "c"
    record = open_campaign_dir(folder).campaign.store.get_meta(ps.META_KEY)
    known = ps.read_known_snapshot(folder, record["files"][ps.KNOWN_SNAPSHOT_NAME])
    _, known_path, frame = tables
    rows = frame.iloc[300:]
    assert isinstance(known, KnownData) and known.ids == rows["id"].astype(str).tolist()
    np.testing.assert_array_equal(known.values, rows["band_gap"].to_numpy(dtype=np.float64))
    emb = rows[[c for c in rows.columns if c.startswith("emb_")]].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(known.embedding, emb)
    # a campaign whose snapshot is of the former format (known data as Parquet): not read, written
    # again as this format at its next command, silently, and the former file removed
    with sqlite3.connect(folder / "campaign.sqlite") as conn:
        conn.execute("UPDATE meta SET value = json_set(value, '$.format', 1) WHERE key = ?", (ps.META_KEY,))
    (folder / ps.KNOWN_SNAPSHOT_NAME).unlink()
    rows.to_parquet(folder / "known_snapshot.parquet")
    cd = open_campaign_dir(folder)
    assert cd.campaign.notices() == []
    cd.campaign.close()
    assert (folder / ps.KNOWN_SNAPSHOT_NAME).is_file() and not (folder / "known_snapshot.parquet").exists()
    assert open_campaign_dir(folder).campaign.store.get_meta(ps.META_KEY)["format"] == ps.FORMAT
