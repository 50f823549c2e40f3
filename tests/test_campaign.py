"""Campaign: ask/tell/run, stop rules, and bad tells that change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo.campaign import Campaign, History, StopRules, TellError, stop_reason
from screening.bo.domain import Box, DiscretePool, LinearConstraint
from screening.bo.objective import Evaluation
from screening.bo.store import ObservationRecord
from screening.bo.strategy import Strategy
from screening.objectives.bandgap.objective import BandGapPoolObjective


def synthetic_objective(n: int = 300, seed: int = 0, target: float = 2.534, tol: float = 0.01) -> BandGapPoolObjective:
    rng = np.random.default_rng(seed)
    F = rng.random((n, 3))
    gaps = 2.0 + np.sin(4 * F[:, 0]) + F[:, 1]
    return BandGapPoolObjective(DiscretePool([f"c{i}" for i in range(n)], F), gaps, target, tol)


def _prior(obj: BandGapPoolObjective, n: int, seed: int = 0) -> list[str]:
    hits = [c for c in obj.domain.ids if obj.is_hit(obj.band_gaps[obj.domain.index_of(c)])]
    return obj.domain.random_ids(n, np.random.default_rng(seed), excluded=hits)


def _snapshot(c: Campaign):
    return [(r.key, r.y, r.loss, r.error, r.source) for r in c.store.observations()], [p.key for p in c.store.pending()]


def test_run_finds_a_hit_on_a_smooth_pool(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, stop=StopRules(budget=40))
    c.tell_evaluations(obj.evaluate(_prior(obj, 20)), source="prior")
    seen = []
    history = c.run(on_evaluation=lambda ev, loss, hit: seen.append((ev.point, hit)))
    assert c.stopped_because == "hit"
    assert history.first_hit() == len(seen) and seen[-1][1]
    assert history.first_hit() < 15  # random search needs ~ 300/(hits+1) >> 15 here
    assert len({p for p, _ in seen}) == len(seen)


def test_budget_stop_and_batches(tmp_path) -> None:
    obj = synthetic_objective(target=9.0)  # unreachable: no hit possible
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, batch_size=3, stop=StopRules(budget=7))
    c.tell_evaluations(obj.evaluate(_prior(obj, 10)), source="prior")
    h = c.run()
    assert c.stopped_because == "budget" and h.n_search == 7  # 3 + 3 + 1: the last batch is trimmed
    assert h.first_hit() is None


def _history(losses, hits=None, sources=None) -> History:
    recs = [
        ObservationRecord(f"p{i}", None, 0.0, loss, None, (sources or ["search"] * len(losses))[i])
        for i, loss in enumerate(losses)
    ]
    return History(recs, hits or [False] * len(losses))


def test_stop_rules() -> None:
    assert stop_reason(StopRules(), _history([0.5, 0.3], [False, True])) == "hit"
    assert stop_reason(StopRules(stop_on_hit=False), _history([0.5, 0.3], [False, True])) is None
    assert stop_reason(StopRules(budget=2), _history([0.5, 0.3])) == "budget"
    assert stop_reason(StopRules(budget=2), _history([0.5, 0.3], sources=["prior", "search"])) is None
    # plateau: 3 evaluations without improving on 0.2
    assert stop_reason(StopRules(plateau=3), _history([0.5, 0.2, 0.3, 0.25, 0.4])) == "plateau"
    assert stop_reason(StopRules(plateau=3), _history([0.5, 0.2, 0.3, 0.25, 0.19])) is None
    assert stop_reason(StopRules(plateau=3, plateau_tol=0.02), _history([0.5, 0.2, 0.3, 0.25, 0.19])) == "plateau"


@pytest.mark.slow  # the plateau rule itself is unit-tested in test_stop_rules; this runs a whole GP loop
def test_run_stops_on_plateau(tmp_path) -> None:
    obj = synthetic_objective(target=9.0)
    c = Campaign.create(
        tmp_path / "c.sqlite",
        obj,
        Strategy(model="loss", acquisition="logei"),
        seed=0,
        stop=StopRules(budget=60, plateau=4, plateau_tol=0.5),
    )
    c.tell_evaluations(obj.evaluate(_prior(obj, 10)), source="prior")
    c.run()
    assert c.stopped_because == "plateau"
    assert c.history().n_search < 60


@pytest.mark.parametrize(
    "bad",
    [
        ("unknown", [("c1", 2.0), ("not-a-crystal", 2.0)], "unknown candidate"),
        ("duplicate", [("c1", 2.0), ("c0", 2.5)], "already told with the value 2.0, now the value 2.5"),
        ("negative", [("c1", 2.0), ("c2", -0.3)], "negative"),
        ("absurd", [("c1", 2.0), ("c2", 1e308)], "above 100 eV"),
        ("inf", [("c1", 2.0), ("c2", float("inf"))], "NaN or infinite"),
        ("twice", [("c1", 2.0), ("c1", 2.1)], "twice in this batch"),
        ("nan", [("c1", 2.0), ("c2", float("nan"))], "NaN"),
        ("text", [("c1", 2.0), ("c2", "abc")], "not a number"),
        ("none", [("c1", 2.0), ("c2", None)], "no value"),
    ],
)
def test_bad_tells_raise_and_change_nothing(tmp_path, bad) -> None:
    _, batch, message = bad
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0)
    c.tell(["c0"], [2.0])
    c.ask(2)
    before = _snapshot(c)
    with pytest.raises(TellError, match=message) as info:
        c.tell([p for p, _ in batch], [y for _, y in batch], origin="results.csv")
    assert "results.csv" in str(info.value)
    assert _snapshot(c) == before


def test_failed_evaluations_are_kept_and_not_reproposed(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(n_init=2), seed=0)
    c.tell(["c0", "c1", "c2"], [2.0, None, 2.2], errors=[None, "DFT did not converge", None])
    h = c.history()
    assert [r.error for r in h.records] == [None, "DFT did not converge", None]
    for _ in range(3):
        assert "c1" not in c.ask(5)


def test_ask_records_pending_and_tell_clears_it(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, batch_size=3)
    first = c.ask()
    assert c.pending_points() == first
    second = c.ask(2, fresh=True)
    assert not set(first) & set(second)
    c.tell_evaluations(obj.evaluate(first))
    assert c.pending_points() == second


def test_ask_returns_pending_points_first_so_a_killed_ask_resumes_to_them(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, batch_size=3)
    c.tell_evaluations(obj.evaluate(_prior(obj, 8)), source="prior")
    first = c.ask()
    c.close()  # the process dies after the pending rows were committed, before the ask file was written
    again = Campaign.open(tmp_path / "c.sqlite", obj)
    assert again.ask() == first  # same ids, no new proposal
    assert [p.key for p in again.store.pending()] == first
    assert again.ask(2) == first[:2]
    more = again.ask(5)  # the pending three first, then two new ones
    assert more[:3] == first and len(set(more)) == 5
    assert [p.key for p in again.store.pending()] == more


def test_repeating_an_identical_tell_is_idempotent_and_a_different_value_is_refused(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, batch_size=2)
    asked = c.ask()
    evals = obj.evaluate(asked)
    first = c.tell_evaluations(evals)
    assert first.search == asked and first.already_recorded == []
    before = _snapshot(c)
    retry = c.tell([e.point for e in evals], [str(e.y) for e in evals])  # as re-read from a CSV
    assert retry.already_recorded == asked and retry.search == [] and retry.prior == []
    assert _snapshot(c) == before
    c.tell(["c0"], [None], errors=["SCF did not converge"])
    assert c.tell(["c0"], [None], errors=["SCF did not converge"]).already_recorded == ["c0"]
    with pytest.raises(TellError, match="already told with the failure"):
        c.tell(["c0"], [2.0])
    with pytest.raises(TellError, match="already told with the value"):
        c.tell([asked[0]], [evals[0].y + 0.1])


def test_unsolicited_results_are_prior_and_do_not_count_towards_the_budget(tmp_path) -> None:
    obj = synthetic_objective(target=9.0)
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0, batch_size=1, stop=StopRules(budget=2))
    asked = c.ask()
    out = c.tell(["c5", asked[0]], [2.0, float(obj.band_gaps[obj.domain.index_of(asked[0])])])
    assert out.prior == ["c5"] and out.search == asked
    h = c.history()
    assert {r.key: r.source for r in h.records} == {"c5": "prior", asked[0]: "search"}
    assert h.n_search == 1 and c.stop_reason() is None  # c5 did not use up the budget


def test_predictive_gives_mean_std_and_score_at_asked_points(tmp_path) -> None:
    obj = synthetic_objective()
    c = Campaign.create(tmp_path / "c.sqlite", obj, Strategy(n_init=2), seed=0, batch_size=3)
    assert np.isnan(c.predictive(["c1"])["mean"]).all()  # no model before the first data
    c.tell_evaluations(obj.evaluate(_prior(obj, 10)), source="prior")
    asked = c.ask()
    post = c.predictive(asked)
    assert post["mean"].shape == (3,) and np.all(np.isfinite(post["mean"]))
    assert np.all(post["std"] > 0) and np.all((post["acquisition"] >= 0) & (post["acquisition"] <= 1))
    np.testing.assert_allclose(post["mean"], Campaign.open(tmp_path / "c.sqlite", obj).predictive(asked)["mean"])


def test_reopen_with_a_different_pool_is_refused(tmp_path) -> None:
    obj = synthetic_objective()
    Campaign.create(tmp_path / "c.sqlite", obj, Strategy(), seed=0).close()
    with pytest.raises(Exception, match="not the pool"):
        Campaign.open(tmp_path / "c.sqlite", synthetic_objective(seed=1))


class FlowLab:
    """A continuous objective: four flows (mL/min) summing to at most 90, plus a temperature."""

    def __init__(self) -> None:
        self.domain = Box.from_bounds(
            [(0, 40)] * 4 + [(20, 80)], constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], 90.0)]
        )

    def evaluate(self, points):
        out = []
        for x in points:
            x = np.asarray(x)
            if x[4] > 78:
                out.append(Evaluation(x, None, "reactor over temperature"))
            else:
                out.append(Evaluation(x, float(((x[:4] - 20.0) ** 2).sum() / 100 + ((x[4] - 50) / 10) ** 2)))
        return out

    def loss(self, y):
        return float(y)

    def is_hit(self, y):
        return float(y) < 0.5


def test_box_campaign_with_constraints_and_failures(tmp_path) -> None:
    lab = FlowLab()
    c = Campaign.create(
        tmp_path / "lab.sqlite",
        lab,
        Strategy(model="loss", acquisition="logei", box_raw_samples=512),
        seed=0,
        batch_size=2,
        stop=StopRules(budget=16),
    )
    h = c.run()
    X = np.array([r.x for r in h.records])
    assert lab.domain.feasible(X).all()
    assert h.best_loss_curve()[-1] < 5.0
    with pytest.raises(TellError, match="outside"):
        c.tell([[50.0, 0, 0, 0, 30]], [1.0])


def test_box_results_with_rounded_coordinates_clear_their_pending_point(tmp_path) -> None:
    lab = FlowLab()
    c = Campaign.create(tmp_path / "lab.sqlite", lab, Strategy(model="loss", acquisition="logei"), seed=0, batch_size=2)
    asked = c.ask()
    rounded = [np.round(x, 8) for x in asked]
    c.tell(rounded, [1.0, 2.0])
    assert c.pending_points() == []
    np.testing.assert_array_equal(np.array([r.x for r in c.history().records]), np.array(asked))
