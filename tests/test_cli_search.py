"""`matscreen search` and `matscreen campaign` end to end on a small generated pool."""

from __future__ import annotations

import json
import re

import pandas as pd
from test_objectives_bandgap import synthetic_pool_frame
from typer.testing import CliRunner

from screening.cli import app

runner = CliRunner()


def _pool(tmp_path):
    frame = synthetic_pool_frame(300, seed=2)
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    return path, frame


def test_search_finds_a_hit_and_writes_its_report(tmp_path) -> None:
    path, frame = _pool(tmp_path)
    target = float(frame["band_gap"].iloc[17])
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "search",
            "--pool",
            str(path),
            "--target",
            str(target),
            "--tol",
            "0.01",
            "--n-prior",
            "20",
            "--budget",
            "40",
            "--seed",
            "1",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "HIT" in res.output and "stopped: hit" in res.output
    hist = pd.read_csv(out / "history.csv")
    assert (hist["source"] == "prior").sum() == 20
    assert hist["hit"].iloc[-1] and not hist["hit"].iloc[:-1].any()
    assert set(hist["formula"].dropna()) <= set(frame["formula"])
    for name in ("convergence.png", "pool_map.png", "pca.json", "campaign.sqlite"):
        assert (out / name).stat().st_size > 0
    info = json.loads((out / "summary.json").read_text())
    assert info["evaluations_to_first_hit"] == int((hist["source"] == "search").sum())
    # Re-running the same command resumes: nothing is repeated, the campaign has already stopped.
    again = runner.invoke(app, ["search", "--pool", str(path), "--target", str(target), "-o", str(out)])
    assert again.exit_code == 0 and "resuming" in again.output
    assert "seed" in again.output  # the seed given (default 0) is not the campaign's: said, not used
    assert len(pd.read_csv(out / "history.csv")) == len(hist)
    # Another question into the same folder is refused, not answered with the old search.
    before = {name: (out / name).read_bytes() for name in ("history.csv", "summary.json")}
    other_pool = tmp_path / "pool40.parquet"
    frame.iloc[:40].to_parquet(other_pool)
    for args in (["--target", "3.5"], ["--target", str(target), "--tol", "0.3"], ["--pool", str(other_pool)]):
        asked = {"--pool": str(path), "--target": str(target), "--tol": "0.01"}
        asked.update(dict(zip(args[::2], args[1::2])))
        refused = runner.invoke(app, ["search", *[x for kv in asked.items() for x in kv], "-o", str(out)])
        assert refused.exit_code == 1, refused.output
        assert "holds another search" in refused.output and "another -o" in refused.output
    assert {name: (out / name).read_bytes() for name in before} == before


