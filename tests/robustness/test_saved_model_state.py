"""The saved search model is trusted by its contents, not its file name (issue 27, item 1).

A campaign keeps the content digest of the model files it wrote in its own store. A tampered,
swapped or foreign file — or one built from other results — is rebuilt with one line saying why,
and the suggestions equal those of a campaign that never had the file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the synthetic pool of the main suite
from test_objectives_bandgap import synthetic_pool_frame  # noqa: E402

from screening.bo import neighbour_search as ns  # noqa: E402
from screening.bo.campaign import NEIGHBOUR_STATE_NAME, StopRules  # noqa: E402
from screening.bo.strategy import Strategy  # noqa: E402
from screening.io.array_file import open_arrays, write_arrays  # noqa: E402
from screening.objectives.bandgap.campaign_dir import create_pool_campaign, open_campaign_dir  # noqa: E402

STRATEGY = Strategy(surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6)


@pytest.fixture(scope="module")
def pool_path(tmp_path_factory) -> tuple[Path, np.ndarray, list[str]]:
    frame = synthetic_pool_frame(300, seed=2)
    path = tmp_path_factory.mktemp("pool") / "pool.parquet"
    frame.to_parquet(path)
    return path, frame["band_gap"].to_numpy(), [str(i) for i in frame["id"]]


def _campaign(folder: Path, pool: Path, told: dict[str, float]):
    cd = create_pool_campaign(folder, pool, 2.5, 0.01, STRATEGY, stop=StopRules())
    cd.campaign.tell(list(told), list(told.values()), source="prior")
    return cd


def _ask(folder: Path) -> tuple[list, list[str], dict]:
    cd = open_campaign_dir(folder)
    picks = cd.campaign.ask(3)
    pred = cd.campaign.predictive(picks)
    notes = cd.campaign.notices()
    cd.campaign.close()
    return picks, notes, pred


def _told(ids: list[str], gap: np.ndarray, shift: float = 0.0) -> dict[str, float]:
    return {ids[i]: float(gap[i]) + shift for i in (3, 40, 77, 120, 200)}


def _fresh(tmp_path: Path, pool: Path, told: dict[str, float]) -> list:
    _campaign(tmp_path / "fresh", pool, told).campaign.close()
    picks, notes, _ = _ask(tmp_path / "fresh")
    assert notes == []  # nothing saved yet: nothing to say
    return picks


def _tamper(path: Path, name: str, change) -> None:
    meta, arrays = open_arrays(path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays[name] = change(arrays[name])
    write_arrays(path, arrays, meta)


@pytest.mark.parametrize(
    ("file", "array", "change"),
    [
        ("state", "gp_mean", lambda a: np.where(np.arange(a.size) == 7, np.nan, a)),
        ("state", "gp_var", lambda a: a * 0.01),
        ("base", "pool_prior", lambda a: a + np.where(np.arange(a.size) % 2 == 0, 1.0, 0.0)),
    ],
    ids=["nan-mean", "edited-variance", "edited-prior"],
)
def test_a_tampered_state_file_is_rebuilt_with_a_line_saying_why(tmp_path, pool_path, file, array, change) -> None:
    pool, gap, ids = pool_path
    told = _told(ids, gap)
    _campaign(tmp_path / "c", pool, told).campaign.close()
    first, _, _ = _ask(tmp_path / "c")  # writes the model files and their seal
    state_file = tmp_path / "c" / NEIGHBOUR_STATE_NAME
    _tamper(state_file if file == "state" else ns.base_path(state_file), array, change)
    # the pending picks come back first; a second, new batch reads the model
    cd = open_campaign_dir(tmp_path / "c")
    again = cd.campaign.ask(3, fresh=True)
    notes = cd.campaign.notices()
    mean = cd.campaign.predictive(again)["mean"]
    cd.campaign.close()
    assert len(notes) == 1 and "not what this campaign wrote" in notes[0], notes
    assert np.all(np.isfinite(mean))
    # the same as a campaign that never had a file: asked the same pending points, then a new batch
    _campaign(tmp_path / "f", pool, told).campaign.close()
    cd = open_campaign_dir(tmp_path / "f")
    assert cd.campaign.ask(3) == first
    assert cd.campaign.ask(3, fresh=True) == again
    cd.campaign.close()


def test_a_state_that_is_internally_wrong_is_refused_even_without_a_seal(tmp_path, pool_path) -> None:
    """A library caller's file (no campaign seal) still gets the finiteness and shape checks."""
    pool, gap, ids = pool_path
    _campaign(tmp_path / "c", pool, _told(ids, gap)).campaign.close()
    _ask(tmp_path / "c")
    path = tmp_path / "c" / NEIGHBOUR_STATE_NAME
    meta, _ = open_arrays(path)
    settings = ns.NeighbourSettings(*[int(v) if i < 4 else v for i, v in enumerate(meta["settings"])])
    assert ns.load_checked(path, meta["key"], settings, None, sealed=False)[0] is not None
    _tamper(path, "gp_ni", lambda a: a + 10**6)
    state, why = ns.load_checked(path, meta["key"], settings, None, sealed=False)
    assert state is None and "neighbour index" in why


