"""The pending picks' effect that `campaign tell` saves for the next `ask --new` (pending_effect.py):
read only where it is the effect of exactly the pending picks on exactly the saved model, and
the picks are those of an `ask --new` that computes it itself."""

from __future__ import annotations

import numpy as np
import pytest
from test_pool_snapshot import _new, write_tables

from screening.bo import neighbour_search as ns
from screening.bo import pending_effect as pe
from screening.bo.campaign import PENDING_EFFECT_NAME
from screening.io.array_file import open_arrays, write_arrays
from screening.objectives.bandgap.campaign_dir import open_campaign_dir


@pytest.fixture()
def tables(tmp_path, monkeypatch):
    monkeypatch.setenv("MATSCREEN_NO_CACHE", "1")  # no user cache: each campaign builds its own model
    return write_tables(tmp_path)


def _told(folder, tables, prepare: bool) -> None:
    """A new campaign, its first ask, the result told and the model extended, as `campaign tell`
    does; with ``prepare``, the next ask's effect saved too."""
    _new(folder, tables)
    cd = open_campaign_dir(folder)
    first = cd.campaign.ask()
    cd.campaign.close()
    cd = open_campaign_dir(folder)
    cd.campaign.tell(first, [2.45])
    assert cd.campaign.extend_saved_model()
    if prepare:
        assert cd.campaign.prepare_new_ask()
    cd.campaign.close()


def _ask_then_new(folder, monkeypatch) -> tuple[list, list, int]:
    """The next ask, then `ask --new` while its pick is pending (each a new open, as a new
    process); and how often the `--new` computed the pending pick's effect itself."""
    cd = open_campaign_dir(folder)
    second = cd.campaign.ask()
    cd.campaign.close()
    calls: list[int] = []
    real = ns.believed_effect
    monkeypatch.setattr(ns, "believed_effect", lambda *a: calls.append(1) or real(*a))
    cd = open_campaign_dir(folder)
    third = cd.campaign.ask(fresh=True)
    cd.campaign.close()
    monkeypatch.undo()
    return second, third, len(calls)


def test_ask_new_reads_the_effect_tell_saved_and_picks_what_it_would_compute(tmp_path, tables, monkeypatch) -> None:
    _told(tmp_path / "saved", tables, prepare=True)
    assert (tmp_path / "saved" / PENDING_EFFECT_NAME).is_file()
    _told(tmp_path / "plain", tables, prepare=False)
    second, third, computed = _ask_then_new(tmp_path / "saved", monkeypatch)
    assert computed == 0  # read, not computed
    plain = _ask_then_new(tmp_path / "plain", monkeypatch)
    assert (second, third) == plain[:2] and plain[2] == 1
    # a tell now (nothing new): the effect of both pending picks saved, then not computed again
    path = tmp_path / "plain" / PENDING_EFFECT_NAME
    assert not path.exists()
    cd = open_campaign_dir(tmp_path / "plain")
    assert cd.campaign.extend_saved_model() and cd.campaign.prepare_new_ask()
    stamp = path.stat().st_ino, path.stat().st_mtime_ns
    assert cd.campaign.prepare_new_ask() and (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    cd.campaign.close()


def test_a_tampered_effect_is_not_read_and_the_picks_are_the_same(tmp_path, tables, monkeypatch) -> None:
    _told(tmp_path / "saved", tables, prepare=True)
    path = tmp_path / "saved" / PENDING_EFFECT_NAME
    meta, arrays = open_arrays(path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays["mean"] = arrays["mean"] + 0.5  # well-formed, finite, not what the campaign wrote
    write_arrays(path, arrays, meta)
    second, third, computed = _ask_then_new(tmp_path / "saved", monkeypatch)
    assert computed == 1
    _told(tmp_path / "plain", tables, prepare=False)
    assert (second, third) == _ask_then_new(tmp_path / "plain", monkeypatch)[:2]


def test_an_effect_of_an_older_model_is_not_read(tmp_path, tables, monkeypatch) -> None:
    """The effect saved, then another result told into the model without a new effect: the file
    and its digest are intact but name the model before that result."""
    _told(tmp_path / "saved", tables, prepare=True)
    _told(tmp_path / "plain", tables, prepare=False)
    frame = tables[2]
    for folder in ("saved", "plain"):
        cd = open_campaign_dir(tmp_path / folder)
        cd.campaign.tell([str(frame["id"].iloc[120])], [2.52], source="prior")
        assert cd.campaign.extend_saved_model()
        cd.campaign.close()
    second, third, computed = _ask_then_new(tmp_path / "saved", monkeypatch)
    assert computed == 1
    assert (second, third) == _ask_then_new(tmp_path / "plain", monkeypatch)[:2]


def _effect(n: int = 3) -> pe.PendingEffect:
    rows, changed = np.array([4, 1]), np.arange(n, dtype=np.int64)
    return pe.PendingEffect("state", "basis", rows, np.array([2.5, 2.4]), changed, np.full(n, 2.0), np.full(n, 0.3))


def test_a_saved_effect_is_read_back_only_whole_and_under_its_digest(tmp_path) -> None:
    path = tmp_path / "effect.arrays"
    digest = pe.save(path, _effect())
    back = pe.load(path, digest, n_pool=10)
    assert back is not None and back.applies([4, 1], np.array([2.5, 2.4]))
    assert pe.load(path, None, 10) is None and pe.load(path, "0" * 40, 10) is None
    assert pe.load(path, digest, n_pool=4) is None  # a row outside the pool
    bad = _effect()
    bad.std[1] = np.nan
    assert pe.load(path, pe.save(path, bad), 10) is None  # even under its own digest


def test_an_effect_applies_only_to_the_same_rows_in_order_at_the_same_means_to_the_bit() -> None:
    effect = _effect()
    assert effect.applies([4, 1], np.array([2.5, 2.4]))
    assert not effect.applies([1, 4], np.array([2.4, 2.5]))
    assert not effect.applies([4], np.array([2.5]))
    assert not effect.applies([4, 1], np.array([2.5, np.nextafter(2.4, 3.0)]))


def test_a_tell_never_fails_for_the_effect(tmp_path, tables, monkeypatch) -> None:
    from screening.bo.campaign import Campaign
    from screening.bo.strategy import StrategyError

    _told(tmp_path / "c", tables, prepare=False)

    def exhausted(self, n):
        raise StrategyError("the pool is exhausted: every candidate has been evaluated or is pending")

    monkeypatch.setattr(Campaign, "_propose", exhausted)
    cd = open_campaign_dir(tmp_path / "c")
    assert cd.campaign.prepare_new_ask() is False
    cd.campaign.close()
    assert not (tmp_path / "c" / PENDING_EFFECT_NAME).exists()
