"""A campaign learns the lab's scale from its results: the map moves the suggestions and is shown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_objectives_bandgap import synthetic_pool_frame
from typer.testing import CliRunner

from screening.bo.campaign import StopRules
from screening.bo.domain import DiscretePool
from screening.bo.known_fit import KnownData
from screening.bo.strategy import Strategy, Target
from screening.bo.suggest import suggest_pool
from screening.cli import app
from screening.objectives.bandgap.campaign_dir import create_pool_campaign, open_campaign_dir, write_report

runner = CliRunner()


def _lab_pool(tmp_path, n: int = 300):
    """A pool whose lab measures 1.0 + 1.3 x the DFT gap the network predicts."""
    frame = synthetic_pool_frame(n, seed=4)
    frame["lab_gap"] = 1.0 + 1.3 * frame["band_gap"]
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    return path, frame


def _tell(cd, frame, ids, column="lab_gap"):
    values = dict(zip(frame["id"], frame[column]))
    cd.campaign.tell(list(ids), [float(values[i]) for i in ids])


def test_told_shifted_values_move_the_next_suggestions_and_the_map_is_reported(tmp_path) -> None:
    path, frame = _lab_pool(tmp_path)
    target = 4.3  # lab units: a crystal the network predicts near (4.3 - 1.0) / 1.3 = 2.54 eV
    learned = create_pool_campaign(tmp_path / "learn", path, target, 0.05, Strategy(surrogate="neighbour"), 0, 4)
    frozen = create_pool_campaign(
        tmp_path / "frozen", path, target, 0.05, Strategy(surrogate="neighbour", learn_map=False), 0, 4
    )
    first = list(np.random.default_rng(0).choice(frame["id"], 8, replace=False))
    for cd in (learned, frozen):
        _tell(cd, frame, first)
    ask_l = learned.campaign.ask(4)
    ask_f = frozen.campaign.ask(4)
    pred = dict(zip(frame["id"], frame["pred_band_gap"]))
    lab = dict(zip(frame["id"], frame["lab_gap"]))
    # the frozen search still ranks by the prediction (4.3 eV: wrong crystals); the learned one by the map
    assert np.mean([abs(lab[i] - target) for i in ask_l]) < 0.3
    assert np.mean([abs(lab[i] - target) for i in ask_f]) > 1.0
    post = learned.campaign.predictive(ask_l)
    assert np.all(np.abs(post["mean"] - np.array([pred[i] for i in ask_l])) > 0.5)  # mean_eV is not the prediction
    m = learned.campaign.learned_map()
    assert m.slope == pytest.approx(1.3, abs=0.2) and m.n == 8
    assert frozen.campaign.learned_map() is None
    # the report draws it and summary.json states it
    paths = write_report(open_campaign_dir(tmp_path / "learn"))
    assert paths["learned_map"].is_file()
    info = json.loads(paths["summary"].read_text())
    assert info["learned_map"]["n"] == 8 and "measured ≈" in info["learned_map"]["text"]


def test_the_cli_shows_the_map_in_status_and_ask(tmp_path) -> None:
    path, frame = _lab_pool(tmp_path)
    lab = tmp_path / "lab"
    res = runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(path), "--target", "4.3", "--tol", "0.05"])
    assert res.exit_code == 0, res.output
    ids = frame["id"].iloc[:6]
    pd.DataFrame({"id": ids, "band_gap": frame["lab_gap"].iloc[:6]}).to_csv(tmp_path / "r.csv", index=False)
    assert runner.invoke(app, ["campaign", "tell", str(lab), str(tmp_path / "r.csv")]).exit_code == 0
    status = runner.invoke(app, ["campaign", "status", str(lab)])
    assert status.exit_code == 0 and "learned map" in status.output and "from 6 results" in status.output
    as_json = json.loads(runner.invoke(app, ["campaign", "status", str(lab), "--json"]).output)
    assert as_json["learned_map"]["n"] == 6 and as_json["learned_map"]["slope"] > 1.1
    ask = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "a.csv")])
    assert ask.exit_code == 0 and "learned map: measured ≈" in ask.output
    rows = pd.read_csv(tmp_path / "a.csv")
    assert "map_eV" in rows.columns and np.all(rows["map_eV"] > rows["pred_band_gap_eV"] + 0.5)


def test_same_quantity_known_data_with_local_structure_search_as_before(tmp_path) -> None:
    """When the base model holds the results itself (known data of the campaign's own quantity,
    enough of them for local structure), the learned map does not apply: the same picks."""
    frame = synthetic_pool_frame(400, seed=5)
    pool_f, known_f = frame.iloc[:150], frame.iloc[150:]
    emb = [c for c in frame.columns if c.startswith("emb_")]
    known = KnownData(
        known_f["id"].tolist(),
        known_f[emb].to_numpy(),
        known_f["band_gap"].to_numpy(),
        known_f["pred_band_gap"].to_numpy(),
    )
    pool = DiscretePool(
        pool_f["id"].tolist(),
        pool_f[emb].to_numpy()[:, :3],
        prior_mean=pool_f["pred_band_gap"].to_numpy(),
        embedding=pool_f[emb].to_numpy(),
        known=known,
    )
    told = pool.ids[:5]
    y = pool_f["band_gap"].to_numpy()[:5]
    picks = {}
    for learn in (True, False):
        s = Strategy(surrogate="neighbour", neighbour_min_labelled=50, learn_map=learn)
        picks[learn] = suggest_pool(
            s, pool, told, y, np.abs(y - 2.5), q=3, seed=1, target=Target(2.5, 0.05), hyper_cache={}
        )
    assert picks[True] == picks[False]


def test_a_pool_without_predictions_learns_from_its_results(tmp_path) -> None:
    """No pred_band_gap: the search is a GP over the embedding's principal components, not random."""
    frame = synthetic_pool_frame(400, seed=6).drop(columns=["pred_band_gap"])
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    target = float(np.quantile(frame["band_gap"], 0.7))
    cd = create_pool_campaign(tmp_path / "c", path, target, 0.02, Strategy(surrogate="neighbour"), 0, 1, StopRules())
    gaps = dict(zip(frame["id"], frame["band_gap"]))
    rng = np.random.default_rng(0)
    prior = [i for i in rng.permutation(frame["id"]) if abs(gaps[i] - target) > 0.3][:30]
    cd.campaign.tell(prior, [gaps[i] for i in prior], source="prior")
    picks = []
    for _ in range(5):
        (p,) = cd.campaign.ask(1)
        picks.append(p)
        cd.campaign.tell([p], [gaps[p]])
    best = min(abs(gaps[p] - target) for p in picks)
    # five random picks land within 0.03 eV of the target 15 % of the time; the GP does
    assert best < 0.03
    post = cd.campaign.predictive(list(frame["id"][:50]))
    assert np.std(post["mean"]) > 0.1  # not one predictive distribution for every candidate


def test_known_label_names_a_column_of_the_known_data(tmp_path) -> None:
    path, frame = _lab_pool(tmp_path)
    known = synthetic_pool_frame(100, seed=9)
    known["id"] = [f"k-{i}" for i in range(100)]
    known.to_parquet(tmp_path / "known.parquet")
    base = ["campaign", "new", str(tmp_path / "c"), "--pool", str(path), "--target", "4.3"]
    res = runner.invoke(app, [*base, "--known", str(tmp_path / "known.parquet"), "--known-label", "dft_gap"])
    assert res.exit_code == 1 and "known.parquet" in res.output and "dft_gap" in res.output
    assert "--known-label" in res.output and not (tmp_path / "c").exists()
    res = runner.invoke(app, [*base, "--known-label", "band_gap"])
    assert res.exit_code == 1 and "give --known too" in res.output
    ok = runner.invoke(app, [*base, "--known", str(tmp_path / "known.parquet"), "--known-label", "band_gap"])
    assert ok.exit_code == 0, ok.output
    cd = open_campaign_dir(tmp_path / "c")
    assert cd.campaign.domain.known.same_quantity is False
