"""Synthesis campaign rounds: LHS start, distinct local-penalisation batches, boundary expansion,
crash-safe state, CSV ask/tell, random baseline, and a user's own objective class by name."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from screening.bo.suggest import suggest_box
from screening.errors import MatscreenError, RecordError
from screening.objectives.synthesis.objective import SPECTRUM_COLUMNS, SynthesisObjective, synthesis_box
from screening.objectives.synthesis.rounds import (
    SynthesisCampaign,
    build_objective,
    default_strategy,
    method_curves,
)
from screening.objectives.synthesis.virtual_lab import VirtualLab


def objective(
    box: str = "paper", seed: int = 0, replicates: int = 3, p_fail: float | None = None
) -> SynthesisObjective:
    return SynthesisObjective(
        lab=VirtualLab(n_replicates=replicates, seed=seed, p_fail=p_fail), domain=synthesis_box(box)
    )


def min_pairwise_unit_distance(box, P) -> float:
    U = box.to_unit(P)
    D = np.linalg.norm(U[:, None] - U[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    return float(D.min())


def test_local_penalisation_batch_is_distinct_and_feasible_on_the_box():
    obj = objective("full")
    box = obj.domain
    X = box.latin_hypercube(15, seed=1)
    y = np.array([obj.loss(e.y) for e in obj.evaluate(X)])
    P = suggest_box(default_strategy(15), box, X, np.full(15, np.nan), y, q=15, seed=3)
    assert P.shape == (15, 5) and box.feasible(P).all()
    assert (P[:, :4].sum(axis=1) <= 90 + 1e-9).all()
    assert min_pairwise_unit_distance(box, P) > 0.05  # 15 different conditions, not one repeated


def test_expansion_moves_the_framework_campaign_to_the_new_box(tmp_path):
    sc = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=5, seed=0)
    sc.campaign._hyper_cache[("loss", False, 100)] = {"stale": True}
    wider = sc.objective.domain.expanded_at_boundary(np.array([[20.0, 25.0, 10.0, 10.0, 600.0]]))
    sc.campaign.set_box(wider)
    assert sc.campaign.domain is wider and sc.objective.domain is wider
    assert sc.campaign._hyper_cache == {}  # fitted for the old box's unit coordinates
    asked = np.vstack(sc.campaign.ask(5))
    assert wider.feasible(asked).all() and len({wider.key_of(p) for p in asked}) == 5


def test_rounds_lhs_then_bo_with_expansion_and_resume(tmp_path):
    sc = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=6, seed=0)
    logs = sc.run(2)
    assert [r.method for r in logs] == ["lhs", "bo"]
    assert logs[-1].n_conditions_so_far == 12
    assert logs[-1].best_loss_so_far == pytest.approx(np.nanmin(sc.observations()["loss"]))
    first = sc.observations().iloc[:6]
    assert sc.objective.domain.feasible(first[["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]].to_numpy()).all()
    box_after = sc.objective.domain
    sc.close()
    # reopen: rounds, observations and the (possibly widened) box come back from the file
    again = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=6, seed=0)
    assert len(again.rounds()) == 2 and len(again.observations()) == 12
    assert again.objective.domain.upper == box_after.upper
    assert len(again.objective.domain.expansions) == sum(len(r.expansions) for r in logs)
    again.run(3)
    assert len(again.rounds()) == 3 and len(again.observations()) == 18


def test_pending_points_are_evaluated_first_after_a_crash(tmp_path):
    sc = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=5, seed=0)
    sc.run(1)
    asked = sc.campaign.ask(5)  # a crash right after ask: points pending, nothing told
    sc.close()
    again = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=5, seed=0)
    again.run(2)
    told = again.observations().iloc[5:][["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]].to_numpy()
    np.testing.assert_array_equal(told, np.vstack(asked))
    assert again.campaign.store.pending() == []


def test_boundary_expansion_is_recorded_when_the_best_sit_on_a_face(tmp_path):
    sc = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=5, seed=0)
    edge = np.array([[20.0, 25.0, 10.0, 10.0, 600.0]])
    evs = sc.objective.evaluate(edge)
    sc.campaign.tell_evaluations(evs)
    log = sc._finish_round(1, "manual", [sc.objective.domain.key_of(edge[0])], 0.0, None)
    assert any(e["dim"] == 0 and e["side"] == "upper" for e in log.expansions)
    assert sc.objective.domain.upper[0] > 20.0
    assert sc.campaign.store.get_meta("synthesis_box")["upper"][0] == sc.objective.domain.upper[0]


def test_failed_droplets_are_counted_in_the_campaign(tmp_path):
    sc = SynthesisCampaign(tmp_path / "c", objective(replicates=4, p_fail=0.3), method="random", batch=6, seed=0)
    sc.run(1)
    obs = sc.observations()
    assert (obs["droplets_ok"] + obs["droplets_failed"] == 4).all()
    assert obs["droplets_failed"].sum() > 0
    ok = obs[obs["error"].isna()]
    assert np.isfinite(ok["loss"]).all()


def test_random_lhs_baseline_and_curves(tmp_path):
    sc = SynthesisCampaign(tmp_path / "r", objective("full"), method="random", batch=5, seed=2, expand=False)
    sc.run(2)
    curve = method_curves(sc)["random"]
    assert curve.shape == (2,) and curve[1] <= curve[0]


def test_csv_ask_tell_with_a_reactor(tmp_path):
    lab = VirtualLab(n_replicates=3, seed=5)
    sc = SynthesisCampaign(tmp_path / "c", build_objective("csv"), method="bo", batch=4, seed=0)
    ask = pd.read_csv(sc.ask_csv(tmp_path / "ask.csv"), float_precision="round_trip")
    X = ask[["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]].to_numpy()
    blocks = lab.measure(X)
    blocks[0][1] = np.nan  # one droplet without a spectrum
    rows = [
        {"condition_id": cid, **dict(zip(SPECTRUM_COLUMNS, b))}
        for cid, block in zip(ask["condition_id"], blocks)
        for b in block
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    log = sc.tell_csv(tmp_path / "results.csv").round
    assert log is not None and len(log.keys) == 4 and all(v is not None for v in log.losses)
    obs = sc.observations()
    assert obs.loc[obs["condition_id"] == ask["condition_id"][0], "droplets_failed"].item() == 1
    assert sc.campaign.store.pending() == []
    pd.DataFrame([{**rows[0], "condition_id": "c-unknown"}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(RecordError, match="not pending"):
        sc.tell_csv(tmp_path / "bad.csv")


@pytest.mark.slow
def test_a_users_objective_class_plugs_in_by_name(tmp_path, monkeypatch):
    (tmp_path / "my_reactor.py").write_text(
        textwrap.dedent('''
        import numpy as np
        from screening.bo.domain import Box, LinearConstraint
        from screening.bo.objective import Evaluation

        class TwoInputSpectra:
            """A user's own objective: two inputs, a Gaussian band whose centre they move."""
            def __init__(self):
                self.domain = Box.from_bounds([(0.0, 1.0), (0.0, 1.0)], names=("a", "b"),
                                              constraints=[LinearConstraint.sum_at_most([0, 1], 1.5)])
                self.lam = np.arange(380.0, 801.0)
                self.target = np.exp(-0.5 * ((self.lam - 600.0) / 30.0) ** 2)
            def evaluate(self, points):
                out = []
                for p in points:
                    centre = 400.0 + 400.0 * p[0]
                    s = np.exp(-0.5 * ((self.lam - centre) / 30.0) ** 2) * (0.5 + 0.5 * p[1])
                    out.append(Evaluation(np.asarray(p), y=np.vstack([s, s * 1.01])))
                return out
            def loss(self, y):
                s = np.median(np.atleast_2d(y), axis=0)
                return float(1 - s @ self.target / np.linalg.norm(s) / np.linalg.norm(self.target))
            def is_hit(self, y):
                return self.loss(y) < 1e-3
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_reactor", raising=False)
    obj = build_objective(objective="my_reactor:TwoInputSpectra")
    assert type(obj).__name__ == "TwoInputSpectra"
    sc = SynthesisCampaign(tmp_path / "u", obj, method="bo+dnn", batch=4, seed=0, dnn_from=2, dnn_batch=2)
    logs = sc.run(2)
    assert logs[-1].n_conditions_so_far == 10  # 4 LHS + 4 BO + 2 network proposals
    assert obj.domain.feasible(sc.observations()[["a", "b"]].to_numpy()).all()
    with pytest.raises(MatscreenError, match="package.module:ClassName"):
        build_objective(objective="no_colon_here")


