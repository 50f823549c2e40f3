"""What the commands refuse, and what they keep, when given files or options that would lose or
misstate the user's data (found by trying them as a hostile user would)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_objectives_bandgap import synthetic_pool_frame
from typer.testing import CliRunner

from screening.cli import app
from screening.errors import RecordError
from screening.io.lab_files import read_pool_results
from screening.objectives.bandgap.objective import load_known, load_pool

runner = CliRunner()


def _pool(tmp_path: Path, n: int = 80) -> tuple[Path, pd.DataFrame]:
    frame = synthetic_pool_frame(n, seed=4)
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path, index=False)
    return path, frame


def _search(pool: Path, out: Path, *extra: str):
    return runner.invoke(
        app, ["search", "--pool", str(pool), "--target", "2.5", "--budget", "3", "-o", str(out), *extra]
    )


def _store_state(lab: Path) -> tuple:
    from screening.bo.store import CampaignStore

    with CampaignStore.open(lab / "campaign.sqlite") as store:
        return len(store.observations()), len(store.pending()), store.config


def test_ask_writes_only_a_new_file_or_over_an_earlier_ask_file(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path)
    lab = tmp_path / "lab"
    assert runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(pool), "--target", "2.5"]).exit_code == 0
    store, pool_bytes = _store_state(lab), pool.read_bytes()
    mine = tmp_path / "notes.csv"
    mine.write_text("sample,comment\nA,keep me\n")
    for target, reason in (
        (lab / "campaign.sqlite", "one of this campaign's own files"),
        (pool, "one of this campaign's own files"),
        (mine, "not an ask file of this campaign"),
        (tmp_path, "is a folder"),
    ):
        res = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(target)])
        assert res.exit_code == 1 and reason in res.output, res.output
    assert _store_state(lab) == store and pool.read_bytes() == pool_bytes  # nothing asked, nothing lost
    assert mine.read_text() == "sample,comment\nA,keep me\n"
    ask = tmp_path / "ask.csv"
    assert runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(ask)]).exit_code == 0
    again = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(ask)])  # the pending points again
    assert again.exit_code == 0, again.output


def test_a_search_that_fails_to_start_leaves_no_run_to_resume_without_its_prior(tmp_path: Path) -> None:
    pool, frame = _pool(tmp_path)
    out = tmp_path / "run"
    prior = tmp_path / "prior.csv"
    prior.write_text(f"id,band_gap\n{frame['id'][0]},1.0\nNOPE,2.0\n")
    res = _search(pool, out, "--prior", str(prior))
    assert res.exit_code == 1 and "NOPE" in res.output and not out.exists()
    prior.write_text("")
    res = _search(pool, out, "--prior", str(prior))
    assert res.exit_code == 1 and "cannot read the prior data" in res.output and not out.exists()
    prior.write_text(f"id,band_gap\n{frame['id'][0]},1.0\n{frame['id'][1]},1.1\n")
    res = _search(pool, out, "--prior", str(prior))
    assert res.exit_code == 0, res.output
    assert (pd.read_csv(out / "history.csv")["source"] == "prior").sum() == 2
    # The same command resumes; a prior file with crystals the campaign was never told is refused.
    assert _search(pool, out, "--prior", str(prior)).exit_code == 0
    other = tmp_path / "other.csv"
    other.write_text(f"id,band_gap\n{frame['id'][5]},1.0\n")
    res = _search(pool, out, "--prior", str(other))
    assert res.exit_code == 1 and "was not started with" in res.output and frame["id"][5] in res.output
    res = _search(pool, out, "--n-prior", "7")
    assert res.exit_code == 1 and "started with 2 prior" in res.output


def test_search_refuses_a_folder_of_other_files_and_pointless_sizes_before_writing(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.json").write_text('{"mine": 1}')
    res = _search(pool, folder)
    assert res.exit_code == 1 and "not a search run" in res.output
    assert json.loads((folder / "summary.json").read_text()) == {"mine": 1}
    for option in (["--pca-components", "0"], ["--budget", "0"], ["--batch", "0"], ["--neighbours", "0"]):
        res = runner.invoke(app, ["search", "--pool", str(pool), "--target", "2.5", "-o", str(tmp_path / "x"), *option])
        assert res.exit_code == 2 and not (tmp_path / "x").exists(), option


def test_a_report_before_the_first_result_writes_its_files(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path)
    lab = tmp_path / "lab"
    runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(pool), "--target", "2.5"])
    res = runner.invoke(app, ["campaign", "report", str(lab)])
    assert res.exit_code == 0, res.output
    assert list(pd.read_csv(lab / "history.csv").columns)[:3] == ["seq", "id", "formula"]
    assert json.loads((lab / "summary.json").read_text())["evaluations_to_first_hit"] is None


def test_csv_ids_that_pandas_would_read_as_missing_stay_ids(tmp_path: Path) -> None:
    frame = synthetic_pool_frame(12)
    frame["id"] = ["NA", "null", "nan", "None", "NULL", "#NA", "N/A"] + [f"ok{i}" for i in range(5)]
    frame.to_csv(tmp_path / "pool.csv", index=False)
    pool = load_pool(tmp_path / "pool.csv")
    assert list(pool.ids[:7]) == ["NA", "null", "nan", "None", "NULL", "#NA", "N/A"]
    frame.loc[9, "id"] = "NA"  # a CSV pool's rows are named by their line in the file
    frame.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(RecordError, match=r"line 11: duplicate id in the pool \(first at line 2\)"):
        load_pool(tmp_path / "dup.csv")
    from screening.io.sources import iter_records

    table = pd.DataFrame({"id": ["NA", "null", ""], "cif": ["x", "y", "z"], "band_gap": ["1.0", "NA", "2.0"]})
    table.to_csv(tmp_path / "structures.csv", index=False)
    records = list(iter_records(tmp_path / "structures.csv"))
    assert [r.record_id for r in records] == ["NA", "null", "row2"]  # only the empty cell is missing
    assert np.isnan(records[1].labels["band_gap"])  # in a label column NA still means missing


def test_results_files_that_would_be_misread_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    for text, reason in (
        ("id,band_gap\nmp-1,2_5\n", "is not a number"),  # float('2_5') is 25.0
        ("id,band_gap,error\nmp-1,3.0,furnace broke\n", "both a band_gap ('3.0') and an error"),
        ("id,band_gap,y\nmp-1,3.0,3.1\n", "band_gap and y"),
    ):
        path.write_text(text)
        with pytest.raises(RecordError, match=re.escape(reason)):
            read_pool_results(path)
    path.write_text("id,band_gap\n'=A,1.5\n'-B,2.0\n'x,1.0\n")  # ids as the ask file wrote them
    assert read_pool_results(path).points == ["=A", "-B", "'x"]


def test_known_data_get_the_pools_id_and_range_checks(tmp_path: Path) -> None:
    frame = synthetic_pool_frame(60)
    pool_path = tmp_path / "pool.parquet"
    frame.iloc[:30].to_parquet(pool_path, index=False)
    pool = load_pool(pool_path)
    for change, reason in (
        (lambda k: k.__setitem__("band_gap", k["band_gap"].where(k.index != 2, 250.0)), "line 4: band_gap '250.0'"),
        (lambda k: k.__setitem__("id", k["id"].where(k.index != 1, f" {frame['id'][0]} ")), "line 3"),
        (lambda k: k.__setitem__("id", k["id"].where(k.index != 1, "")), "line 3"),
        (
            lambda k: k.__setitem__("id", k["id"].where(k.index != 2, k["id"][0])),
            r"line 4: duplicate id in the known data \(first at line 2\)",
        ),
    ):
        known = frame.iloc[30:].reset_index(drop=True).copy()
        change(known)
        known.to_csv(tmp_path / "known.csv", index=False)
        with pytest.raises(RecordError, match=reason):
            load_known(tmp_path / "known.csv", pool)


def test_reduce_replaces_an_earlier_fits_components_and_never_its_input(tmp_path: Path) -> None:
    synthetic_pool_frame(40).to_parquet(tmp_path / "emb.parquet", index=False)
    assert (
        runner.invoke(app, ["reduce", str(tmp_path / "emb.parquet"), "-o", str(tmp_path / "a.parquet")]).exit_code == 0
    )
    res = runner.invoke(app, ["reduce", str(tmp_path / "a.parquet"), "-o", str(tmp_path / "b.parquet"), "-k", "2"])
    assert res.exit_code == 0, res.output
    assert [c for c in pd.read_parquet(tmp_path / "b.parquet").columns if c.startswith("pc_")] == ["pc_1", "pc_2"]
    before = (tmp_path / "a.parquet").read_bytes()
    res = runner.invoke(app, ["reduce", str(tmp_path / "a.parquet"), "-o", str(tmp_path / "a.parquet")])
    assert res.exit_code == 1 and "would replace" in res.output
    assert (tmp_path / "a.parquet").read_bytes() == before


def test_a_label_column_that_changes_type_part_way_is_named_not_an_internal_error(tmp_path: Path) -> None:
    from screening.errors import MatscreenError
    from screening.featurize.featurizer import _chunk_table_writer

    first = pd.DataFrame({"id": ["a", "b"], "comment": [np.nan, np.nan]})  # blank text cells read as NaN
    later = pd.DataFrame({"id": ["c", "d"], "comment": ["synth ok", None]})
    with pytest.raises(MatscreenError, match=r"column 'comment' changes type part-way .* write CSV"):
        with _chunk_table_writer(tmp_path / "tmp.parquet", tmp_path / "out.parquet") as write:
            write(first)
            write(later)
    with _chunk_table_writer(tmp_path / "tmp.csv", tmp_path / "out.csv") as write:  # CSV takes both
        write(first)
        write(later)
    assert pd.read_csv(tmp_path / "tmp.csv")["comment"].tolist()[2] == "synth ok"


def test_targets_no_band_gap_can_have_are_refused_and_a_prior_hit_is_named(tmp_path: Path) -> None:
    pool, frame = _pool(tmp_path)
    for target in ("-5", "1e9"):
        res = runner.invoke(app, ["search", "--pool", str(pool), "--target", target, "-o", str(tmp_path / "x")])
        assert res.exit_code == 1 and "from 0 to 100" in res.output and not (tmp_path / "x").exists()
    hit = frame["id"][3]
    prior = tmp_path / "prior.csv"
    prior.write_text(f"id,band_gap\n{hit},{frame['band_gap'][3]}\n")
    target = str(frame["band_gap"][3])
    res = runner.invoke(
        app, ["search", "--pool", str(pool), "--target", target, "--prior", str(prior), "-o", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    assert f"already in the window before the search: {hit}" in res.output and "no hit" not in res.output
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["prior_hits"] == [hit]


def test_until_budget_given_on_resume_applies_to_that_run(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path)
    out = tmp_path / "run"
    base = ["search", "--pool", str(pool), "--target", "2.5", "--tol", "0.5", "--budget", "6", "-o", str(out)]
    first = runner.invoke(app, base)
    assert first.exit_code == 0 and "stopped: hit" in first.output, first.output
    done = json.loads((out / "summary.json").read_text())["search_evaluations"]
    assert done < 6
    more = runner.invoke(app, [*base, "--until", "budget"])  # it used to stop at the stored rule again
    assert more.exit_code == 0 and "uses the whole budget" in more.output, more.output
    assert json.loads((out / "summary.json").read_text())["search_evaluations"] == 6