def test_search_with_a_prior_file_and_loss_model(tmp_path) -> None:
    path, frame = _pool(tmp_path)
    prior = tmp_path / "prior.csv"
    frame[["id"]].iloc[100:130].to_csv(prior, index=False)
    res = runner.invoke(
        app,
        [
            "search",
            "--pool",
            str(path),
            "--target",
            "9.0",
            "--prior",
            str(prior),
            "--budget",
            "3",
            "--model",
            "loss",
            "--acq",
            "ucb",
            "--batch",
            "2",
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    hist = pd.read_csv(tmp_path / "r" / "history.csv")
    assert list(hist["id"].iloc[:30]) == list(frame["id"].iloc[100:130]) and len(hist) == 33
    assert "stopped: budget" in res.output


def test_search_rejects_a_bad_acquisition(tmp_path) -> None:
    path, _ = _pool(tmp_path)
    res = runner.invoke(app, ["search", "--pool", str(path), "--target", "2.5", "--acq", "window", "--model", "loss"])
    assert res.exit_code != 0 and "does not fit" in res.output


def test_campaign_ask_tell_status_report(tmp_path) -> None:
    path, frame = _pool(tmp_path)
    lab = tmp_path / "lab"
    new = runner.invoke(
        app,
        ["campaign", "new", str(lab), "--pool", str(path), "--target", "2.5", "--batch", "3"],
        env={"COLUMNS": "300"},
    )
    assert new.exit_code == 0, new.output
    assert f"it reads {path.resolve()} at every command: keep it in place" in new.output
    ask = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "b1.csv")])
    assert ask.exit_code == 0, ask.output
    batch = pd.read_csv(tmp_path / "b1.csv")
    assert len(batch) == 3
    assert list(batch.columns) == [
        "id",
        "formula",
        "pred_band_gap_eV",
        "mean_eV",
        "std_eV",
        "acquisition_score",
        "map_eV",
        "band_gap_eV",
        "error",
    ]
    assert batch[["band_gap_eV", "error"]].isna().all().all()  # the lab's to fill in
    assert batch[["mean_eV", "std_eV", "acquisition_score"]].notna().all().all()
    assert (batch["std_eV"] > 0).all() and batch["acquisition_score"].between(0, 1).all()
    # A killed ask (pending saved, file lost) resumes to the same suggestions.
    (tmp_path / "b1.csv").unlink()
    again = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "b1.csv")])
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b1.csv"), batch)
    gaps = dict(zip(frame["id"], frame["band_gap"]))
    results = pd.DataFrame({"id": batch["id"], "band_gap": [gaps[i] for i in batch["id"]], "error": ["", "", ""]})
    results.loc[1, "band_gap"] = None
    results.loc[1, "error"] = "SCF did not converge"
    results.to_csv(tmp_path / "r1.csv", index=False)
    told = runner.invoke(app, ["campaign", "tell", str(lab), str(tmp_path / "r1.csv")])
    assert told.exit_code == 0, told.output

    def status():
        res = runner.invoke(app, ["campaign", "status", str(lab), "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    before = status()
    assert before["observations"] == 3 and before["failed"] == 1 and before["pending"] == []
    assert before["target"] == 2.5 and before["tolerance"] == 0.01 and before["search_evaluations"] == 3
    table = runner.invoke(app, ["campaign", "status", str(lab)])
    assert table.exit_code == 0 and "2.5 eV ± 0.01 eV" in table.output and "3 search" in table.output
    assert before["best_point"] in table.output and "stop reason" in table.output
    # Malformed files and repeated results: clear errors, nothing changes.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,band_gap\nmp-250,2.0\nmp-251,not-a-number\n")
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
    assert res.exit_code == 1 and "bad.csv" in res.output and "mp-251" in res.output
    bad.write_text("name,band_gap\nmp-250,2.0\n")
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
    assert res.exit_code == 1 and "'id' column" in res.output
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(tmp_path / "r1.csv")])  # a retried tell
    assert res.exit_code == 0 and "3 already recorded" in res.output, res.output
    first = batch["id"].iloc[0]
    bad.write_text(f"id,band_gap\n{first},{gaps[first] + 0.5}\n")
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
    assert res.exit_code == 1 and "already told with the value" in res.output
    for value, reason in (("-0.2", "negative"), ("1e308", "above 100 eV"), ("inf", "NaN or infinite")):
        bad.write_text(f"id,band_gap\nmp-250,2.0\nmp-251,{value}\n")
        res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
        assert res.exit_code == 1 and "bad.csv" in res.output and "mp-251" in res.output, res.output
        assert reason in res.output and ("line 3" in res.output or reason == "NaN or infinite")
    bad.write_text("id,band_gap\nmp-250,2.0\nnot-in-pool,2.0\n")
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
    assert res.exit_code == 1 and "not-in-pool" in res.output
    assert status() == before
    # Lab data nobody asked for: recorded as prior, not as a search evaluation.
    bad.write_text("id,band_gap\nmp-250,2.0\n")
    res = runner.invoke(app, ["campaign", "tell", str(lab), str(bad)])
    assert res.exit_code == 0 and "recorded as prior: mp-250" in res.output, res.output
    after = status()
    assert after["prior"] == before["prior"] + 1 and after["search_evaluations"] == before["search_evaluations"]
    rep = runner.invoke(app, ["campaign", "report", str(lab)])
    assert rep.exit_code == 0 and (lab / "convergence.png").exists() and (lab / "history.csv").exists()


