"""--max-formation-energy: search, campaigns and screening among crystals predicted stable enough."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_featurize_outputs import multitask_model
from test_objectives_bandgap import synthetic_pool_frame
from test_screen import write_db
from typer.testing import CliRunner

from screening.atom_features import element_property_table
from screening.cli import app
from screening.models.cgcnn import CGCNNConfig, init_model
from screening.objectives.bandgap.campaign_dir import open_campaign_dir
from screening.objectives.bandgap.objective import PoolFileError, load_pool
from screening.screen.run import ScreenError, screen_database

runner = CliRunner()


def pool_with_formation_energy(tmp_path):
    frame = synthetic_pool_frame(300, seed=4)
    frame["pred_formation_energy_per_atom"] = np.linspace(-2.0, 1.0, len(frame))
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    return path, frame


def test_pool_keeps_only_crystals_predicted_stable_enough(tmp_path) -> None:
    path, frame = pool_with_formation_energy(tmp_path)
    pool = load_pool(path, max_formation_energy=0.0)
    stable = frame[frame.pred_formation_energy_per_atom <= 0.0]
    assert list(pool.frame["id"]) == list(stable["id"]) and len(stable) < len(frame)
    with pytest.raises(PoolFileError, match="no crystal has"):
        load_pool(path, max_formation_energy=-5.0)
    frame.drop(columns="pred_formation_energy_per_atom").to_parquet(tmp_path / "single.parquet")
    with pytest.raises(PoolFileError, match="no pred_formation_energy_per_atom column"):
        load_pool(tmp_path / "single.parquet", max_formation_energy=0.0)


def test_search_and_campaign_never_propose_an_unstable_crystal(tmp_path) -> None:
    path, frame = pool_with_formation_energy(tmp_path)
    unstable = set(frame.loc[frame.pred_formation_energy_per_atom > 0.0, "id"])
    target = float(frame.loc[frame.pred_formation_energy_per_atom <= 0.0, "band_gap"].iloc[5])
    out = tmp_path / "run"
    args = ["search", "--pool", str(path), "--target", str(target), "--n-prior", "10", "--budget", "15"]
    res = runner.invoke(app, [*args, "--until", "budget", "--max-formation-energy", "0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 25 and not set(history["id"].astype(str)) & unstable
    # the limit is stored with the campaign and applied again on reopening
    assert len(open_campaign_dir(out).pool.frame) == len(frame) - len(unstable)

    res = runner.invoke(
        app,
        ["campaign", "new", str(tmp_path / "c"), "--pool", str(path), "--target", "2.0", "--max-formation-energy", "0"],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["campaign", "ask", str(tmp_path / "c"), "-n", "4"])
    assert res.exit_code == 0, res.output
    asked = next(p for p in (tmp_path / "c").glob("ask-*.csv"))
    ids = set(pd.read_csv(asked, comment="#")["id"].astype(str))
    assert len(ids) == 4 and not ids & unstable


def test_screen_ranks_only_crystals_predicted_stable_enough(tmp_path) -> None:
    db = write_db(tmp_path / "db.csv", n=24)
    model = multitask_model()
    full = screen_database(db, 2.0, 0.1, model, tmp_path / "all.parquet", chunk_size=10, workers=0, progress=False)
    everything = pd.read_parquet(full.output)
    limit = float(np.median(everything.pred_formation_energy_per_atom))
    kept = screen_database(
        db,
        2.0,
        0.1,
        model,
        tmp_path / "all.parquet",
        chunk_size=10,
        workers=0,
        progress=False,
        max_formation_energy=limit,
    )
    ranked = pq.read_table(kept.output).to_pandas()
    expected = everything[everything.pred_formation_energy_per_atom <= limit]
    assert kept.chunks_computed == []  # the same chunks, re-ranked without featurizing again
    assert kept.rows == len(expected) and kept.filtered_out == len(everything) - len(expected)
    assert list(ranked["id"]) == list(expected["id"])  # same order: the ranking among the kept rows
    assert list(ranked["rank"]) == list(range(1, len(expected) + 1))
    # a single-output model has no formation energy to filter on: a clear error, not an unfiltered ranking
    one = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=0)
    with pytest.raises(ScreenError, match="pred_formation_energy_per_atom"):
        screen_database(
            db,
            2.0,
            0.1,
            one,
            tmp_path / "single.parquet",
            chunk_size=10,
            workers=0,
            progress=False,
            max_formation_energy=0.0,
        )


def test_screen_runs_a_shipped_models_branches_only_for_the_filter(tmp_path, monkeypatch) -> None:
    """Without --max-formation-energy the property branches would only slow screening down; with
    it, the filtered column is the branch's, as featurize writes it."""
    from test_property_branch import EF, branch_for

    from screening.featurize import registry
    from screening.models.cgcnn import save_model
    from screening.models.property_branch import save_branch

    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    save_model(multitask_model(), shipped / "gap_model.safetensors")
    save_branch(branch_for(multitask_model()), shipped / "gap_model_ef.safetensors")
    monkeypatch.setenv("MATSCREEN_PRETRAINED", str(shipped))
    monkeypatch.setitem(registry.SHIPPED_BRANCHES, "gap_model", {EF: "gap_model_ef"})
    db = write_db(tmp_path / "db.csv", n=12)
    kwargs = dict(chunk_size=6, workers=0, progress=False)
    plain = screen_database(db, 2.0, 0.1, "gap_model", tmp_path / "plain.parquet", **kwargs)
    filtered = screen_database(db, 2.0, 0.1, "gap_model", tmp_path / "f.parquet", max_formation_energy=99.0, **kwargs)
    a, b = (pd.read_parquet(s.output).set_index("id").sort_index() for s in (plain, filtered))
    own = screen_database(db, 2.0, 0.1, multitask_model(), tmp_path / "own.parquet", **kwargs)
    c = pd.read_parquet(own.output).set_index("id").sort_index()
    np.testing.assert_allclose(a["pred_formation_energy_per_atom"], c["pred_formation_energy_per_atom"])
    np.testing.assert_allclose(a["pred_band_gap"], b["pred_band_gap"])
    assert not np.allclose(a["pred_formation_energy_per_atom"], b["pred_formation_energy_per_atom"])
