"""Results files a lab writes: the value column by its usual names, and refusals that name the line."""

from __future__ import annotations

import json

import pytest

from screening.io.lab_files import ResultsFileError, read_pool_results


@pytest.mark.parametrize("column", ["band_gap", "band_gap_eV", "BandGap", "gap_eV", "y"])
def test_the_value_column_is_found_by_its_usual_names(tmp_path, column) -> None:
    path = tmp_path / "r.csv"
    path.write_text(f"id,{column}\nmp-1,2.5\nmp-2,3.0\n")
    res = read_pool_results(path)
    assert res.points == ["mp-1", "mp-2"] and res.ys == [2.5, 3.0]


def test_a_file_with_two_value_columns_or_none_is_refused_naming_them(tmp_path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,band_gap,band_gap_eV\nmp-1,2.5,2.5\n")
    with pytest.raises(ResultsFileError, match="band_gap and band_gap_eV"):
        read_pool_results(path)
    path.write_text("id,value\nmp-1,2.5\n")
    with pytest.raises(ResultsFileError, match=r"has \['id', 'value'\]"):
        read_pool_results(path)


def test_a_blank_value_names_its_line(tmp_path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,band_gap_eV\nmp-1,2.5\nmp-2,\n")
    with pytest.raises(ResultsFileError, match=r"line 3: band_gap_eV is empty") as info:
        read_pool_results(path)
    assert "mp-2" in str(info.value)


# --- Ask files: what the pool says of each crystal, units in every name, and a column to fill in ---

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from test_objectives_bandgap import synthetic_pool_frame  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from screening.cli import app  # noqa: E402

runner = CliRunner()


def _lab_pool(tmp_path, described: bool = True):
    """A small featurised pool; ``described``: with the prototype, site count (float, as a Parquet
    column with a gap would hold it) and the network's formation energy, as a real pool has them."""
    frame = synthetic_pool_frame(120, seed=3).drop(columns=["band_gap"])  # the lab measures the gaps
    if described:
        rng = np.random.default_rng(0)
        frame["prototype"] = rng.choice(["rocksalt", "zincblende", "CsCl"], len(frame))
        frame["nsites"] = rng.choice([2.0, 8.0], len(frame))
        frame["pred_formation_energy_per_atom"] = rng.uniform(-3, 0.5, len(frame))
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    return path, frame


def _new_lab(tmp_path, pool, target: str = "2.5", *extra: str):
    lab = tmp_path / "lab"
    res = runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(pool), "--target", target, *extra])
    assert res.exit_code == 0, res.output
    return lab


def test_ask_files_carry_what_the_pool_has_with_units_in_every_name(tmp_path) -> None:
    pool, frame = _lab_pool(tmp_path)
    lab = _new_lab(tmp_path, pool, "2.5", "--batch", "3")
    res = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "ask.csv")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "ask.csv").read_text()
    ask = pd.read_csv(tmp_path / "ask.csv", dtype={"error": str})
    assert list(ask.columns) == [
        "id",
        "formula",
        "prototype",
        "n_sites",
        "pred_band_gap_eV",
        "pred_formation_energy_eV_per_atom",
        "mean_eV",
        "std_eV",
        "acquisition_score",
        "map_eV",
        "band_gap_eV",
        "error",
    ]
    rows = frame.set_index("id").loc[ask["id"]]
    assert list(ask["formula"]) == list(rows["formula"]) and list(ask["prototype"]) == list(rows["prototype"])
    assert list(ask["n_sites"]) == [int(v) for v in rows["nsites"]] and ".0," not in text.split("\n")[1]
    # eV values to 0.1 meV: the network's formation energy as the pool has it, rounded
    np.testing.assert_array_equal(
        ask["pred_formation_energy_eV_per_atom"], rows["pred_formation_energy_per_atom"].round(4)
    )
    assert ask["band_gap_eV"].isna().all() and ask["error"].isna().all()  # the lab's to fill in
    # the console table leaves the empty fill-in columns out
    shown = next(line.split() for line in res.output.splitlines() if line.split()[:1] == ["id"])
    assert "pred_formation_energy_eV_per_atom" in shown and not {"band_gap_eV", "error"} & set(shown)


