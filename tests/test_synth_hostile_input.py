"""`matscreen synth` against bad or surprising input: options out of range, spectra with holes,
baseline-subtracted spectra, results told twice, failed droplets. Each refusal names the file,
the line or condition and the reason, and changes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from screening.cli import app
from screening.errors import MatscreenError
from screening.objectives.synthesis.objective import INPUT_NAMES, SPECTRUM_COLUMNS
from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective, run_csv_lab
from screening.objectives.synthesis.virtual_lab import VirtualLab

runner = CliRunner()


def ask(tmp_path, name: str = "reactor", batch: int = 3) -> tuple[str, pd.DataFrame]:
    """A new CSV-reactor campaign and its first asked conditions."""
    d = str(tmp_path / name)
    res = runner.invoke(app, ["synth", "ask", d, "--batch", str(batch), "-o", str(tmp_path / "ask.csv")])
    assert res.exit_code == 0, res.output
    return d, pd.read_csv(tmp_path / "ask.csv", float_precision="round_trip")


def droplet_rows(asked: pd.DataFrame, replicates: int = 2, seed: int = 1) -> list[dict]:
    """One row per droplet (condition_id, 380 … 800), measured on the virtual lab."""
    blocks = VirtualLab(n_replicates=replicates, seed=seed).measure(asked[list(INPUT_NAMES)].to_numpy())
    return [
        {"condition_id": cid, **dict(zip(SPECTRUM_COLUMNS, d))}
        for cid, b in zip(asked["condition_id"], blocks)
        for d in b
    ]


def write(rows: list[dict], path) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def observations(d: str) -> pd.DataFrame:
    sc = SynthesisCampaign(d, build_objective("csv"))
    try:
        return sc.observations()
    finally:
        sc.close()


# --- options out of range are refused before anything is written ------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--rounds", "0"), ("--replicates", "0"), ("--box", "weird"), ("--batch", "0"), ("--dnn-batch", "0")],
)
def test_run_refuses_an_option_out_of_range_before_writing_anything(tmp_path, option, value):
    out = tmp_path / "run"
    args = ["synth", "run", "--rounds", "1", "--batch", "2", "--replicates", "2", "--method", "bo"]
    res = runner.invoke(app, args + ["--no-shap", "--no-compare-random", "-o", str(out), option, value])
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output
    assert option in res.output and value in res.output
    assert not out.exists()  # no campaign.sqlite, observations.csv or rounds.csv left behind


@pytest.mark.parametrize(("option", "value"), [("--box", "weird"), ("--batch", "0")])
def test_ask_refuses_an_option_out_of_range_before_writing_anything(tmp_path, option, value):
    res = runner.invoke(app, ["synth", "ask", str(tmp_path / "reactor"), option, value])
    assert res.exit_code == 1 and "internal error" not in res.output, res.output
    assert option in res.output
    assert not (tmp_path / "reactor").exists()


# --- spectra with holes, and negative absorbances ----------------------------------------------


@pytest.mark.parametrize("hole", ["nan", "inf", "-inf", ""])
def test_tell_refuses_a_spectrum_with_one_non_finite_value_and_keeps_it_pending(tmp_path, hole):
    d, asked = ask(tmp_path)
    rows = droplet_rows(asked)
    bad = [dict(r) for r in rows]
    bad[1]["390"] = hole  # line 3 of the file: the second droplet of the first condition
    res = runner.invoke(app, ["synth", "tell", d, write(bad, tmp_path / "holes.csv")])
    assert res.exit_code == 1, res.output
    assert "holes.csv" in res.output and "line 3" in res.output and "390 nm" in res.output
    assert asked["condition_id"][0] in res.output
    assert (tmp_path / "reactor" / "campaign.sqlite").is_file() and observations(d).empty  # nothing recorded
    # the corrected file is told: the conditions stayed pending
    res = runner.invoke(app, ["synth", "tell", d, write(rows, tmp_path / "fixed.csv")])
    assert res.exit_code == 0, res.output
    obs = observations(d)
    assert len(obs) == 3 and obs["error"].isna().all() and (obs["droplets_failed"] == 0).all()


def test_tell_accepts_negative_absorbances_where_the_peak_is_positive(tmp_path):
    """A baseline-subtracted spectrum dips below zero; the loss min-max scales the baseline away."""
    d, asked = ask(tmp_path)
    rows = droplet_rows(asked)
    shifted = [{k: (v if k == "condition_id" else v - 0.05) for k, v in r.items()} for r in rows]
    assert min(min(v for k, v in r.items() if k != "condition_id") for r in shifted) < 0
    res = runner.invoke(app, ["synth", "tell", d, write(shifted, tmp_path / "baseline.csv")])
    assert res.exit_code == 0, res.output
    obs = observations(d)
    assert obs["error"].isna().all() and (obs["droplets_ok"] == 2).all() and np.isfinite(obs["loss"]).all()


def test_tell_refuses_a_spectrum_without_a_positive_peak(tmp_path):
    d, asked = ask(tmp_path)
    rows = droplet_rows(asked)
    bad = [dict(r) for r in rows]
    bad[2] = {k: (v if k == "condition_id" else -abs(v) - 0.01) for k, v in rows[2].items()}  # line 4
    res = runner.invoke(app, ["synth", "tell", d, write(bad, tmp_path / "negative.csv")])
    assert res.exit_code == 1, res.output
    assert "negative.csv" in res.output and "line 4" in res.output and "peak" in res.output
    assert asked["condition_id"][1] in res.output
    assert observations(d).empty
    assert runner.invoke(app, ["synth", "tell", d, write(rows, tmp_path / "fixed.csv")]).exit_code == 0


# --- the same results told twice -----------------------------------------------------------------


def test_telling_the_same_results_twice_is_harmless_and_a_changed_value_is_refused(tmp_path):
    d, asked = ask(tmp_path)
    rows = droplet_rows(asked)
    rows[0] = {k: ("" if k != "condition_id" else v) for k, v in rows[0].items()}  # a failed droplet
    results = write(rows, tmp_path / "results.csv")
    assert runner.invoke(app, ["synth", "tell", d, results]).exit_code == 0
    before = observations(d)
    res = runner.invoke(app, ["synth", "tell", d, results])
    assert res.exit_code == 0, res.output
    assert "already recorded" in res.output and "3 conditions" in res.output
    pd.testing.assert_frame_equal(observations(d), before)  # no new round, nothing changed
    # a different value for a recorded condition is refused, naming it
    changed = [dict(r) for r in rows]
    changed[3]["600"] = float(changed[3]["600"]) + 0.01
    res = runner.invoke(app, ["synth", "tell", d, write(changed, tmp_path / "changed.csv")])
    assert res.exit_code == 1, res.output
    assert "changed.csv" in res.output and asked["condition_id"][1] in res.output and "600 nm" in res.output
    # so is a different droplet count
    fewer = write(rows[:1] + rows[2:], tmp_path / "fewer.csv")
    res = runner.invoke(app, ["synth", "tell", d, fewer])
    assert res.exit_code == 1 and asked["condition_id"][0] in res.output, res.output
    pd.testing.assert_frame_equal(observations(d), before)


def test_a_file_mixing_recorded_and_pending_conditions_tells_only_the_pending(tmp_path):
    d, first = ask(tmp_path, batch=2)
    rows1 = droplet_rows(first)
    assert runner.invoke(app, ["synth", "tell", d, write(rows1, tmp_path / "r1.csv")]).exit_code == 0
    res = runner.invoke(app, ["synth", "ask", d, "-o", str(tmp_path / "ask2.csv")])
    assert res.exit_code == 0, res.output
    second = pd.read_csv(tmp_path / "ask2.csv", float_precision="round_trip")
    res = runner.invoke(app, ["synth", "tell", d, write(rows1 + droplet_rows(second), tmp_path / "all.csv")])
    assert res.exit_code == 0, res.output
    assert "2 conditions already recorded" in res.output and "round  2 [csv] 2 conditions" in res.output
    assert len(observations(d)) == 4


def test_run_with_a_csv_lab_stops_on_a_results_file_it_already_recorded(tmp_path):
    """A stale results file must not make the polling loop spin: it stops with the reason."""
    sc = SynthesisCampaign(tmp_path / "c", build_objective("csv"), method="bo", batch=2, seed=0)
    asked = pd.read_csv(sc.ask_csv(tmp_path / "c" / "ask-01.csv"), float_precision="round_trip")
    write(droplet_rows(asked), tmp_path / "c" / "results-01.csv")
    (tmp_path / "c" / "results-02.csv").write_bytes((tmp_path / "c" / "results-01.csv").read_bytes())
    with pytest.raises(MatscreenError, match="already recorded"):
        run_csv_lab(sc, 2, poll_seconds=0.01)
    assert len(sc.rounds()) == 1
    sc.close()


# --- failed droplets are reported ----------------------------------------------------------------


def test_tell_says_how_many_droplets_failed_and_why(tmp_path):
    d, asked = ask(tmp_path)
    rows = droplet_rows(asked)
    blank = lambda r: {k: ("" if k != "condition_id" else v) for k, v in r.items()}  # noqa: E731
    rows[0] = blank(rows[0])  # one failed droplet of the first condition
    rows[4], rows[5] = blank(rows[4]), blank(rows[5])  # every droplet of the third condition
    res = runner.invoke(app, ["synth", "tell", d, write(rows, tmp_path / "results.csv")])
    assert res.exit_code == 0, res.output
    assert "3 of 6 droplets failed" in res.output and "no spectrum" in res.output
    assert "1 condition with no usable droplet" in res.output


def test_run_refuses_a_poll_interval_that_would_spin(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["synth", "run", "--lab", "csv", "--poll", "0", "-o", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--poll" in res.output and "0.01" in res.output, res.output
    assert not out.exists()


def test_a_tell_killed_before_its_round_log_is_completed_by_the_retry(tmp_path, monkeypatch):
    d, asked = ask(tmp_path)
    results = write(droplet_rows(asked), tmp_path / "results.csv")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the observations are committed

    sc = SynthesisCampaign(d, build_objective("csv"))
    monkeypatch.setattr(sc, "_finish_round", killed)
    with pytest.raises(KeyboardInterrupt):
        sc.tell_csv(results)
    sc.close()
    assert observations(d)["round"].isna().all()  # told, but in no round
    res = runner.invoke(app, ["synth", "tell", d, results])
    assert res.exit_code == 0, res.output
    assert (observations(d)["round"] == 1).all()
