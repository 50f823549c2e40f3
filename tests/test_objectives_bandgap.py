"""Band-gap pool objective and pool loading; the objective protocol and class loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from screening.bo.objective import Objective, ObjectiveError, load_objective_class
from screening.errors import RecordError
from screening.objectives.bandgap.objective import BandGapPoolObjective, PoolFileError, load_pool, pool_from_frame


def synthetic_pool_frame(n: int = 200, d: int = 8, seed: int = 0) -> pd.DataFrame:
    """A featurised-pool-shaped frame: embeddings are a noisy linear image of 3 latent coordinates."""
    rng = np.random.default_rng(seed)
    Z = rng.random((n, 3))
    E = Z @ rng.standard_normal((3, d)) + 0.01 * rng.standard_normal((n, d))
    gap = 2.0 + np.sin(4 * Z[:, 0]) + Z[:, 1]
    frame = pd.DataFrame({"id": [f"mp-{i}" for i in range(n)], "formula": [f"Na{i}Cl" for i in range(n)]})
    for k in range(d):
        frame[f"emb_{k}"] = E[:, k].astype("float32")
    frame["pred_band_gap"] = gap + 0.1 * rng.standard_normal(n)
    frame["band_gap"] = gap
    return frame


def test_load_pool_projects_embeddings_with_pca(tmp_path) -> None:
    frame = synthetic_pool_frame()
    frame.to_parquet(tmp_path / "pool.parquet")
    pool = load_pool(tmp_path / "pool.parquet", n_components=3)
    assert pool.features.shape == (200, 3)
    assert pool.reducer.explained_variance_ratio_.sum() > 0.99  # 3 latent coordinates
    assert len(pool.file_hash) == 64
    dom = pool.domain(use_prior=True)
    np.testing.assert_allclose(dom.prior_mean, frame["pred_band_gap"].to_numpy())
    # reusing the fitted reducer reproduces the same features exactly
    again = load_pool(tmp_path / "pool.parquet", reducer=pool.reducer)
    np.testing.assert_array_equal(again.features, pool.features)


def test_bad_pools_name_the_file_and_row(tmp_path) -> None:
    frame = synthetic_pool_frame(20)
    with pytest.raises(PoolFileError, match="band_gap"):
        pool_from_frame(frame.drop(columns="band_gap"), source="p.parquet")
    dup = frame.copy()
    dup.loc[5, "id"] = "mp-3"
    with pytest.raises(RecordError, match="'mp-3'.*duplicate"):
        pool_from_frame(dup, source="p.parquet")
    nan_gap = frame.copy()
    nan_gap.loc[7, "band_gap"] = np.nan
    with pytest.raises(RecordError, match="p.parquet: record 'mp-7': band_gap"):
        pool_from_frame(nan_gap, source="p.parquet")
    # gaps a measurement cannot give are refused when the pool is read, not when the search reaches them
    for value, reason in ((-1.0, "negative"), (np.inf, "infinite"), (1e300, "not a plausible")):
        odd = frame.copy()
        odd.loc[[9, 12], "band_gap"] = value
        with pytest.raises(RecordError, match=rf"p.parquet: record 'mp-9': band gap .*{reason}.*\(1 more rows"):
            pool_from_frame(odd, source="p.parquet", require_band_gap=False)
    worded = frame.astype({"band_gap": object})
    worded.loc[6, "band_gap"] = "2.5 eV"
    with pytest.raises(RecordError, match="p.parquet: record 'mp-6': band_gap '2.5 eV' is not a number of eV"):
        pool_from_frame(worded, source="p.parquet", require_band_gap=False)
    blank = frame.copy()
    blank.loc[9, "band_gap"] = np.nan  # unknown is fine for ask/tell
    assert len(pool_from_frame(blank, source="p.parquet", require_band_gap=False).frame) == 20
    nan_pred = frame.copy()
    nan_pred.loc[4, "pred_band_gap"] = np.nan
    with pytest.raises(RecordError, match="p.parquet: record 'mp-4': pred_band_gap is missing"):
        pool_from_frame(nan_pred, source="p.parquet")
    for rows in (0, 1):
        with pytest.raises(
            PoolFileError, match=rf"p.parquet: {rows} candidate crystal\(s\); a search needs at least 2"
        ):
            pool_from_frame(frame.iloc[:rows], source="p.parquet")
    with pytest.raises(PoolFileError, match="not found"):
        load_pool(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("junk")
    with pytest.raises(PoolFileError, match="cannot read"):
        load_pool(tmp_path / "junk.parquet")


def test_objective_looks_up_gaps_and_scores_them() -> None:
    pool = pool_from_frame(synthetic_pool_frame(50))
    gaps = pool.frame["band_gap"].to_numpy()
    obj = BandGapPoolObjective.from_pool(pool, target=float(gaps[3]) + 0.005, tolerance=0.01)
    assert isinstance(obj, Objective)
    evs = obj.evaluate(["mp-3", "nope"])
    assert evs[0].ok and evs[0].y == pytest.approx(gaps[3])
    assert not evs[1].ok and "not in the pool" in evs[1].error
    assert obj.loss(gaps[3]) == pytest.approx(0.005)
    assert obj.is_hit(gaps[3]) and not obj.is_hit(gaps[3] + 0.1)
    assert obj.n_hits() == int(np.sum(np.abs(gaps - obj.target) <= 0.01 + 1e-12))


class Quadratic:
    """A user objective living outside the framework (loaded by name in the test)."""

    def __init__(self) -> None:
        from screening.bo.domain import Box

        self.domain = Box.from_bounds([(0, 1), (0, 1)])

    def evaluate(self, points):
        from screening.bo.objective import Evaluation

        return [Evaluation(p, float(((np.asarray(p) - 0.3) ** 2).sum())) for p in points]

    def loss(self, y):
        return float(y)

    def is_hit(self, y):
        return float(y) < 1e-3


def test_load_objective_class_by_name() -> None:
    cls = load_objective_class("test_objectives_bandgap:Quadratic")
    assert isinstance(cls(), Objective)
    with pytest.raises(ObjectiveError, match="package.module:ClassName"):
        load_objective_class("no_colon_here")
    with pytest.raises(ObjectiveError, match="cannot import"):
        load_objective_class("no_such_module_xyz:Thing")
    with pytest.raises(ObjectiveError, match="no class 'Nope'"):
        load_objective_class("test_objectives_bandgap:Nope")
    with pytest.raises(ObjectiveError, match="lacks evaluate"):
        load_objective_class(
            "test_objectives_bandgap:synthetic_pool_frame".replace("synthetic_pool_frame", "NotAnObjective")
        )


class NotAnObjective:
    def loss(self, y):
        return 0.0

    def is_hit(self, y):
        return False


@pytest.mark.parametrize(
    ("bad_id", "reason"),
    [
        ("", "blank id"),
        ("   ", "blank id"),
        (" mp-7", "leading or trailing whitespace"),
        ("mp-7 ", "leading or trailing whitespace"),
        ("mp\r7", "control character"),
        ("mp\n7", "control character"),
        ("mp\t7", "control character"),
        ("mp-1", "duplicate id in the pool (first at row 2)"),
    ],
)
def test_pool_ids_that_cannot_round_trip_through_a_csv_are_refused(tmp_path, bad_id, reason) -> None:
    frame = synthetic_pool_frame(20)
    frame["id"] = [f"mp-{i}" for i in range(20)]
    frame.loc[12, "id"] = bad_id
    path = tmp_path / "pool.parquet"
    frame.to_parquet(path)
    with pytest.raises(RecordError) as info:
        load_pool(path)
    message = str(info.value)
    assert str(path) in message and "row 13" in message and reason in message


def test_band_gap_objective_refuses_impossible_values() -> None:
    from screening.objectives.bandgap.objective import check_band_gap

    for ok in (0.0, 2.534, 99.9):
        check_band_gap(ok)
    for bad, reason in ((-0.1, "negative"), (1e308, "above 100 eV"), (float("nan"), "NaN"), (float("inf"), "infinite")):
        with pytest.raises(ValueError, match=reason):
            check_band_gap(bad)


def test_stored_objective_specs_need_consent_and_are_validated_before_import() -> None:
    import sys

    from screening.bo.objective import allowed_objectives, load_stored_objective_class, objective_is_allowed

    assert objective_is_allowed("screening.objectives.bandgap:BandGapPoolObjective")
    assert not objective_is_allowed("screening.objectivesX.evil:C")
    assert not objective_is_allowed("test_objectives_bandgap:Quadratic")
    assert load_stored_objective_class("test_objectives_bandgap:Quadratic", {"test_objectives_bandgap:Quadratic"})
    sys.modules.pop("this", None)
    with pytest.raises(ObjectiveError, match="--allow-objective this:Nothing"):
        load_stored_objective_class("this:Nothing")
    assert "this" not in sys.modules
    for bad in ("this", "a/b:C", "a..b:C", "a:b:c", "os.system('x'):C"):
        with pytest.raises(ObjectiveError):
            load_stored_objective_class(bad, {bad})
    env = {"MATSCREEN_ALLOW_OBJECTIVES": "a.b:C, d:E"}
    assert allowed_objectives(["x:Y"], env) == {"a.b:C", "d:E", "x:Y"}
    with pytest.raises(ObjectiveError):
        allowed_objectives([], {"MATSCREEN_ALLOW_OBJECTIVES": "import os"})


def test_a_pool_without_its_label_column_names_the_columns_and_the_flag(tmp_path) -> None:
    path = tmp_path / "pool.parquet"
    synthetic_pool_frame(20).rename(columns={"band_gap": "target"}).to_parquet(path)
    with pytest.raises(PoolFileError, match=r"it has id, formula, pred_band_gap, target .*--label target"):
        load_pool(path)