def test_an_ask_file_names_only_the_columns_the_pool_has(tmp_path) -> None:
    pool, _ = _lab_pool(tmp_path, described=False)
    lab = _new_lab(tmp_path, pool)
    assert runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "ask.csv")]).exit_code == 0
    header = (tmp_path / "ask.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["id", "formula", "pred_band_gap_eV"]
    assert not {"prototype", "n_sites", "pred_formation_energy_eV_per_atom"} & set(header)


def test_an_ask_file_filled_in_by_the_lab_is_told_as_it_is(tmp_path) -> None:
    pool, _ = _lab_pool(tmp_path)
    lab = _new_lab(tmp_path, pool, "2.5", "--batch", "2", "--tol", "0.01")
    ask_path = tmp_path / "ask.csv"
    assert runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(ask_path)]).exit_code == 0
    ask = pd.read_csv(ask_path, dtype={"error": str}, keep_default_na=False)
    ask["band_gap_eV"] = ["2.54", ""]
    ask["error"] = ["", "sample cracked"]
    ask.to_csv(ask_path, index=False)  # as a spreadsheet saves it
    told = runner.invoke(app, ["campaign", "tell", str(lab), str(ask_path)])
    assert told.exit_code == 0, told.output
    first = ask["id"].iloc[0]
    assert "told 2 asked result(s)" in told.output
    assert f"best |gap − target| 0.040 eV ({first}, 2.540 eV)" in told.output and "best loss" not in told.output
    status = runner.invoke(app, ["campaign", "status", str(lab), "--json"])
    info = json.loads(status.output)
    assert info["pending"] == [] and info["failed"] == 1 and info["best_y"] == 2.54
    # a filled-in ask file holds the lab's measurements: the next ask does not replace it
    again = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(ask_path)])
    assert again.exit_code == 1 and "holds results (band_gap_eV filled in on line 2)" in again.output
    assert pd.read_csv(ask_path)["band_gap_eV"].iloc[0] == 2.54


def test_an_ask_file_written_before_the_new_columns_is_still_an_ask_file(tmp_path) -> None:
    """Files from the earlier layout (id, formula, pred_band_gap_eV, mean_eV, std_eV,
    acquisition_score, map_eV): `ask -o` may replace one, and one the lab filled in is told."""
    pool, frame = _lab_pool(tmp_path)
    lab = _new_lab(tmp_path, pool)
    old = tmp_path / "old.csv"
    old.write_text(
        "id,formula,pred_band_gap_eV,mean_eV,std_eV,acquisition_score,map_eV\nmp-7,Na7Cl,2.1,2.2,0.3,0.01,\n"
    )
    res = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(old)])
    assert res.exit_code == 0, res.output
    assert "band_gap_eV" in old.read_text().splitlines()[0]
    # the earlier layout had no value column: the lab added one (the docs said band_gap)
    asked = pd.read_csv(old)["id"].iloc[0]
    old.write_text(
        f"id,formula,pred_band_gap_eV,mean_eV,std_eV,acquisition_score,map_eV,band_gap\n{asked},X,2,2,0.3,0.1,,2.3\n"
    )
    told = runner.invoke(app, ["campaign", "tell", str(lab), str(old)])
    assert told.exit_code == 0 and "told 1 asked result(s)" in told.output, told.output
    # ... and a file that is no ask file is still refused
    other = tmp_path / "notes.csv"
    other.write_text("id,comment\nmp-1,keep me\n")
    res = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(other)])
    assert res.exit_code == 1 and "not an ask file" in res.output and "keep me" in other.read_text()