def test_campaign_with_a_user_objective_class(tmp_path) -> None:
    lab = tmp_path / "quad"
    res = runner.invoke(
        app,
        [
            "campaign",
            "new",
            str(lab),
            "--objective",
            "test_objectives_bandgap:Quadratic",
            "--model",
            "loss",
            "--acq",
            "logei",
            "--budget",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    # The file names the class, but reopening needs the user's consent again.
    res = runner.invoke(app, ["campaign", "run", str(lab)])
    assert res.exit_code == 1 and "--allow-objective test_objectives_bandgap:Quadratic" in res.output
    allow = ["--allow-objective", "test_objectives_bandgap:Quadratic"]
    res = runner.invoke(app, ["campaign", "run", str(lab), *allow])
    assert res.exit_code == 0, res.output
    hist = pd.read_csv(lab / "history.csv")
    assert len(hist) == 8 and hist["best_loss"].iloc[-1] < 0.05
    # one column per input (not the store's text key), the objective's y and loss; no float noise
    assert list(hist.columns) == ["seq", "x0", "x1", "source", "y", "loss", "best_loss", "hit", "error", "told_at"]
    numbers = re.findall(r"(?<![\d:T-])\d+\.\d+", (lab / "history.csv").read_text())  # not the told_at times
    assert numbers and max(len(n.replace(".", "").lstrip("0")) for n in numbers) <= 10
    res = runner.invoke(app, ["campaign", "status", str(lab), "--json"], env={"MATSCREEN_ALLOW_OBJECTIVES": allow[1]})
    assert res.exit_code == 0 and json.loads(res.output)["search_evaluations"] == 8, res.output
    ask = runner.invoke(app, ["campaign", "ask", str(lab), "-n", "2", "-o", str(tmp_path / "q.csv"), *allow])
    assert ask.exit_code == 0, ask.output
    assert list(pd.read_csv(tmp_path / "q.csv").columns) == ["x0", "x1"]


def test_a_campaign_file_naming_a_module_imports_nothing(tmp_path) -> None:
    """A crafted campaign.sqlite naming `this:Nothing` (the Zen of Python prints on import)."""
    import sqlite3
    import sys

    lab = tmp_path / "quad"
    new = ["campaign", "new", str(lab), "--objective", "test_objectives_bandgap:Quadratic", "--model", "loss"]
    res = runner.invoke(app, [*new, "--acq", "logei"])
    assert res.exit_code == 0, res.output
    con = sqlite3.connect(lab / "campaign.sqlite")
    cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    for spec in ("this:Nothing", "os.path:join", "../evil:X"):
        cfg["extra"]["spec"] = spec
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
        con.commit()
        sys.modules.pop("this", None)
        for command in (["status"], ["ask"], ["report"], ["run"]):
            res = runner.invoke(app, ["campaign", *command, str(lab)])
            assert res.exit_code == 1, res.output
            assert spec in res.output and "Traceback" not in res.output
            assert "this" not in sys.modules
    con.close()
    # Consent given on the command line for a malformed spec is still refused before import.
    res = runner.invoke(app, ["campaign", "status", str(lab), "--allow-objective", "../evil:X"])
    assert res.exit_code == 1 and "Python identifiers" in res.output


def test_campaign_status_does_not_import_heavy_libraries(tmp_path) -> None:
    """`campaign status` reads the store only: no torch, botorch, pymatgen or matplotlib."""
    import subprocess
    import sys

    path, _ = _pool(tmp_path)
    lab = tmp_path / "lab"
    assert runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(path), "--target", "2.5"]).exit_code == 0
    code = (
        "import sys\n"
        "from screening.bo.status import campaign_status, format_status\n"
        f"print(format_status(campaign_status({str(lab / 'campaign.sqlite')!r})))\n"
        "heavy = [m for m in ('torch', 'botorch', 'gpytorch', 'pymatgen', 'matplotlib', 'sklearn', 'pandas')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "2.5 eV" in out


def test_campaign_new_keeps_the_minimum_labelled_count_across_reopening(tmp_path) -> None:
    """`--min-labelled` is part of the campaign's strategy: every later `ask` (a new process)
    must fit with the count the campaign was made with, not the current default."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    path, _ = _pool(tmp_path)
    lab = tmp_path / "lab"
    new = ["campaign", "new", str(lab), "--pool", str(path), "--target", "2.5", "--min-labelled", "40"]
    assert runner.invoke(app, new).exit_code == 0
    assert open_campaign_dir(lab).campaign.strategy.neighbour_min_labelled == 40


def test_tie_breaks_are_kept_with_the_campaign_and_seeds_spread_searches(tmp_path) -> None:
    """`--tie-break` is stored with the campaign; with it, two seeds take the pool's near-equal
    predictions in different orders, and the same seed repeats its order."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    frame = synthetic_pool_frame(300, seed=2)
    frame["pred_band_gap"] = 2.5 + 1e-4 * frame.index  # every prediction a near-tie on the target
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    lab = tmp_path / "lab"
    new = ["campaign", "new", str(lab), "--pool", str(path), "--target", "2.5", "--tie-break", "0.04"]
    assert runner.invoke(app, new).exit_code == 0
    assert open_campaign_dir(lab).campaign.strategy.tie_break == 0.04

    def order(seed: int, name: str) -> list[str]:
        args = ["search", "--pool", str(path), "--target", "9.0", "--budget", "4", "--seed", str(seed)]
        res = runner.invoke(app, [*args, "--tie-break", "0.04", "-o", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        return pd.read_csv(tmp_path / name / "history.csv")["id"].tolist()

    first, again, other = order(1, "s1"), order(1, "s1b"), order(2, "s2")
    assert first == again and first != other
    bad = runner.invoke(app, [*new[:3], str(tmp_path / "x"), *new[4:], "--acq", "thompson"])
    assert bad.exit_code != 0 and "tie_break" in bad.output


def test_search_refuses_a_target_or_tolerance_it_cannot_use_before_writing_anything(tmp_path) -> None:
    path, _ = _pool(tmp_path)
    for args, says in (
        (["--target", "nan"], "target band gap must be a number of eV from 0 to 100"),
        (["--target", "2.0", "--tol", "0"], "tolerance must be a positive, finite number"),
        (["--target", "2.0", "--tol", "inf"], "tolerance must be a positive, finite number"),
        (["--target", "2.0", "--n-prior", "-2"], "greater than or equal to 0"),
    ):
        out = tmp_path / "run"
        res = runner.invoke(app, ["search", "--pool", str(path), *args, "-o", str(out)], env={"COLUMNS": "200"})
        assert res.exit_code != 0 and says in res.output, res.output
        assert not out.exists()


def test_a_search_that_spends_its_pool_without_a_hit_ends_with_its_results(tmp_path) -> None:
    """A miss is a result: exit 0, every file a hit would write, the closest crystal named, and
    `campaign status` agrees that the search is over."""
    frame = synthetic_pool_frame(25, seed=1)
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        ["search", "--pool", str(path), "--target", "9.0", "--tol", "0.1", "--budget", "100", "-o", str(out)],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "no crystal in the pool has a band_gap within the window" in res.output and "inf" not in res.output
    assert "stopped: exhausted; no crystal within ±0.1 eV in 25 measurements; closest" in res.output
    for name in ("history.csv", "summary.json", "convergence.png", "pool_map.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == "exhausted"
    status = json.loads(runner.invoke(app, ["campaign", "status", str(out), "--json"]).output)
    assert status["stop_reason"] == "exhausted" and status["search_evaluations"] == 25


def test_history_csv_names_its_columns_with_units_and_rounds_to_the_instrument(tmp_path) -> None:
    """0.4 eV measured against a 0.1 eV target is |Δ| = 0.30000000000000004 in floating point: the
    store keeps that, the files and the console say 0.3."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    path, _ = _pool(tmp_path)
    lab = tmp_path / "lab"
    res = runner.invoke(app, ["campaign", "new", str(lab), "--pool", str(path), "--target", "0.1", "--tol", "0.01"])
    assert res.exit_code == 0, res.output
    results = tmp_path / "r.csv"
    results.write_text("id,band_gap_eV,error\nmp-1,0.4,\nmp-2,,no contact\n")
    told = runner.invoke(app, ["campaign", "tell", str(lab), str(results)])
    assert told.exit_code == 0, told.output
    assert "best |gap − target| 0.300 eV (mp-1, 0.400 eV); hit: no" in told.output, told.output
    assert runner.invoke(app, ["campaign", "report", str(lab)]).exit_code == 0
    text = (lab / "history.csv").read_text()
    assert "0.30000000000000004" not in text and "0.3000" in text
    hist = pd.read_csv(lab / "history.csv")
    assert list(hist.columns) == [
        "seq",
        "id",
        "formula",
        "source",
        "band_gap_eV",
        "abs_deviation_eV",
        "best_abs_deviation_eV",
        "hit",
        "error",
        "told_at",
    ]
    assert list(hist["id"]) == ["mp-1", "mp-2"] and list(hist["error"].fillna("")) == ["", "no contact"]
    assert text.splitlines()[1].split(",")[4:7] == ["0.4000", "0.3000", "0.3000"]
    cd = open_campaign_dir(lab)
    assert cd.campaign.history().records[0].loss == 0.4 - 0.1 != 0.3  # the store keeps the exact value
    cd.campaign.close()
