"""The known-data part of the neighbour model is fitted once per known table and reused
(issue 28, item 2): the cache key sees the table and the settings, a tampered file is refused."""

from __future__ import annotations

import numpy as np
import pytest
from test_neighbour_search import _pool

from screening.bo import known_fit as kf
from screening.bo import neighbour_search as ns
from screening.io.array_file import open_arrays, write_arrays

SETTINGS = ns.NeighbourSettings(8, 6, min_labelled=0, label_match_tolerance=0.05)


def _build(pool, cache=None, settings=SETTINGS, known=None):
    known = pool.known if known is None else known
    return ns.update_state(
        None, settings, pool.embedding, pool.prior_mean, known, [3, 9], np.array([1.2, 2.3]), 0, known_cache=cache
    )


def _no_fit(monkeypatch):
    monkeypatch.setattr(kf, "fit_known", lambda *a, **k: pytest.fail("the known data were fitted again"))


def test_the_second_build_reads_the_fit_and_predicts_the_same(tmp_path, monkeypatch) -> None:
    pool, _, _ = _pool()
    cache = kf.KnownFitCache(tmp_path)
    first = _build(pool, cache)
    files = list(tmp_path.glob("known-*.arrays"))
    assert len(files) == 1
    _no_fit(monkeypatch)
    again = _build(pool, kf.KnownFitCache(tmp_path))
    for a, b in zip(ns.predictive(first), ns.predictive(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.label_match == first.label_match and again.params == first.params
    # and a build without any cache is the same model
    monkeypatch.undo()
    plain = _build(pool)
    np.testing.assert_allclose(ns.predictive(plain)[0], ns.predictive(first)[0])


def test_another_pool_reuses_the_fit_of_the_same_known_table(tmp_path, monkeypatch) -> None:
    pool, _, _ = _pool()
    _build(pool, kf.KnownFitCache(tmp_path))
    other, _, _ = _pool(seed=0, n=200)  # the same known crystals (seeded), another pool size
    _no_fit(monkeypatch)
    state = _build(other, kf.KnownFitCache(tmp_path), known=pool.known)
    assert len(state.pool_prior) == 200


def test_a_changed_known_table_or_setting_is_fitted_again(tmp_path) -> None:
    pool, _, _ = _pool()
    _build(pool, kf.KnownFitCache(tmp_path))
    changed = ns.KnownData(
        pool.known.ids, pool.known.embedding, pool.known.values + np.where(np.arange(len(pool.known)) == 5, 0.1, 0.0)
    )
    changed.prior_mean = pool.known.prior_mean
    _build(pool, kf.KnownFitCache(tmp_path), known=changed)
    _build(pool, kf.KnownFitCache(tmp_path), settings=ns.NeighbourSettings(8, 5, min_labelled=0))
    assert len(list(tmp_path.glob("known-*.arrays"))) == 3


@pytest.mark.parametrize("damage", ["residuals", "params", "nan"])
def test_a_tampered_cache_file_is_refused_and_refitted(tmp_path, damage) -> None:
    pool, _, _ = _pool()
    first = _build(pool, kf.KnownFitCache(tmp_path))
    (path,) = tmp_path.glob("known-*.arrays")
    meta, arrays = open_arrays(path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    if damage == "residuals":
        arrays["residuals"] = arrays["residuals"] + 0.5
    elif damage == "params":
        meta["params"] = [v * 2 for v in meta["params"]]
    else:
        arrays["points"][0, 0] = np.nan
    write_arrays(path, arrays, meta)
    cache = kf.KnownFitCache(tmp_path)
    again = _build(pool, cache)
    assert len(cache.notices) == 1 and "refitted the known data" in cache.notices[0]
    np.testing.assert_allclose(ns.predictive(again)[0], ns.predictive(first)[0])
    assert kf.load(path, meta["key"], SETTINGS, len(pool.known))[0] is not None  # rewritten whole


def _new_campaign(folder, tmp_path, strategy):
    from screening.bo.campaign import StopRules
    from screening.objectives.bandgap.campaign_dir import create_pool_campaign

    return create_pool_campaign(
        folder, tmp_path / "pool.parquet", 2.5, 0.01, strategy, stop=StopRules(), known_path=tmp_path / "known.parquet"
    )


def test_a_campaign_with_known_data_keeps_the_fit_in_the_user_cache(tmp_path, monkeypatch) -> None:
    from test_objectives_bandgap import synthetic_pool_frame

    from screening.bo.strategy import Strategy

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    frame = synthetic_pool_frame(400, seed=3)
    frame.iloc[:300].to_parquet(tmp_path / "pool.parquet")
    frame.iloc[300:].to_parquet(tmp_path / "known.parquet")
    strategy = Strategy(surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6)
    cd = _new_campaign(tmp_path / "a", tmp_path, strategy)
    first = cd.campaign.ask(2)
    cd.campaign.close()
    cached = tmp_path / "xdg" / "matscreen" / "known_fits"
    assert len(list(cached.glob("known-*.arrays"))) == 1
    # the second campaign over the same pool and table starts from the cached zero-result model:
    # no known-data fit and no build at all
    _no_fit(monkeypatch)
    monkeypatch.setattr(ns, "build_state", lambda *a, **k: pytest.fail("the model was built again"))
    cd = _new_campaign(tmp_path / "b", tmp_path, strategy)
    assert cd.campaign.ask(2) == first
    assert cd.campaign.notices() == []
    cd.campaign.close()
    assert (tmp_path / "b" / "neighbour_state.arrays").is_file()  # and keeps its own copy
    # a damaged cached start is not used: the model is built again, with a note
    (start,) = [p for p in cached.glob("start-*.arrays") if not p.stem.endswith("_base")]
    meta, arrays = open_arrays(start)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays["gp_mean"] = arrays["gp_mean"] + 0.3
    write_arrays(start, arrays, meta)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cd = _new_campaign(tmp_path / "c", tmp_path, strategy)
    assert cd.campaign.ask(2) == first
    notes = cd.campaign.notices()
    cd.campaign.close()
    assert len(notes) == 1 and "cached start" in notes[0], notes