def test_repeated_suggestions_are_replaced_by_distinct_feasible_points():
    from screening.bo.domain import replace_repeats

    box = synthesis_box("paper")
    corner = np.array([20.0, 10.0, 4.0, 4.0, 1000.0])
    other = np.array([10.0, 20.0, 10.0, 10.0, 500.0])
    nearly = corner + np.array([0.0, 2e-14, 3e-14, 0.0, 0.0])  # equal up to rounding
    out = replace_repeats([corner, nearly, other, corner.copy()], box, other[None, :], seed=0)
    keys = [box.key_of(p) for p in out]
    assert len(out) == 4 and len(set(keys)) == 4 and box.key_of(other) not in keys
    U = box.to_unit(np.vstack(out + [other]))
    gaps = np.abs(U[:, None] - U[None]).max(axis=-1) + np.eye(5)
    assert gaps.min() > 1e-6
    np.testing.assert_array_equal(out[0], corner)
    assert box.feasible(np.vstack(out)).all()


def shifted_target_csv(path, centre_nm: float = 520.0):
    lam = np.arange(380.0, 801.0)
    pd.DataFrame({"wavelength_nm": lam, "absorbance": np.exp(-0.5 * ((lam - centre_nm) / 40.0) ** 2)}).to_csv(
        path, index=False
    )
    return path


