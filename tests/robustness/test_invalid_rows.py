"""Invalid rows of a pool or known-data table are left out and named, not fatal (issue 26 item 5).

Before: one negative "gap" among 6,218 crystals (the NeurIPS-2021 bandit benchmark's table has 4)
made `search` refuse the whole pool. Now such rows go to ``<run>/pool.errors.csv`` (row, id,
column, value, reason), one warning line on stderr counts them, the run goes on with the valid
rows, and ``--strict`` refuses instead. A table with no valid row is still an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from screening.cli import app
from screening.errors import RecordError
from screening.objectives.bandgap.campaign_dir import open_campaign_dir
from screening.objectives.bandgap.objective import PoolFileError, invalid_rows, load_pool

runner = CliRunner()
NEGATIVE = [3, 10, 20, 30]


def pool_frame(n: int = 60, d: int = 6, seed: int = 2, prefix: str = "mp") -> pd.DataFrame:
    """A featurised-pool-shaped frame: embeddings a noisy image of 3 latent coordinates, gaps from them."""
    rng = np.random.default_rng(seed)
    z = rng.random((n, 3))
    emb = z @ rng.standard_normal((3, d)) + 0.01 * rng.standard_normal((n, d))
    gap = 2.0 + np.sin(4 * z[:, 0]) + z[:, 1]
    frame = pd.DataFrame({"id": [f"{prefix}-{i}" for i in range(n)], "formula": [f"Na{i}Cl" for i in range(n)]})
    for k in range(d):
        frame[f"emb_{k}"] = emb[:, k]
    frame["pred_band_gap"] = gap + 0.1 * rng.standard_normal(n)
    frame["band_gap"] = gap
    return frame


def search(pool: Path, out: Path, *extra: str):
    args = ["search", "--pool", str(pool), "--target", "2.5", "--tol", "0.05", "--budget", "3", "-o", str(out)]
    return runner.invoke(app, [*args, *extra])


def test_negative_gaps_are_left_out_named_and_counted(tmp_path: Path) -> None:
    frame = pool_frame()
    frame.loc[NEGATIVE, "band_gap"] = -0.5
    frame.to_csv(tmp_path / "pool.csv", index=False)
    out = tmp_path / "run"
    res = search(tmp_path / "pool.csv", out)
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: left out 4 of 60 pool rows (negative band_gap); see {out / 'pool.errors.csv'}"]
    errors = pd.read_csv(out / "pool.errors.csv", dtype=str)
    assert list(errors.columns) == ["row", "id", "column", "value", "reason"]
    assert errors["id"].tolist() == [f"mp-{i}" for i in NEGATIVE]
    assert errors["row"].tolist() == [f"line {i + 2}" for i in NEGATIVE]  # the CSV's line in an editor
    assert set(errors["column"]) == {"band_gap"} and set(errors["value"]) == {"-0.5"}
    assert all("is negative" in r for r in errors["reason"])
    # the campaign holds the 56 valid crystals, and reopening it (resume, status) leaves the same rows out
    cd = open_campaign_dir(out)
    assert cd.pool is not None and len(cd.pool.ids) == 56
    assert not set(cd.pool.ids) & {f"mp-{i}" for i in NEGATIVE}
    assert json.loads((out / "summary.json").read_text())["search_evaluations"] >= 1
    again = search(tmp_path / "pool.csv", out)
    assert again.exit_code == 0 and "resuming" in again.output, again.output


def test_strict_refuses_at_the_first_invalid_row_and_writes_nothing(tmp_path: Path) -> None:
    frame = pool_frame()
    frame.loc[NEGATIVE, "band_gap"] = -0.5
    frame.to_parquet(tmp_path / "pool.parquet")
    res = search(tmp_path / "pool.parquet", tmp_path / "run", "--strict")
    assert res.exit_code == 1
    assert "mp-3" in res.output and "negative" in res.output and "3 more rows like it" in res.output
    assert not (tmp_path / "run").exists()


def test_each_kind_of_invalid_row_is_named_once_with_its_column(tmp_path: Path) -> None:
    frame = pool_frame().astype({"band_gap": object, "emb_2": object})
    frame.loc[1, "id"] = "mp-0"  # duplicate: the first row keeps the id
    frame.loc[2, "emb_2"] = np.nan
    frame.loc[4, "band_gap"] = "2.5 eV"
    frame.loc[5, "id"] = " mp-5"
    frame.loc[6, "pred_band_gap"] = np.nan
    frame.loc[7, "band_gap"] = np.inf
    frame.loc[8, "band_gap"] = 1e308
    frame.loc[9, "band_gap"] = np.nan
    frame.loc[11, "band_gap"] = -1.0
    frame.loc[11, "id"] = "mp-0"  # two problems: the first (id) is the one named
    path = tmp_path / "pool.csv"
    frame.to_csv(path, index=False)
    left = {r.id if r.id != "mp-0" else f"mp-0@{r.row}": r for r in invalid_rows(frame, str(path))}
    assert {k: (v.row, v.column, v.kind) for k, v in left.items()} == {
        "mp-0@line 3": ("line 3", "id", "duplicate id"),
        "mp-2": ("line 4", "emb_2", "non-finite embedding"),
        "mp-4": ("line 6", "band_gap", "band_gap not a number"),
        " mp-5": ("line 7", "id", "id has leading or trailing whitespace"),
        "mp-6": ("line 8", "pred_band_gap", "missing pred_band_gap"),
        "mp-7": ("line 9", "band_gap", "infinite band_gap"),
        "mp-8": ("line 10", "band_gap", "implausible band_gap"),
        "mp-9": ("line 11", "band_gap", "missing band_gap"),
        "mp-0@line 13": ("line 13", "id", "duplicate id"),
    }
    assert left["mp-4"].value == "2.5 eV" and "first at line 2, kept" in left["mp-0@line 3"].reason
    pool = load_pool(path, strict=False)
    assert len(pool.ids) == 51 and pool.n_rows == 60 and len(pool.left_out) == 9
    kept = pool.frame.set_index("id")
    assert kept.loc["mp-0", "band_gap"] == pytest.approx(frame.loc[0, "band_gap"])  # the first mp-0
    assert kept["band_gap"].dtype == np.float64
    with pytest.raises(RecordError):
        load_pool(path)  # the library's default stays strict


def test_the_warning_counts_several_kinds(tmp_path: Path) -> None:
    frame = pool_frame()
    frame.loc[[3, 10, 20], "band_gap"] = -0.5
    frame.loc[40, "id"] = "mp-41"
    frame.to_parquet(tmp_path / "pool.parquet")
    res = search(tmp_path / "pool.parquet", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "left out 4 of 60 pool rows (3 negative band_gap, 1 duplicate id)" in res.stderr


def test_a_pool_with_no_valid_row_is_still_an_error(tmp_path: Path) -> None:
    frame = pool_frame(10)
    frame["band_gap"] = -1.0
    frame.to_parquet(tmp_path / "pool.parquet")
    res = search(tmp_path / "pool.parquet", tmp_path / "run")
    assert res.exit_code == 1
    assert "none of its 10 pool rows is valid (negative band_gap; first at row 1, id 'mp-0'" in res.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(PoolFileError, match="none of its 10 pool rows is valid"):
        load_pool(tmp_path / "pool.parquet", strict=False)


def test_invalid_known_rows_are_left_out_too(tmp_path: Path) -> None:
    pool_frame().to_parquet(tmp_path / "pool.parquet")
    known = pool_frame(40, seed=5, prefix="k")
    known.loc[[2, 9], "band_gap"] = [-0.3, np.nan]
    known.to_csv(tmp_path / "known.csv", index=False)
    out = tmp_path / "run"
    res = search(tmp_path / "pool.parquet", out, "--known", str(tmp_path / "known.csv"))
    assert res.exit_code == 0, res.output
    assert (
        f"left out 2 of 40 known-data rows (1 missing band_gap, 1 negative band_gap); see {out / 'known.errors.csv'}"
        in res.stderr
    )
    assert not (out / "pool.errors.csv").exists()
    errors = pd.read_csv(out / "known.errors.csv", dtype=str)
    assert errors["id"].tolist() == ["k-2", "k-9"] and errors["row"].tolist() == ["line 4", "line 11"]
    assert "38 labelled crystals" in " ".join(res.output.split())  # rich wraps long lines
    strict = search(tmp_path / "pool.parquet", tmp_path / "strict", "--known", str(tmp_path / "known.csv"), "--strict")
    assert strict.exit_code == 1 and "k-2" in strict.output and not (tmp_path / "strict").exists()


def test_campaign_new_leaves_out_invalid_rows_and_later_commands_agree(tmp_path: Path) -> None:
    frame = pool_frame()
    frame.loc[NEGATIVE, "band_gap"] = -0.5
    frame.loc[50, "emb_0"] = np.inf
    frame.to_parquet(tmp_path / "pool.parquet")
    lab = tmp_path / "lab"
    res = runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(tmp_path / "pool.parquet"), "--target", "2.5"])
    assert res.exit_code == 0, res.output
    assert (
        f"left out 5 of 60 pool rows (4 negative band_gap, 1 non-finite embedding); see {lab / 'pool.errors.csv'}"
        in (res.stderr)
    )
    assert pd.read_csv(lab / "pool.errors.csv")["id"].tolist() == ["mp-3", "mp-10", "mp-20", "mp-30", "mp-50"]
    ask = tmp_path / "ask.csv"
    asked = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(ask)])
    assert asked.exit_code == 0, asked.output
    assert runner.invoke(app, ["campaign", "status", str(lab)]).exit_code == 0
    strict = runner.invoke(
        app,
        [
            "campaign",
            "new",
            str(tmp_path / "s"),
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--target",
            "2.5",
            "--strict",
        ],
    )
    assert strict.exit_code == 1 and "record 'mp-50': non-finite embedding" in strict.output


def test_strict_is_listed_with_the_advanced_options() -> None:
    for command in (["search", "--help"], ["campaign", "new", "--help"]):
        res = runner.invoke(app, command, terminal_width=100)
        assert res.exit_code == 0
        advanced = res.output[res.output.index("Advanced") :]
        assert "--strict" in advanced
