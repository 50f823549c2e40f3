"""Chaining commands: what `featurize` and `reduce` write, `search` and `campaign new` read, with
the oracle column named by --label (CGCNN id_prop.csv labels arrive as `target`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar
from test_objectives_bandgap import synthetic_pool_frame
from typer.testing import CliRunner

from screening.cli import app

runner = CliRunner()
PAIRS = [("Na", "Cl"), ("K", "Br"), ("Mg", "O"), ("Li", "F"), ("Ca", "S"), ("Rb", "I"), ("Cs", "Cl"), ("Sr", "Se")]


def _invoke(args: list[str]):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def poscar_folder(tmp_path_factory) -> Path:
    """A CGCNN-style folder of 24 POSCARs with an id_prop.csv (labels become a `target` column)."""
    folder = tmp_path_factory.mktemp("chain") / "poscars"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for k in range(24):
        a, b = PAIRS[k % len(PAIRS)]
        s = Structure(Lattice.cubic(3.8 + 0.1 * k), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        Poscar(s).write_file(folder / f"c{k:02d}.vasp")
        rows.append(f"c{k:02d},{rng.uniform(0.5, 6.0):.3f}")
    (folder / "id_prop.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def reduced(poscar_folder: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("chain-out")
    emb = work / "emb.parquet"
    _invoke(["featurize", poscar_folder, "-o", emb, "--workers", "0", "--no-cache"])
    pcs = work / "pcs.parquet"
    _invoke(["reduce", emb, "-o", pcs, "-k", "3"])
    return pcs


def test_reduce_output_keeps_embeddings_and_labels(reduced: Path) -> None:
    frame = pd.read_parquet(reduced)
    assert len(frame) == 24
    assert {"pc_1", "pc_2", "pc_3", "target", "pred_band_gap"} <= set(frame.columns)
    assert len([c for c in frame.columns if c.startswith("emb_")]) == 128


@pytest.mark.slow
def test_search_on_a_reduced_file_with_label_target(reduced: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(reduced)
    goal = float(frame["target"].iloc[5])
    out = tmp_path / "search"
    args = ["search", "--pool", reduced, "--label", "target", "--target", goal, "--tol", 0.001]
    res = _invoke([*args, "--n-prior", 3, "--budget", 24, "--surrogate", "gp", "--no-prior-mean", "-o", out])
    assert "first hit" in res.output
    hist = pd.read_csv(out / "history.csv")
    truth = dict(zip(frame["id"], frame["target"]))
    # the oracle's answers are the id_prop.csv labels (history.csv shows eV to 4 decimals)
    np.testing.assert_allclose(hist["band_gap_eV"].to_numpy(), [truth[p] for p in hist["id"]], atol=5e-5)


def test_campaign_new_with_label_survives_reopening(reduced: Path, tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    _invoke(["campaign", "new", lab, "--pool", reduced, "--label", "target", "--target", 2.0, "--tol", 0.1])
    ask = _invoke(["campaign", "ask", lab, "-o", tmp_path / "ask.csv"])  # reopens with the stored label
    assert len(pd.read_csv(tmp_path / "ask.csv")) == 1, ask.output
    from screening.bo.store import CampaignStore

    with CampaignStore.open(lab / "campaign.sqlite") as store:
        assert store.config["extra"]["label"] == "target"


def test_missing_label_column_names_it_and_the_columns(tmp_path: Path) -> None:
    frame = synthetic_pool_frame(60).rename(columns={"band_gap": "gap_hse"})
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    res = runner.invoke(app, ["search", "--pool", str(path), "--target", "2.5", "-o", str(tmp_path / "a")])
    assert res.exit_code == 1 and "band_gap" in res.output
    res = runner.invoke(
        app, ["search", "--pool", str(path), "--label", "gap_pbe", "--target", "2.5", "-o", str(tmp_path / "b")]
    )
    assert res.exit_code == 1 and "'gap_pbe'" in res.output and "gap_hse" in res.output
    res = runner.invoke(
        app,
        [
            "search",
            "--pool",
            str(path),
            "--label",
            "gap_hse",
            "--target",
            "2.5",
            "--budget",
            "3",
            "-o",
            str(tmp_path / "c"),
            "--until",
            "budget",
        ],
    )
    assert res.exit_code == 0, res.output


def test_prior_mean_default_is_the_same_for_search_and_campaign(tmp_path: Path) -> None:
    """With --surrogate gp and a pool that has pred_band_gap, both commands use the prior mean."""
    frame = synthetic_pool_frame(80)
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    _invoke(["campaign", "new", tmp_path / "c", "--pool", path, "--target", 2.5, "--surrogate", "gp"])
    _invoke(["search", "--pool", path, "--target", 2.5, "--surrogate", "gp", "--budget", 1, "-o", tmp_path / "s"])
    from screening.bo.store import CampaignStore

    flags = []
    for run in ("c", "s"):
        with CampaignStore.open(tmp_path / run / "campaign.sqlite") as store:
            flags.append(json.dumps(store.config["strategy"].get("use_prior")))
    assert flags == ["true", "true"]