def test_the_target_is_stored_with_the_campaign_and_reused_on_reopen(tmp_path):
    from screening.objectives.synthesis.spectral_loss import load_target

    custom = shifted_target_csv(tmp_path / "target.csv")
    sc = SynthesisCampaign(
        tmp_path / "c", build_objective("csv", target=str(custom)), batch=4, target_source=str(custom)
    )
    wanted = sc.objective.target.copy()
    assert not np.array_equal(wanted, load_target())
    sc.close()
    # reopened without a target (the default one is built): the stored target comes back
    again = SynthesisCampaign(tmp_path / "c", build_objective("csv"), batch=4)
    np.testing.assert_array_equal(again.objective.target, wanted)
    assert again.target_source == str(custom)
    again.close()
    # reopened with a different target file: refused, naming both
    other = shifted_target_csv(tmp_path / "other.csv", centre_nm=600.0)
    with pytest.raises(MatscreenError) as err:
        SynthesisCampaign(tmp_path / "c", build_objective("csv", target=str(other)), target_source=str(other))
    assert str(custom) in str(err.value) and str(other) in str(err.value)
    # the same file again is fine
    SynthesisCampaign(tmp_path / "c", build_objective("csv", target=str(custom)), target_source=str(custom)).close()


def test_a_different_target_array_in_the_library_is_refused(tmp_path):
    SynthesisCampaign(tmp_path / "c", objective(), batch=4).close()
    obj = objective()
    obj.target = obj.target * 0.5 + 0.01
    with pytest.raises(MatscreenError, match="the paper's target"):
        SynthesisCampaign(tmp_path / "c", obj, batch=4)


def test_expansions_and_reports_use_input_names(tmp_path, monkeypatch):
    from screening.objectives.synthesis import rounds

    sc = SynthesisCampaign(tmp_path / "c", objective(), method="bo", batch=5, seed=0)
    edge = np.array([[20.0, 25.0, 10.0, 10.0, 600.0]])
    sc.campaign.tell_evaluations(sc.objective.evaluate(edge))
    log = sc._finish_round(1, "manual", [sc.objective.domain.key_of(edge[0])], 0.0, None)
    assert {"dim": 0, "side": "upper", "input": "Q_AgNO3"}.items() <= log.expansions[0].items()
    from screening.cli.synth import _synth_round_line

    line = _synth_round_line(log, list(sc.objective.domain.names))
    assert "upper bound of Q_AgNO3 20 ->" in line and "input 0" not in line
    # SHAP asked for without the extra: one notice telling how to install it, no silent skip
    monkeypatch.setattr(rounds, "_shap_available", lambda: False)
    notes: list[str] = []
    paths = rounds.write_report(sc, shap=True, on_notice=notes.append)
    assert notes == [rounds.SHAP_MISSING] and 'pip install "matscreen[shap]"' in notes[0]
    assert "shap" not in paths
    with pytest.warns(UserWarning, match="matscreen\\[shap\\]"):
        rounds.write_report(sc, shap=True)
