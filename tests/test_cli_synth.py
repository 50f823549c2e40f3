"""`matscreen synth run / ask / tell` end to end on small campaigns."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
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


@pytest.mark.slow
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


def test_synth_tell_uses_the_stored_target_and_a_different_one_is_refused(tmp_path):
    lam = np.arange(380.0, 801.0)
    custom, other = tmp_path / "target.csv", tmp_path / "other.csv"
    for path, centre in ((custom, 520.0), (other, 600.0)):
        pd.DataFrame({"nm": lam, "absorbance": np.exp(-0.5 * ((lam - centre) / 40.0) ** 2)}).to_csv(path, index=False)
    d = tmp_path / "reactor"
    res = runner.invoke(
        app, ["synth", "ask", str(d), "--batch", "3", "--target", str(custom), "-o", str(tmp_path / "a.csv")]
    )
    assert res.exit_code == 0, res.output
    ask = pd.read_csv(tmp_path / "a.csv", float_precision="round_trip")
    pd.DataFrame(droplet_rows(ask, VirtualLab(n_replicates=2, seed=1))).to_csv(tmp_path / "r.csv", index=False)
    res = runner.invoke(app, ["synth", "tell", str(d), str(tmp_path / "r.csv")])  # no --target needed
    assert res.exit_code == 0, res.output
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective
    from screening.objectives.synthesis.spectral_loss import load_target

    sc = SynthesisCampaign(d, build_objective("csv"))
    assert sc.target_source == str(custom)
    losses = sc.observations()["loss"].to_numpy()
    expected = [sc.objective.loss(np.asarray(r.y)) for r in sc.campaign.store.observations()]
    np.testing.assert_allclose(losses, expected)  # scored against the stored target ...
    assert not np.array_equal(sc.objective.target, load_target())  # ... not the default one
    sc.close()
    res = runner.invoke(app, ["synth", "ask", str(d), "--target", str(other)])
    assert res.exit_code == 1
    assert str(custom) in res.output and str(other) in res.output


def test_synth_run_with_a_users_objective_prints_its_input_names(tmp_path, monkeypatch):
    (tmp_path / "two_inputs.py").write_text(
        "import numpy as np\n"
        "from screening.bo.domain import Box\n"
        "from screening.bo.objective import Evaluation\n"
        "class Band:\n"
        "    def __init__(self):\n"
        "        self.domain = Box.from_bounds([(0.0, 1.0), (0.0, 1.0)], names=('temperature_C', 'ratio'))\n"
        "    def evaluate(self, points):\n"
        "        return [Evaluation(np.asarray(p), y=float((p[0] - 0.3) ** 2 + p[1])) for p in points]\n"
        "    def loss(self, y):\n"
        "        return float(y)\n"
        "    def is_hit(self, y):\n"
        "        return False\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    res = runner.invoke(
        app,
        ["synth", "run", "--objective", "two_inputs:Band", "--method", "bo", "--rounds", "2", "--batch", "3"]
        + ["--no-shap", "-o", str(tmp_path / "run")],
    )
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("best condition:"))
    assert "temperature_C=" in line and "ratio=" in line and "Q_AgNO3" not in line


def test_synth_help_is_in_plain_words():
    for args in (
        ["synth", "--help"],
        ["synth", "run", "--help"],
        ["synth", "ask", "--help"],
        ["synth", "tell", "--help"],
    ):
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        for jargon in ("Run-1", "seed's way", "LHS"):
            assert jargon not in res.output, (args, jargon)
    run_help = runner.invoke(app, ["synth", "run", "--help"], env={"COLUMNS": "200"}).output
    assert "uL/min" in run_help and "Seconds between checks" in run_help
