"""Campaigns written before the layout change (bb14f27, version 0.1.0) open and continue today.

The directories in ``tests/data/campaign_v0_1/`` were written by the old package itself
(``tests/data/make_campaign_v0_1.py`` run against a checkout of bb14f27), so these tests read
the store format, the JSON config and the objective spec exactly as users have them:

- ``pool_campaign``: band-gap pool, 6 results told through ``campaign tell`` (one failed), 2 pending;
- ``objective_campaign``: ``--objective screening.objectives.synthesis:SynthesisObjective`` (a
  module that became a package), 2 pending, nothing told;
- ``synthesis_campaign``: one LHS round of 4 conditions on the virtual lab (3 droplets), 4 pending.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from screening.bo.domain import Box, DiscretePool
from screening.cli import app
from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary
from screening.objectives.synthesis import SynthesisObjective
from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

DATA = Path(__file__).parent / "data" / "campaign_v0_1"
POOL_PATH = Path("/tmp/matscreen-campaign-v0_1/pool.parquet")
"""Where the old campaign recorded its pool (an absolute path, as every pool campaign does)."""


@pytest.fixture
def old_pool() -> pd.DataFrame:
    """Put the pool back, byte for byte, where the old campaign expects it (its hash is checked)."""
    data = (DATA / "pool.parquet").read_bytes()
    if not POOL_PATH.is_file() or POOL_PATH.read_bytes() != data:
        POOL_PATH.parent.mkdir(parents=True, exist_ok=True)
        tmp = POOL_PATH.with_name(f".pool.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, POOL_PATH)
    return pd.read_parquet(POOL_PATH)


def _copy(name: str, tmp_path: Path) -> Path:
    """A writable copy, so continuing the campaign never touches the checked-in files."""
    return Path(shutil.copytree(DATA / name, tmp_path / name))


def _stored_counts(store: Path) -> tuple[int, int]:
    """Told and pending rows counted with plain SQL, independent of today's store code."""
    con = sqlite3.connect(store)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"observations", "pending"} <= tables, f"{store}: tables {sorted(tables)}"
        told = con.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
        pending = con.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
    finally:
        con.close()
    return told, pending


def test_old_data_is_what_the_old_package_wrote() -> None:
    assert _stored_counts(DATA / "pool_campaign" / "campaign.sqlite") == (6, 2)
    assert _stored_counts(DATA / "objective_campaign" / "campaign.sqlite") == (0, 2)
    assert _stored_counts(DATA / "synthesis_campaign" / "campaign.sqlite") == (4, 4)
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 200_000


def test_old_pool_campaign_opens_and_continues(tmp_path: Path, old_pool: pd.DataFrame) -> None:
    gaps = dict(zip(old_pool["id"].astype(str), old_pool["band_gap"]))
    cd = open_campaign_dir(_copy("pool_campaign", tmp_path))
    campaign = cd.campaign
    assert isinstance(campaign.domain, DiscretePool) and len(campaign.domain) == 60
    records = campaign.history().records
    assert len(records) == 6
    failed = [r for r in records if not r.ok]
    assert [r.error for r in failed] == ["furnace tripped"]
    for r in records:
        if r.ok:
            assert r.y == pytest.approx(gaps[r.key])
    told = {r.key for r in records}
    pending = [str(p) for p in campaign.pending_points()]
    assert len(pending) == 2 and not told & set(pending) and set(pending) <= set(gaps)
    info = summary(cd)
    assert info["observations"] == 6 and info["failed"] == 1 and sorted(info["pending"]) == sorted(pending)

    campaign.tell(pending, [gaps[p] for p in pending])
    new = [str(p) for p in campaign.ask()]
    assert len(new) == 2 and not (told | set(pending)) & set(new)
    assert len(campaign.history().records) == 8
    campaign.close()


def test_old_pool_campaign_through_the_cli(tmp_path: Path, old_pool: pd.DataFrame) -> None:
    directory = _copy("pool_campaign", tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["campaign", "status", str(directory), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["observations"] == 6 and info["failed"] == 1 and len(info["pending"]) == 2
    # `campaign ask` rebuilds the pool objective from the old config and hands back the pending points first
    res = runner.invoke(app, ["campaign", "ask", str(directory), "-o", str(tmp_path / "ask.csv")])
    assert res.exit_code == 0, res.output
    asked = pd.read_csv(tmp_path / "ask.csv", dtype={"id": str})["id"].tolist()
    assert sorted(asked) == sorted(info["pending"])


def test_old_objective_campaign_resolves_the_moved_class_and_continues(tmp_path: Path) -> None:
    cd = open_campaign_dir(_copy("objective_campaign", tmp_path))
    campaign = cd.campaign
    assert isinstance(campaign.objective, SynthesisObjective)
    assert isinstance(campaign.domain, Box) and campaign.domain.dim == 5
    assert campaign.history().records == []
    pending = campaign.pending_points()
    assert len(pending) == 2
    lo, hi = np.asarray(campaign.domain.lower), np.asarray(campaign.domain.upper)
    for p in pending:
        assert np.all((lo <= np.asarray(p)) & (np.asarray(p) <= hi))

    campaign.tell_evaluations(campaign.objective.evaluate(pending))
    assert len(campaign.history().records) == 2 and campaign.pending_points() == []
    new = campaign.ask()
    assert len(new) == 2
    told = {campaign.domain.key_of(p) for p in pending}
    assert not told & {campaign.domain.key_of(p) for p in new}
    campaign.close()


def test_old_synthesis_campaign_reopens_and_runs_its_pending_round(tmp_path: Path) -> None:
    directory = _copy("synthesis_campaign", tmp_path)
    sc = SynthesisCampaign(directory, build_objective("virtual", replicates=3, seed=0))
    assert sc.method == "bo" and sc.batch == 4 and sc.seed == 3
    rounds = sc.rounds()
    assert [(r.round, r.method, len(r.keys)) for r in rounds] == [(1, "lhs", 4)]
    assert len(sc.observations()) == 4
    best = sc.best()
    assert best is not None and np.isfinite(best[2])
    pending = sc.campaign.pending_points()
    assert len(pending) == 4
    pending_keys = {sc.objective.domain.key_of(p) for p in pending}

    log = sc.run_round()
    assert log.round == 2 and set(log.keys) == pending_keys
    assert sc.campaign.pending_points() == [] and len(sc.rounds()) == 2
    sc.close()