def test_a_re_created_campaign_never_reads_the_previous_ones_model(tmp_path, pool_path) -> None:
    """The realistic path: wrong values told, the store deleted to fix them, the campaign created
    again in the same folder and the corrected values told. Its first ask must not reuse the old
    residuals (before, it did: 40 candidates' scores differed from a fresh folder)."""
    pool, gap, ids = pool_path
    wrong, right = _told(ids, gap, shift=1.5), _told(ids, gap)
    _campaign(tmp_path / "c", pool, wrong).campaign.close()
    _ask(tmp_path / "c")
    assert (tmp_path / "c" / NEIGHBOUR_STATE_NAME).is_file()
    for p in (tmp_path / "c").glob("campaign.sqlite*"):
        p.unlink()
    _campaign(tmp_path / "c", pool, right).campaign.close()
    picks, notes, pred = _ask(tmp_path / "c")
    assert len(notes) == 1 and "not written by this campaign" in notes[0], notes
    expected = _fresh(tmp_path, pool, right)
    assert picks == expected
    cd = open_campaign_dir(tmp_path / "fresh")
    fresh_pred = cd.campaign.predictive(picks)
    cd.campaign.close()
    np.testing.assert_allclose(pred["mean"], fresh_pred["mean"])


def test_a_model_copied_from_another_campaign_on_the_same_pool_is_rebuilt(tmp_path, pool_path) -> None:
    pool, gap, ids = pool_path
    _campaign(tmp_path / "other", pool, _told(ids, gap, shift=1.5)).campaign.close()
    _ask(tmp_path / "other")
    _campaign(tmp_path / "c", pool, _told(ids, gap)).campaign.close()
    _ask(tmp_path / "c")
    for name in (NEIGHBOUR_STATE_NAME, ns.base_path(Path(NEIGHBOUR_STATE_NAME)).name):
        shutil.copy(tmp_path / "other" / name, tmp_path / "c" / name)
    cd = open_campaign_dir(tmp_path / "c")
    cd.campaign.ask(2, fresh=True)
    notes = cd.campaign.notices()
    cd.campaign.close()
    assert len(notes) == 1 and "not what this campaign wrote" in notes[0], notes


def test_a_state_built_from_other_values_is_not_extended(tmp_path, pool_path) -> None:
    """Same rows, other values: the model is rebuilt from the values told, never extended."""
    pool, gap, ids = pool_path
    told = _told(ids, gap)
    cd = _campaign(tmp_path / "c", pool, told)
    frame_pool = cd.campaign.domain
    cd.campaign.close()
    settings = ns.NeighbourSettings(8, 6, min_labelled=0)
    rows = [frame_pool.index_of(i) for i in told]
    y = np.array(list(told.values()))
    emb = frame_pool.embedding if frame_pool.embedding is not None else frame_pool.features
    state = ns.update_state(None, settings, emb, frame_pool.prior_mean, None, rows, y, 0)
    assert ns.holds_prefix(state, rows, y) and not ns.holds_prefix(state, rows, y + 1.5)
    other = ns.update_state(state, settings, emb, frame_pool.prior_mean, None, rows, y + 1.5, 0)
    assert other is not state
    np.testing.assert_array_equal(other.told_y, y + 1.5)


def test_the_command_line_prints_the_rebuild_line(tmp_path, pool_path) -> None:
    from typer.testing import CliRunner

    from screening.cli import app

    pool, gap, ids = pool_path
    _campaign(tmp_path / "c", pool, _told(ids, gap)).campaign.close()
    _ask(tmp_path / "c")
    _tamper(tmp_path / "c" / NEIGHBOUR_STATE_NAME, "gp_mean", lambda a: a + 0.5)
    result = CliRunner().invoke(app, ["campaign", "ask", str(tmp_path / "c"), "--new", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "note: rebuilt the search model" in result.output
