"""`matscreen featurize` and `matscreen reduce` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from screening.cli import app

runner = CliRunner()


def write_json_source(path):
    structures = {
        f"s{k}": Structure(Lattice.cubic(a), [el, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
        for k, (a, el) in enumerate([(5.64, "Na"), (6.29, "K"), (5.14, "Li"), (6.6, "Rb"), (4.1, "Cs")])
    }
    path.write_text(json.dumps(structures))


def test_featurize_json_with_default_model_then_reduce(tmp_path):
    source = tmp_path / "structs.json"
    write_json_source(source)
    out = tmp_path / "emb.parquet"
    result = runner.invoke(
        app, ["featurize", str(source), "-o", str(out), "--workers", "0", "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 5 rows" in result.output and "0 errors" in result.output
    frame = pd.read_parquet(out)
    assert len([c for c in frame.columns if c.startswith("emb_")]) == 128
    # NaCl-like chlorides: the shipped model predicts wide gaps
    assert (frame.pred_band_gap > 2.0).all()

    pcs = tmp_path / "pcs.parquet"
    result = runner.invoke(app, ["reduce", str(out), "-o", str(pcs), "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "explained variance" in result.output
    reduced = pd.read_parquet(pcs)
    assert {"pc_1", "pc_2"} <= set(reduced.columns)
    # the embeddings stay, so the reduced file is still a pool for `search` / `campaign new`
    assert [c for c in reduced.columns if c.startswith("emb_")] == [c for c in frame.columns if c.startswith("emb_")]
    assert (tmp_path / "pcs.pca.json").exists()
    assert np.isfinite(reduced[["pc_1", "pc_2"]].to_numpy()).all()


def test_featurize_rejects_a_radius_the_model_was_not_trained_with(tmp_path):
    source = tmp_path / "structs.json"
    write_json_source(source)
    result = runner.invoke(app, ["featurize", str(source), "-o", str(tmp_path / "e.parquet"), "--radius", "10"])
    assert result.exit_code != 0
    assert "radius" in result.output


def test_featurize_missing_source_names_the_path(tmp_path):
    result = runner.invoke(app, ["featurize", str(tmp_path / "nowhere"), "-o", str(tmp_path / "e.parquet")])
    assert result.exit_code != 0
    assert result.exit_code == 1 and "nowhere" in result.output
