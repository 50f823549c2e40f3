"""`matscreen synth run / ask / tell` end to end on small campaigns."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from screening.cli import app
from screening.objectives.synthesis.objective import INPUT_NAMES, SPECTRUM_COLUMNS
from screening.objectives.synthesis.virtual_lab import VirtualLab

runner = CliRunner()


def droplet_rows(ask: pd.DataFrame, lab: VirtualLab) -> list[dict]:
    blocks = lab.measure(ask[list(INPUT_NAMES)].to_numpy())
    return [
        {"condition_id": cid, **dict(zip(SPECTRUM_COLUMNS, d))}
        for cid, b in zip(ask["condition_id"], blocks)
        for d in b
    ]


def test_synth_run_on_the_virtual_lab(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "synth",
            "run",
            "--rounds",
            "2",
            "--batch",
            "5",
            "--replicates",
            "3",
            "--dnn-from",
            "2",
            "--dnn-batch",
            "3",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "round  2 [bo+dnn]" in res.output and "best condition:" in res.output
    obs = pd.read_csv(out / "observations.csv")
    assert len(obs) == 5 + 5 + 3
    for name in (
        "best_loss_per_round.png",
        "best_spectrum.png",
        "shap_importance.png",
        "shap_importance.csv",
        "rounds.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "random-lhs" / "campaign.sqlite").is_file()
    # rerunning with more rounds resumes the same campaign
    res = runner.invoke(
        app,
        [
            "synth",
            "run",
            "--rounds",
            "3",
            "--batch",
            "5",
            "--replicates",
            "3",
            "--no-shap",
            "--no-compare-random",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out / "observations.csv")) == 13 + 5 + 3  # stored settings: bo+dnn, 3 network picks


def test_synth_ask_tell_with_a_csv_reactor(tmp_path):
    d = tmp_path / "reactor"
    res = runner.invoke(app, ["synth", "ask", str(d), "--batch", "4", "-o", str(tmp_path / "ask.csv")])
    assert res.exit_code == 0, res.output
    ask = pd.read_csv(tmp_path / "ask.csv", float_precision="round_trip")
    assert list(ask.columns) == ["condition_id", *INPUT_NAMES] and len(ask) == 4
    rows = droplet_rows(ask, VirtualLab(n_replicates=3, seed=1))
    rows[0] = {k: ("" if k != "condition_id" else v) for k, v in rows[0].items()}  # a failed droplet
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    res = runner.invoke(app, ["synth", "tell", str(d), str(tmp_path / "results.csv")])
    assert res.exit_code == 0, res.output
    assert "4 conditions" in res.output
    # a malformed file is refused with the file and line named, and changes nothing
    bad = pd.DataFrame(rows[:2]).assign(**{"600": ["x", "0.1"]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    res = runner.invoke(app, ["synth", "tell", str(d), str(tmp_path / "bad.csv")])
    assert res.exit_code == 1 and "bad.csv" in res.output and "line 2" in res.output


def test_synth_run_with_a_csv_lab_waits_for_results(tmp_path):
    d = tmp_path / "polled"
    lab = VirtualLab(n_replicates=2, seed=2)

    def reactor():
        for r in (1, 2):
            ask = d / f"ask-{r:02d}.csv"
            for _ in range(600):
                if ask.exists():
                    break
                time.sleep(0.05)
            frame = pd.read_csv(ask, float_precision="round_trip")
            tmp = d / f"tmp-{r}.csv"
            pd.DataFrame(droplet_rows(frame, lab)).to_csv(tmp, index=False)
            tmp.rename(d / f"results-{r:02d}.csv")

    t = threading.Thread(target=reactor)
    t.start()
    res = runner.invoke(
        app,
        [
            "synth",
            "run",
            "--lab",
            "csv",
            "--method",
            "bo",
            "--rounds",
            "2",
            "--batch",
            "3",
            "--poll",
            "0.05",
            "--no-shap",
            "-o",
            str(d),
        ],
    )
    t.join(timeout=60)
    assert res.exit_code == 0, res.output
    assert "waiting for" in res.output
    assert len(pd.read_csv(d / "observations.csv")) == 6
    assert np.isfinite(pd.read_csv(d / "observations.csv")["loss"]).all()
