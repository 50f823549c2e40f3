"""Featurised tables: one naming rule (CSV for .csv / .csv.gz, Parquet otherwise) for every command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from screening.cli.app import app
from screening.errors import MatscreenError, RecordError
from screening.io.tables import beside, read_table, row_label
from screening.objectives.bandgap.objective import load_known, load_pool
from tests.test_objectives_bandgap import synthetic_pool_frame


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from screening.atom_features import element_property_table
    from screening.models.cgcnn import CGCNNConfig, init_model, save_model

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(init_model(CGCNNConfig(h_fea_len=16, atom_fea_len=16, n_conv=1), element_property_table(), seed=3), path)
    return path


def _structure_table(path: Path) -> Path:
    from pymatgen.core import Lattice, Structure

    cifs = [
        Structure(Lattice.cubic(4.0 + 0.2 * k), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
        for k in range(5)
    ]
    cifs[2] = "data_broken\n_cell_length_a 4\n"  # one unreadable record: an error row, the rest goes on
    pd.DataFrame({"id": [f"x-{k}" for k in range(5)], "cif": cifs, "band_gap": np.linspace(0.5, 2.5, 5)}).to_csv(
        path, index=False
    )
    return path


def test_featurize_writes_the_format_the_output_name_says(tmp_path: Path, tiny_model: Path) -> None:
    from screening.featurize.featurizer import featurize_source

    source = _structure_table(tmp_path / "structures.csv")
    for name in ("pool.parquet", "pool.csv", "pool.csv.gz"):
        (tmp_path / "pool.errors.csv").unlink(missing_ok=True)
        summary = featurize_source(source, tmp_path / name, model=str(tiny_model), progress=False, cache_dir=None)
        assert summary["rows"] == 4 and summary["errors"] == 1
        assert summary["errors_path"] == str(tmp_path / "pool.errors.csv")  # not pool.csv.errors.csv
        assert "x-2" in (tmp_path / "pool.errors.csv").read_text()
    assert (tmp_path / "pool.parquet").read_bytes()[:4] == b"PAR1"
    assert (tmp_path / "pool.csv").read_text().startswith("id,")  # text, not Parquet bytes under a CSV name
    assert (tmp_path / "pool.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    parquet = pd.read_parquet(tmp_path / "pool.parquet")
    for name in ("pool.csv", "pool.csv.gz"):
        table = read_table(tmp_path / name, "pool")
        assert list(table.columns) == list(parquet.columns)
        pd.testing.assert_frame_equal(table, parquet, check_dtype=False, rtol=1e-6)


def test_a_csv_pool_and_known_table_read_as_the_parquet_ones(tmp_path: Path) -> None:
    frame = synthetic_pool_frame(90)
    frame["id"] = [f"{i:04d}" for i in range(90)]  # leading zeros: ids stay text in a CSV
    pool_part, known_part = frame.iloc[:60], frame.iloc[60:].reset_index(drop=True)
    pool_part.to_parquet(tmp_path / "pool.parquet", index=False)
    pool_part.to_csv(tmp_path / "pool.csv", index=False)
    known_part.to_parquet(tmp_path / "known.parquet", index=False)
    known_part.to_csv(tmp_path / "known.csv.gz", index=False)
    from_parquet, from_csv = load_pool(tmp_path / "pool.parquet"), load_pool(tmp_path / "pool.csv")
    assert list(from_csv.ids) == list(from_parquet.ids) and from_csv.ids[0] == "0000"
    np.testing.assert_allclose(from_csv.features, from_parquet.features, atol=1e-5)
    a, b = load_known(tmp_path / "known.parquet", from_parquet), load_known(tmp_path / "known.csv.gz", from_parquet)
    assert a.ids == b.ids and np.array_equal(a.values, b.values)
    np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-6)
    # A bad label names the row the way the user finds it: the third data row is a CSV's line 4.
    known_part.loc[2, "band_gap"] = np.nan
    known_part.to_csv(tmp_path / "bad.csv.gz", index=False)
    known_part.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(RecordError, match=r"line 4: band_gap") as err:
        load_known(tmp_path / "bad.csv.gz", from_parquet)
    assert "bad.csv.gz" in str(err.value) and "0062" in str(err.value)
    with pytest.raises(RecordError, match=r"row 3: band_gap"):
        load_known(tmp_path / "bad.parquet", from_parquet)


def test_a_table_whose_name_misstates_its_format_is_refused_with_the_rule(tmp_path: Path) -> None:
    synthetic_pool_frame(10).to_csv(tmp_path / "pool.parquet", index=False)
    with pytest.raises(MatscreenError, match=r"pool.parquet: cannot read pool as Parquet \(a CSV table must be named"):
        read_table(tmp_path / "pool.parquet", "pool")
    with pytest.raises(MatscreenError, match="known-data file not found"):
        read_table(tmp_path / "missing.csv", "known-data")
    assert row_label("a.CSV.GZ", 0) == "line 2" and row_label("a.parquet", 0) == "row 1"
    assert beside("d/pcs.csv.gz", ".pca.json") == Path("d/pcs.pca.json")
    assert beside("d/pcs.parquet", ".pca.json") == Path("d/pcs.pca.json")


def test_reduce_writes_csv_when_the_output_is_named_so(tmp_path: Path) -> None:
    synthetic_pool_frame(40).to_parquet(tmp_path / "emb.parquet", index=False)
    res = CliRunner().invoke(
        app, ["reduce", str(tmp_path / "emb.parquet"), "-o", str(tmp_path / "pcs.csv.gz"), "-k", "2"]
    )
    assert res.exit_code == 0, res.output
    out = read_table(tmp_path / "pcs.csv.gz", "reduced")
    assert {"pc_1", "pc_2", "emb_0", "band_gap"} <= set(out.columns) and len(out) == 40
    assert (tmp_path / "pcs.pca.json").is_file()


def test_screen_refuses_a_csv_output_name_before_any_work(tmp_path: Path) -> None:
    from screening.screen.run import screen_database
    from screening.screen.sources import ScreenError

    with pytest.raises(ScreenError, match=r"ranked.csv: screen writes a ranked Parquet table"):
        screen_database(tmp_path / "no-such-db.csv", 2.0, output=tmp_path / "ranked.csv")
    assert not list(tmp_path.iterdir())
