"""The fitted neighbour model is saved beside a campaign and reloaded by the next process's ask."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest
from test_neighbour_search import _pool
from test_pool_snapshot import write_tables

from screening.bo import neighbour_search as ns
from screening.bo.strategy import Strategy, Target
from screening.bo.suggest import suggest_pool
from screening.io.array_file import HASH_BLOCK, read_meta

STRATEGY = Strategy(surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6)
TARGET = Target(2.0, 0.01)


def ask(pool, told, ys, cache):
    return suggest_pool(
        STRATEGY, pool, told, np.array(ys), np.abs(np.array(ys) - 2.0), q=2, seed=1, target=TARGET, hyper_cache=cache
    )


@pytest.mark.slow
def test_a_new_process_reloads_the_model_and_makes_the_same_choice(tmp_path, monkeypatch) -> None:
    pool, gap, _ = _pool()
    path = tmp_path / "neighbour_state.arrays"
    told = [pool.ids[i] for i in (3, 40, 77)]
    ys = [float(gap[i]) for i in (3, 40, 77)]
    first = ask(pool, told, ys, {"neighbour_state_path": path})
    assert path.is_file()
    rebuilt = ask(pool, told, ys, {})  # no file: built from scratch
    calls = []
    monkeypatch.setattr(ns, "build_state", lambda *a, **k: calls.append(1) or pytest.fail("rebuilt"))
    reloaded = ask(pool, told, ys, {"neighbour_state_path": path})
    assert first == rebuilt == reloaded and not calls
    # one more observation: the reloaded model is extended, not rebuilt, and saved again
    more_told, more_ys = [*told, first[0]], [*ys, float(gap[pool.index_of(first[0])])]
    cache = {"neighbour_state_path": path}
    after = ask(pool, more_told, more_ys, cache)
    assert cache["neighbour"].told_rows == [pool.index_of(t) for t in more_told]
    monkeypatch.undo()
    assert after == ask(pool, more_told, more_ys, {})


@pytest.mark.slow
def test_a_file_from_other_inputs_or_a_damaged_file_is_ignored(tmp_path) -> None:
    pool, gap, _ = _pool()
    path = tmp_path / "neighbour_state.arrays"
    ask(pool, [pool.ids[0]], [float(gap[0])], {"neighbour_state_path": path})
    other, other_gap, _ = _pool(seed=5)
    settings = ns.NeighbourSettings(8, 6, label_match_tolerance=TARGET.tolerance)  # what the strategy builds
    key = ns.state_key(settings, other.embedding, other.prior_mean, None, other.known)
    assert ns.load_state(path, key, settings) is None  # another pool: not reused
    path.write_bytes(path.read_bytes()[:200])  # truncated by a crash or a full disk
    right = ns.state_key(settings, pool.embedding, pool.prior_mean, None, pool.known)
    assert ns.load_state(path, right, settings) is None
    picks = ask(pool, [pool.ids[0]], [float(gap[0])], {"neighbour_state_path": path})
    assert picks == ask(pool, [pool.ids[0]], [float(gap[0])], {})
    assert ns.load_state(path, right, settings) is not None  # rewritten whole


def test_an_in_process_run_saves_the_model_once_at_its_end(tmp_path, monkeypatch) -> None:
    from test_objectives_bandgap import synthetic_pool_frame

    from screening.bo.campaign import NEIGHBOUR_STATE_NAME, StopRules
    from screening.objectives.bandgap.campaign_dir import create_pool_campaign, open_campaign_dir

    frame = synthetic_pool_frame(300, seed=2)
    frame.to_parquet(tmp_path / "pool.parquet")
    strategy = Strategy(surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6)
    target = float(frame["band_gap"].max()) + 1.0  # never hit: the run uses its whole budget
    saves = []
    real_save = ns.save_state
    monkeypatch.setattr(ns, "save_state", lambda *a: saves.append(1) or real_save(*a))
    cd = create_pool_campaign(tmp_path / "c", tmp_path / "pool.parquet", target, 0.01, strategy, stop=StopRules())
    cd.campaign.run(budget=12)
    assert len(saves) == 1 and (tmp_path / "c" / NEIGHBOUR_STATE_NAME).is_file()
    # the next process reloads that file and extends it, rather than rebuilding
    monkeypatch.setattr(ns, "build_state", lambda *a, **k: pytest.fail("rebuilt"))
    again = open_campaign_dir(tmp_path / "c").campaign
    assert len(again.ask(1)) == 1 and len(saves) == 2


@pytest.mark.slow
def test_an_observation_rewrites_the_state_but_not_the_base_and_a_mismatched_pair_is_ignored(tmp_path) -> None:
    pool, gap, _ = _pool()
    path = tmp_path / "neighbour_state.arrays"
    told = [pool.ids[i] for i in (3, 40, 77)]
    ys = [float(gap[i]) for i in (3, 40, 77)]
    first = ask(pool, told, ys, {"neighbour_state_path": path})
    base = ns.base_path(path)
    base_inode, state_inode = base.stat().st_ino, path.stat().st_ino
    more_told, more_ys = [*told, first[0]], [*ys, float(gap[pool.index_of(first[0])])]
    ask(pool, more_told, more_ys, {"neighbour_state_path": path})  # a new process, one more result
    assert base.stat().st_ino == base_inode and path.stat().st_ino != state_inode
    settings = ns.NeighbourSettings(8, 6, label_match_tolerance=TARGET.tolerance)  # what the strategy builds
    key = ns.state_key(settings, pool.embedding, pool.prior_mean, None, pool.known)
    assert ns.load_state(path, key, settings) is not None
    # a crash between the two writes of a rebuild: a new base beside the old state
    from screening.io.array_file import open_arrays, write_arrays

    meta, arrays = open_arrays(base)
    write_arrays(base, arrays, {**meta, "token": "another build"})
    assert ns.load_state(path, key, settings) is None
    base.unlink()
    assert ns.load_state(path, key, settings) is None
    assert ask(pool, more_told, more_ys, {"neighbour_state_path": path}) == ask(pool, more_told, more_ys, {})
    assert ns.load_state(path, key, settings) is not None  # both rewritten


def test_the_state_key_sees_every_block_of_a_large_embedding() -> None:
    """Large arrays are hashed in parallel blocks: a change in any block, or a reshaped array,
    must still change the key (else a stale model would be reused silently)."""
    settings = ns.NeighbourSettings(8, 6, label_match_tolerance=TARGET.tolerance)  # what the strategy builds
    emb = np.random.default_rng(0).normal(size=(3 * HASH_BLOCK // (8 * 16) + 5, 16))
    key = ns.state_key(settings, emb, None, None, None)
    assert key == ns.state_key(settings, emb.copy(), None, None, None)
    for row in (0, emb.shape[0] // 2, emb.shape[0] - 1):
        changed = emb.copy()
        changed[row, 3] = np.nextafter(changed[row, 3], np.inf)
        assert ns.state_key(settings, changed, None, None, None) != key
    assert ns.state_key(settings, emb.reshape(-1, 8), None, None, None) != key


# --------------------------------------------------------------------------- tell extends the model
# `campaign tell` takes the results into the saved model (Campaign.extend_saved_model), so the next
# ask only reads it; the picks must be those of an ask that takes them in itself, and of a rebuild.


@pytest.fixture()
def tables(tmp_path, monkeypatch):
    monkeypatch.setenv("MATSCREEN_NO_CACHE", "1")  # no user cache: each campaign builds its own model
    return write_tables(tmp_path)


def _campaign_with_results(folder, tables, extend: bool) -> list:
    """A new campaign (pool_snapshot's tables), its first ask of 2, then their results told: the
    model extended by the tell (``extend``) or left for the next ask. Returns the first picks."""
    from test_pool_snapshot import _new

    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    _new(folder, tables)
    cd = open_campaign_dir(folder)
    first = cd.campaign.ask(2)
    cd.campaign.close()
    cd = open_campaign_dir(folder)
    cd.campaign.tell(first, [2.45, 2.6])
    if extend:
        assert cd.campaign.extend_saved_model()
    cd.campaign.close()
    return first


def _next_picks(folder) -> tuple[list, list, list, list[str]]:
    """The next ask of 2, its predicted means, then an ask of 1 more while those are pending; the
    notices of both (each a new open, as a new process)."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    cd = open_campaign_dir(folder)
    second = cd.campaign.ask(2)
    mean = list(cd.campaign.predictive(second)["mean"])
    notes = cd.campaign.notices()
    cd.campaign.close()
    cd = open_campaign_dir(folder)
    third = cd.campaign.ask(1, fresh=True)
    notes += cd.campaign.notices()
    cd.campaign.close()
    return second, third, mean, notes


def test_tell_extends_the_saved_model_and_the_next_ask_only_reads_it(tmp_path, tables, monkeypatch) -> None:
    from screening.bo.neighbour_gp import NeighbourGP

    _campaign_with_results(tmp_path / "told", tables, extend=True)
    _campaign_with_results(tmp_path / "plain", tables, extend=False)
    plain = _next_picks(tmp_path / "plain")  # the ask takes the results in itself
    rebuilt_dir = tmp_path / "rebuilt"
    _campaign_with_results(rebuilt_dir, tables, extend=False)
    for name in ("neighbour_state.arrays", "neighbour_state_base.arrays"):
        (rebuilt_dir / name).unlink()
    rebuilt = _next_picks(rebuilt_dir)  # built from scratch with both results
    # the extended model holds both results: the ask predicts no candidate again for them
    adds: list[int] = []
    real_add = NeighbourGP.add
    monkeypatch.setattr(NeighbourGP, "add", lambda self, *a: adds.append(len(a[0])) or real_add(self, *a))
    second, third, mean, notes = _next_picks(tmp_path / "told")
    assert adds == [] and notes == []
    assert (second, third) == plain[:2] == rebuilt[:2]
    np.testing.assert_array_equal(mean, plain[2])
    np.testing.assert_allclose(mean, rebuilt[2], rtol=1e-9)


def test_a_tampered_extended_model_is_rebuilt_with_a_note_and_picks_the_same(tmp_path, tables) -> None:
    from screening.io.array_file import open_arrays, write_arrays

    _campaign_with_results(tmp_path / "told", tables, extend=True)
    _campaign_with_results(tmp_path / "plain", tables, extend=False)
    path = tmp_path / "told" / "neighbour_state.arrays"
    meta, arrays = open_arrays(path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    best = int(np.argmax(arrays["gp_mean"]))
    arrays["gp_mean"][best] += 1.0  # a well-formed file with one predicted mean moved
    write_arrays(path, arrays, meta)
    second, third, mean, notes = _next_picks(tmp_path / "told")
    assert any("rebuilt the search model" in n and "not what this campaign wrote" in n for n in notes), notes
    plain = _next_picks(tmp_path / "plain")
    assert (second, third) == plain[:2]
    np.testing.assert_allclose(mean, plain[2], rtol=1e-9)


def test_tell_never_builds_a_model_nor_extends_one_from_other_results(tmp_path, tables, monkeypatch) -> None:
    from test_pool_snapshot import _new

    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    _new(tmp_path / "c", tables)
    monkeypatch.setattr(ns, "build_state", lambda *a, **k: pytest.fail("tell built a model"))
    cd = open_campaign_dir(tmp_path / "c")
    assert cd.campaign.extend_saved_model() is False  # no model yet: the first ask builds it
    assert cd.campaign.notices() == []
    cd.campaign.close()
    monkeypatch.undo()
    first = _campaign_with_results(tmp_path / "d", tables, extend=True)
    # a stale model: the store now holds other results than the saved model (a campaign remade)
    with sqlite3.connect(tmp_path / "d" / "campaign.sqlite") as conn:
        conn.execute("UPDATE observations SET y = ? WHERE key = ?", ("2.5", first[0]))
    monkeypatch.setattr(ns, "build_state", lambda *a, **k: pytest.fail("tell built a model"))
    cd = open_campaign_dir(tmp_path / "d")
    assert cd.campaign.extend_saved_model() is False and cd.campaign.notices() == []
    cd.campaign.close()


# ---------------------------------------------------------------- the finite scan the seal vouches for


class _Sealer:
    """A campaign's seal store in memory (what ``cache["neighbour_seal"]`` reads and writes)."""

    def __init__(self) -> None:
        self.seal: ns.Seal | None = None

    def read(self) -> ns.Seal | None:
        return self.seal

    def write(self, seal: ns.Seal) -> None:
        self.seal = seal


def _saved_with_seal(tmp_path):
    """A small pool's model saved with its seal, and what ``load_checked`` needs to read it."""
    pool, gap, _ = _pool()
    path, sealer = tmp_path / "neighbour_state.arrays", _Sealer()
    ask(pool, [pool.ids[0]], [float(gap[0])], {"neighbour_state_path": path, "neighbour_seal": sealer})
    settings = ns.NeighbourSettings(8, 6, label_match_tolerance=TARGET.tolerance)  # what the strategy builds
    return path, sealer.seal, read_meta(path)["key"], settings


def _scans(monkeypatch) -> list[str]:
    """The names of the arrays scanned for finite values from now on."""
    scanned: list[str] = []
    real = ns._not_finite
    monkeypatch.setattr(ns, "_not_finite", lambda arrays: scanned.extend(arrays) or real(arrays))
    return scanned


def test_the_unchanged_files_a_seal_found_finite_are_not_scanned_again(tmp_path, monkeypatch) -> None:
    path, seal, key, settings = _saved_with_seal(tmp_path)
    assert seal is not None and seal.finite
    scanned = _scans(monkeypatch)
    state, why = ns.load_checked(path, key, settings, seal)
    assert state is not None and why is None and scanned == []
    # the other checks still run on the vouched files
    monkeypatch.setattr(ns, "check_state", lambda *a, **k: "a neighbour index points outside the labelled set")
    assert ns.load_checked(path, key, settings, seal)[0] is None


def test_a_file_with_another_stamp_is_scanned_in_full_whatever_its_seal_says(tmp_path, monkeypatch) -> None:
    from screening.io.array_file import content_digest, open_arrays, write_arrays
    from screening.io.file_digest import file_stamp

    path, seal, key, settings = _saved_with_seal(tmp_path)
    meta, arrays = open_arrays(path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays["gp_mean"][3] = np.nan
    write_arrays(path, arrays, meta)  # new bytes, a new stamp
    # even a seal forged to the new bytes and claiming a finite file does not spare the scan
    forged = dataclasses.replace(seal, state=content_digest(meta, arrays))
    scanned = _scans(monkeypatch)
    state, why = ns.load_checked(path, key, settings, forged)
    assert state is None and "gp_mean holds values that are not finite" in why and "gp_mean" in scanned
    # with its new stamp, a seal that was not finite at writing scans too
    stamped = dataclasses.replace(forged, state_stamp=file_stamp(path), finite=False)
    assert "not finite" in ns.load_checked(path, key, settings, stamped)[1]


def test_a_state_saved_with_a_non_finite_value_is_sealed_as_not_finite_and_refused(tmp_path) -> None:
    path, _, key, settings = _saved_with_seal(tmp_path)
    state, _ = ns.load_checked(path, key, settings, None, sealed=False)
    state.gp._pred_var = np.array(state.gp._pred_var)
    state.gp._pred_var[5] = np.inf
    seal = ns.save_state(state, path, key)
    assert not seal.finite
    state, why = ns.load_checked(path, key, settings, seal)
    assert state is None and "gp_var holds values that are not finite" in why


def test_a_seal_vouches_only_for_the_stamps_it_recorded() -> None:
    seal = ns.Seal("key", "state", "base", [1, 2], [3, 4], finite=True)
    assert seal.vouches_finite([1, 2], [3, 4]) and not seal.vouches_finite([1, 2], [3, 5])
    assert ns.Seal.from_dict(seal.to_dict()) == seal
    assert not ns.Seal.from_dict({**seal.to_dict(), "finite": "yes"}).finite  # only a JSON true counts
    assert not ns.Seal.from_dict({"key": "k", "state": "s", "base": "b"}).vouches_finite(None, None)
